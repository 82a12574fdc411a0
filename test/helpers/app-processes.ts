import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { expect } from "vitest";
import { startChildServer, type ChildServer } from "./child-server.js";

/**
 * App processes over one shared store (Redis, PostgreSQL), for the tests that
 * check the promise across processes: children run a fixture on the built
 * package, as a deployed app would.
 */

const SRC = fileURLToPath(new URL("../../src", import.meta.url));

/** One child app process; it prints {"port":N} once listening. */
export type AppProcess = ChildServer;

/** The app processes a test file started, so its afterEach can stop what a failed test left. */
export class AppProcesses {
  readonly running = new Set<AppProcess>();

  constructor(
    private readonly fixture: string,
    private readonly env: Record<string, string>,
  ) {}

  async start(env: Record<string, string> = {}): Promise<AppProcess> {
    const app = await startChildServer(this.fixture, [], { ...this.env, ...env }, /"port":(\d+)/);
    this.running.add(app);
    return app;
  }

  async stop(app: AppProcess, signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    // A stopped process ignores SIGTERM until continued; SIGKILL ends it either way.
    app.child.kill(signal);
    await app.exited;
    this.running.delete(app);
  }

  async stopAll(): Promise<void> {
    for (const app of [...this.running]) await this.stop(app);
  }
}

export interface Reply {
  readonly status: number;
  readonly count: number | undefined;
  readonly ms: number;
}

/** POSTs `path` with `cookie`; the count the app answered, and how long it took. */
export async function call(app: AppProcess, path: string, cookie: string): Promise<Reply> {
  const started = Date.now();
  const response = await fetch(app.url + path, { method: "POST", headers: { cookie }, signal: AbortSignal.timeout(20_000) });
  const text = await response.text();
  const count = response.ok ? (JSON.parse(text) as { count: number }).count : undefined;
  return { status: response.status, count, ms: Date.now() - started };
}

/** A fresh browser: its cookie, minted by a first request. */
export async function newBrowser(app: AppProcess): Promise<{ cookie: string; id: string }> {
  const response = await fetch(`${app.url}/start`, { method: "POST" });
  expect(response.status).toBe(200);
  const cookie = response.headers.getSetCookie()[0]!.split(";")[0]!;
  const id = /=([0-9a-f-]{36})\./.exec(cookie)![1]!;
  return { cookie, id };
}

/** `total` increments of one browser, `inFlight` at a time, alternating between `apps`; also the most in flight at once. */
export async function stream(apps: AppProcess[], cookie: string, total: number, inFlight: number): Promise<{ replies: Reply[]; maxInFlight: number }> {
  const replies: Reply[] = [];
  let next = 0;
  let current = 0;
  let maxInFlight = 0;
  const worker = async () => {
    while (next < total) {
      const i = next++;
      current++;
      maxInFlight = Math.max(maxInFlight, current);
      try {
        replies.push(await call(apps[i % apps.length]!, "/inc-slow?ms=3", cookie));
      } finally {
        current--;
      }
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  return { replies, maxInFlight };
}

/** Throws unless `built` (a dist/ entry) exists and is newer than every source file: the children run dist/. */
export function assertBuilt(built: string): void {
  const path = fileURLToPath(new URL(`../../${built}`, import.meta.url));
  if (!existsSync(path)) throw new Error(`${built} is missing: run \`npm run build\` (npm test does) before this suite.`);
  const builtAt = statSync(path).mtimeMs;
  const newest = readdirSync(SRC, { recursive: true, encoding: "utf8" })
    .filter((name) => name.endsWith(".ts"))
    .reduce((latest, name) => Math.max(latest, statSync(join(SRC, name)).mtimeMs), 0);
  if (newest > builtAt) throw new Error("dist/ is older than src/: run `npm run build` before this suite, so the child processes run the current code.");
}
