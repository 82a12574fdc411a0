/**
 * What persist-session/client needs from the events endpoint: a probe that says which
 * records a stream would follow now (`Accept: application/json`), and a `ready` event
 * at the end of every preamble naming the same targets.
 */
import type http from "node:http";
import { afterEach, describe, expect, it } from "vitest";
import { MemoryStore, clearCookieState, persist, persistSession } from "../src/index.js";
import { Browser, fromFetch, listen, type TestServer } from "./helpers/http.js";
import { EventReader } from "./helpers/sse.js";
import { SECRET } from "./suites/behaviour.js";

@persist("targets-app")
class Counter {
  count = 0;
}

@persist("targets-prefs", { scope: "user" })
class Prefs {
  clicks = 0;
}

const userOf = (request: http.IncomingMessage | Request) => {
  const header = request instanceof Request ? request.headers.get("authorization") : request.headers.authorization;
  return header === "Bearer alice" ? "alice" : undefined;
};

async function route(method: string, path: string): Promise<unknown> {
  if (`${method} ${path}` === "POST /inc") return { count: (new Counter().count += 1) };
  if (`${method} ${path}` === "POST /reset") return clearCookieState(new Counter()).then(() => ({}));
  if (`${method} ${path}` === "POST /prefs") return { clicks: (new Prefs().clicks += 1) };
  return {};
}

const open: Array<{ close(): Promise<void> }> = [];
afterEach(async () => {
  for (const item of open.splice(0).reverse()) await item.close();
});

async function start(adapter: "node:http" | "fetch"): Promise<TestServer> {
  const sessions = persistSession({ secret: SECRET, store: new MemoryStore(), sweepInterval: 0, user: userOf, anonymous: "browser", heartbeat: 2, logger: { warn() {}, error() {} } });
  const server =
    adapter === "fetch"
      ? await listen(
          fromFetch(async (request) => {
            const url = new URL(request.url);
            if (url.pathname === "/events") return sessions.fetchEvents(request);
            return sessions.fetch(async () => Response.json(await route(request.method, url.pathname)))(request);
          }),
        )
      : await listen((req, res) => {
          if (req.url === "/events") return sessions.events(req, res);
          sessions(req, res, async () => {
            const body = JSON.stringify(await route(req.method ?? "GET", req.url ?? "/"));
            res.writeHead(200, { "content-type": "application/json" }).end(body);
          });
        });
  open.push(sessions, server);
  return server;
}

/** What the probe answers for this browser now: the targets' tag (and, in `ids`, the id a stream's ready would carry). */
const ids: string[] = [];
async function probe(browser: Browser, init: RequestInit = {}): Promise<string> {
  const response = await browser.request("/events", { ...init, headers: { ...(init.headers as Record<string, string>), accept: "application/json" } });
  expect(response.headers.get("content-type")).toMatch(/^application\/json/);
  expect(response.headers.get("cache-control")).toBe("no-store");
  const { targets, id } = (await response.json()) as { targets: string; id: string };
  ids.push(id);
  return targets;
}

async function subscribe(browser: Browser, headers: Record<string, string> = {}): Promise<EventReader> {
  const controller = new AbortController();
  const response = await browser.request("/events", { headers, signal: controller.signal });
  expect(response.headers.get("content-type")).toBe("text/event-stream; charset=utf-8");
  const reader = new EventReader(response);
  open.push({ close: async () => (await reader.close(), controller.abort()) });
  return reader;
}

for (const adapter of ["node:http", "fetch"] as const) {
  describe(`the events endpoint over ${adapter}`, () => {
    it("names the targets in a probe: the same for the same cookies, another after a first change, a reset or a sign-in", async () => {
      const server = await start(adapter);
      const browser = new Browser(server.url);
      const alice = { headers: { authorization: "Bearer alice" } };
      ids.length = 0;
      const fresh = await probe(browser);
      expect(fresh).toMatch(/^[A-Za-z0-9_-]{22}$/);
      expect(await probe(new Browser(server.url))).toBe(fresh); // no cookies: nothing to follow, for anyone

      await browser.json("/inc", { method: "POST" });
      const withRecord = await probe(browser);
      expect(withRecord).not.toBe(fresh);
      await browser.json("/inc", { method: "POST" });
      expect(await probe(browser)).toBe(withRecord); // a new version of the same record: same targets
      // The record id stays HttpOnly: the tag does not carry it.
      expect(withRecord).not.toContain(browser.cookies.get("targets-app")!.slice(0, 8));

      const signedIn = await probe(browser, alice);
      expect(signedIn).not.toBe(withRecord);
      expect(await probe(new Browser(server.url), alice)).not.toBe(signedIn); // alice without this browser's record

      await browser.json("/reset", { method: "POST" });
      expect(await probe(browser)).toBe(fresh);
      await browser.json("/inc", { method: "POST" });
      const newRecord = await probe(browser);
      expect([fresh, withRecord]).not.toContain(newRecord);
      // And with each tag, the versions a stream would start from (the id of its ready event).
      expect(ids).toEqual(["", "", "targets-app=1", "targets-app=2", "targets-app=2,targets-prefs=0", "targets-prefs=0", "", "targets-app=1"]);
    });

    it("ends every preamble with ready, naming the same targets as the probe and the heartbeat, after missed changes too", async () => {
      const server = await start(adapter);
      const browser = new Browser(server.url);
      await browser.json("/inc", { method: "POST" });
      await browser.json("/inc", { method: "POST" });
      const targets = await probe(browser);

      const events = await subscribe(browser, { "last-event-id": "targets-app=1" });
      expect(await events.next()).toEqual({ event: "change", id: "targets-app=2", data: JSON.stringify({ key: "targets-app", version: 2 }) });
      expect(await events.next()).toEqual({ event: "ready", id: "targets-app=2", data: JSON.stringify({ targets, heartbeat: 2000 }) });

      const upToDate = await subscribe(browser, { "last-event-id": "targets-app=2" });
      expect(await upToDate.next()).toEqual({ event: "ready", id: "targets-app=2", data: JSON.stringify({ targets, heartbeat: 2000 }) });
    });
  });
}
