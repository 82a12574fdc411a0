import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { persistSession, type PersistSessionOptions, type Sessions, type SessionStore } from "../../src/index.js";
import { fetchApp, nodeApp, type Fixture } from "../fixtures/app.js";
import { Browser, fromFetch, listen, type TestServer } from "../helpers/http.js";
import type { StoreBacking, StoreKind } from "../helpers/stores.js";
import { wrapStore } from "../helpers/wrap-store.js";

export const SECRET = "test-secret-0123456789-abcdefghijklmnop";
export const OLD_SECRET = "old-secret-0123456789-abcdefghijklmnopq";
const quietLogger = { warn: () => undefined, error: () => undefined };

export type AdapterName = "node:http" | "fetch";

/** A running app: one persistSession() over one store, served over real HTTP. */
export interface RunningApp {
  readonly sessions: Sessions;
  readonly server: TestServer;
  readonly store: SessionStore;
  browser(): Browser;
  close(): Promise<void>;
}

export async function startApp(fixture: Fixture, adapter: AdapterName, store: SessionStore, options: PersistSessionOptions = {}): Promise<RunningApp> {
  const sessions = persistSession({ secret: SECRET, store, logger: quietLogger, sweepInterval: 0, ...options });
  const app = nodeApp(fixture);
  const server = await listen(
    adapter === "fetch" ? fromFetch(sessions.fetch(fetchApp(fixture))) : (req, res) => sessions(req, res, () => app(req, res)),
  );
  return {
    sessions,
    server,
    store,
    browser: () => new Browser(server.url),
    close: async () => {
      await server.close();
      await sessions.close();
    },
  };
}

/**
 * The behaviour every store must show, over real HTTP, for one adapter and one
 * decorator mode. Run by test/behaviour.test.ts for each store in the matrix.
 */
