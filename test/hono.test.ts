/**
 * persist-session/hono on Hono's own test runtime (`app.request`, a plain Fetch
 * call): what the framework suite (test/frameworks/hono) cannot provoke cheaply.
 */
import { Hono } from "hono";
import { HTTPException } from "hono/http-exception";
import { afterEach, describe, expect, it } from "vitest";
import { MemoryStore, persist, persistSession, StoreUnavailableError, type Sessions } from "../src/index.js";
import { persistState, serveEvents } from "../src/adapters/hono.js";
import { LockTimeoutError } from "../src/records.js";

const SECRET = "hono-adapter-secret-0123456789-abcdefgh";
const Counter = persist("hono-counter")(
  class Counter {
    count = 0;
  },
);

const logged: string[] = [];
const logger = { warn: (message: string) => void logged.push(message), error: (message: string) => void logged.push(message) };
let sessions: Sessions;

function app(options: { lockTimeout?: number; store?: MemoryStore } = {}) {
  sessions = persistSession({ secret: SECRET, store: options.store ?? new MemoryStore(), sweepInterval: 0, logger, lockTimeout: options.lockTimeout ?? 10_000 });
  const hono = new Hono();
  hono.use("/app/*", persistState(sessions));
  hono.get("/events", serveEvents(sessions));
  hono.post("/app/inc", (c) => c.json({ count: ++new Counter().count }));
  hono.get("/app/count", (c) => c.json({ count: new Counter().count }));
  hono.get("/app/hold", async (c) => {
    new Counter();
    held!.entered();
    await held!.released;
    return c.text("held");
  });
  return hono;
}

let held: { entered: () => void; released: Promise<void> } | undefined;

/** Sends GET /app/hold, which holds the browser's lock; resolves once its handler runs, with the function that lets it answer. */
async function holdLock(hono: Hono, cookie: string): Promise<() => Promise<string>> {
  let release!: () => void;
  let entered!: () => void;
  const inHold = new Promise<void>((resolve) => (entered = resolve));
  held = { entered, released: new Promise<void>((resolve) => (release = resolve)) };
  const answer = Promise.resolve(hono.request("/app/hold", { headers: { cookie } }));
  await inHold;
  return async () => {
    release();
    return (await answer).text();
  };
}

const cookieOf = (response: Response) => response.headers.getSetCookie()[0]?.split(";")[0];

afterEach(async () => {
  logged.length = 0;
  await sessions?.close();
});

