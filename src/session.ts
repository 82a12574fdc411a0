import type { IncomingMessage, ServerResponse } from "node:http";
import { serveFetchEvents, serveNodeEvents } from "./adapters/events.js";
import { wrapFetchHandler, type FetchHandler } from "./adapters/fetch.js";
import { handleNodeRequest, type NextFunction } from "./adapters/node.js";
import { getRequestState, runInRequest } from "./context.js";
import type { CommitResult, RequestPhase, RequestState, StateInfo } from "./request-state.js";
import { SessionCore, type OpenInit, type PersistSessionOptions, type UserRecord } from "./session-core.js";
import { shareEngine, storeLocation } from "./shared-engine.js";
import { FileStore } from "./stores/file.js";

/**
 * The engine behind a `Sessions`, for the package's own tests, tools and
 * adapters; not part of the API. `Symbol.for`: a `Sessions` shared by another
 * copy of this package (see shared-engine.ts) carries it under the same key.
 */
export const kCore = Symbol.for("persist-session.core.v1");

/** What {@link Sessions.open} needs to know of a request. */
export interface OpenRequestInit extends OpenInit {
  /** Aborts when the client goes away (a Fetch `Request`'s `signal`); see {@link StateRequest.disconnected}. */
  readonly signal?: AbortSignal;
}

/**
 * One request's state, in the lifecycle every adapter translates its
 * framework into: run the handler in it, then exactly one of `commit` or `abort`.
 */
export interface StateRequest {
  /** Where the request is: `"open"` while the handler may change state, then `"committed"`, `"aborted"` or `"abandoned"`. */
  readonly phase: RequestPhase;
  /** Runs `fn` in the request's context: `new State()` inside it (and in what it awaits) is this request's state. */
  run<T>(fn: () => T): T;
  /**
   * The commit point: every change is snapshotted and its write queued, and
   * the locks pass on. Set the returned cookies on the response, then send it
   * once `stored` resolves (a rejection means the state was not stored:
   * answer 500, or 503 for a `StoreUnavailableError`). A `status` of 500 or
   * more aborts instead. Idempotent.
   */
  commit(options?: { status?: number }): CommitResult;
  /** Ends the request storing nothing of it (a failed handler); releases its locks. */
  abort(): void;
  /** The client went away: the handler runs on, but is abandoned if it does not commit within `lockTimeout`. */
  disconnected(): void;
}

/** What `persistSession()` returns: Connect/Express middleware with a Fetch wrapper and lifecycle methods. */
export interface Sessions {
  /** Connect/Express middleware; for node:http call it as `sessions(req, res, () => handler(req, res))`. */
  (req: IncomingMessage, res: ServerResponse, next?: NextFunction): void;
  /**
   * Opens a request for a framework adapter: its cookies verified, its records
   * locked and loaded. Rejects (500, or 503 when a lock or the store is
   * unavailable) when it cannot start; nothing is locked then.
   * @example
   * ```ts
   * const request = await sessions.open({ cookieHeader: req.headers.get("cookie") ?? undefined, https, request: req });
   * let response;
   * try { response = await request.run(() => handler(req)); } catch (error) { request.abort(); throw error; }
   * const { cookies, stored } = request.commit({ status: response.status });
   * for (const cookie of cookies) response.headers.append("set-cookie", cookie.header);
   * await stored;
   * ```
   */
  open(init: OpenRequestInit): Promise<StateRequest>;
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
  /**
   * Every user-scoped record of `userId`: key, version, an instance of the
   * class with the stored state (migrated and validated, as the user's
   * requests see it), and its times. Works outside a request (an admin script).
   * @example
   * ```ts
   * app.get("/me/export", async (req, res) => res.json(await sessions.exportUser(req.user.id)));
   * ```
   */
  exportUser(userId: string): Promise<UserRecord[]>;
  /**
   * Deletes every user-scoped record of `userId` from the store; the user's
   * open events streams get a change. Resolves with how many were deleted.
   */
  deleteUser(userId: string): Promise<number>;
  /** Deletes expired records and orphaned temporary files now; resolves with how many it removed. Runs on a timer too. */
  sweep(): Promise<number>;
  /**
   * Starts the store now rather than at the first request that uses state, and rejects with what
   * stops it. A FileStore creates, checks and claims its directory at its first use (never when
   * it is constructed, so `next build` leaves nothing behind); without `ready()` a directory that
   * is not this user's, or that another process holds, fails each request with a 500 and is
   * logged once. Optional: call it in a start-up script that should exit instead.
   * @example
   * ```ts
   * const sessions = persistSession({ secret: process.env.SESSION_SECRET });
   * await sessions.ready(); // throws "persist-session: the store directory … is in use by another process (pid 4242, …)"
   * app.use(sessions);
   * ```
   */
  ready(): Promise<void>;
  /**
   * Waits for every pending write, stops the sweep timer and closes the store.
   * Several `persistSession()` calls on one FileStore directory share one
   * engine (see {@link persistSession}): it closes with the last of them.
   */
  close(): Promise<void>;
  /** Events streams following changes now: each holds a connection; for monitoring. */
  readonly openStreams: number;
}

