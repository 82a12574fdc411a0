import type { EventHandler, EventHandlerRequest, H3Event } from "h3";
import { runInRequest } from "../context.js";
import type { RequestState } from "../request-state.js";
import type { Sessions } from "../session.js";
import { frameworkFailure, ServiceUnavailableError } from "./failure.js";
import { coreOf, firstMount, openNodeRequest, WriteGate } from "./framework.js";

/**
 * Runs an h3 (1.x, as Nuxt 3 and Nitro use it) event handler — a route, a
 * router's `handler`, a sub-app's `handler` — with this browser's `@persist`
 * state: `new AppState()` inside it is the browser's instance.
 *
 * A wrapper, not a middleware: h3 awaits each middleware and then runs the
 * next one outside it, so a context a middleware opens is gone by the time
 * the route runs (why `fromNodeMiddleware(sessions)` cannot work). Mount the
 * wrapped handler where state is used (`app.use("/app", persistState(sessions, router.handler))`):
 * only its requests take the browser's lock.
 *
 * The commit point is the handler's return, with the response's status (a
 * handler that throws, or a 5xx, stores nothing): the cookies are added and
 * h3 sends the value once the state is stored. A handler that sends the
 * response itself (`sendRedirect`, `sendStream`) commits at its first write,
 * as on node:http. A request that cannot start (the lock stayed held for
 * `lockTimeout`, the store is down) or whose state cannot be stored throws
 * into h3's error handling: an error with `statusCode` 503 (its `cause` says
 * why), or the store's error (500).
 *
 * @example
 * ```ts
 * import { createApp, createRouter, eventHandler } from "h3";
 * import { persistState, serveEvents } from "persist-session/h3";
 *
 * const router = createRouter().post("/inc", eventHandler(() => ({ count: ++new AppState().count })));
 * const app = createApp()
 *   .use("/events", serveEvents(sessions))
 *   .use("/app", persistState(sessions, router.handler));
 * ```
 */
export function persistState<Request extends EventHandlerRequest, Response>(
  sessions: Sessions,
  handler: EventHandler<Request, Response>,
): EventHandler<Request, Promise<Awaited<Response>>> {
  const core = coreOf(sessions);
  const wrapped = async (event: H3Event<Request>): Promise<Awaited<Response>> => {
    const { req, res } = event.node;
    if (!firstMount(req)) return await handler(event);
    let state: RequestState;
    try {
      state = openNodeRequest(core, req, res);
      if (state.ready !== undefined) await state.ready;
    } catch (error) {
      throw toH3Error(frameworkFailure(core, error));
    }
    const gate = new WriteGate(core, state, res);
    let value: Awaited<Response>;
    try {
      value = await runInRequest(state, handler, event);
    } catch (error) {
      state.abort(); // h3 answers it, even with a 4xx: a failed handler stores nothing
      throw error;
    }
    // A handler that sent the response itself (sendRedirect, sendStream) committed at its first write.
    if (gate.written) return value;
    let cookies;
    try {
      cookies = await gate.commitAhead(res.statusCode);
    } catch (error) {
      throw toH3Error(frameworkFailure(core, error));
    }
    for (const cookie of cookies) res.appendHeader("set-cookie", cookie.header);
    return value;
  };
  // What eventHandler() would set, without loading h3 here; a router's resolver stays reachable through the wrapper.
  return Object.assign(wrapped, { __is_handler__: true as const, __resolve__: handler.__resolve__, __websocket__: handler.__websocket__ });
}

/**
 * A 503 that h3 treats as its own error (an `H3Error`, by its marker): answered
 * with its status, and not logged again as "[h3] [unhandled]" (it was logged).
 */
class H3ServiceUnavailableError extends ServiceUnavailableError {
  static readonly __h3_error__ = true;
  readonly statusMessage = "Service Unavailable";
  readonly fatal = false;
  readonly unhandled = false;
}

function toH3Error(error: Error): Error {
  return error instanceof ServiceUnavailableError ? new H3ServiceUnavailableError(error.cause) : error;
}

/**
 * An h3 event handler serving the browser's events stream (live sync): it
 * answers on `event.node.res` itself and marks the event handled. It holds no
 * lock: mount it outside {@link persistState}.
 *
 * @example
 * ```ts
 * app.use("/events", serveEvents(sessions));
 * // in the page: new EventSource("/events").addEventListener("change", () => location.reload());
 * ```
 */
export function serveEvents(sessions: Sessions): EventHandler<EventHandlerRequest, void> {
  coreOf(sessions);
  const handler = (event: H3Event) => {
    event._handled = true; // as h3's own send() does: nothing more is to be sent for it
    sessions.events(event.node.req, event.node.res);
  };
  return Object.assign(handler, { __is_handler__: true as const });
}
