/**
 * Versioned state (#18): records carry the version that wrote them; older ones
 * are migrated and validated at restore, newer ones are left untouched.
 */
import { mkdtemp, readdir, readFile, rename, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import * as v from "valibot";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { z } from "zod";
import { FileStore, persist, persistSession, type PersistOptions, type Sessions } from "../src/index.js";
import { startChildServer, type ChildServer } from "./helpers/child-server.js";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { Browser, type TestServer } from "./helpers/http.js";
import { connectRedis, redisAvailable, redisUrl, uniqueRedisPrefix } from "./helpers/stores.js";

const SECRET = "versioned-secret-0123456789-abcdefghijk";
const FIXTURE = fileURLToPath(new URL("./fixtures/versioned-app.mjs", import.meta.url));
const UUID_FILE = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

async function stop(app: ChildServer): Promise<void> {
  app.child.kill("SIGTERM");
  await app.exited;
}

describe("a release that changes the class: v1 records restored by v3 code (child processes)", () => {
  const stores = [{ name: "FileStore", store: "file" }, ...(redisAvailable ? [{ name: "RedisStore", store: "redis" }] : [])];
  for (const { name, store } of stores) {
    it(`${name}: restores all 50 v1 records through two migrations, and stores each as version 3 after its next request`, async () => {
      const dir = await mkdtemp(join(tmpdir(), "persist-session-versions-"));
      const prefix = uniqueRedisPrefix();
      const env = { STORE: store, STORE_DIR: dir, REDIS_URL: redisUrl, PREFIX: prefix, SECRET };
      const redis = store === "redis" ? await connectRedis() : undefined;
      const storedData = async (id: string): Promise<string> => {
        const text = store === "redis" ? ((await redis!.sendCommand(["GET", `${prefix}${id}`])) as string) : await readFile(join(dir, id), "utf8");
        return text.slice(text.indexOf("\n") + 1);
      };
      try {
        const v1 = await startChildServer(FIXTURE, [], { ...env, RELEASE: "1" }, /"port":(\d+)/);
        const browsers = await Promise.all(
          Array.from({ length: 50 }, async (_, i) => {
            const browser = new Browser(v1.url);
            await browser.json(`/add?sku=a${i}`);
            expect(await browser.json(`/add?sku=b${i}`)).toEqual({ lines: [`a${i}`, `b${i}`] });
            return browser;
          }),
        );
        await stop(v1);
        const ids = browsers.map((browser) => browser.cookies.get("cart")!.slice(0, 36));
        for (const id of ids) expect((await storedData(id)).startsWith("[")).toBe(true); // v1 data: no version mark

        const v3 = await startChildServer(FIXTURE, [], { ...env, RELEASE: "3" }, /"port":(\d+)/);
        try {
          for (const [i, browser] of browsers.entries()) {
            const retargeted = new Browser(v3.url);
            for (const [cookie, value] of browser.cookies) retargeted.cookies.set(cookie, value);
            expect(await retargeted.json("/")).toEqual({ items: [{ sku: `a${i}`, quantity: 1 }, { sku: `b${i}`, quantity: 1 }], currency: "EUR" });
          }
          // Written back at that request's commit: migrated once, stored as version 3.
          for (const id of ids) expect((await storedData(id)).startsWith("v3\n[")).toBe(true);
        } finally {
          await stop(v3);
        }
      } finally {
        if (redis !== undefined) {
          const keys = (await redis.sendCommand(["KEYS", `${prefix}*`])) as string[];
          if (keys.length > 0) await redis.sendCommand(["DEL", ...keys]);
          redis.destroy();
        }
        await rm(dir, { recursive: true, force: true });
      }
    }, 60_000);
  }
});

async function listen(port: number, listener: http.RequestListener): Promise<TestServer> {
  const server = http.createServer(listener);
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** The same key, re-decorated per release in one process: the newest class wins, as when a module reloads. */
function release<Shape extends object>(options: PersistOptions<Shape>, Cart: abstract new () => Shape) {
  return persist("versioned-cart", options)(Cart as never) as unknown as new () => { items: Array<{ sku: string; quantity: number }>; currency: string };
}

class CartV2 {
  items: Array<{ sku: string; quantity: number }> = [];
  currency = "EUR";
}

describe("records a schema refuses, a migration that throws, and a rollback", () => {
  let dir: string;
  let sessions: Sessions;
  let server: TestServer;
  const warnings: string[] = [];
  const errors: string[] = [];
  let Cart: ReturnType<typeof release>;

  let port = 0;
  async function start(): Promise<void> {
    sessions = persistSession({ secret: SECRET, store: new FileStore({ dir }), sweepInterval: 0, logger: { warn: (m) => void warnings.push(m), error: (m) => void errors.push(m) } });
    // The same port after a restart, so the test's browsers keep talking to the app.
    server = await listen(port, (req, res) =>
      sessions(req, res, () => {
        const url = new URL(req.url ?? "/", "http://x");
        const cart = new Cart();
        if (url.pathname === "/add") cart.items.push({ sku: url.searchParams.get("sku") ?? "?", quantity: Number(url.searchParams.get("quantity") ?? 1) });
        res.end(JSON.stringify({ ...cart }));
      }),
    );
    port = Number(new URL(server.url).port);
  }
  async function restart(): Promise<void> {
    await server.close();
    await sessions.close();
    await start();
    // Let the client's pool see its kept-alive sockets to the old server close before reusing the port.
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const records = async () => (await readdir(dir)).filter((name) => UUID_FILE.test(name));
  const quarantined = async () => (await readdir(dir)).filter((name) => name.includes(".corrupt-"));

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "persist-session-schema-"));
    warnings.length = 0;
    errors.length = 0;
    Cart = release({ version: 2 }, CartV2);
    port = 0;
    await start();
  });
  afterEach(async () => {
    await server.close();
    await sessions.close();
    await rm(dir, { recursive: true, force: true });
  });

  const schemas = {
    zod: z.object({ items: z.array(z.object({ sku: z.string(), quantity: z.number().int().positive() })), currency: z.string() }),
    valibot: v.object({ items: v.array(v.object({ sku: v.string(), quantity: v.pipe(v.number(), v.integer(), v.minValue(1)) })), currency: v.string() }),
  };
  for (const [library, schema] of Object.entries(schemas)) {
    it(`${library}: sets a record that fails the schema aside with its bytes, serves fresh state with a 2xx, and warns once with the field's path`, async () => {
      const browser = new Browser(server.url);
      await browser.json("/add?sku=ok&quantity=2");
      await browser.json("/add?sku=bad&quantity=-1"); // stored by code without a schema
      const [id] = await records();
      const bytes = await readFile(join(dir, id!));

      Cart = release({ version: 2, schema }, CartV2);
      await restart();
      const response = await browser.request("/");
      expect(response.status).toBe(200);
      expect(await response.json()).toEqual({ items: [], currency: "EUR" });
      const [aside] = await quarantined();
      expect(aside).toMatch(new RegExp(`^${id}\\.corrupt-`));
      expect(await readFile(join(dir, aside!))).toEqual(bytes);
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatch(/the record of "versioned-cart", version 2 failed CartV2's schema at items\[1\]\.quantity: /);
    });
  }

  it("uses the schema's output: coerced and defaulted fields reach the handler", async () => {
    const browser = new Browser(server.url);
    await browser.json("/add?sku=x&quantity=3");
    Cart = release({ version: 2, schema: z.object({ items: z.array(z.object({ sku: z.string().toUpperCase(), quantity: z.number() })), currency: z.string().default("EUR") }) }, CartV2);
    await restart();
    expect(await browser.json("/")).toEqual({ items: [{ sku: "X", quantity: 3 }], currency: "EUR" });
  });

  it("sets aside a record whose migration throws, and fixed code restores the original from its kept bytes", async () => {
    const browser = new Browser(server.url);
    await browser.json("/add?sku=kept");
    const [id] = await records();
    const broken = () => {
      throw new Error("no such currency table");
    };
    Cart = release({ version: 3, migrate: { 3: broken } }, CartV2);
    await restart();
    const response = await browser.request("/");
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ items: [], currency: "EUR" });
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/the migration to version 3 of the record of "versioned-cart", version 2 threw: no such currency table/);
    const [aside] = await quarantined();

    // An operator puts the record back (README: "Changing a state class"); the fixed release restores it.
    await rename(join(dir, aside!), join(dir, id!));
    Cart = release({ version: 3, migrate: { 3: (v2) => ({ ...v2, currency: "CHF" }) } }, CartV2);
    await restart();
    expect(await browser.json("/")).toEqual({ items: [{ sku: "kept", quantity: 1 }], currency: "CHF" });
  });

  it("leaves records of a newer release byte for byte over 100 requests of the older code, which gets fresh state and cannot change them", async () => {
    const browsers = await Promise.all(
      Array.from({ length: 5 }, async (_, i) => {
        const browser = new Browser(server.url);
        await browser.json(`/add?sku=new-${i}`);
        return browser;
      }),
    );
    const before = new Map<string, Buffer>();
    for (const id of await records()) before.set(id, await readFile(join(dir, id)));

    Cart = release({ version: 1 }, CartV2); // the rollback: code that writes version 1
    await restart();
    for (let i = 0; i < 100; i++) {
      const browser = browsers[i % browsers.length]!;
      const response = await browser.request(i % 2 === 0 ? "/" : "/add?sku=old");
      if (i % 2 === 0) expect(await response.json()).toEqual({ items: [], currency: "EUR" });
      else expect(response.status).toBe(500); // the change throws: the record is not this code's to change
    }
    expect(await records()).toEqual([...before.keys()]);
    for (const [id, bytes] of before) expect(await readFile(join(dir, id))).toEqual(bytes);
    expect(await quarantined()).toEqual([]);
  });

  describe('validate: "always": the state a commit is about to store is checked too', () => {
    /** Standard Schema V1 around zod's, answering a tick later: an asynchronous validator. */
    const later = <T>(inner: { "~standard": { validate: (value: unknown) => unknown } }) => ({
      "~standard": {
        version: 1 as const,
        vendor: "test-async",
        validate: async (value: unknown) => {
          await new Promise((resolve) => setTimeout(resolve, 5));
          return inner["~standard"].validate(value) as { value: T } | { issues: Array<{ message: string; path?: PropertyKey[] }> };
        },
      },
    });
    const checks = { ...schemas, "async zod": later<z.infer<typeof schemas.zod>>(schemas.zod) };

    for (const [library, schema] of Object.entries(checks)) {
      it(`${library}: stores a change the schema accepts`, async () => {
        Cart = release({ version: 2, schema, validate: "always" }, CartV2);
        await restart();
        const browser = new Browser(server.url);
        const response = await browser.request("/add?sku=ok&quantity=2");
        expect(response.status).toBe(200);
        expect(await browser.json("/")).toEqual({ items: [{ sku: "ok", quantity: 2 }], currency: "EUR" });
        const [id] = await records();
        expect(await readFile(join(dir, id!), "utf8")).toContain('"ok"');
        expect(errors).toEqual([]);
      });

      it(`${library}: fails the request with a 500 for a change the schema refuses, logs the key and path, and leaves the stored record as it was`, async () => {
        Cart = release({ version: 2, schema, validate: "always" }, CartV2);
        await restart();
        const browser = new Browser(server.url);
        await browser.json("/add?sku=ok&quantity=2");
        const [id] = await records();
        const bytes = await readFile(join(dir, id!));

        const refused = await browser.request("/add?sku=bad&quantity=-1");
        expect(refused.status).toBe(500);
        expect(refused.headers.get("set-cookie")).toBeNull();
        expect(errors).toHaveLength(1);
        expect(errors[0]).toMatch(/^persist-session: the state of "versioned-cart" failed CartV2's schema at commit, at items\[1\]\.quantity: .+\. Nothing of the request was stored/);
        await sessions.close(); // every queued write is flushed: none was queued
        expect(await readFile(join(dir, id!))).toEqual(bytes);
        expect(await records()).toEqual([id]);
        await restart();
        // The in-process copy the handler changed was dropped too: the next request reads the stored one.
        expect(await browser.json("/")).toEqual({ items: [{ sku: "ok", quantity: 2 }], currency: "EUR" });
      });
    }

    it("the next request of the browser waits for an asynchronous check, and never sees a refused change", async () => {
      Cart = release({ version: 2, schema: checks["async zod"], validate: "always" }, CartV2);
      await restart();
      const browser = new Browser(server.url);
      await browser.json("/add?sku=ok&quantity=1");
      const [refused, next] = await Promise.all([browser.request("/add?sku=bad&quantity=0"), browser.json("/")]);
      expect(refused.status).toBe(500);
      expect(next).toEqual({ items: [{ sku: "ok", quantity: 1 }], currency: "EUR" });
    });

    it("stores the instance as the handler left it, not the schema's output", async () => {
      const upper = z.object({ items: z.array(z.object({ sku: z.string().toUpperCase(), quantity: z.number() })), currency: z.string() });
      Cart = release({ version: 2, schema: upper, validate: "always" }, CartV2);
      await restart();
      const browser = new Browser(server.url);
      expect(await browser.json("/add?sku=lower")).toEqual({ items: [{ sku: "lower", quantity: 1 }], currency: "EUR" });
      const [id] = await records();
      expect(await readFile(join(dir, id!), "utf8")).toContain('"lower"');
    });

    it('checks nothing at commit without validate: "always"', async () => {
      Cart = release({ version: 2, schema: schemas.zod }, CartV2);
      await restart();
      const browser = new Browser(server.url);
      expect((await browser.request("/add?sku=bad&quantity=-1")).status).toBe(200);
      expect(errors).toEqual([]);
    });
  });
});

