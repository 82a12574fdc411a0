import type { FastifyPluginCallback, FastifyReply, FastifyRequest, RouteHandlerMethod } from "fastify";
import { runInRequest } from "../context.js";
import type { RequestState } from "../request-state.js";
import type { Sessions } from "../session.js";
import type { SessionCore } from "../session-core.js";
import { frameworkFailure } from "./failure.js";
import { commitAndStore, coreOf, firstMount, openNodeRequest } from "./framework.js";

/**
 * Options of the {@link persistState} plugin.
 *
 * @example
 * ```ts
 * scoped.register(persistState, { sessions } satisfies PersistStateOptions);
 * ```
 */
export interface PersistStateOptions {
  /** What `persistSession()` returned. */
  readonly sessions: Sessions;
}

/** The open request of each Fastify request under the plugin, by its raw request, for the hooks after onRequest. */
const states = new WeakMap<object, RequestState>();

/**
 * The Fastify (5) plugin that gives the routes of the context it is
 * registered in this browser's `@persist` state: `new AppState()` in a
 * handler (and in the hooks that run after its own) is the browser's
 * instance. Register it inside an encapsulated context with the routes that
 * use state: only their requests take the browser's lock, so static files and
 * other routes never wait for them.
 *
 * The lifecycle on Fastify's hooks: `onRequest` opens the request (records
 * locked and loaded) and continues it inside the state's context (its `done`
 * is called within it: an async hook's context would end with its promise),
 * and `preValidation` enters it again once the body is read, as
 * @fastify/request-context does, for a body parser that calls back from a
 * context of its own; `onSend` commits with the reply's
 * status (a 5xx stores nothing), waits until the state is stored and adds the
 * cookies with `reply.header("set-cookie", …)`; `onError` aborts, so a thrown
 * handler stores nothing even when the error handler answers 4xx. Failures go
 * to Fastify's error handler: an error with `statusCode` 503 (its `cause`
 * says why) when the request cannot start, or the store's error (500).
 *
 * Like a `fastify-plugin` plugin, it is not encapsulated itself: its hooks
 * apply to the context that registers it, with no dependency on fastify-plugin.
 *
 * @example
 * ```ts
 * import Fastify from "fastify";
 * import { persistState, serveEvents } from "persist-session/fastify";
 *
 * const app = Fastify();
 * app.get("/events", serveEvents(sessions));
 * app.register(async (scoped) => {
 *   scoped.register(persistState, { sessions }); // only these routes take the state's lock
 *   scoped.post("/app/inc", async () => ({ count: ++new AppState().count }));
 * });
 * ```
 */
export const persistState: FastifyPluginCallback<PersistStateOptions> = Object.assign(
  function persistState(instance: Parameters<FastifyPluginCallback<PersistStateOptions>>[0], options: PersistStateOptions, done: (error?: Error) => void) {
    const core = coreOf(options.sessions);
    instance.addHook("onRequest", (request, reply, next) => open(core, request, reply, next));
    instance.addHook("preValidation", (request, _reply, next) => {
      const state = states.get(request.raw);
      if (state === undefined) next();
      else runInRequest(state, next);
    });
    instance.addHook("onError", (request, _reply, _error, next) => {
      states.get(request.raw)?.abort();
      next();
    });
    instance.addHook("onSend", (request, reply, payload, next) => {
      const state = states.get(request.raw);
      // Not ours, or already committed: the error reply of a failed commit passes through.
      if (state === undefined || state.phase !== "open") return next(null, payload);
      commitAndStore(state, reply.statusCode).then(
        (cookies) => {
          for (const cookie of cookies) reply.header("set-cookie", cookie.header);
          next(null, payload);
        },
        (error: unknown) => next(frameworkFailure(core, error)),
      );
    });
    done();
  },
  {
    [Symbol.for("skip-override")]: true,
    [Symbol.for("fastify.display-name")]: "persist-session",
    [Symbol.for("plugin-meta")]: { name: "persist-session", fastify: "5.x" },
  },
);

function open(core: SessionCore, request: FastifyRequest, reply: FastifyReply, next: (error?: Error) => void): void {
  if (!firstMount(request.raw)) return next(); // registered twice on the way to this route: one request is enough
  let state: RequestState;
  try {
    state = openNodeRequest(core, request.raw, reply.raw);
  } catch (error) {
    return next(frameworkFailure(core, error));
  }
  states.set(request.raw, state);
  if (state.ready === undefined) return runInRequest(state, next);
  state.ready.then(
    () => runInRequest(state, next),
    (error: unknown) => next(frameworkFailure(core, error)),
  );
}

/**
 * A Fastify route handler serving the browser's events stream (live sync):
 * it hijacks the reply and streams on `reply.raw`. It holds no lock: register
 * the route outside {@link persistState}'s context (inside, the route's own
 * request ends storing nothing before the stream starts).
 *
 * @example
 * ```ts
 * app.get("/events", serveEvents(sessions));
 * // in the page: new EventSource("/events").addEventListener("change", () => location.reload());
 * ```
 */
export function serveEvents(sessions: Sessions): RouteHandlerMethod {
  coreOf(sessions);
  return async (request, reply) => {
    states.get(request.raw)?.abort();
    reply.hijack();
    sessions.events(request.raw, reply.raw);
  };
}
