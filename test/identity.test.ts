/**
 * The identity lifecycle (#19): new ids at sign-in, an anonymous cart that
 * follows the user, an absolute lifetime, and a user's export and erasure.
 */
import http from "node:http";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { persist, persistSession, rotateStateIds, type PersistSessionOptions, type Sessions, type SessionStore } from "../src/index.js";
import { startChildServer, type ChildServer } from "./helpers/child-server.js";
import { Browser, listen, type TestServer } from "./helpers/http.js";
import { EventReader } from "./helpers/sse.js";
import { fileStoreKind, memoryStoreKind, postgresAvailable, postgresStoreKind, redisAvailable, redisStoreKind, type StoreBacking, type StoreKind } from "./helpers/stores.js";

const SECRET = "identity-secret-0123456789-abcdefghijk";
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** An events stream opened as the user's browser would, read until its first `change`. */
async function openEvents(url: string, headers: Record<string, string>) {
  const reader = new EventReader(await fetch(`${url}/events`, { headers }));
  // The stream's baseline: changes from here on are news to it.
  for (let event = await reader.next(5000); event.event !== "ready"; event = await reader.next(5000));
  return {
    async nextChange(timeoutMs: number) {
      for (const deadline = Date.now() + timeoutMs; ; ) {
        const event = await reader.next(Math.max(1, deadline - Date.now()));
        if (event.event === "change") return event;
      }
    },
    close: () => reader.close(),
  };
}

const Basket = persist("identity-basket")(
  class Basket {
    items: string[] = [];
  },
);
const Cart = persist("identity-cart", {
  scope: "user",
  merge: (user: { items: string[] }, visitor: { items: string[] }) => void user.items.push(...visitor.items),
})(
  class Cart {
    items: string[] = [];
  },
);

const kinds: StoreKind[] = [fileStoreKind, memoryStoreKind, ...(redisAvailable ? [redisStoreKind] : []), ...(postgresAvailable ? [postgresStoreKind] : [])];

/** An app over real HTTP: the user comes from the x-user header (the test's stand-in for a login session). */
async function startApp(store: SessionStore, options: PersistSessionOptions = {}) {
  const sessions = persistSession({
    secret: SECRET,
    store,
    sweepInterval: 0,
    anonymous: "browser",
    user: (request) => ((request as http.IncomingMessage).headers["x-user"] as string | undefined) || undefined,
    logger: { warn: () => undefined, error: () => undefined },
    ...options,
  });
  const server = await listen((req, res) => {
    if (req.url === "/events") return sessions.events(req, res);
    sessions(req, res, () => {
      const url = new URL(req.url ?? "/", "http://x");
      const basket = new Basket();
      const cart = new Cart();
      if (url.pathname === "/basket/add") basket.items.push(url.searchParams.get("item") ?? "?");
      if (url.pathname === "/cart/add") cart.items.push(url.searchParams.get("item") ?? "?");
      if (url.pathname === "/sign-in") rotateStateIds();
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ basket: basket.items, cart: cart.items }));
    });
  });
  return { sessions, server };
}