export function describeBehaviour(kind: StoreKind, adapter: AdapterName, fixture: Fixture): void {
  describe(`${kind.name} · ${adapter} · ${fixture.mode} decorators`, () => {
    let backing: StoreBacking;
    let app: RunningApp;
    /**
     * The app restarted on the same storage: the running one is closed first, as a restart
     * does (one engine serves a FileStore directory per process, #17: a second one on it
     * would share the first's, and with other options it is refused).
     */
    const restart = async (options: PersistSessionOptions = {}, store: SessionStore = backing.open()) => {
      await app.close();
      app = await startApp(fixture, adapter, store, options);
      return app;
    };

    beforeEach(async () => {
      backing = await kind.create();
      app = await startApp(fixture, adapter, backing.open());
    });
    afterEach(async () => {
      await app.close();
      await backing.cleanup();
    });

    it("sets the cookie on the first change and restores the state on the next request", async () => {
      const browser = app.browser();
      const first = await browser.request("/inc", { method: "POST" });
      const setCookie = first.headers.getSetCookie().find((line) => line.startsWith("std-app=") || line.startsWith("legacy-app="));
      expect(setCookie).toMatch(/^[a-z-]+-app=[0-9a-f-]{36}\.[A-Za-z0-9_-]{43}; Max-Age=1209600; Path=\/; HttpOnly; SameSite=Lax$/);
      await browser.json("/inc", { method: "POST" });
      expect(await browser.json("/state")).toMatchObject({ count: 2 });
      expect(await backing.ids()).toHaveLength(1);
    });

    it("restores the state after a restart on the same storage", async () => {
      const browser = app.browser();
      await browser.json("/inc", { method: "POST" });
      await browser.json("/todo?text=x", { method: "POST" });
      await app.close();
      app = await startApp(fixture, adapter, backing.open());
      const restarted = new Browser(app.server.url);
      for (const [name, value] of browser.cookies) restarted.cookies.set(name, value);
      expect(await restarted.json("/state")).toMatchObject({ count: 1, todos: ["x"] });
    });

    it("writes no record and sends no cookie for a request that never changes state", async () => {
      const browser = app.browser();
      const response = await browser.request("/state");
      expect(response.status).toBe(200);
      expect(response.headers.getSetCookie()).toEqual([]);
      await browser.request("/hello");
      expect(await backing.ids()).toEqual([]);
    });

    it("keeps the class: restored instances have its methods, getters and identity within a request", async () => {
      const browser = app.browser();
      await browser.json("/many?times=3", { method: "POST" });
      expect(await browser.json("/identity")).toEqual({ same: true, isInstance: true, double: 6 });
    });

    it("keeps nested changes to arrays, objects, Map, Set and Date", async () => {
      const browser = app.browser();
      await browser.json("/nested", { method: "POST" });
      const fresh = await restart();
      const other = new Browser(fresh.server.url);
      for (const [name, value] of browser.cookies) other.cookies.set(name, value);
      expect(await other.json("/state")).toMatchObject({
        todos: ["buy milk"],
        prefs: { theme: { dark: true } },
        tags: { a: 1 },
        seen: ["home"],
        when: 86_400_000,
      });
    });

    it("refuses an unpersistable value at the assignment with its path and leaves the record unchanged", async () => {
      const browser = app.browser();
      await browser.json("/inc", { method: "POST" });
      const [id] = await backing.ids();
      const before = await app.store.get(id!);
      const response = await browser.request("/unpersistable", { method: "POST" });
      expect(response.status).toBe(400);
      const body = (await response.json()) as { error: string; prefs: object };
      expect(body.error).toBe(
        "persist-session: cannot persist AppState.prefs.handler.deep[1] (a function). Store plain data (objects, arrays, Map, Set, Date, BigInt, typed arrays) or register the class with @persist(key, { types }).",
      );
      expect(body.prefs).toEqual({});
      expect(await app.store.get(id!)).toEqual(before);
    });

    it("coalesces 200 changes in one handler into one write stored before the response", async () => {
      let writes = 0;
      const store = backing.open();
      const counting = wrapStore(store, {
        set: (id: string, record: Parameters<SessionStore["set"]>[1]) => {
          writes++;
          return store.set(id, record);
        },
      });
      const counted = await restart({}, counting);
      const browser = counted.browser();
      expect(await browser.json("/many?times=200", { method: "POST" })).toMatchObject({ count: 200 });
      expect(writes).toBe(1);
      const [id] = await backing.ids();
      // Stored before the response arrived: read the store directly, no waiting.
      expect((await store.get(id!))?.data).toContain("200");
    });

    it("clearCookieState deletes the record, expires the cookie and resets the instance", async () => {
      const browser = app.browser();
      await browser.json("/nested", { method: "POST" });
      await browser.json("/inc", { method: "POST" });
      expect(await backing.ids()).toHaveLength(1);
      const cookieBefore = browser.cookieHeader();
      const response = await browser.request("/clear", { method: "POST" });
      expect(await response.json()).toMatchObject({ count: 0, todos: [], tags: {}, seen: [], when: 0 });
      expect(response.headers.getSetCookie().some((line) => /^(std|legacy)-app=; Max-Age=0;/.test(line))).toBe(true);
      expect(await backing.ids()).toEqual([]);
      expect(browser.cookies.size).toBe(0);
      // The old cookie, replayed, opens nothing.
      expect(await browser.json("/state", { cookie: cookieBefore })).toMatchObject({ count: 0, todos: [] });
      expect(await browser.json("/state")).toMatchObject({ count: 0 });
    });

    it("starts a new record after a clear and a change in the same request's successor", async () => {
      const browser = app.browser();
      await browser.json("/inc", { method: "POST" });
      const firstId = (await backing.ids())[0];
      await browser.json("/clear", { method: "POST" });
      await browser.json("/inc", { method: "POST" });
      const ids = await backing.ids();
      expect(ids).toHaveLength(1);
      expect(ids[0]).not.toBe(firstId);
      expect(await browser.json("/state")).toMatchObject({ count: 1 });
    });

    it("re-signs a cookie signed with an old secret and refuses one whose secret was dropped", async () => {
      const old = await restart({ secret: OLD_SECRET });
      const browser = old.browser();
      await browser.json("/inc", { method: "POST" });
      const oldCookie = browser.cookieHeader();

      const rotated = await restart({ secret: [SECRET, OLD_SECRET] });
      const rotatedBrowser = rotated.browser();
      const response = await rotatedBrowser.request("/state", { cookie: oldCookie });
      expect(await response.json()).toMatchObject({ count: 1 });
      const resigned = response.headers.getSetCookie()[0] ?? "";
      expect(resigned).toMatch(/^(std|legacy)-app=/);
      expect(resigned.split(";")[0]).not.toBe(oldCookie);
      // The re-signed value is good under the new secret alone.
      await restart();
      expect(await app.browser().json("/state", { cookie: resigned.split(";")[0] })).toMatchObject({ count: 1 });
      // The old value is not, once its secret is dropped.
      expect(await app.browser().json("/state", { cookie: oldCookie })).toMatchObject({ count: 0 });
    });

    it("gives each key its own cookie and record", async () => {
      const browser = app.browser();
      await browser.json("/inc", { method: "POST" });
      await browser.json("/other?label=kept", { method: "POST" });
      expect(browser.cookies.size).toBe(2);
      expect(await backing.ids()).toHaveLength(2);
      expect(await browser.json("/other")).toEqual({ label: "kept" });
      expect(await browser.json("/state")).toMatchObject({ count: 1 });
    });

    it("does not restore an expired record, and the sweep removes it", async () => {
      const browser = app.browser();
      await browser.json("/inc", { method: "POST" });
      const [id] = await backing.ids();
      const record = (await app.store.get(id!))!;
      await app.store.set(id!, { ...record, expires: Date.now() - 1000 });
      // A new process, so nothing cached in memory stands in for the store.
      const later = await restart();
      const laterBrowser = later.browser();
      laterBrowser.cookies.set(...([...browser.cookies][0] as [string, string]));
      expect(await laterBrowser.json("/state")).toMatchObject({ count: 0 });
      expect(await backing.ids()).toEqual([]);

      await laterBrowser.json("/inc", { method: "POST" });
      const [fresh] = await backing.ids();
      const freshRecord = (await later.store.get(fresh!))!;
      await later.store.set(fresh!, { ...freshRecord, expires: Date.now() - 1000 });
      const sweeper = await restart();
      // Redis expires records itself, so its sweep finds nothing left to remove.
      expect(await sweeper.sessions.sweep()).toBeGreaterThanOrEqual(kind.expiresRecords === true ? 0 : 1);
      expect(await backing.ids()).toEqual([]);
    });
  });
}
