/**
 * persist-session/fastify through Fastify's `inject` (its own request path,
 * hooks and all): the cases of the framework suite (test/frameworks/fastify)
 * that want a knife, and the async-hook mounting of issue #16's "Why".
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import Fastify, { type FastifyInstance } from "fastify";
import { afterEach, describe, expect, it } from "vitest";
import { MemoryStore, persist, persistSession, type Sessions } from "../src/index.js";
import { persistState, serveEvents } from "../src/adapters/fastify.js";
import { LockTimeoutError } from "../src/records.js";
import { kCore } from "../src/session.js";
import type { SessionCore } from "../src/session-core.js";

const SECRET = "fastify-adapter-secret-0123456789-abcdef";
const Counter = persist("fastify-counter")(
  class Counter {
    count = 0;
    notes: string[] = [];
  },
);

const logged: string[] = [];
const logger = { warn: (message: string) => void logged.push(message), error: (message: string) => void logged.push(message) };
let sessions: Sessions;
let app: FastifyInstance;

function create(lockTimeout = 10_000): FastifyInstance {
  sessions = persistSession({ secret: SECRET, store: new MemoryStore(), sweepInterval: 0, logger, lockTimeout });
  app = Fastify({ forceCloseConnections: true }); // fetch keeps sockets open, and one that never sent a request is not idle
  return app;
}

/** POSTs `body` in two packets, the second `pauseMs` later: the route runs from the body parser's callback, not from the hook's. */
function postInParts(url: string, body: string, cookie: string | undefined, pauseMs = 30): Promise<{ status: number; body: string; cookie: string | undefined }> {
  return new Promise((resolve, reject) => {
    const headers: http.OutgoingHttpHeaders = { "content-type": "application/json", "content-length": Buffer.byteLength(body) };
    if (cookie !== undefined) headers.cookie = cookie;
    const request = http.request(url, { method: "POST", headers, agent: false }, (response) => {
      let text = "";
      response.setEncoding("utf8").on("data", (chunk: string) => (text += chunk));
      response.on("end", () => resolve({ status: response.statusCode!, body: text, cookie: [response.headers["set-cookie"] ?? []].flat()[0]?.split(";")[0] }));
    });
    request.on("error", reject);
    const half = Math.floor(body.length / 2);
    request.write(body.slice(0, half));
    setTimeout(() => request.end(body.slice(half)), pauseMs);
  });
}

const cookieOf = (response: { headers: Record<string, unknown> }) => String([response.headers["set-cookie"] ?? []].flat()[0] ?? "").split(";")[0]!;

afterEach(async () => {
  logged.length = 0;
  await app?.close();
  await sessions?.close();
});