describe("versioning options", () => {
  it('refuses a validate option other than "restore" or "always", and "always" without a schema', () => {
    expect(() => persist("bad-validate", { schema: z.object({}), validate: "sometimes" as never })).toThrow(
      new TypeError('persist-session: option validate is invalid: "sometimes". Use "restore" (the default) or "always".'),
    );
    expect(() => persist("bad-validate-true", { schema: z.object({}), validate: true as never })).toThrow('persist-session: option validate is invalid: true. Use "restore"');
    expect(() => persist("bad-validate-null", { schema: z.object({}), validate: null as never })).toThrow('persist-session: option validate is invalid: null. Use "restore"');
    expect(() => persist("validate-without-schema", { validate: "always" })).toThrow(
      new TypeError('persist-session: option validate is invalid: "always" needs a schema to check with. Give schema too, or leave validate out.'),
    );
    expect(() => persist("validate-restore", { validate: "restore" })).not.toThrow();
  });

  it("refuses a bad version, a migration key out of range and a schema that is not one", () => {
    expect(() => persist("bad-version", { version: 0 })).toThrow("persist-session: option version is invalid: 0. Use a positive integer");
    expect(() => persist("bad-migrate", { version: 2, migrate: { 3: (fields) => fields } })).toThrow(
      "persist-session: option migrate.3 is invalid. Each key is the version a function produces, from 2 to the class's version (2)",
    );
    expect(() => persist("bad-schema", { schema: {} as never })).toThrow("persist-session: option schema is invalid. Give a Standard Schema V1");
  });

  it("checks the class against the schema's output type at compile time", () => {
    const schema = z.object({ count: z.number() });
    persist("typed-ok", { schema })(
      class {
        count = 0;
      },
    );
    persist("typed-bad", { schema })(
      // @ts-expect-error: the class's count is a string where the schema says number
      class {
        count = "0";
      },
    );
  });
});
