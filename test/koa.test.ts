/**
 * persist-session/koa on a real Koa server: failures through Koa's error
 * handling, and a route that answers on ctx.res itself.
 */
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import Koa from "koa";
import { afterEach, describe, expect, it } from "vitest";
import { MemoryStore, persist, persistSession, type Sessions } from "../src/index.js";
import { persistState, serveEvents } from "../src/adapters/koa.js";

const SECRET = "koa-adapter-secret-0123456789-abcdefghij";
const Counter = persist("koa-counter")(
  class Counter {
    count = 0;
  },
);

const logged: string[] = [];
const logger = { warn: (message: string) => void logged.push(message), error: (message: string) => void logged.push(message) };
let sessions: Sessions;
let server: Server | undefined;

/** A Koa app: `/events` and `/style.css` before the state, every other path a route under it. */
async function start(routes: Koa.Middleware, lockTimeout = 10_000): Promise<{ url: string; koaErrors: unknown[] }> {
  sessions = persistSession({ secret: SECRET, store: new MemoryStore(), sweepInterval: 0, logger, lockTimeout });
  const app = new Koa();
  const koaErrors: unknown[] = [];
  app.on("error", (error: unknown) => koaErrors.push(error));
  app.use((ctx, next) => (ctx.path === "/events" ? serveEvents(sessions)(ctx, next) : next()));
  app.use((ctx, next) => {
    if (ctx.path !== "/style.css") return next();
    ctx.body = "body {}";
  });
  app.use(persistState(sessions));
  app.use(persistState(sessions)); // mounted twice on the way: one request, not a wait for its own lock
  app.use(routes);
  server = app.listen(0, "127.0.0.1");
  await new Promise((resolve) => server!.once("listening", resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, koaErrors };
}

afterEach(async () => {
  logged.length = 0;
  server?.closeAllConnections();
  await new Promise((resolve) => server?.close(resolve));
  await sessions?.close();
});

describe("persist-session/koa", () => {
  it("stores what the middleware after it changed, and stores nothing when it throws", async () => {
    const { url } = await start((ctx) => {
      const counter = new Counter();
      counter.count += 1;
      if (ctx.path === "/fail") ctx.throw(409, "conflict"); // a 4xx through Koa's own error handling: still a failure
      ctx.body = { count: counter.count };
    });
    const first = await fetch(`${url}/inc`);
    expect(await first.json()).toEqual({ count: 1 });
    expect(first.headers.getSetCookie()[0]).toMatch(/^koa-counter=.*; HttpOnly; SameSite=Lax$/);
    const cookie = first.headers.getSetCookie()[0]!.split(";")[0]!;
    const failed = await fetch(`${url}/fail`, { headers: { cookie } });
    expect([failed.status, failed.headers.getSetCookie()]).toEqual([409, []]);
    expect(await (await fetch(`${url}/inc`, { headers: { cookie } })).json()).toEqual({ count: 2 });
  });

  it("throws a 503 with Retry-After into Koa's error handling after lockTimeout, logged once, naming the holder", async () => {
    let release!: () => void;
    let entered!: () => void;
    const inHold = new Promise<void>((resolve) => (entered = resolve));
    const { url, koaErrors } = await start(async (ctx) => {
      const counter = new Counter();
      if (ctx.path === "/hold") {
        entered();
        await new Promise<void>((resolve) => (release = resolve));
      }
      counter.count += 1;
      ctx.body = { count: counter.count };
    }, 100);
    const cookie = (await fetch(`${url}/inc`)).headers.getSetCookie()[0]!.split(";")[0]!;
    const holding = fetch(`${url}/hold`, { headers: { cookie } });
    await inHold;
    expect(await (await fetch(`${url}/style.css`, { headers: { cookie } })).text()).toBe("body {}");
    const blocked = await fetch(`${url}/inc`, { headers: { cookie } });
    expect([blocked.status, blocked.headers.get("retry-after"), await blocked.text()]).toEqual([503, "1", "Service Unavailable"]);
    expect(koaErrors).toHaveLength(1);
    expect((koaErrors[0] as { expose: boolean }).expose).toBe(true); // so Koa's default handler does not log it a second time
    expect(logged.filter((line) => /\(GET \/hold, still running\)/.test(line))).toHaveLength(1);
    release();
    expect(await (await holding).json()).toEqual({ count: 2 });
  });

  it("commits a route that answers on ctx.res itself at its first write, and serves the events stream", async () => {
    const { url } = await start((ctx) => {
      const counter = new Counter();
      counter.count += 1;
      ctx.respond = false;
      ctx.res.end(String(counter.count));
    });
    const first = await fetch(`${url}/raw`);
    expect(await first.text()).toBe("1");
    expect(first.headers.getSetCookie()[0]).toMatch(/^koa-counter=/);
    const cookie = first.headers.getSetCookie()[0]!.split(";")[0]!;
    expect(await (await fetch(`${url}/raw`, { headers: { cookie } })).text()).toBe("2");
    const aborted = new AbortController();
    const stream = await fetch(`${url}/events`, { headers: { cookie }, signal: aborted.signal });
    expect([stream.status, stream.headers.get("content-type")]).toEqual([200, "text/event-stream; charset=utf-8"]);
    aborted.abort();
  });
});