describe("persist-session/fastify", () => {
  it("keeps the state's context through the body parser into an async handler", async () => {
    create().register(async (scoped) => {
      scoped.register(persistState, { sessions });
      scoped.post<{ Body: { note: string } }>("/app/note", async (request) => {
        await new Promise((resolve) => setTimeout(resolve, 5));
        const counter = new Counter();
        counter.notes.push(request.body.note);
        return { notes: counter.notes };
      });
    });
    await app.listen({ port: 0, host: "127.0.0.1" });
    const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}/app/note`;
    const first = await postInParts(url, JSON.stringify({ note: "a" }), undefined);
    expect([first.status, first.body]).toEqual([200, JSON.stringify({ notes: ["a"] })]);
    const second = await postInParts(url, JSON.stringify({ note: "b" }), first.cookie);
    expect(second.body).toBe(JSON.stringify({ notes: ["a", "b"] }));
  });

  it("stores nothing when a handler throws, even when the error handler answers 4xx", async () => {
    create().register(async (scoped) => {
      scoped.register(persistState, { sessions });
      scoped.setErrorHandler((error, _request, reply) => reply.code(400).send({ handled: (error as Error).message }));
      scoped.post("/app/inc", async () => ({ count: ++new Counter().count }));
      scoped.post("/app/fail", async () => {
        new Counter().count += 100;
        throw new Error("boom");
      });
    });
    const cookie = cookieOf(await app.inject({ method: "POST", url: "/app/inc" }));
    const failed = await app.inject({ method: "POST", url: "/app/fail", headers: { cookie } });
    expect([failed.statusCode, failed.json()]).toEqual([400, { handled: "boom" }]);
    expect(failed.headers["set-cookie"]).toBeUndefined();
    expect((await app.inject({ method: "POST", url: "/app/inc", headers: { cookie } })).json()).toEqual({ count: 2 });
  });

  it("answers 503 with Retry-After through Fastify's error handler, naming the request that held the lock", async () => {
    const seen: unknown[] = [];
    let release!: () => void;
    let entered!: () => void;
    const inHold = new Promise<void>((resolve) => (entered = resolve));
    create(100).register(async (scoped) => {
      scoped.register(persistState, { sessions });
      scoped.setErrorHandler((error, _request, reply) => {
        seen.push(error);
        return reply.send(error);
      });
      scoped.post("/app/inc", async () => ({ count: ++new Counter().count }));
      scoped.get("/app/hold", async () => {
        new Counter();
        entered();
        await new Promise<void>((resolve) => (release = resolve));
        return "held";
      });
    });
    app.get("/style.css", async () => "body {}");
    const cookie = cookieOf(await app.inject({ method: "POST", url: "/app/inc" }));
    const holding = app.inject({ url: "/app/hold", headers: { cookie } });
    await inHold;
    // Outside the plugin's context nothing waits.
    expect((await app.inject({ url: "/style.css", headers: { cookie } })).body).toBe("body {}");
    const blocked = await app.inject({ method: "POST", url: "/app/inc", headers: { cookie } });
    expect([blocked.statusCode, blocked.headers["retry-after"]]).toEqual([503, "1"]);
    expect((seen[0] as { statusCode: number; cause: unknown }).statusCode).toBe(503);
    expect((seen[0] as { cause: unknown }).cause).toBeInstanceOf(LockTimeoutError);
    expect(logged.join("\n")).toMatch(/\(GET \/app\/hold, still running\)/);
    release();
    expect((await holding).body).toBe("held");
  });

  it("opens one request when registered in a context and again in a child context", async () => {
    create(200).register(async (outer) => {
      outer.register(persistState, { sessions });
      outer.register(async (inner) => {
        inner.register(persistState, { sessions });
        inner.post("/app/inc", async () => ({ count: ++new Counter().count }));
      });
    });
    const cookie = cookieOf(await app.inject({ method: "POST", url: "/app/inc" }));
    expect((await app.inject({ method: "POST", url: "/app/inc", headers: { cookie } })).json()).toEqual({ count: 2 });
  });

  it("lets the lock go when a route under the plugin hijacks its reply, storing nothing of it", async () => {
    create().register(async (scoped) => {
      scoped.register(persistState, { sessions });
      scoped.post("/app/inc", async () => ({ count: ++new Counter().count }));
      scoped.post("/app/raw", async (_request, reply) => {
        new Counter().count += 100;
        reply.hijack();
        reply.raw.end("raw");
      });
      scoped.get("/events", serveEvents(sessions)); // inside the context by mistake: its request ends before the stream
    });
    await app.listen({ port: 0, host: "127.0.0.1" });
    const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
    const first = await fetch(`${url}/app/inc`, { method: "POST" });
    const cookie = first.headers.getSetCookie()[0]!.split(";")[0]!;
    const id = /=([0-9a-f-]{36})\./.exec(cookie)![1]!;
    const entry = () => (sessions as unknown as Record<symbol, SessionCore>)[kCore]!.records.peek(id);
    expect(await (await fetch(`${url}/app/raw`, { method: "POST", headers: { cookie } })).text()).toBe("raw");
    // Released when the response is done ('close'), well before lockTimeout (10 s) would abandon it.
    for (let i = 0; i < 100 && entry()?.locked === true; i++) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(entry()?.locked === true).toBe(false);
    const events = new AbortController();
    const stream = await fetch(`${url}/events`, { headers: { cookie }, signal: events.signal });
    expect(stream.headers.get("content-type")).toMatch(/^text\/event-stream/);
    expect(entry()?.locked === true).toBe(false);
    events.abort();
    expect(await (await fetch(`${url}/app/inc`, { method: "POST", headers: { cookie } })).json()).toEqual({ count: 2 });
  });

  it("names the adapter when state is used from an async onRequest hook with the node middleware (issue #16)", async () => {
    create();
    let message = "";
    // How the user mounted it before the plugin existed: the route runs after the hook's promise, outside the context.
    app.addHook("onRequest", async (request, reply) => {
      await new Promise<void>((resolve) => sessions(request.raw, reply.raw, () => resolve()));
    });
    app.get("/count", async () => {
      try {
        return { count: new Counter().count };
      } catch (error) {
        message = (error as Error).message;
        throw error;
      }
    });
    expect((await app.inject({ url: "/count" })).statusCode).toBe(500);
    expect(message).toMatch(/ran after the middleware's next\(\) returned.*persist-session\/fastify/);
    expect(message).not.toMatch(/was used outside a request/);
  });
});