describe("identity lifecycle", () => {
  const running: Array<{ sessions: Sessions; server: TestServer; backing: StoreBacking }> = [];
  afterEach(async () => {
    for (const { sessions, server, backing } of running.splice(0)) {
      await server.close();
      await sessions.close();
      await backing.cleanup();
    }
  });
  async function start(kind: StoreKind, options: PersistSessionOptions = {}) {
    const backing = await kind.create();
    const app = { ...(await startApp(backing.open(), options)), backing };
    running.push(app);
    return app;
  }

  for (const kind of [fileStoreKind, ...(redisAvailable ? [redisStoreKind] : [])]) {
    it(`${kind.name}: rotateStateIds() moves the data to a new id and cookie, and the old cookie restores nothing`, async () => {
      const { server, backing } = await start(kind);
      const browser = new Browser(server.url);
      await browser.json("/basket/add?item=a");
      await browser.json("/basket/add?item=b");
      const old = browser.cookies.get("identity-basket")!;
      const [oldId] = await backing.ids();
      expect(await browser.json("/sign-in")).toEqual({ basket: ["a", "b"], cart: [] });
      const rotated = browser.cookies.get("identity-basket")!;
      expect(rotated.slice(0, 36)).not.toBe(old.slice(0, 36));
      await sleep(50); // the old record goes once the response is out
      expect(await browser.json("/")).toEqual({ basket: ["a", "b"], cart: [] });
      expect(await browser.json("/", { cookie: `identity-basket=${old}` })).toEqual({ basket: [], cart: [] });
      expect(await backing.ids()).toEqual([rotated.slice(0, 36)]);
      expect(await backing.ids()).not.toContain(oldId);
    });
  }

  it("merges an anonymous cart into the signed-in user's once, expires the browser's cookie, and loses nothing across devices", async () => {
    const { server, backing } = await start(memoryStoreKind);
    const laptop = new Browser(server.url);
    for (const item of ["l1", "l2"]) await laptop.json(`/cart/add?item=${item}`, { headers: { "x-user": "ada" } });
    const visitor = new Browser(server.url);
    for (const item of ["v1", "v2", "v3"]) await visitor.json(`/cart/add?item=${item}`);
    expect(visitor.cookies.has("identity-cart")).toBe(true);
    const anonymousId = visitor.cookies.get("identity-cart")!.slice(0, 36);

    // Ten first signed-in requests at once: one merges, the others see the merged cart.
    const replies = await Promise.all(Array.from({ length: 10 }, () => visitor.json<{ cart: string[] }>("/", { headers: { "x-user": "ada" } })));
    for (const reply of replies) expect([...reply.cart].sort()).toEqual(["l1", "l2", "v1", "v2", "v3"]);
    expect(visitor.cookies.has("identity-cart")).toBe(false);
    expect(visitor.setCookies.filter((line) => /^identity-cart=;.*Max-Age=0/.test(line))).toHaveLength(1);
    expect(await backing.ids()).not.toContain(anonymousId);
    expect((await laptop.json<{ cart: string[] }>("/", { headers: { "x-user": "ada" } })).cart).toHaveLength(5);

    // Two devices with anonymous carts sign in to one user at once: both merge, one after the other.
    const phone = new Browser(server.url);
    const tablet = new Browser(server.url);
    await phone.json("/cart/add?item=p1");
    await tablet.json("/cart/add?item=t1");
    await Promise.all([phone.json("/", { headers: { "x-user": "grace" } }), tablet.json("/", { headers: { "x-user": "grace" } })]);
    expect([...(await phone.json<{ cart: string[] }>("/", { headers: { "x-user": "grace" } })).cart].sort()).toEqual(["p1", "t1"]);
  });

  it("stops restoring a record maxLifetime after its first write, however often it is renewed", async () => {
    const { server } = await start(memoryStoreKind, { maxLifetime: 2, ttl: 3600 });
    const browser = new Browser(server.url);
    const started = Date.now();
    await browser.json("/basket/add?item=0");
    let lastRestored = 0;
    for (let i = 1; Date.now() - started < 3200; i++) {
      const { basket } = await browser.json<{ basket: string[] }>(`/basket/add?item=${i}`);
      // The first record holds item 0; once it expires, a change starts a record without it.
      if (basket.includes("0")) lastRestored = Date.now() - started;
      await sleep(500);
    }
    expect(lastRestored).toBeGreaterThan(1000);
    expect(lastRestored).toBeLessThanOrEqual(2000 + 500);
    // The change after the limit started a new record, which restores in its turn.
    const { basket } = await browser.json<{ basket: string[] }>("/");
    expect(basket.length).toBeGreaterThanOrEqual(1);
    expect(basket).not.toContain("0");
  });

  for (const kind of kinds) {
    it(`${kind.name}: exportUser returns what the user's requests see; deleteUser erases it and tells the user's open streams`, async () => {
      const { sessions, server, backing } = await start(kind);
      const device = new Browser(server.url);
      for (const item of ["x", "y"]) await device.json(`/cart/add?item=${item}`, { headers: { "x-user": "erin" } });
      await new Browser(server.url).json("/cart/add?item=other", { headers: { "x-user": "frank" } });
      const seen = await device.json<{ cart: string[] }>("/", { headers: { "x-user": "erin" } });

      const exported = await sessions.exportUser("erin");
      expect(exported.map(({ key, state, version }) => ({ key, state: { ...state }, version }))).toEqual([{ key: "identity-cart", state: { items: seen.cart }, version: 2 }]);
      expect(exported[0]!.state).toBeInstanceOf(Cart);

      const streams = await Promise.all([openEvents(server.url, { "x-user": "erin" }), openEvents(server.url, { "x-user": "erin" })]);
      try {
        const before = (await backing.ids()).length;
        expect(await sessions.deleteUser("erin")).toBe(1);
        for (const stream of streams) expect((await stream.nextChange(1000)).data).toBe(JSON.stringify({ key: "identity-cart", version: 0 }));
        expect(await backing.ids()).toHaveLength(before - 1);
        expect(await sessions.exportUser("erin")).toEqual([]);
        expect((await device.json<{ cart: string[] }>("/", { headers: { "x-user": "erin" } })).cart).toEqual([]);
        expect((await sessions.exportUser("frank")).map((record) => ({ ...record.state }))).toEqual([{ items: ["other"] }]);
      } finally {
        for (const stream of streams) await stream.close();
      }
    });
  }
});

