/**
 * RedisStore against a real Redis: key layout, expiry, leases and their fence,
 * quarantine, the shared secret, option errors. The HTTP behaviour runs in the
 * shared suite (test/behaviour.test.ts); processes in test/redis-processes.test.ts.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { CorruptRecordError, type StoredRecord } from "../src/index.js";
import { RedisStore, StoreUnavailableError } from "../src/redis.js";
import { eventually } from "./helpers/robustness.js";
import { connectRedis, redisAvailable, redisKeys, uniqueRedisPrefix, type TestRedisClient } from "./helpers/stores.js";
import { collectChanges, describeSharedStore, leasedWrite } from "./suites/shared-store.js";

const ID = "0b7c8a52-3f3e-4c1a-9d7e-2a1b3c4d5e6f";
const MINUTE = 60_000;

function record(overrides: Partial<StoredRecord> = {}): StoredRecord {
  const now = Date.now();
  return { key: "cart", version: 1, updatedAt: now, expires: now + MINUTE, data: '[{"items":1},2]', ...overrides };
}

// Leases, their fence and the change feed, as every shared store must show them.
describe.skipIf(!redisAvailable)("RedisStore: the shared-store contract", () => {
  let client: TestRedisClient;
  beforeAll(async () => {
    client = await connectRedis();
  });
  afterAll(() => {
    client?.destroy();
  });
  describeSharedStore({
    store: "RedisStore",
    backend: "Redis",
    create: async () => {
      const prefix = uniqueRedisPrefix();
      const leaseKey = (id: string) => `${prefix}lease:${id}`;
      return {
        open: (options) => new RedisStore({ client, prefix, ...options }),
        takeOver: async (id, token, ms) => void (await client.set(leaseKey(id), token, { PX: ms })),
        expire: async (id) => void (await client.del(leaseKey(id))),
        holder: async (id) => (await client.get(leaseKey(id))) ?? undefined,
        publish: async (message) => void (await client.publish(`${prefix}changes`, message)),
        listeners: async () => ((await client.sendCommand(["PUBSUB", "NUMSUB", `${prefix}changes`])) as [string, number])[1],
        cleanup: async () => {
          const keys = await redisKeys(client, prefix);
          if (keys.length > 0) await client.sendCommand(["DEL", ...keys]);
        },
      };
    },
  });
});

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

  it("takes a lease and reads the record in one command, and a get after a write reads the write", async () => {
    await store.set(ID, record({ version: 3 }));
    const sent: string[] = [];
    const counted = open({ client: { sendCommand: (args: string[]) => (sent.push(args[0]!), client.sendCommand(args)) } });
    const lease = (await counted.lease(ID))!;
    expect(await counted.get(ID)).toMatchObject({ version: 3 });
    expect(sent).toEqual(["EVALSHA"]);
    await counted.set(ID, record({ version: 4 }), lease);
    expect(await counted.get(ID)).toMatchObject({ version: 4 });
    await lease.release();
  });

  it.each([
    ["an unreadable value", () => client.set(`${prefix}${ID}`, "garbage")],
    ["a key of another type", () => client.hSet(`${prefix}${ID}`, "field", "value")],
  ])("throws CorruptRecordError for %s read with the lease, as get does", async (_name, corrupt) => {
    await corrupt();
    const lease = (await store.lease(ID))!;
    await expect(store.get(ID)).rejects.toBeInstanceOf(CorruptRecordError);
    await store.quarantine(ID, "unreadable", lease);
    expect(await redisKeys(client, `${prefix}quarantine:${ID}:`)).toHaveLength(1);
    await lease.release();
  });

  it("extends the lease by leaseTime with every write under it", async () => {
    const long = open({ leaseTime: MINUTE });
    const lease = (await long.lease(ID))!;
    await client.pExpire(`${prefix}lease:${ID}`, 1000);
    await long.set(ID, record(), lease);
    expect(await client.pTTL(`${prefix}lease:${ID}`)).toBeGreaterThan(MINUTE - 10_000);
    await lease.release();
  });

  it("asks the holder for a lease it cannot take, on <prefix>wanted", async () => {
    const listener = client.duplicate();
    listener.on("error", () => undefined);
    await listener.connect();
    try {
      const asked: string[] = [];
      await listener.subscribe(`${prefix}wanted`, (message) => void asked.push(message));
      const lease = (await store.lease(ID))!;
      expect(await open().lease(ID)).toBeUndefined();
      await eventually(() => asked.length > 0, "the wanted notice");
      expect(asked).toEqual([ID]);
      await lease.release();
    } finally {
      listener.destroy();
    }
  });

  it("quarantines by renaming the key aside with a 30-day expiry, like the FileStore's quarantined files", async () => {
    await client.set(`${prefix}${ID}`, "garbage");
    await store.quarantine(ID, "unreadable");
    const keys = await redisKeys(client, prefix);
    expect(keys).toHaveLength(1);
    expect(keys[0]).toMatch(new RegExp(`^${prefix}quarantine:${ID}:\\d+$`));
    expect(await client.get(keys[0]!)).toBe("garbage");
    const ttl = await client.pTTL(keys[0]!);
    expect(ttl).toBeGreaterThan(30 * 24 * 60 * MINUTE - MINUTE);
    expect(ttl).toBeLessThanOrEqual(30 * 24 * 60 * MINUTE);
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
    expect(first.secret.length).toBeGreaterThanOrEqual(32);
    expect(first.created).toBe(true);
    // The others find it there, and say so.
    expect(await open().secret()).toEqual({ secret: first.secret, created: false });
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

  describe("change feed (live sync across processes)", () => {
    const subscribers = async () => ((await client.sendCommand(["PUBSUB", "NUMSUB", `${prefix}changes`])) as [string, number])[1];
    const collect = collectChanges;

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
  });
});
