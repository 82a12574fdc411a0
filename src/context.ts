import { AsyncLocalStorage } from "node:async_hooks";
import type { Registration } from "./registry.js";

/**
 * What the decorator and the request-level functions need of the current
 * request. The request's state implements it; keeping the interface here lets
 * the decorator depend on this module alone.
 */
export interface StateContext {
  /** This request's instance of the class, if it exists already (throws when the request is over). */
  instanceOf(registration: Registration): object | undefined;
  /** Makes `fresh` (just constructed) this request's instance, filled from the stored record if any. */
  adopt(registration: Registration, fresh: object): object;
}

const kContext = Symbol.for("persist-session.context.v1");
/**
 * One AsyncLocalStorage per process, on `globalThis`, like the registry: a
 * second copy of this module (another module graph of the same app) must find
 * the request the first copy opened.
 */
const storage: AsyncLocalStorage<StateContext | undefined> =
  ((globalThis as Record<symbol, unknown>)[kContext] as AsyncLocalStorage<StateContext | undefined> | undefined) ??
  ((globalThis as Record<symbol, unknown>)[kContext] = new AsyncLocalStorage<StateContext | undefined>()) as AsyncLocalStorage<StateContext | undefined>;

/**
 * Requests whose middleware called `next()` and saw it return (or settle)
 * before the response was sent. While there are some, a use of state outside
 * any context most likely ran in such a request after the framework left its
 * context (h3's `fromNodeMiddleware`, an async Fastify hook), and the error says so.
 */
let requestsPastNext = 0;

/** Counts a request whose `next()` returned before its commit point; call the returned function at its end. */
export function notePastNext(): () => void {
  requestsPastNext++;
  let counted = true;
  return () => {
    if (!counted) return;
    counted = false;
    requestsPastNext--;
  };
}

/** Runs `fn(...args)` with `context` as the current request's state. */
export function runInRequest<T, A extends unknown[]>(context: StateContext, fn: (...args: A) => T, ...args: A): T {
  return storage.run(context, fn, ...args);
}

/**
 * Runs `fn(...args)` outside any request: what it starts (a store client's timers, connections and
 * callbacks) does not carry the current request with it. Every async resource keeps the context
 * it was made in for as long as it lives, and a store's outlive requests: node-redis (v5, v6)
 * times each command with `AbortSignal.timeout`, whose timer stays for the command timeout (5 s)
 * after the answer, so each command sent from a request kept that request (its IncomingMessage,
 * its state: 2.3 KB) alive 5 s, and the garbage collector walked all of them. The library calls
 * its store through this.
 */
export function outsideRequest<T, A extends unknown[]>(fn: (...args: A) => T, ...args: A): T {
  return storage.run(undefined, fn, ...args);
}

/** The current request's state, or `undefined` outside a request running under `sessions`. */
export function tryGetRequestState(): StateContext | undefined {
  return storage.getStore();
}

/** The current request's state; throws with the fix when there is none. */
export function getRequestState(what: string): StateContext {
  const context = storage.getStore();
  if (context !== undefined) return context;
  if (requestsPastNext > 0) {
    throw new Error(
      `persist-session: ${what} ran after the middleware's next() returned, outside its request. ` +
        "The framework continued the request after the middleware finished (h3's fromNodeMiddleware, an async Fastify hook do): " +
        "mount the framework's adapter instead (persist-session/h3, persist-session/fastify, persist-session/koa, persist-session/hono).",
    );
  }
  throw new Error(
    `persist-session: ${what} was used outside a request handled by persistSession(). ` +
      "Run the handler under the middleware (`app.use(sessions)`, `sessions(req, res, next)` or `sessions.fetch(handler)`, or a framework adapter).",
  );
}
