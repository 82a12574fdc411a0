import net from "node:net";
import type { Browser } from "./http.js";

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
