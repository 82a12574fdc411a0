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
