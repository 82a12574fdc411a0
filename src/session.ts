import type { IncomingMessage, ServerResponse } from "node:http";
import { serveFetchEvents, serveNodeEvents } from "./adapters/events.js";
import { wrapFetchHandler, type FetchHandler } from "./adapters/fetch.js";
import { handleNodeRequest, type NextFunction } from "./adapters/node.js";
import { getRequestSession } from "./context.js";
import type { StateInfo } from "./request-session.js";
import { SessionCore, type PersistSessionOptions } from "./session-core.js";

/** What `persistSession()` returns: Connect/Express middleware with a Fetch wrapper and lifecycle methods. */
export interface Sessions {
  /** Connect/Express middleware; for node:http call it as `sessions(req, res, () => handler(req, res))`. */
  (req: IncomingMessage, res: ServerResponse, next?: NextFunction): void;
  /** Wraps a Fetch API handler (Hono, Next.js route handlers, Bun, Deno). */
  fetch<A extends unknown[]>(handler: FetchHandler<A>): (request: Request, ...rest: A) => Promise<Response>;
  /**
   * A server-sent events endpoint for node:http / Express: streams
   * `event: change` with `{"key","version"}` whenever a record of this browser
   * (or of its signed-in user) is stored, from any process the store connects.
   * Holds no lock; reconnecting browsers get what they missed (`Last-Event-ID`).
   * @example
   * ```ts
   * app.get("/events", sessions.events);
   * // in the page: new EventSource("/events").addEventListener("change", () => location.reload());
   * ```
   */
  events(req: IncomingMessage, res: ServerResponse): void;
  /** {@link Sessions.events} as a Fetch API handler. */
  fetchEvents(request: Request): Promise<Response>;
  /** Deletes expired records and orphaned temporary files now; resolves with how many it removed. Runs on a timer too. */
  sweep(): Promise<number>;
  /** Waits for every pending write, stops the sweep timer and closes the store. */
  close(): Promise<void>;
  /** Events streams following changes now: each holds a connection; for monitoring. */
  readonly openStreams: number;
}

/**
 * Creates the request layer that gives each browser its `@persist` instances.
 *
 * @example
 * ```ts
 * const sessions = persistSession({ secret: process.env.SESSION_SECRET });
 * app.use(sessions);                                    // Express / Connect
 * http.createServer((req, res) => sessions(req, res, () => handler(req, res)));
 * export default { fetch: sessions.fetch(handler) };    // Fetch API
 * ```
 */
export function persistSession(options: PersistSessionOptions = {}): Sessions {
  const core = new SessionCore(options);
  const sessions = (req: IncomingMessage, res: ServerResponse, next?: NextFunction) => handleNodeRequest(core, req, res, next);
  const api = Object.assign(sessions, {
    fetch: <A extends unknown[]>(handler: FetchHandler<A>) => wrapFetchHandler(core, handler),
    events: (req: IncomingMessage, res: ServerResponse) => serveNodeEvents(core, req, res),
    fetchEvents: (request: Request) => serveFetchEvents(core, request),
    sweep: () => core.sweep(),
    close: () => core.close(),
  });
  return Object.defineProperty(api, "openStreams", { get: () => core.feed.subscriptionCount, enumerable: true }) as Sessions;
}

/**
 * The reset button: deletes the stored record of `state`, expires its cookie on
 * this response and resets `state` to its constructor's defaults. The next
 * change starts a new record under a new id.
 *
 * @example
 * ```ts
 * const state = new AppState();
 * await clearCookieState(state);
 * ```
 */
export async function clearCookieState(state: object): Promise<void> {
  await getRequestSession("clearCookieState()").clear(state);
}

/**
 * What is stored for `state`: its record id, version, size, times and where it
 * lives. For status panels and debugging; it never exposes the cookie's signature.
 *
 * @example
 * ```ts
 * const { id, bytes, updatedAt } = inspectState(new AppState());
 * ```
 */
export function inspectState(state: object): StateInfo {
  return getRequestSession("inspectState()").inspect(state);
}
