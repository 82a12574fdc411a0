import type { DefaultContext, DefaultState, Middleware } from "koa";
import { runInRequest } from "../context.js";
import type { RequestState } from "../request-state.js";
import type { Sessions } from "../session.js";
import type { SetCookie } from "../set-cookie.js";
import { frameworkFailure } from "./failure.js";
import { coreOf, firstMount, openNodeRequest, WriteGate } from "./framework.js";

/**
 * Koa (2 and 3) middleware that gives the middleware after it this browser's
 * `@persist` state: `new AppState()` downstream is the browser's instance.
 * When the downstream middleware has returned, the state is committed with
 * `ctx.status` (a 5xx, or a thrown error, stores nothing), its cookies are
 * appended, and Koa sends the response once the state is stored. A route that
 * answers on `ctx.res` itself (`ctx.respond = false`) commits at its first
 * write, as on node:http.
 *
 * Mount it where state is used (`router.use("/app", …)` with @koa/router, or
 * `app.use` after what must not wait, like static files): a request under it
 * holds its browser's lock until then. A request that cannot start (the lock
 * stayed held for `lockTimeout`, the store is down) throws an error with
 * `status` 503 into Koa's error handling; one whose state cannot be stored
 * throws the store's error (a 500).
 *
 * @example
 * ```ts
 * import Koa from "koa";
 * import Router from "@koa/router";
 * import { persistState, serveEvents } from "persist-session/koa";
 *
 * const router = new Router();
 * router.get("/events", serveEvents(sessions));
 * router.use("/app", persistState(sessions)); // only the /app routes take the state's lock
 * router.post("/app/inc", (ctx) => {
 *   ctx.body = { count: ++new AppState().count };
 * });
 * export const app = new Koa().use(router.routes());
 * ```
 */
export function persistState<StateT = DefaultState, ContextT = DefaultContext>(sessions: Sessions): Middleware<StateT, ContextT> {
  const core = coreOf(sessions);
  return async (ctx, next) => {
    if (!firstMount(ctx.req)) return next();
    let state: RequestState;
    try {
      state = openNodeRequest(core, ctx.req, ctx.res);
      if (state.ready !== undefined) await state.ready;
    } catch (error) {
      throw frameworkFailure(core, error);
    }
    const gate = new WriteGate(core, state, ctx.res);
    try {
      await runInRequest(state, next);
    } catch (error) {
      state.abort();
      throw error;
    }
    // A route that answered on ctx.res itself (ctx.respond = false) committed at its first write.
    if (gate.written) return;
    let cookies: readonly SetCookie[];
    try {
      cookies = await gate.commitAhead(ctx.status);
    } catch (error) {
      throw frameworkFailure(core, error);
    }
    for (const cookie of cookies) ctx.append("set-cookie", cookie.header);
  };
}

/**
 * A Koa middleware serving the browser's events stream (live sync): it sets
 * `ctx.respond = false` and answers on `ctx.res` itself, so Koa adds nothing.
 * It holds no lock: mount it outside {@link persistState}.
 *
 * @example
 * ```ts
 * router.get("/events", serveEvents(sessions)); // @koa/router
 * // in the page: new EventSource("/events").addEventListener("change", () => location.reload());
 * ```
 */
export function serveEvents<StateT = DefaultState, ContextT = DefaultContext>(sessions: Sessions): Middleware<StateT, ContextT> {
  coreOf(sessions);
  return (ctx) => {
    ctx.respond = false;
    sessions.events(ctx.req, ctx.res);
  };
}
