/**
 * Nothing lost when requests of one browser overlap (express-session #606,
 * connect-redis #75, Remix #4353 all lose updates here), and no waiting when
 * requests belong to different browsers.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { persistSession } from "../src/index.js";
import * as standard from "./fixtures/standard.js";
import { Browser, fromFetch, listen, type TestServer } from "./helpers/http.js";
import { delay } from "./helpers/robustness.js";
import { storeKinds, type StoreBacking } from "./helpers/stores.js";
import { SECRET, startApp, type AdapterName, type RunningApp } from "./suites/behaviour.js";

const quietLogger = { warn: () => undefined, error: () => undefined };

/** Milliseconds `run` takes. */
async function timed(run: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  await run();
  return performance.now() - started;
}

async function counts(responses: Response[]): Promise<number[]> {
  for (const response of responses) expect(response.status).toBe(200);
  return Promise.all(responses.map(async (response) => ((await response.json()) as { count: number }).count));
}

/** A browser with a stored record (count 0), so every later request has a cookie to lock on. */
async function browserWithRecord(app: RunningApp): Promise<Browser> {
  const browser = app.browser();
  await browser.json("/todo?text=init", { method: "POST" });
  expect(browser.cookies.size).toBe(1);
  return browser;
}

for (const kind of storeKinds) {
  for (const adapter of ["node:http", "fetch"] as const satisfies readonly AdapterName[]) {
    describe(`concurrency · ${kind.name} · ${adapter}`, () => {
      let backing: StoreBacking;
      let app: RunningApp;

      beforeEach(async () => {
        backing = await kind.create();
        app = await startApp(standard, adapter, backing.open());
      });
      afterEach(async () => {
        await app.close();
        await backing.cleanup();
      });

      // Requests sent before the browser has a cookie cannot be serialized (no record names them yet): each starts its own (#17, point 9).
      it("starts a record of its own for each of 10 parallel first requests without a cookie, each with its own change", async () => {
        const browsers = Array.from({ length: 10 }, () => app.browser());
        const replies = await Promise.all(browsers.map((browser) => browser.json<{ count: number }>("/inc", { method: "POST" })));
        expect(replies.map((reply) => reply.count)).toEqual(browsers.map(() => 1));
        const cookies = browsers.map((browser) => browser.cookies.get("std-app"));
        expect(new Set(cookies).size, "distinct cookies").toBe(10);
        expect((await backing.ids()).sort()).toEqual(cookies.map((cookie) => cookie!.slice(0, 36)).sort());
        for (const browser of browsers) expect((await browser.json<{ count: number }>("/state")).count).toBe(1);
      });

      it("loses no update when 50 requests of one browser read, await and write the same count", async () => {
        const browser = await browserWithRecord(app);
        const responses = await Promise.all(Array.from({ length: 50 }, () => browser.request("/inc-slow?ms=5", { method: "POST" })));
        // Each request saw the one before it: the counts it answered are exactly 1…50.
        expect((await counts(responses)).sort((a, b) => a - b)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
        expect(await browser.json("/state")).toMatchObject({ count: 50, todos: ["init"] });

        // Stored, not only held in memory: a restarted server on the same storage agrees.
        await app.close();
        app = await startApp(standard, adapter, backing.open());
        const restarted = new Browser(app.server.url);
        for (const [name, value] of browser.cookies) restarted.cookies.set(name, value);
        expect(await restarted.json("/state")).toMatchObject({ count: 50 });
        expect(await backing.ids()).toHaveLength(1);
      });

      it("does not make requests of different browsers wait on each other, while one browser's requests queue", async () => {
        const browsers = await Promise.all(Array.from({ length: 50 }, () => browserWithRecord(app)));
        const [first] = browsers as [Browser, ...Browser[]];
        const slow = (browser: Browser) => browser.request("/inc-slow?ms=100", { method: "POST" });

        // One request alone: the handler's 100 ms plus the overhead of the moment.
        const singles: number[] = [];
        for (let i = 0; i < 3; i++) singles.push(await timed(async () => expect((await slow(first)).status).toBe(200)));
        const single = Math.min(...singles);

        let distinctCounts: number[] = [];
        const distinct = await timed(async () => {
          distinctCounts = await counts(await Promise.all(browsers.map(slow)));
        });
        let sameCounts: number[] = [];
        const same = await timed(async () => {
          sameCounts = await counts(await Promise.all(browsers.map(() => slow(first))));
        });

        const report = `single ${single.toFixed(0)} ms, 50 browsers ${distinct.toFixed(0)} ms, 50 requests of one browser ${same.toFixed(0)} ms`;
        console.log(`${kind.name} · ${adapter}: ${report}`);
        // Fifty browsers at once take about as long as a few single requests, not fifty…
        expect(distinct, report).toBeLessThan(10 * single);
        // …while fifty requests of one browser run one after the other.
        expect(same, report).toBeGreaterThanOrEqual(25 * single);
        expect(same, report).toBeGreaterThan(5 * distinct);

        expect(distinctCounts.slice(1)).toEqual(Array.from({ length: 49 }, () => 1));
        expect(distinctCounts[0]).toBe(4);
        expect(sameCounts.sort((a, b) => a - b)).toEqual(Array.from({ length: 50 }, (_, i) => i + 5));
      }, 40_000);
    });
  }
}

/**
 * The app's own AsyncLocalStorage (request ids, tracing) must survive the wait
 * for the per-record lock, as p-limit's "propagates async execution context
 * properly" checks for its queue, and `new AppState()` must find this request's
 * state after it.
 */
describe.each(["node:http", "fetch"] as const)("AsyncLocalStorage through the per-record lock · %s", (adapter) => {
  const BROWSERS = 10;
  const PER_BROWSER = 10;
  let backing: StoreBacking;
  let server: TestServer;
  let close: () => Promise<void>;

  beforeEach(async () => {
    backing = await storeKinds[0]!.create();
    const sessions = persistSession({ secret: SECRET, store: backing.open(), logger: quietLogger, sweepInterval: 0 });
    const requestIds = new AsyncLocalStorage<string>();

    /** Read, wait, read again, write: every check is made after the lock was waited for. */
    const handle = async (requestId: string | null, wait: number) => {
      const seenAtStart = requestIds.getStore();
      const state = new standard.AppState();
      const owner = state.todos[0];
      const before = state.count;
      await delay(wait);
      const again = new standard.AppState();
      again.count = before + 1;
      return { requestId, seenAtStart, seenAfterAwait: requestIds.getStore(), owner, sameInstance: again === state, count: again.count };
    };

    if (adapter === "node:http") {
      server = await listen((req, res) => {
        const requestId = String(req.headers["x-request-id"] ?? "");
        requestIds.run(requestId, () =>
          sessions(req, res, async () => {
            const url = new URL(req.url ?? "/", "http://localhost");
            if (url.pathname === "/setup") {
              new standard.AppState().todos.push(url.searchParams.get("owner") ?? "");
              res.end("{}");
              return;
            }
            const body = await handle(requestId, Number(url.searchParams.get("wait")));
            res.setHeader("content-type", "application/json");
            res.end(JSON.stringify(body));
          }),
        );
      });
    } else {
      const fetchHandler = sessions.fetch(async (request: Request) => {
        const url = new URL(request.url);
        if (url.pathname === "/setup") {
          new standard.AppState().todos.push(url.searchParams.get("owner") ?? "");
          return Response.json({});
        }
        return Response.json(await handle(request.headers.get("x-request-id"), Number(url.searchParams.get("wait"))));
      });
      server = await listen(fromFetch((request) => requestIds.run(request.headers.get("x-request-id") ?? "", () => fetchHandler(request))));
    }
    close = async () => {
      await server.close();
      await sessions.close();
    };
  });
  afterEach(async () => {
    await close();
    await backing.cleanup();
  });

  it("keeps each of 100 interleaved requests in its own context and its own browser's state", async () => {
    const browsers = Array.from({ length: BROWSERS }, () => new Browser(server.url));
    for (const [i, browser] of browsers.entries()) await browser.json(`/setup?owner=browser-${i}`, { method: "POST" });

    const requests: Array<Promise<{ browser: number; requestId: string; body: Record<string, unknown> }>> = [];
    for (let round = 0; round < PER_BROWSER; round++) {
      for (const [i, browser] of browsers.entries()) {
        const requestId = `req-${i}-${round}`;
        requests.push(
          browser
            .json(`/work?wait=${5 + ((round * 7 + i * 3) % 15)}`, { method: "POST", headers: { "x-request-id": requestId } })
            .then((body) => ({ browser: i, requestId, body })),
        );
      }
    }
    const results = await Promise.all(requests);

    for (const { browser, requestId, body } of results) {
      expect(body).toMatchObject({ requestId, seenAtStart: requestId, seenAfterAwait: requestId, owner: `browser-${browser}`, sameInstance: true });
    }
    for (let i = 0; i < BROWSERS; i++) {
      const seen = results.filter((result) => result.browser === i).map((result) => result.body.count as number);
      expect(seen.sort((a, b) => a - b)).toEqual(Array.from({ length: PER_BROWSER }, (_, n) => n + 1));
    }
  });
});