/**
 * Creates the request layer that gives each browser its `@persist` instances.
 *
 * One engine serves a FileStore directory per process: a second call on the
 * same directory (another module graph of the app, as Next.js builds them,
 * loads the module that made the first) is served by the first call's engine,
 * so both see the same locks and records. Its options must be the same, or it
 * throws; `close()` closes the engine with the last call's.
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
  // Not an object: SessionCore says so.
  if (typeof options !== "object" || options === null) return createSessions(options);
  const store = options.store ?? new FileStore();
  const location = storeLocation(store);
  if (location === undefined) return createSessions({ ...options, store });
  const { engine, release } = shareEngine(location, options, () => createSessions({ ...options, store }));
  return handleOf(engine, release);
}

function createSessions(options: PersistSessionOptions): Sessions {
  const core = new SessionCore(options);
  const sessions = (req: IncomingMessage, res: ServerResponse, next?: NextFunction) => handleNodeRequest(core, req, res, next);
  const api = Object.assign(sessions, {
    fetch: <A extends unknown[]>(handler: FetchHandler<A>) => wrapFetchHandler(core, handler),
    open: (init: OpenRequestInit) => openRequest(core, init),
    events: (req: IncomingMessage, res: ServerResponse) => serveNodeEvents(core, req, res),
    fetchEvents: (request: Request) => serveFetchEvents(core, request),
    sweep: () => core.sweep(),
    ready: () => core.ready(),
    exportUser: (userId: string) => core.exportUser(userId),
    deleteUser: (userId: string) => core.deleteUser(userId),
    close: () => core.close(),
  });
  Object.defineProperty(api, kCore, { value: core });
  return Object.defineProperty(api, "openStreams", { get: () => core.feed.subscriptionCount, enumerable: true }) as Sessions;
}

/**
 * One `persistSession()` call's view of a shared engine: every method is the
 * engine's own (built by the copy of this package that created it), and
 * `close()` gives this call back, closing the engine when it was the last.
 */
function handleOf(engine: Sessions, release: () => boolean): Sessions {
  let closing: Promise<void> | undefined;
  const handle = Object.assign((req: IncomingMessage, res: ServerResponse, next?: NextFunction) => engine(req, res, next), {
    fetch: <A extends unknown[]>(handler: FetchHandler<A>) => engine.fetch(handler),
    open: (init: OpenRequestInit) => engine.open(init),
    events: (req: IncomingMessage, res: ServerResponse) => engine.events(req, res),
    fetchEvents: (request: Request) => engine.fetchEvents(request),
    sweep: () => engine.sweep(),
    ready: () => engine.ready(),
    exportUser: (userId: string) => engine.exportUser(userId),
    deleteUser: (userId: string) => engine.deleteUser(userId),
    close: () => (closing ??= release() ? engine.close() : Promise.resolve()),
  });
  Object.defineProperty(handle, kCore, { value: (engine as unknown as Record<symbol, unknown>)[kCore] });
  return Object.defineProperty(handle, "openStreams", { get: () => engine.openStreams, enumerable: true }) as Sessions;
}

async function openRequest(core: SessionCore, init: OpenRequestInit): Promise<StateRequest> {
  const state = core.open(init);
  init.signal?.addEventListener("abort", () => state.disconnected(), { once: true });
  if (init.signal?.aborted === true) state.disconnected();
  await state.ready;
  return {
    get phase() {
      return state.phase;
    },
    run: (fn) => runInRequest(state, fn),
    commit: (options) => state.commit(options?.status),
    abort: () => state.abort(),
    disconnected: () => state.disconnected(),
  };
}

/**
 * The current request's state, for the functions below. A cast, not
 * `instanceof`: a second copy of this package in the process (another module
 * graph) opened it with its own class, and the context is shared on purpose.
 */
function currentRequest(what: string): RequestState {
  return getRequestState(what) as RequestState;
}

/**
 * The reset button: resets `state` to its constructor's defaults, and at the
 * commit point deletes its stored record and expires its cookie (a request
 * that fails deletes nothing). A change after it starts a new record under a new id.
 *
 * @example
 * ```ts
 * const state = new AppState();
 * await clearCookieState(state);
 * ```
 */
export async function clearCookieState(state: object): Promise<void> {
  currentRequest("clearCookieState()").clear(state);
}

/**
 * Gives every browser-scoped record of this request a new id, with its data,
 * and a new cookie; the old records are deleted once the response is out.
 * Call it at sign-in and at sign-out, so a cookie planted before (session
 * fixation) or kept after opens nothing. User-scoped records are keyed by the
 * user, not by a cookie, and are not rotated.
 *
 * @example
 * ```ts
 * app.post("/login", async (req, res) => {
 *   const user = await authenticate(req);
 *   rotateStateIds();
 *   res.cookie("uid", signUser(user.id)).redirect("/");
 * });
 * ```
 */
export function rotateStateIds(): void {
  currentRequest("rotateStateIds()").rotate();
}

/**
 * Stores this request's changes now, whatever the response will be: for a
 * handler that must keep a change although it answers with a 5xx (which
 * otherwise stores nothing). Later changes in the request throw. Resolves
 * once the changes are stored.
 *
 * @example
 * ```ts
 * cart.items.push(item);
 * await commitState();           // kept even though the response below is a 503
 * return new Response("payment service down", { status: 503 });
 * ```
 */
export async function commitState(): Promise<void> {
  await currentRequest("commitState()").commit().stored;
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
  return currentRequest("inspectState()").inspect(state);
}