describe("persist-session/hono", () => {
  it("stores a change, sets the cookie, and the next request sees it", async () => {
    const hono = app();
    const first = await hono.request("/app/inc", { method: "POST" });
    expect(await first.json()).toEqual({ count: 1 });
    const cookie = cookieOf(first)!;
    expect(first.headers.getSetCookie()[0]).toMatch(/; HttpOnly; SameSite=Lax$/);
    expect(await (await hono.request("/app/count", { headers: { cookie } })).json()).toEqual({ count: 1 });
  });

  it("adds its cookie to a Response with immutable headers", async () => {
    const hono = app();
    hono.post("/app/redirect", () => {
      new Counter().count += 1;
      return Response.redirect("http://localhost/next", 303);
    });
    const response = await hono.request("/app/redirect", { method: "POST" });
    expect(response.status).toBe(303);
    expect(response.headers.get("location")).toBe("http://localhost/next");
    expect(cookieOf(response)).toMatch(/^hono-counter=/);
  });

  it("stores nothing when a handler throws, whatever status onError answers with", async () => {
    const hono = app();
    hono.onError((error, c) => c.text(`onError: ${error.message}`, 400));
    hono.post("/app/fail", () => {
      new Counter().count += 1;
      throw new Error("boom");
    });
    const first = await hono.request("/app/inc", { method: "POST" });
    const cookie = cookieOf(first)!;
    const failed = await hono.request("/app/fail", { method: "POST", headers: { cookie } });
    expect([failed.status, await failed.text()]).toEqual([400, "onError: boom"]);
    expect(failed.headers.getSetCookie()).toEqual([]);
    expect(await (await hono.request("/app/count", { headers: { cookie } })).json()).toEqual({ count: 1 });
  });

  it("gives onError an HTTPException 503 whose cause names the request holding the lock", async () => {
    const hono = app({ lockTimeout: 100 });
    const seen: unknown[] = [];
    hono.onError((error, c) => {
      seen.push(error);
      return error instanceof HTTPException ? error.getResponse() : c.text("other", 500);
    });
    const cookie = cookieOf(await hono.request("/app/inc", { method: "POST" }))!;
    const release = await holdLock(hono, cookie);
    const blocked = await hono.request("/app/count", { headers: { cookie } });
    expect([blocked.status, blocked.headers.get("retry-after"), await blocked.text()]).toEqual([503, "1", "Service Unavailable\n"]);
    expect(seen).toHaveLength(1);
    const error = seen[0] as HTTPException;
    expect(error).toBeInstanceOf(HTTPException);
    expect(error.status).toBe(503);
    expect(error.cause).toBeInstanceOf(LockTimeoutError);
    expect(logged.join("\n")).toMatch(/\(GET \/app\/hold, still running\)/);
    expect(await release()).toBe("held");
  });

  it("gives onError the store's error when the state cannot be stored, and sets no cookie", async () => {
    const store = new MemoryStore();
    const hono = app({ store });
    const seen: unknown[] = [];
    hono.onError((error, c) => {
      seen.push(error);
      return c.text("onError", error instanceof HTTPException ? error.status : 500);
    });
    store.set = () => Promise.reject(new StoreUnavailableError("persist-session: the test's store is down."));
    const failed = await hono.request("/app/inc", { method: "POST" });
    expect([failed.status, await failed.text()]).toEqual([503, "onError"]);
    expect(failed.headers.getSetCookie()).toEqual([]);
    expect((seen[0] as HTTPException).cause).toBeInstanceOf(StoreUnavailableError);
  });

  it("never runs the handler of a request whose client left while it waited for the lock", async () => {
    const hono = app({ lockTimeout: 5_000 });
    let runs = 0;
    hono.post("/app/counted", (c) => c.json({ count: ++new Counter().count, runs: ++runs }));
    const cookie = cookieOf(await hono.request("/app/inc", { method: "POST" }))!;
    const release = await holdLock(hono, cookie);
    const leaving = new AbortController();
    const left = hono.request(new Request("http://localhost/app/counted", { method: "POST", headers: { cookie }, signal: leaving.signal }));
    leaving.abort();
    expect(await release()).toBe("held");
    await Promise.resolve(left).catch(() => undefined);
    // The abandoned request gave its place up: the next one runs at once, and is the first to run the handler.
    expect(await (await hono.request("/app/counted", { method: "POST", headers: { cookie } })).json()).toEqual({ count: 2, runs: 1 });
  });

  it("takes no lock for routes it is not mounted on", async () => {
    const hono = app({ lockTimeout: 100 });
    hono.get("/style.css", (c) => c.text("body {}"));
    const cookie = cookieOf(await hono.request("/app/inc", { method: "POST" }))!;
    const release = await holdLock(hono, cookie);
    expect(await (await hono.request("/style.css", { headers: { cookie } })).text()).toBe("body {}");
    expect(await release()).toBe("held");
  });

  it("opens one request when mounted on a path and again on a sub-path", async () => {
    const hono = app({ lockTimeout: 200 });
    hono.use("/app/admin/*", persistState(sessions));
    hono.post("/app/admin/inc", (c) => c.json({ count: ++new Counter().count }));
    const cookie = cookieOf(await hono.request("/app/admin/inc", { method: "POST" }))!;
    expect(await (await hono.request("/app/admin/inc", { method: "POST", headers: { cookie } })).json()).toEqual({ count: 2 });
  });
});