describe("rotation under SIGKILL (child process, FileStore)", () => {
  let app: ChildServer | undefined;
  afterEach(async () => {
    app?.child.kill("SIGKILL");
    await app?.exited;
  });

  it("never leaves the browser's cookie naming nothing, nor a new record reachable while the browser still has the old cookie", async () => {
    const dir = await mkdtemp(join(tmpdir(), "persist-session-rotate-kill-"));
    const fixture = fileURLToPath(new URL("./fixtures/rotate-app.mjs", import.meta.url));
    const env = { STORE_DIR: dir, SECRET };
    const phases = { before: 0, after: 0, oldLeft: 0 };
    try {
      app = await startChildServer(fixture, [], env, /"port":(\d+)/);
      let cookie = "";
      const jar = () => new Browser(app!.url);
      const first = jar();
      await first.json("/add");
      cookie = `basket=${first.cookies.get("basket")!}`;
      for (let kill = 0; kill < 20; kill++) {
        const before = await jar().json<{ items: string[] }>("/add", { cookie });
        // Sign in, and kill the process at a random point of the rotation.
        const browser = jar();
        const signIn = browser.request("/sign-in", { cookie }).then(
          () => true,
          () => false,
        );
        await sleep(Math.random() * 12);
        app.child.kill("SIGKILL");
        await app.exited;
        const answered = await signIn;
        const newCookie = answered && browser.cookies.has("basket") ? `basket=${browser.cookies.get("basket")!}` : undefined;
        app = await startChildServer(fixture, [], env, /"port":(\d+)/);
        const held = newCookie ?? cookie;
        phases[newCookie === undefined ? "before" : "after"]++;
        // The cookie the browser holds restores its state: never none.
        expect((await jar().json<{ items: string[] }>("/", { cookie: held })).items).toEqual(before.items);
        if (newCookie !== undefined && (await jar().json<{ items: string[] }>("/", { cookie })).items.length > 0) phases.oldLeft++;
        if (newCookie === undefined) {
          // The browser kept the old cookie: no other record holds this state (a new one, if written, is named by no cookie).
          const ids = (await readdir(dir)).filter((name) => /^[0-9a-f-]{36}$/.test(name));
          expect(ids).toContain(cookie.slice("basket=".length, "basket=".length + 36));
        }
        cookie = held;
      }
      console.log(
        `rotation kills: ${phases.before} before the browser had the new cookie, ${phases.after} after (${phases.oldLeft} of them before the old record was deleted, so it stays until it expires)`,
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
