import { randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient } from "redis";
import { FileStore, MemoryStore, type SessionStore } from "../../src/index.js";
import { RedisStore } from "../../src/redis.js";

/** One backing storage; `open()` gives a store over it, again after a "restart". */
export interface StoreBacking {
  open(): SessionStore;
  /** Ids of the records currently stored. */
  ids(): Promise<string[]>;
  cleanup(): Promise<void>;
}

export interface StoreKind {
  readonly name: string;
  /** The backend deletes expired records by itself (Redis `PX`): the sweep has nothing to remove. */
  readonly expiresRecords?: boolean;
  create(): Promise<StoreBacking>;
}

function fileStoreKindWith(name: string, durable: boolean): StoreKind {
  return {
    name,
    async create() {
      const dir = await mkdtemp(join(tmpdir(), "persist-session-test-"));
      const { readdir } = await import("node:fs/promises");
      return {
        open: () => new FileStore({ dir, durable }),
        ids: async () => (await readdir(dir)).filter((name) => /^[0-9a-f-]{36}$/.test(name)),
        cleanup: () => rm(dir, { recursive: true, force: true }),
      };
    },
  };
}

export const fileStoreKind = fileStoreKindWith("FileStore", false);
/** fsync on every write: the same behaviour, another write path. */
export const durableFileStoreKind = fileStoreKindWith("FileStore durable", true);

export const memoryStoreKind: StoreKind = {
  name: "MemoryStore",
  async create() {
    // A restart keeps the same Map, standing in for storage that outlives the process.
    const store = new MemoryStore();
    return {
      open: () => store,
      ids: async () => {
        const ids: string[] = [];
        for await (const id of store.expiredIds(Number.POSITIVE_INFINITY)) ids.push(id);
        return ids;
      },
      cleanup: async () => undefined,
    };
  },
};

/** The Redis the tests use: REDIS_URL, else the local default port. */
export const redisUrl = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";

function createTestClient(url: string, reconnect: boolean) {
  const client = createClient({ url, socket: { connectTimeout: 1000, ...(reconnect ? {} : { reconnectStrategy: false as const }) } });
  // Errors are expected while a test stops Redis; node-redis would throw them unhandled.
  client.on("error", () => undefined);
  return client;
}

export type TestRedisClient = ReturnType<typeof createTestClient>;

/** A connected node-redis client that reconnects by itself unless told not to. */
export async function connectRedis(url = redisUrl, options: { reconnect?: boolean } = {}): Promise<TestRedisClient> {
  const client = createTestClient(url, options.reconnect ?? true);
  await client.connect();
  return client;
}

/** Keys under `prefix`, by SCAN (never KEYS: the server is shared with other tests). */
export async function redisKeys(client: TestRedisClient, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  let cursor = "0";
  do {
    const [next, batch] = (await client.sendCommand(["SCAN", cursor, "MATCH", `${prefix}*`, "COUNT", "1000"])) as [string, string[]];
    cursor = next;
    keys.push(...batch);
  } while (cursor !== "0");
  return keys;
}

/** A key prefix no other test backing shares, so tests can run against one server at once. */
export function uniqueRedisPrefix(): string {
  return `persist-session-test:${randomUUID()}:`;
}

async function probeRedis(): Promise<boolean> {
  let client: TestRedisClient | undefined;
  try {
    client = await connectRedis(redisUrl, { reconnect: false });
    return (await client.ping()) === "PONG";
  } catch {
    return false;
  } finally {
    client?.destroy();
  }
}

/**
 * Whether the Redis tests run. Outside CI they are skipped, with one line
 * saying how to run them, when no server answers; under CI=true they never are.
 */
export const redisAvailable = await probeRedis();
if (!redisAvailable) {
  if (process.env.CI === "true") {
    throw new Error(`persist-session tests: no Redis answers at ${redisUrl}, and CI=true does not skip the Redis tests. Start redis-server or set REDIS_URL.`);
  }
  console.log(`Redis tests skipped: no Redis at ${redisUrl}. Start one (redis-server) or set REDIS_URL, then run npx vitest run test/redis test/behaviour.test.ts.`);
}

export const redisStoreKind: StoreKind = {
  name: "RedisStore",
  expiresRecords: true,
  async create() {
    const client = await connectRedis();
    const prefix = uniqueRedisPrefix();
    return {
      open: () => new RedisStore({ client, prefix }),
      ids: async () => (await redisKeys(client, prefix)).map((key) => key.slice(prefix.length)).filter((id) => /^[0-9a-f-]{36}$/.test(id)),
      cleanup: async () => {
        const keys = await redisKeys(client, prefix);
        if (keys.length > 0) await client.sendCommand(["DEL", ...keys]);
        client.destroy();
      },
    };
  },
};

/** Every store the behavioural suite runs against; RedisStore joins when a server answers. */
export const storeKinds: StoreKind[] = [fileStoreKind, memoryStoreKind, ...(redisAvailable ? [redisStoreKind] : [])];
