import type { Context, Env, MiddlewareHandler } from "hono";
import { HTTPException } from "hono/http-exception";
import { runInRequest } from "../context.js";
import type { RequestState } from "../request-state.js";
import type { Sessions } from "../session.js";
import { commitAndStore, coreOf, firstMount } from "./framework.js";
import { openFetchRequest, withSetCookies } from "./fetch.js";
import { frameworkFailure, ServiceUnavailableError } from "./failure.js";

/**
 * Hono middleware that gives the routes after it this browser's `@persist`
 * state: `new AppState()` in a handler is the browser's instance. The
 * response the handlers produce is the commit point: its cookies are added
 * and it goes out once the state is stored. A handler that throws (Hono's
 * `onError` answers it) or a 5xx response stores nothing.
 *
 * Mount it on the routes that use state (`app.use("/app/*", …)`): a request
 * under it holds the lock of its browser's records until its response, so
 * static files and other routes should not wait for it. When the request
 * cannot start (the lock stayed held for `lockTimeout`, the store is down) or
 * its state cannot be stored, the failure goes to Hono's error handling: an
 * `HTTPException` with status 503 (its `cause` says why), or the error itself
 * (a 500); nothing is answered past `onError`.
 *
 * Works on @hono/node-server and on any Fetch runtime (`app.fetch`): the
 * Request's `signal` says when the client left.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import { persistState, serveEvents } from "persist-session/hono";
 *
 * const app = new Hono();
 * app.use("/app/*", persistState(sessions));
 * app.get("/events", serveEvents(sessions));
 * app.post("/app/inc", (c) => {
 *   const state = new AppState();
 *   state.count += 1;
 *   return c.json({ count: state.count });
 * });
 * ```
 */
export function persistState<E extends Env = Env>(sessions: Sessions): MiddlewareHandler<E> {
  const core = coreOf(sessions);
  return async (c, next) => {
    if (!firstMount(c.req.raw)) return next();
    let state: RequestState;
    try {
      state = openFetchRequest(core, c.req.raw);
      if (state.ready !== undefined) await state.ready;
    } catch (error) {
      throw toHonoError(frameworkFailure(core, error));
    }
    try {
      await runInRequest(state, next);
    } catch (error) {
      state.abort(); // an error Hono had no handler for
      throw error;
    }
    // Hono caught a handler's error, and onError answered it: a failed request stores nothing.
    if (c.error !== undefined) {
      state.abort();
      return;
    }
    let cookies;
    try {
      cookies = await commitAndStore(state, c.res.status);
    } catch (error) {
      // onError replaces the handler's Response: cancel its body, or a streaming one would run on unread.
      c.res.body?.cancel().catch(() => undefined);
      throw toHonoError(frameworkFailure(core, error));
    }
    addCookies(c, cookies);
  };
}

/**
 * A Hono handler serving the browser's events stream (live sync): `event: change`
 * each time one of its records is stored. It holds no lock: mount it outside
 * {@link persistState}'s routes.
 *
 * @example
 * ```ts
 * app.get("/events", serveEvents(sessions));
 * // in the page: new EventSource("/events").addEventListener("change", () => location.reload());
 * ```
 */
export function serveEvents<E extends Env = Env>(sessions: Sessions): (c: Context<E, string>) => Promise<Response> {
  coreOf(sessions);
  return (c) => sessions.fetchEvents(c.req.raw);
}

/** A 503 as Hono's own `HTTPException` (with Retry-After), so `onError` and its default answer see it; anything else as it is. */
function toHonoError(error: unknown): unknown {
  if (!(error instanceof ServiceUnavailableError)) return error;
  const res = new Response(`${error.message}\n`, { status: 503, headers: { "content-type": "text/plain; charset=utf-8", ...error.headers } });
  return new HTTPException(503, { message: error.message, res, cause: error.cause });
}

function addCookies(c: Context, cookies: Parameters<typeof withSetCookies>[1]): void {
  if (cookies.length === 0) return;
  const response = withSetCookies(c.res, cookies);
  if (response === c.res) return;
  // A copy (the handler returned a Response with immutable headers): unset first, or Hono's setter would merge the old headers over it.
  c.res = undefined;
  c.res = response;
}
