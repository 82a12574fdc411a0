// The state and sessions of the server-framework apps (express, fastify, h3, hono, koa, nest):
// run.mjs copies this file to each one's src/state.ts before installing it, so the apps check
// one and the same class and options. (Each app must install the packed tarball itself, so
// importing it from here would reach the repository's build instead.)
import { FileStore, persist, persistSession } from "persist-session";

@persist("app-state")
export class AppState {
  count = 0;
}

export const sessions = persistSession({
  secret: process.env.SESSION_SECRET,
  store: new FileStore({ dir: process.env.PERSIST_DIR }),
  lockTimeout: Number(process.env.LOCK_TIMEOUT ?? 10_000),
});

/** For the check that other routes do not wait: GET /app/hold waits here until POST /release. */
let release: (() => void) | undefined;
export const hold = () => new Promise<void>((resolve) => (release = resolve));
export const holding = () => (release === undefined ? "no" : "yes");
export function releaseHold(): void {
  release?.();
  release = undefined;
}
