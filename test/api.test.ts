import { chmod, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import {
  clearCookieState,
  FileStore,
  inspectState,
  MemoryStore,
  persist,
  persistSession,
  type PersistSessionOptions,
  type SessionStore,
} from "../src/index.js";
import { Browser, listen } from "./helpers/http.js";
import { wrapStore } from "./helpers/wrap-store.js";
import { SECRET } from "./suites/behaviour.js";

class Money {
  constructor(readonly cents: number) {}
  add(cents: number): Money {
    return new Money(this.cents + cents);
  }
}
class Unregistered {
  x = 1;
}

@persist("api-cart", {
  types: { Money: { reduce: (value) => value instanceof Money && value.cents, revive: (cents) => new Money(cents as number) } },
})
class Cart {
  items: Array<{ sku: string; qty: number }> = [];
  byId = new Map<string, { qty: number }>();
  labels = new Set<{ name: string }>();
  bytes = new Uint8Array(4);
  total = new Money(0);
  extra: Record<string, unknown> = {};
  get size(): number {
    return this.items.length;
  }
}

const quiet = { warn: () => undefined, error: () => undefined };
const open: Array<{ close(): Promise<void> }> = [];
afterEach(async () => {
  for (const sessions of open.splice(0)) await sessions.close();
});

/** An in-process Fetch app with a cookie jar: enough for behaviour that is not about HTTP. */
function app(store: SessionStore = new MemoryStore(), options: PersistSessionOptions = {}) {
  const sessions = persistSession({ secret: SECRET, store, logger: quiet, sweepInterval: 0, ...options });
  open.push(sessions);
  let cookie = "";
  return {
    sessions,
    cookie: () => cookie,
    async run<T>(fn: () => T | Promise<T>, url = "http://localhost/"): Promise<{ value: T; response: Response }> {
      let value!: T;
      const response = await sessions.fetch(async () => {
        value = await fn();
        return new Response("ok");
      })(new Request(url, { headers: cookie ? { cookie } : {} }));
      for (const line of response.headers.getSetCookie()) cookie = line.split(";")[0]!;
      return { value, response };
    },
  };
}

describe("tracking nested changes", () => {
  it("stores changes made through Map.get, Set iteration, typed arrays, delete and array truncation", async () => {
    const shop = app();
    await shop.run(() => {
      const cart = new Cart();
      cart.byId.set("a", { qty: 1 });
      cart.labels.add({ name: "gift" });
      cart.items.push({ sku: "x", qty: 1 }, { sku: "y", qty: 2 }, { sku: "z", qty: 3 });
      cart.extra.gone = true;
    });
    await shop.run(() => {
      const cart = new Cart();
      cart.byId.get("a")!.qty = 5;
      for (const label of cart.labels) label.name = "wrapped gift";
      cart.bytes[2] = 7;
      delete cart.extra.gone;
      cart.items.length = 2;
      cart.items.sort((a, b) => b.qty - a.qty);
    });
    const { value } = await shop.run(() => {
      const cart = new Cart();
      return { qty: cart.byId.get("a")!.qty, labels: [...cart.labels].map((l) => l.name), bytes: [...cart.bytes], extra: { ...cart.extra }, items: cart.items.map((i) => i.sku) };
    });
    expect(value).toEqual({ qty: 5, labels: ["wrapped gift"], bytes: [0, 0, 7, 0], extra: {}, items: ["y", "x"] });
  });

  it("round-trips a registered class and keeps shared references shared", async () => {
    const shop = app();
    await shop.run(() => {
      const cart = new Cart();
      cart.total = cart.total.add(250);
      const item = { sku: "x", qty: 1 };
      cart.items.push(item);
      cart.extra.same = cart.items[0];
    });
    const { value } = await shop.run(() => {
      const cart = new Cart();
      return { money: cart.total instanceof Money, cents: cart.total.cents, shared: cart.extra.same === cart.items[0], size: cart.size };
    });
    expect(value).toEqual({ money: true, cents: 250, shared: true, size: 1 });
  });

  it.each([
    ["an instance of an unregistered class", (cart: Cart) => (cart.extra.obj = new Unregistered()), "Cart.extra.obj (an instance of an unregistered class)"],
    ["a symbol-keyed property", (cart: Cart) => ((cart.extra as Record<symbol, unknown>)[Symbol("s")] = 1), "Cart.extra[Symbol(s)] (a symbol-keyed property)"],
    ["a function inside a Map value", (cart: Cart) => cart.byId.set("f", { qty: (() => 1) as unknown as number }), "Cart.byId.set().qty (a function)"],
    ["an accessor property", (cart: Cart) => Object.defineProperty(cart.extra, "g", { get: () => 1 }), "Cart.extra.g (an accessor property)"],
  ])("refuses %s with its path", async (_name, change, where) => {
    const shop = app();
    const { value } = await shop.run(() => {
      try {
        change(new Cart());
        return "no error";
      } catch (error) {
        return (error as Error).message;
      }
    });
    expect(value).toContain(`persist-session: cannot persist ${where}`);
  });

  it("writes nothing when a value is set to what it already is", async () => {
    let writes = 0;
    const memory = new MemoryStore();
    const store = wrapStore(memory, { set: (id: string, record: Parameters<SessionStore["set"]>[1]) => (writes++, memory.set(id, record)) });
    const shop = app(store);
    await shop.run(() => void new Cart().items.push({ sku: "a", qty: 1 }));
    expect(writes).toBe(1);
    const { response } = await shop.run(() => {
      const cart = new Cart();
      cart.items[0]!.qty = 1;
      cart.items[0]!.sku = "a";
    });
    expect(writes).toBe(1);
    expect(response.headers.getSetCookie()).toEqual([]);
  });

  it("refuses a change made after the response was committed, and does not store it", async () => {
    const shop = app();
    let late: Promise<string> | undefined;
    await shop.run(() => {
      const cart = new Cart();
      cart.items.push({ sku: "kept", qty: 1 });
      late = new Promise((resolve) =>
        setTimeout(() => {
          try {
            cart.items.push({ sku: "late", qty: 1 });
            resolve("no error");
          } catch (error) {
            resolve((error as Error).message);
          }
        }, 20),
      );
    });
    expect(await late).toMatch(/^persist-session: Cart\.items\[1\] was changed after the response was sent/);
    const { value } = await shop.run(() => new Cart().items.map((item) => item.sku));
    expect(value).toEqual(["kept"]);
  });
});

describe("the request context", () => {
  it("tells what to do when a persisted class is constructed outside a request", () => {
    expect(() => new Cart()).toThrow(
      "persist-session: new Cart() was used outside a request handled by persistSession(). Run the handler under the middleware (`app.use(sessions)`, `sessions(req, res, next)` or `sessions.fetch(handler)`, or a framework adapter).",
    );
  });

  it("refuses clearCookieState and inspectState on objects that are not persisted state", async () => {
    const shop = app();
    const { value } = await shop.run(async () => {
      const errors: string[] = [];
      await clearCookieState({}).catch((error: Error) => errors.push(error.message));
      try {
        inspectState({});
      } catch (error) {
        errors.push((error as Error).message);
      }
      return errors;
    });
    expect(value).toEqual([
      "persist-session: clearCookieState() expects an instance of a @persist class created in this request.",
      "persist-session: inspectState() expects an instance of a @persist class created in this request.",
    ]);
  });

  it("reports what is stored through inspectState", async () => {
    const shop = app();
    const before = await shop.run(() => inspectState(new Cart()));
    expect(before.value).toMatchObject({ key: "api-cart", id: undefined, stored: false, version: 0, bytes: 0 });
    await shop.run(() => void new Cart().items.push({ sku: "a", qty: 1 }));
    const after = await shop.run(() => inspectState(new Cart()));
    expect(after.value).toMatchObject({ key: "api-cart", stored: true, version: 1, changed: false, location: "memory of this process" });
    expect(after.value.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(after.value.bytes).toBeGreaterThan(10);
  });
});

describe("the node:http adapter and later middleware", () => {
  it("keeps a wrapper that a later middleware put on res.write and res.end (as compression does) for the whole response", async () => {
    const sessions = persistSession({ secret: SECRET, store: new MemoryStore(), logger: quiet, sweepInterval: 0 });
    open.push(sessions);
    const seen: string[] = [];
    const server = await listen((req, res) =>
      sessions(req, res, async () => {
        // A middleware mounted after `sessions` wraps the (gated) methods.
        const { write, end } = res;
        res.write = function (this: typeof res, chunk: unknown, ...rest: unknown[]) {
          seen.push(`write ${String(chunk)}`);
          return (write as (...args: unknown[]) => boolean).call(this, String(chunk).toUpperCase(), ...rest);
        } as typeof res.write;
        res.end = function (this: typeof res, chunk?: unknown, ...rest: unknown[]) {
          seen.push(`end ${String(chunk)}`);
          return (end as (...args: unknown[]) => typeof res).call(this, chunk === undefined ? chunk : String(chunk).toUpperCase(), ...rest);
        } as typeof res.end;
        new Cart().items.push({ sku: "a", qty: 1 }); // a change: the first write is the commit point
        res.write("first ");
        await new Promise((resolve) => setTimeout(resolve, 20)); // the record is stored meanwhile
        res.write("second ");
        res.end("last");
      }),
    );
    try {
      const response = await fetch(server.url);
      expect(await response.text()).toBe("FIRST SECOND LAST");
      expect(response.headers.getSetCookie()).toHaveLength(1);
      expect(seen).toEqual(["write first ", "write second ", "end last"]);
    } finally {
      await server.close();
    }
  });
});

describe("declaring and configuring", () => {
  it("refuses a key that cannot be a cookie name", () => {
    expect(() => persist("has space")).toThrow(TypeError);
    expect(() => persist("")).toThrow(/@persist key is invalid: ""/);
  });

  it("refuses a key already used by another class", () => {
    expect(() => persist("api-cart")(class Other {})).toThrow('persist-session: @persist("api-cart") is already used by class Cart. Give Other a key of its own.');
  });

  it.each([
    [{ secret: "too short" }, "option secret is invalid: 9 characters"],
    [{ ttl: -1 }, "option ttl is invalid: -1"],
    [{ maxRecordBytes: 0 }, "option maxRecordBytes is invalid: 0"],
    [{ cookie: { sameSite: "sometimes" as "lax" } }, "option cookie.sameSite is invalid: sometimes"],
  ])("refuses bad options at start-up: %j", (options, message) => {
    expect(() => persistSession({ store: new MemoryStore(), sweepInterval: 0, ...options })).toThrow(message);
  });

  it("without a secret, keeps a generated one in the store directory (0600) and warns once", async () => {
    const dir = await mkdtemp(join(tmpdir(), "persist-session-secret-"));
    try {
      const warnings: string[] = [];
      const logger = { warn: (message: string) => warnings.push(message), error: () => undefined };
      const first = persistSession({ store: new FileStore({ dir }), logger, sweepInterval: 0 });
      open.push(first);
      const handler = (sessions: typeof first) =>
        sessions.fetch(async () => {
          const cart = new Cart();
          cart.items.push({ sku: "a", qty: 1 });
          return new Response(String(cart.items.length));
        });
      const response = await handler(first)(new Request("http://localhost/"));
      await handler(first)(new Request("http://localhost/"));
      const secret = (await readFile(join(dir, ".secret"), "utf8")).trim();
      expect(secret.length).toBeGreaterThanOrEqual(32);
      expect((await stat(join(dir, ".secret"))).mode & 0o777).toBe(0o600);
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toContain("no secret given");
      expect(warnings[0]).not.toContain(secret);
      // A restart reuses it: the cookie still opens the record.
      const cookie = response.headers.getSetCookie()[0]!.split(";")[0]!;
      await first.close();
      const second = persistSession({ store: new FileStore({ dir }), logger, sweepInterval: 0 });
      open.push(second);
      const again = await handler(second)(new Request("http://localhost/", { headers: { cookie } }));
      expect(await again.text()).toBe("2");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("FileStore's generated secret", () => {
  it("gives every one of many concurrent first callers, in separate store instances, the same whole secret", async () => {
    const dir = await mkdtemp(join(tmpdir(), "persist-session-secret-"));
    try {
      const stores = Array.from({ length: 20 }, () => new FileStore({ dir }));
      const secrets = (await Promise.all(stores.map((store) => store.secret()))).map(({ secret }) => secret);
      await Promise.all(stores.map((store) => store.close()));
      expect(new Set(secrets).size).toBe(1);
      expect(secrets[0]!.length).toBeGreaterThanOrEqual(32);
      expect((await readFile(join(dir, ".secret"), "utf8")).trim()).toBe(secrets[0]);
      // No temporary file is left behind by the callers that lost the race.
      expect((await readdir(dir)).filter((name) => name.startsWith(".secret"))).toEqual([".secret"]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("reports a store directory that others can read through the app's logger", async () => {
    const dir = await mkdtemp(join(tmpdir(), "persist-session-mode-"));
    try {
      await chmod(dir, 0o755);
      const warnings: string[] = [];
      const shop = app(new FileStore({ dir }), { logger: { warn: (message) => warnings.push(message), error: () => undefined } });
      await shop.run(() => void new Cart().items.push({ sku: "a", qty: 1 }));
      expect(warnings).toEqual([`persist-session: the store directory ${dir} is readable by other users (mode 755). Run \`chmod 700\` on it; session records are private.`]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("refuses a damaged secret file with an error that says what to do, instead of signing with it", async () => {
    const dir = await mkdtemp(join(tmpdir(), "persist-session-secret-"));
    try {
      await writeFile(join(dir, ".secret"), "", { mode: 0o600 });
      await expect(new FileStore({ dir }).secret()).rejects.toThrow(/\.secret is damaged \(0 characters, at least 32 needed\)\. Delete the file/);
      expect(await readFile(join(dir, ".secret"), "utf8")).toBe("");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("cookie attributes", () => {
  const change = () => void new Cart().items.push({ sku: "a", qty: 1 });

  it("adds Secure on HTTPS, and behind a trusted proxy that says so", async () => {
    expect((await app().run(change, "https://example.test/")).response.headers.getSetCookie()[0]).toMatch(/; Secure/);
    expect((await app().run(change, "http://example.test/")).response.headers.getSetCookie()[0]).not.toMatch(/Secure/);
    const proxied = persistSession({ secret: SECRET, store: new MemoryStore(), logger: quiet, sweepInterval: 0, trustProxy: true });
    open.push(proxied);
    const response = await proxied.fetch(async () => (change(), new Response("ok")))(
      new Request("http://internal/", { headers: { "x-forwarded-proto": "https" } }),
    );
    expect(response.headers.getSetCookie()[0]).toMatch(/; Secure/);
  });

  it("uses the configured path, domain and SameSite on the session cookie and on its expiry", async () => {
    const shop = app(new MemoryStore(), { ttl: 600, cookie: { path: "/shop", domain: "example.test", sameSite: "strict" } });
    const { response } = await shop.run(change, "https://example.test/shop");
    expect(response.headers.getSetCookie()).toEqual([
      expect.stringMatching(/^api-cart=[0-9a-f-]{36}\.[A-Za-z0-9_-]{43}; Max-Age=600; Domain=example\.test; Path=\/shop; HttpOnly; Secure; SameSite=Strict$/),
    ]);
    const cleared = await shop.run(() => clearCookieState(new Cart()), "https://example.test/shop");
    expect(cleared.response.headers.getSetCookie()).toEqual([
      "api-cart=; Max-Age=0; Domain=example.test; Path=/shop; Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; Secure; SameSite=Strict",
    ]);
  });

  it("renews the expiry (rolling) once a tenth of the ttl has passed, without a change", async () => {
    const store = new MemoryStore();
    const shop = app(store, { ttl: 1000 });
    await shop.run(change);
    const quiet = await shop.run(() => new Cart().items.length);
    expect(quiet.response.headers.getSetCookie()).toEqual([]);
    const [id] = await collect(store.expiredIds(Infinity));
    const record = (await store.get(id!))!;
    await store.set(id!, { ...record, updatedAt: record.updatedAt - 200_000, expires: record.expires - 200_000 });
    // A new process: nothing cached stands in for the store.
    const later = app(store, { ttl: 1000 });
    const refreshed = await later.sessions.fetch(async () => new Response(String(new Cart().items.length)))(
      new Request("http://localhost/", { headers: { cookie: shop.cookie() } }),
    );
    expect(await refreshed.text()).toBe("1");
    expect(refreshed.headers.getSetCookie()[0]).toMatch(/Max-Age=1000/);
    expect((await store.get(id!))!.expires).toBeGreaterThan(record.expires);
  });
});

describe("cookie renewal on a change", () => {
  /** A node:http app over real HTTP on `store`; POST /add adds an item, GET / counts them. */
  async function served(options: PersistSessionOptions) {
    const sessions = persistSession({ secret: SECRET, store: new MemoryStore(), logger: quiet, sweepInterval: 0, trustProxy: true, ...options });
    open.push(sessions);
    const server = await listen((req, res) =>
      sessions(req, res, () => {
        const cart = new Cart();
        if (req.method === "POST") change(cart);
        res.end(String(cart.items.length));
      }),
    );
    servers.push(server);
    return new Browser(server.url);
  }
  const change = (cart: Cart) => void cart.items.push({ sku: "a", qty: 1 });
  const servers: Array<{ close(): Promise<void> }> = [];
  afterEach(async () => {
    for (const server of servers.splice(0)) await server.close();
  });
  const add = (browser: Browser, headers: Record<string, string> = {}) => browser.request("/", { method: "POST", headers });

  it("sets the cookie on a change only when this process set it more than a hundredth of the ttl (at most a minute) ago, or without the same Secure", async () => {
    // ttl 1,000 s: a change within 10 s of the cookie keeps it as it is.
    const browser = await served({ ttl: 1000 });
    expect((await add(browser)).headers.getSetCookie()).toEqual([expect.stringMatching(/^api-cart=.*; Max-Age=1000; /)]);
    const cookie = browser.cookieHeader();
    for (let i = 0; i < 3; i++) expect((await add(browser)).headers.getSetCookie()).toEqual([]);
    expect(await (await browser.request("/")).text()).toBe("4");
    // Over HTTPS the cookie differs (Secure): set at once.
    expect((await add(browser, { "x-forwarded-proto": "https" })).headers.getSetCookie()).toEqual([expect.stringMatching(/; Secure; /)]);
    expect(browser.cookieHeader()).toBe(cookie);
  });

  it("sets it again on the change after a failed write: the failed response's cookie never arrived", async () => {
    const memory = new MemoryStore();
    let failNext = false;
    const store = wrapStore(memory, {
      set: (id: string, record: Parameters<MemoryStore["set"]>[1]) => {
        if (!failNext) return memory.set(id, record);
        failNext = false;
        return Promise.reject(new Error("disk full"));
      },
    });
    const browser = await served({ ttl: 1000, store });
    expect((await add(browser)).headers.getSetCookie()).toHaveLength(1);
    failNext = true;
    const failed = await add(browser);
    expect(failed.status).toBe(500);
    expect(failed.headers.getSetCookie()).toEqual([]);
    expect((await add(browser)).headers.getSetCookie()).toEqual([expect.stringMatching(/^api-cart=.*; Max-Age=1000; /)]);
    expect(await (await browser.request("/")).text()).toBe("2");
  });

  it("sets it again on a change once that time has passed", async () => {
    // ttl 2 s: the cookie is fresh for 20 ms.
    const browser = await served({ ttl: 2 });
    expect((await add(browser)).headers.getSetCookie()).toHaveLength(1);
    await new Promise((resolve) => setTimeout(resolve, 60));
    expect((await add(browser)).headers.getSetCookie()).toEqual([expect.stringMatching(/^api-cart=.*; Max-Age=2; /)]);
    expect(await (await browser.request("/")).text()).toBe("2");
  });
});

async function collect<T>(iterable: AsyncIterable<T>): Promise<T[]> {
  const items: T[] = [];
  for await (const item of iterable) items.push(item);
  return items;
}


describe("closing", () => {
  it("runs no sweep after close(), not even the first one a second after start", async () => {
    const store = new MemoryStore();
    let sweeps = 0;
    const counting = wrapStore(store, {
      expiredIds: (now: number) => {
        sweeps++;
        return store.expiredIds(now);
      },
    });
    const sessions = persistSession({ secret: SECRET, store: counting });
    await sessions.close();
    await new Promise((resolve) => setTimeout(resolve, 1300));
    expect(sweeps).toBe(0);
  });
});
