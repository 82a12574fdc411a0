/**
 * RedisStore against a real Redis: key layout, expiry, leases and their fence,
 * quarantine, the shared secret, option errors. The HTTP behaviour runs in the
 * shared suite (test/behaviour.test.ts); processes in test/redis-processes.test.ts.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { CorruptRecordError, persist, persistSession, type PersistSessionOptions, type StoredRecord } from "../src/index.js";
import { LeaseLostError, RedisStore, StoreUnavailableError } from "../src/redis.js";
import { capturingLogger, delay, eventually } from "./helpers/robustness.js";
import { EventReader } from "./helpers/sse.js";
import { connectRedis, redisAvailable, redisKeys, uniqueRedisPrefix, type TestRedisClient } from "./helpers/stores.js";

const ID = "0b7c8a52-3f3e-4c1a-9d7e-2a1b3c4d5e6f";
const MINUTE = 60_000;

// Node-style application of @persist, so this file needs no decorator syntax.
const Visits = persist("redis-store-test-visits")(
  class Visits {
    count = 0;
  },
);

function record(overrides: Partial<StoredRecord> = {}): StoredRecord {
  const now = Date.now();
  return { key: "cart", version: 1, updatedAt: now, expires: now + MINUTE, data: '[{"items":1},2]', ...overrides };
}

describe.skipIf(!redisAvailable)("RedisStore", () => {
  let client: TestRedisClient;
  let prefix: string;
  let store: RedisStore;
  const stores: RedisStore[] = [];
  const open = (options: Partial<ConstructorParameters<typeof RedisStore>[0]> = {}) => {
    const opened = new RedisStore({ client, prefix, ...options });
    stores.push(opened);
    return opened;
  };

  beforeAll(async () => {
    client = await connectRedis();
  });
  afterAll(() => {
    client?.destroy();
  });
  beforeEach(() => {
    prefix = uniqueRedisPrefix();
    store = open();
  });
  /** Sessions over `store` counting visits, after one visit: its cookie and record id. */
  const visitedOnce = async (options: Partial<PersistSessionOptions>) => {
    const sessions = persistSession({ secret: "redis-store-test-secret-0123456789-abcdef", store, sweepInterval: 0, ...options });
    const handler = sessions.fetch(async () => {
      new Visits().count += 1;
      return new Response("ok");
    });
    const first = await handler(new Request("http://localhost/"));
    const cookie = first.headers.getSetCookie()[0]!.split(";")[0]!;
    const id = /=([0-9a-f-]{36})\./.exec(cookie)![1]!;
    return { sessions, handler, cookie, id };
  };

  afterEach(async () => {
    for (const opened of stores.splice(0)) await opened.close();
    const keys = await redisKeys(client, prefix);
    if (keys.length > 0) await client.sendCommand(["DEL", ...keys]);
  });

  it("stores a record under the prefix with Redis's own expiry, renewed by each write", async () => {
    await store.set(ID, record({ expires: Date.now() + MINUTE }));
    expect(await redisKeys(client, prefix)).toEqual([`${prefix}${ID}`]);
    expect(await client.pTTL(`${prefix}${ID}`)).toBeGreaterThan(MINUTE - 1000);
    await store.set(ID, record({ version: 2, expires: Date.now() + 10 * MINUTE }));
    expect(await client.pTTL(`${prefix}${ID}`)).toBeGreaterThan(10 * MINUTE - 1000);
    expect(await store.get(ID)).toMatchObject({ key: "cart", version: 2, data: '[{"items":1},2]' });
  });

  it("reads back exactly what was written, and undefined for a missing record", async () => {
    const written = record({ data: 'line\nbreaks and "quotes" ü' });
    await store.set(ID, written);
    expect(await store.get(ID)).toEqual(written);
    expect(await store.get("9b7c8a52-3f3e-4c1a-9d7e-2a1b3c4d5e6f")).toBeUndefined();
  });

  it("deletes a record whose expiry has passed instead of storing it", async () => {
    await store.set(ID, record());
    await store.set(ID, record({ expires: Date.now() - 1000 }));
    expect(await store.get(ID)).toBeUndefined();
  });

  it("deletes, and deleting a missing record succeeds", async () => {
    await store.set(ID, record());
    await store.delete(ID);
    await store.delete(ID);
    expect(await redisKeys(client, prefix)).toEqual([]);
  });

  it.each([
    ["an empty value", "", "empty value"],
    ["no header line", "just text", "no header line"],
    ["an unreadable header", "{nope\ndata", "unreadable header"],
    ["a header of another shape", '{"v":9,"key":"cart"}\ndata', "header of an unknown shape"],
    ["no data", `${JSON.stringify({ v: 1, key: "cart", version: 1, updatedAt: 1, expires: 2 })}\n`, "no data after the header"],
  ])("throws CorruptRecordError for %s", async (_name, value, message) => {
    await client.set(`${prefix}${ID}`, value);
    await expect(store.get(ID)).rejects.toThrow(new CorruptRecordError(message));
  });

  it("throws CorruptRecordError for a key of another type under the prefix", async () => {
    await client.hSet(`${prefix}${ID}`, "field", "value");
    await expect(store.get(ID)).rejects.toBeInstanceOf(CorruptRecordError);
  });

  it("quarantines by renaming the key aside with a 7-day expiry", async () => {
    await client.set(`${prefix}${ID}`, "garbage");
    await store.quarantine(ID, "unreadable");
    const keys = await redisKeys(client, prefix);
    expect(keys).toHaveLength(1);
    expect(keys[0]).toMatch(new RegExp(`^${prefix}quarantine:${ID}:\\d+$`));
    expect(await client.get(keys[0]!)).toBe("garbage");
    const ttl = await client.pTTL(keys[0]!);
    expect(ttl).toBeGreaterThan(7 * 24 * 60 * MINUTE - MINUTE);
    expect(ttl).toBeLessThanOrEqual(7 * 24 * 60 * MINUTE);
    // Nothing to set aside is no error.
    await store.quarantine(ID, "gone already");
  });

  it("describes itself by its key pattern and is shared", () => {
    expect(store.describe()).toBe(`redis ${prefix}*`);
    expect(new RedisStore({ client }).describe()).toBe("redis persist-session:*");
    expect(store.shared).toBe(true);
  });

  it("gives every process the secret the first one generated", async () => {
    const first = await store.secret();
    expect(first.length).toBeGreaterThanOrEqual(32);
    expect(await open().secret()).toBe(first);
  });

  it("grants a record's lease to one holder at a time", async () => {
    const other = open();
    const lease = (await store.lease(ID))!;
    expect(lease.held).toBe(true);
    expect(await other.lease(ID)).toBeUndefined();
    await lease.release();
    expect(lease.held).toBe(false);
    const next = await other.lease(ID);
    expect(next?.held).toBe(true);
    await next!.release();
  });

  it("renews a held lease, so it outlives its lease time while its holder runs", async () => {
    const short = open({ leaseTime: 300 });
    const lease = (await short.lease(ID))!;
    await delay(900);
    expect(lease.held).toBe(true);
    expect(await open().lease(ID)).toBeUndefined();
    await short.set(ID, record(), lease);
    expect(await short.get(ID)).toBeDefined();
    await lease.release();
  });

  it("lets the lease of a holder that stopped renewing expire", async () => {
    // A holder that died: its lease key stays until its PX runs out.
    await client.set(`${prefix}lease:${ID}`, "dead-holder-token", { PX: 300 });
    expect(await store.lease(ID)).toBeUndefined();
    await delay(400);
    const lease = await store.lease(ID);
    expect(lease?.held).toBe(true);
    await lease!.release();
  });

  it("refuses a write, delete or quarantine under a lease another process has taken since", async () => {
    await store.set(ID, record({ version: 1 }));
    const lease = (await store.lease(ID))!;
    // Its lease ran out (the holder was paused) and another process took one.
    await client.set(`${prefix}lease:${ID}`, "newer-holder-token", { PX: MINUTE });
    await expect(store.set(ID, record({ version: 2 }), lease)).rejects.toThrow(LeaseLostError);
    expect(lease.held).toBe(false);
    await expect(store.delete(ID, lease)).rejects.toBeInstanceOf(StoreUnavailableError);
    await expect(store.quarantine(ID, "x", lease)).rejects.toBeInstanceOf(LeaseLostError);
    expect((await store.get(ID))?.version).toBe(1);
    // Releasing a lost lease leaves the new holder's alone.
    await lease.release();
    expect(await client.get(`${prefix}lease:${ID}`)).toBe("newer-holder-token");
  });

  it("refuses a write under a lease that expired with no new holder", async () => {
    const short = open({ leaseTime: 200 });
    const lease = (await short.lease(ID))!;
    // Expired in Redis before this process could tell (it was paused): locally it still looks held.
    await client.del(`${prefix}lease:${ID}`);
    expect(lease.held).toBe(true);
    await expect(short.set(ID, record(), lease)).rejects.toThrow(
      /^persist-session: a write of record [0-9a-f-]{36} was refused because this process no longer held its lease .*; nothing was written\. Retry the request; if pauses this long are expected, raise RedisStore's leaseTime option\.$/,
    );
    expect(await short.get(ID)).toBeUndefined();
  });

  it("refuses a lease issued for another record", async () => {
    const lease = (await store.lease(ID))!;
    await expect(store.set("9b7c8a52-3f3e-4c1a-9d7e-2a1b3c4d5e6f", record(), lease)).rejects.toThrow(TypeError);
    await lease.release();
  });

  it("releases its leases on close", async () => {
    const closing = open();
    await closing.lease(ID);
    await closing.close();
    expect(await client.exists(`${prefix}lease:${ID}`)).toBe(0);
  });

  it("fails at once with StoreUnavailableError when the client is not connected", async () => {
    const closed = await connectRedis();
    closed.destroy();
    const offline = new RedisStore({ client: closed, prefix });
    const started = Date.now();
    await expect(offline.get(ID)).rejects.toThrow(
      new StoreUnavailableError(
        "persist-session: Redis is not connected. Check that the server is running and reachable; the client reconnects by itself and requests succeed again once it has.",
      ),
    );
    await expect(offline.lease(ID)).rejects.toBeInstanceOf(StoreUnavailableError);
    expect(Date.now() - started).toBeLessThan(100);
  });

  it("turns a command Redis refuses into an error that is not a 503", async () => {
    const lease = (await store.lease(ID))!;
    // Something else took over the lease key with another type: the fence's GET fails.
    await client.del(`${prefix}lease:${ID}`);
    await client.sendCommand(["LPUSH", `${prefix}lease:${ID}`, "a list"]);
    const error = (await store.set(ID, record(), lease).catch((caught: unknown) => caught)) as Error;
    expect(error).not.toBeInstanceOf(StoreUnavailableError);
    expect(error.message).toMatch(/^persist-session: Redis refused a command: WRONGTYPE .*\. Check the server's configuration and that nothing else writes under the store's prefix\.$/);
  });

  it("refuses a stored secret that is too short", async () => {
    await client.set(`${prefix}secret`, "short");
    await expect(store.secret()).rejects.toThrow(
      `persist-session: the generated secret in Redis key ${prefix}secret is missing or too short. Delete the key, or pass \`secret\` to persistSession().`,
    );
  });

  const anyClient = { sendCommand: async () => null };
  it.each([
    [{ client: undefined }, "persist-session: option client is invalid: undefined. Pass a connected node-redis client (await createClient().connect())."],
    [{ client: {} }, "persist-session: option client is invalid: object. Pass a connected node-redis client (await createClient().connect())."],
    [{ client: anyClient, prefix: 5 }, 'persist-session: option prefix is invalid: 5. Use a string such as "persist-session:".'],
    [{ client: anyClient, leaseTime: 0 }, "persist-session: option leaseTime is invalid: 0. Use a positive number."],
    [{ client: anyClient, commandTimeout: -1 }, "persist-session: option commandTimeout is invalid: -1. Use a positive number."],
    [{ client: anyClient, quarantineTtl: Number.NaN }, "persist-session: option quarantineTtl is invalid: NaN. Use a positive number."],
  ])("rejects bad options %o", (options, message) => {
    expect(() => new RedisStore(options as unknown as ConstructorParameters<typeof RedisStore>[0])).toThrow(new TypeError(message));
  });

  it("answers 503 after lockTimeout while another process holds the record, then serves once it is free", async () => {
    const logger = capturingLogger();
    const { sessions, handler, cookie, id } = await visitedOnce({ lockTimeout: 300, logger });
    try {
      await client.set(`${prefix}lease:${id}`, "another-process", { PX: MINUTE });

      const started = Date.now();
      const blocked = await handler(new Request("http://localhost/", { headers: { cookie } }));
      expect(blocked.status).toBe(503);
      expect(Date.now() - started).toBeGreaterThanOrEqual(250);
      expect(Date.now() - started).toBeLessThan(1000);
      expect(logger.errors).toEqual([
        "persist-session: a request waited 300 ms for another process serving the same browser to release its record. Send responses (or their headers) sooner, or raise the lockTimeout option.",
      ]);

      await client.del(`${prefix}lease:${id}`);
      expect((await handler(new Request("http://localhost/", { headers: { cookie } }))).status).toBe(200);
      expect(await store.get(id)).toMatchObject({ version: 2 });
    } finally {
      await sessions.close();
    }
  });
  describe("change feed (live sync across processes)", () => {
    const OTHER_ID = "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f";
    const subscribers = async () => ((await client.sendCommand(["PUBSUB", "NUMSUB", `${prefix}changes`])) as [string, number])[1];
    const collect = async (watched: RedisStore) => {
      const changes: unknown[] = [];
      const errors: Error[] = [];
      const stop = await watched.watch(
        (change) => changes.push(change),
        (error) => errors.push(error),
      );
      return { changes, errors, stop };
    };
    /** Writes as a process serving a known record does: under the record's lease. */
    const leasedWrite = async (writer: RedisStore, id: string, next: StoredRecord | "delete") => {
      const lease = await writer.lease(id);
      expect(lease).toBeDefined();
      try {
        await (next === "delete" ? writer.delete(id, lease) : writer.set(id, next, lease));
      } finally {
        await lease!.release();
      }
    };

    it("hears every process's writes and deletes, on a connection of its own that close() ends", async () => {
      const watched = await collect(store);
      expect(await subscribers()).toBe(1);
      const writer = open(); // another process's store: same prefix, its own instance
      await leasedWrite(writer, ID, record({ key: "cart", version: 4 }));
      await leasedWrite(writer, OTHER_ID, "delete");
      await delay(100);
      expect(watched.changes).toEqual([
        { id: ID, key: "cart", version: 4 },
        { id: OTHER_ID, key: "", version: 0 },
      ]);

      watched.stop();
      await leasedWrite(writer, ID, record({ version: 5 }));
      await delay(100);
      expect(watched.changes).toHaveLength(2);
      expect(watched.errors).toEqual([]);

      await store.close();
      await eventually(async () => (await subscribers()) === 0, "the store's subscriber connection to close");
    });

    it("announces no write without a lease: that is a just-minted record no browser knows yet", async () => {
      const watched = await collect(store);
      const writer = open();
      await writer.set(OTHER_ID, record({ version: 1 }));
      await writer.delete(OTHER_ID);
      await leasedWrite(writer, ID, record({ version: 3 }));
      await eventually(async () => watched.changes.length > 0, "the leased write's notice");
      await delay(100);
      expect(watched.changes).toEqual([{ id: ID, key: "cart", version: 3 }]);
    });

    it("publishes nothing for a write its lease fence refused", async () => {
      const watched = await collect(store);
      const lease = await store.lease(ID);
      await client.set(`${prefix}lease:${ID}`, "another-process");
      await expect(store.set(ID, record(), lease)).rejects.toBeInstanceOf(LeaseLostError);
      await delay(100);
      expect(watched.changes).toEqual([]);
    });

    it("ignores messages on the channel that are not its own change notices", async () => {
      const watched = await collect(store);
      for (const junk of ["nope", "{}", "null", JSON.stringify({ id: "../../etc/passwd", key: "x", version: 1 }), JSON.stringify({ id: ID, key: "x", version: -1 }), JSON.stringify({ id: ID, key: 7, version: 1 })]) {
        await client.publish(`${prefix}changes`, junk);
      }
      await client.publish(`${prefix}changes`, JSON.stringify({ id: ID, key: "x", version: 2 }));
      await eventually(async () => watched.changes.length > 0, "the valid notice");
      expect(watched.changes).toEqual([{ id: ID, key: "x", version: 2 }]);
    });

    it("uses the app's subscriber when given one, and leaves it open on close", async () => {
      const subscriber = client.duplicate();
      subscriber.on("error", () => undefined);
      await subscriber.connect();
      try {
        const given = open({ subscriber });
        const watched = await collect(given);
        await leasedWrite(store, ID, record({ version: 9 }));
        await eventually(async () => watched.changes.length > 0, "the change");
        expect(watched.changes).toEqual([{ id: ID, key: "cart", version: 9 }]);
        await given.close();
        expect(subscriber.isOpen).toBe(true);
        expect(await subscribers()).toBe(0);
      } finally {
        subscriber.destroy();
      }
    });

    it("says what to pass when the client cannot open a subscriber connection", async () => {
      const bare = open({ client: { sendCommand: (args: string[]) => client.sendCommand(args) } });
      await expect(bare.watch(() => undefined, () => undefined)).rejects.toThrow(/no duplicate\(\) for a subscriber connection\. Pass RedisStore's subscriber option/);
      expect(() => new RedisStore({ client, subscriber: {} as never })).toThrow(/option subscriber is invalid/);
    });

    it("streams a change written by another process to this process's events stream, and unsubscribes on sessions.close()", async () => {
      const { sessions, cookie, id } = await visitedOnce({ logger: capturingLogger() });
      try {
        const events = new EventReader(await sessions.fetchEvents(new Request("http://localhost/events", { headers: { cookie } })));
        try {
          expect((await events.next()).event).toBe("ready");
          const stored = (await store.get(id))!;
          // Another process writes version 2 straight into Redis.
          await leasedWrite(open(), id, { ...stored, version: 2 });
          expect(await events.next(1000)).toMatchObject({ event: "change", data: JSON.stringify({ key: "redis-store-test-visits", version: 2 }) });
        } finally {
          await events.close();
        }
      } finally {
        await sessions.close();
      }
      await eventually(async () => (await subscribers()) === 0, "sessions.close() to end the subscription");
    });
  });
});
