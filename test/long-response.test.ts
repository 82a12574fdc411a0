/**
 * A long-lived response (server-sent events) must not hold its browser's lock
 * for as long as it streams: the lock passes on at the commit point (the
 * headers), and a change made after that point is refused, not silently lost.
 */
import type http from "node:http";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { persistSession, type Sessions } from "../src/index.js";
import * as standard from "./fixtures/standard.js";
import { Browser, fromFetch, listen, stopAll, type TestServer } from "./helpers/http.js";
import { fileStoreKind, type StoreBacking } from "./helpers/stores.js";
import { SECRET } from "./suites/behaviour.js";

/** How long the event stream would run if the client stayed. */
const STREAM_MS = 10_000;
const TICK_MS = 50;
/** "Promptly": a small fraction of the stream's life, generous for two busy cores. */
const PROMPT_MS = 2_000;

const quietLogger = { warn: () => undefined, error: () => undefined };
const LATE_MESSAGE = /^persist-session: AppState\.count was changed after the response was sent, so the change cannot be stored\. /;
const LATE_NESTED_MESSAGE = /^persist-session: AppState\.todos\[0\] was changed after the response was sent/;

type Variant = "node:http · writeHead" | "node:http · flushHeaders" | "fetch · ReadableStream";

const sse = (event: string, data: unknown) => `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;

/** Tries to change the state after the commit; reports what the old instance now reads and the error. */
function tick(state: standard.AppState): { count: number; late: string | undefined; lateNested: string | undefined } {
  const attempt = (change: () => void) => {
    try {
      change();
      return undefined;
    } catch (error) {
      return (error as Error).message;
    }
  };
  const late = attempt(() => (state.count += 100));
  const lateNested = attempt(() => state.todos.push("late"));
  return { count: state.count, late, lateNested };
}

function nodeListener(sessions: Sessions, commitBy: "writeHead" | "flushHeaders"): http.RequestListener {
  return (req, res) =>
    sessions(req, res, () => {
      const url = new URL(req.url ?? "/", "http://localhost");
      const state = new standard.AppState();
      if (url.pathname === "/events") {
        state.count += 1;
        if (commitBy === "writeHead") {
          res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
        } else {
          res.setHeader("content-type", "text/event-stream");
          res.flushHeaders();
        }
        res.write(sse("state", { count: state.count }));
        res.write(sse("tick", tick(state)));
        const started = Date.now();
        const timer = setInterval(() => {
          if (Date.now() - started >= STREAM_MS) {
            clearInterval(timer);
            res.end();
          } else {
            res.write(sse("tick", tick(state)));
          }
        }, TICK_MS);
        res.once("close", () => clearInterval(timer));
        return;
      }
      if (url.pathname === "/inc") state.count += 1;
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ count: state.count, todos: [...state.todos] }));
    });
}

function fetchListener(sessions: Sessions): http.RequestListener {
  const encoder = new TextEncoder();
  return fromFetch(
    sessions.fetch(async (request: Request) => {
      const url = new URL(request.url);
      const state = new standard.AppState();
      if (url.pathname === "/events") {
        state.count += 1;
        const count = state.count;
        let timer: NodeJS.Timeout | undefined;
        const body = new ReadableStream<Uint8Array>({
          // start() runs before the handler returns, i.e. before the commit: only the timer's ticks come after it.
          start(controller) {
            controller.enqueue(encoder.encode(sse("state", { count })));
            const started = Date.now();
            timer = setInterval(() => {
              if (Date.now() - started >= STREAM_MS) {
                clearInterval(timer);
                controller.close();
              } else {
                controller.enqueue(encoder.encode(sse("tick", tick(state))));
              }
            }, TICK_MS);
          },
          cancel() {
            clearInterval(timer);
          },
        });
        return new Response(body, { headers: { "content-type": "text/event-stream", "cache-control": "no-cache" } });
      }
      if (url.pathname === "/inc") state.count += 1;
      return Response.json({ count: state.count, todos: [...state.todos] });
    }),
  );
}

/** Reads server-sent events from a fetch Response body, one at a time. */
class EventReader {
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  readonly #decoder = new TextDecoder();
  #buffer = "";
  ended = false;

  constructor(response: Response) {
    this.#reader = response.body!.getReader();
  }

  async next(): Promise<{ event: string; data: Record<string, unknown> }> {
    for (;;) {
      const end = this.#buffer.indexOf("\n\n");
      if (end !== -1) {
        const block = this.#buffer.slice(0, end);
        this.#buffer = this.#buffer.slice(end + 2);
        const event = /^event: (.*)$/m.exec(block)?.[1] ?? "message";
        const data = JSON.parse(/^data: (.*)$/m.exec(block)?.[1] ?? "null") as Record<string, unknown>;
        return { event, data };
      }
      const { done, value } = await this.#reader.read();
      if (done) {
        this.ended = true;
        throw new Error("the event stream ended");
      }
      this.#buffer += this.#decoder.decode(value, { stream: true });
    }
  }
}

describe.each(["node:http · writeHead", "node:http · flushHeaders", "fetch · ReadableStream"] as const satisfies readonly Variant[])(
  "a long response · %s",
  (variant) => {
    let backing: StoreBacking;
    const running: Array<{ server: TestServer; sessions: Sessions }> = [];
    const start = async () => {
      const sessions = persistSession({ secret: SECRET, store: backing.open(), logger: quietLogger, sweepInterval: 0 });
      const listener = variant === "fetch · ReadableStream" ? fetchListener(sessions) : nodeListener(sessions, variant.endsWith("writeHead") ? "writeHead" : "flushHeaders");
      const server = await listen(listener);
      running.push({ server, sessions });
      return server;
    };

    beforeEach(async () => {
      backing = await fileStoreKind.create();
    });
    afterEach(async () => {
      await stopAll(running);
      await backing.cleanup();
    });

    it("lets other requests of the same browser complete while it streams, and refuses changes made after its headers", async () => {
      const server = await start();
      const browser = new Browser(server.url);
      expect(await browser.json("/inc", { method: "POST" })).toEqual({ count: 1, todos: [] });

      const streams: AbortController[] = [];
      try {
        const openStream = async () => {
          const abort = new AbortController();
          streams.push(abort);
          const response = await browser.request("/events", { signal: abort.signal });
          expect(response.status).toBe(200);
          expect(response.headers.get("content-type")).toBe("text/event-stream");
          return new EventReader(response);
        };
        const streamOpened = Date.now();
        const events = await openStream();
        // The stream's own change, made before its headers, is in its first event and in the store.
        expect(await events.next()).toEqual({ event: "state", data: { count: 2 } });
        const firstTick = await events.next();
        expect(firstTick.event).toBe("tick");
        expect(firstTick.data.late).toMatch(LATE_MESSAGE);
        expect(firstTick.data.lateNested).toMatch(LATE_NESTED_MESSAGE);

        // Another request of the same browser, while the stream stays open: prompt, and it sees the stream's change.
        const before = Date.now();
        expect(await browser.json("/inc", { method: "POST" })).toEqual({ count: 3, todos: [] });
        const incTook = Date.now() - before;
        // A second tab opening its own stream is not held either.
        const secondOpened = Date.now();
        const second = await openStream();
        const secondTook = Date.now() - secondOpened;
        expect(await second.next()).toEqual({ event: "state", data: { count: 4 } });

        // The first stream is still running: it keeps ticking, and its late changes keep being refused.
        let later = await events.next();
        while (later.data.count !== 4) later = await events.next();
        expect(later).toEqual({
          event: "tick",
          data: { count: 4, late: expect.stringMatching(LATE_MESSAGE), lateNested: expect.stringMatching(LATE_NESTED_MESSAGE) },
        });
        const openFor = Date.now() - streamOpened;
        expect(openFor).toBeLessThan(STREAM_MS);
        expect(events.ended).toBe(false);

        expect(incTook, `another request took ${incTook} ms while a ${STREAM_MS} ms stream was open`).toBeLessThan(PROMPT_MS);
        expect(secondTook, `a second stream took ${secondTook} ms to open`).toBeLessThan(PROMPT_MS);
      } finally {
        for (const abort of streams) abort.abort();
      }

      // None of the late changes landed, in memory or in the store.
      expect(await browser.json("/state")).toEqual({ count: 4, todos: [] });
      // A restart reads the store: the running app is stopped first (one engine per directory, #17).
      await stopAll(running);
      const restarted = new Browser((await start()).url);
      for (const [name, value] of browser.cookies) restarted.cookies.set(name, value);
      expect(await restarted.json("/state")).toEqual({ count: 4, todos: [] });
    });
  },
);
