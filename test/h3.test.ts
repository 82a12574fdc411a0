/**
 * persist-session/h3 on h3 1.x served as Nitro's node preset serves it
 * (toNodeListener), and the `fromNodeMiddleware(sessions)` mounting of issue
 * #16's "Why", which cannot work: h3 runs the route after the middleware's promise.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { createApp, createError, createRouter, eventHandler, fromNodeMiddleware, sendRedirect, toNodeListener, type App } from "h3";
import { afterEach, describe, expect, it, vi } from "vitest";
import { MemoryStore, persist, persistSession, type Sessions } from "../src/index.js";
import { persistState } from "../src/adapters/h3.js";

const SECRET = "h3-adapter-secret-0123456789-abcdefghijk";
const Counter = persist("h3-counter")(
  class Counter {
    count = 0;
  },
);

const logged: string[] = [];
const logger = { warn: (message: string) => void logged.push(message), error: (message: string) => void logged.push(message) };
let sessions: Sessions;
let server: Server | undefined;
/** What reached h3's own error handling (createApp's onError). */
const h3Errors: unknown[] = [];

async function serve(build: (app: App) => void, lockTimeout = 10_000): Promise<string> {
  sessions = persistSession({ secret: SECRET, store: new MemoryStore(), sweepInterval: 0, logger, lockTimeout });
  const app = createApp({ onError: (error) => void h3Errors.push(error) });
  build(app);
  server = createServer(toNodeListener(app)).listen(0, "127.0.0.1");
  await new Promise((resolve) => server!.once("listening", resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

const cookieOf = (response: Response) => response.headers.getSetCookie()[0]!.split(";")[0]!;
const inc = eventHandler(() => ({ count: ++new Counter().count }));

afterEach(async () => {
  logged.length = 0;
  h3Errors.length = 0;
  vi.restoreAllMocks();
  server?.closeAllConnections();
  await new Promise((resolve) => server?.close(resolve));
  await sessions?.close();
});

describe("persist-session/h3", () => {
  it("gives a router mounted under a prefix the state, and stores nothing of a handler that throws a 4xx", async () => {
    const router = createRouter()
      .post("/inc", inc)
      .post(
        "/fail",
        eventHandler(() => {
          new Counter().count += 100;
          throw createError({ statusCode: 422, statusMessage: "no" });
        }),
      );
    const url = await serve((app) => app.use("/app", persistState(sessions, router.handler)));
    const first = await fetch(`${url}/app/inc`, { method: "POST" });
    expect(await first.json()).toEqual({ count: 1 });
    expect(first.headers.getSetCookie()[0]).toMatch(/^h3-counter=.*; HttpOnly; SameSite=Lax$/);
    const cookie = cookieOf(first);
    const failed = await fetch(`${url}/app/fail`, { method: "POST", headers: { cookie } });
    expect([failed.status, failed.headers.getSetCookie()]).toEqual([422, []]);
    expect(await (await fetch(`${url}/app/inc`, { method: "POST", headers: { cookie } })).json()).toEqual({ count: 2 });
  });

  it("sets the cookie on a response the handler sends itself (sendRedirect)", async () => {
    const errorLog = vi.spyOn(console, "error").mockImplementation(() => undefined);
    const url = await serve((app) =>
      app.use(
        "/app/go",
        persistState(
          sessions,
          eventHandler((event) => {
            new Counter().count += 1;
            return sendRedirect(event, "/next", 303);
          }),
        ),
      ),
    );
    const response = await fetch(`${url}/app/go`, { method: "POST", redirect: "manual" });
    expect([response.status, response.headers.get("location")]).toEqual([303, "/next"]);
    expect(response.headers.getSetCookie()).toHaveLength(1);
    expect(cookieOf(response)).toMatch(/^h3-counter=/);
    expect(logged).toEqual([]);
    expect(h3Errors).toEqual([]);
    expect(errorLog).not.toHaveBeenCalled();
  });

  it("answers 503 through h3's error handling, logged once by persist-session, naming the holder under its full path", async () => {
    const errorLog = vi.spyOn(console, "error").mockImplementation(() => undefined);
    let release!: () => void;
    let entered!: () => void;
    const inHold = new Promise<void>((resolve) => (entered = resolve));
    const router = createRouter()
      .post("/inc", inc)
      .get(
        "/hold",
        eventHandler(async () => {
          new Counter();
          entered();
          await new Promise<void>((resolve) => (release = resolve));
          return "held";
        }),
      );
    const url = await serve((app) => app.use("/app", persistState(sessions, router.handler)), 100);
    const cookie = cookieOf(await fetch(`${url}/app/inc`, { method: "POST" }));
    const holding = fetch(`${url}/app/hold`, { headers: { cookie } });
    await inHold;
    const blocked = await fetch(`${url}/app/inc`, { method: "POST", headers: { cookie } });
    expect(blocked.status).toBe(503);
    expect(await blocked.json()).toMatchObject({ statusCode: 503, statusMessage: "Service Unavailable" });
    expect(logged.join("\n")).toMatch(/\(GET \/app\/hold, still running\)/);
    expect(h3Errors.map((error) => (error as { statusCode: number }).statusCode)).toEqual([503]);
    expect(errorLog).not.toHaveBeenCalled(); // no "[h3] [unhandled]" for it
    release();
    expect(await (await holding).text()).toBe("held");
  });

  it("runs a nested wrapper in the outer one's request", async () => {
    const url = await serve((app) => app.use("/app", persistState(sessions, persistState(sessions, inc))), 200);
    const cookie = cookieOf(await fetch(`${url}/app`, { method: "POST" }));
    expect(await (await fetch(`${url}/app`, { method: "POST", headers: { cookie } })).json()).toEqual({ count: 2 });
  });

  it("says to use persist-session/h3 when mounted with fromNodeMiddleware (issue #16)", async () => {
    let message = "";
    const url = await serve((app) =>
      app.use(fromNodeMiddleware(sessions)).use(
        eventHandler(() => {
          try {
            return { count: new Counter().count };
          } catch (error) {
            message = (error as Error).message;
            throw error;
          }
        }),
      ),
    );
    vi.spyOn(console, "error").mockImplementation(() => undefined);
    expect((await fetch(`${url}/`)).status).toBe(500);
    expect(message).toMatch(/ran after the middleware's next\(\) returned.*persist-session\/h3/);
    expect(message).not.toMatch(/was used outside a request/);
  });
});
