import { AsyncLocalStorage } from "node:async_hooks";
import type { RequestSession } from "./request-session.js";

const storage = new AsyncLocalStorage<RequestSession>();

/** Runs `fn(...args)` with `session` as the current request's state. */
export function runInRequest<T, A extends unknown[]>(session: RequestSession, fn: (...args: A) => T, ...args: A): T {
  return storage.run(session, fn, ...args);
}

/** The current request's state, or `undefined` outside a request running under `sessions`. */
export function tryGetRequestSession(): RequestSession | undefined {
  return storage.getStore();
}

/** The current request's state; throws with the fix when there is none. */
export function getRequestSession(what: string): RequestSession {
  const session = storage.getStore();
  if (session === undefined) {
    throw new Error(
      `persist-session: ${what} was used outside a request handled by persistSession(). ` +
        "Run the handler under the middleware (`app.use(sessions)`, `sessions(req, res, next)` or `sessions.fetch(handler)`).",
    );
  }
  return session;
}
