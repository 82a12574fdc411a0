import net from "node:net";
import type { Browser } from "./http.js";
import { delay, eventually } from "./robustness.js";

/** What the outage suites (test/redis-outage.test.ts, test/postgres-outage.test.ts) record of each request. */
export interface Outcome {
  readonly status: number | "hung";
  readonly ms: number;
  readonly count: number | undefined;
}

/** POSTs `path`; "hung" when no answer came within `limitMs`. */
export async function timedPost(browser: Browser, path: string, limitMs: number): Promise<Outcome> {
  const started = Date.now();
  try {
    const response = await browser.request(path, { method: "POST", signal: AbortSignal.timeout(limitMs) });
    const body = response.ok ? ((await response.json()) as { count: number }) : (await response.text(), undefined);
    return { status: response.status, ms: Date.now() - started, count: body?.count };
  } catch {
    return { status: "hung", ms: Date.now() - started, count: undefined };
  }
}

/** A loopback port nothing listens on right now, for a server of the suite's own. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** What {@link requestsThroughOutage} saw: every request, when it ended, and when the backend was back. */
export interface OutageRun {
  readonly outcomes: Array<Outcome & { readonly at: number }>;
  /** Milliseconds from the start to the backend's restart. */
  readonly restartedAt: number;
  /** Milliseconds from the start to the backend's stop. */
  readonly stoppedAt: number;
}

/**
 * Three overlapping streams of POST `path` with one browser's cookie (so the in-process queue
 * sees the outage too), while the backend is stopped for `downMs` and started again; ends once
 * `recovered` requests succeeded after the restart.
 */
export async function requestsThroughOutage(
  post: (path: string) => Promise<Outcome>,
  backend: { stop(): Promise<void>; start(): Promise<void> },
  { path = "/inc", downMs = 2000, recovered = 5, recoveryMs = 15_000 } = {},
): Promise<OutageRun> {
  const outcomes: Array<Outcome & { at: number }> = [];
  const started = Date.now();
  let running = true;
  const streams = Array.from({ length: 3 }, async () => {
    while (running) {
      outcomes.push({ ...(await post(path)), at: Date.now() - started });
      await delay(20);
    }
  });
  let stoppedAt = 0;
  let restartedAt = 0;
  try {
    try {
      await delay(300);
      stoppedAt = Date.now() - started;
      await backend.stop();
      await delay(downMs);
    } finally {
      await backend.start();
      restartedAt = Date.now() - started;
    }
    // Back without restarting the app: requests succeed again.
    await eventually(() => outcomes.filter((outcome) => outcome.at > restartedAt && outcome.status === 200).length >= recovered, "requests to succeed again", recoveryMs);
  } finally {
    running = false;
    await Promise.all(streams);
  }
  return { outcomes, restartedAt, stoppedAt };
}
