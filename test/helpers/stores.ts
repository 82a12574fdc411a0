import { randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { createClient } from "redis";
import { FileStore, MemoryStore, type SessionStore } from "../../src/index.js";
import { PostgresStore } from "../../src/postgres.js";
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

/** Deletes every key under `prefix` (a thousand per DEL). */
export async function deleteRedisKeys(client: TestRedisClient, prefix: string): Promise<void> {
  const keys = await redisKeys(client, prefix);
  for (let i = 0; i < keys.length; i += 1000) await client.sendCommand(["DEL", ...keys.slice(i, i + 1000)]);
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
        await deleteRedisKeys(client, prefix);
        client.destroy();
      },
    };
  },
};

/** The PostgreSQL the tests use: POSTGRES_URL, else the local server (trust auth, database `test`). */
export const postgresUrl = process.env.POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/test";

/** A pool on `url` whose idle connections' errors (expected while a test stops the server) are ignored. */
export function connectPostgres(url = postgresUrl, options: pg.PoolConfig = {}): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, connectionTimeoutMillis: 2000, ...options });
  pool.on("error", () => undefined);
  return pool;
}

/** A schema no other test backing shares, so tests can run against one server at once; dropped by {@link dropPostgresSchema}. */
export function uniquePostgresSchema(): string {
  return `persist_session_test_${randomUUID().replaceAll("-", "").slice(0, 16)}`;
}

export async function dropPostgresSchema(pool: pg.Pool, schema: string): Promise<void> {
  await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
}

/** Ids of the rows that hold a record (not a bare lease, a set-aside record or the secret). */
export async function postgresIds(pool: pg.Pool, schema: string, table = "persist_session"): Promise<string[]> {
  const { rows } = await pool.query<{ id: string }>(`SELECT id FROM "${schema}"."${table}" WHERE data IS NOT NULL AND id ~ '^[0-9a-f-]{36}$' ORDER BY id`).catch((error: { code?: string }) => {
    // No table yet: the store creates it on first use.
    if (error.code === "42P01") return { rows: [] };
    throw error;
  });
  return rows.map((row) => row.id);
}

async function probePostgres(): Promise<boolean> {
  const client = new pg.Client({ connectionString: postgresUrl, connectionTimeoutMillis: 1000 });
  client.on("error", () => undefined);
  try {
    await client.connect();
    return (await client.query("SELECT 1 AS one")).rows[0]?.one === 1;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/**
 * Whether the PostgreSQL tests run. Outside CI they are skipped, with one line
 * saying how to run them, when no server answers; under CI=true they never are.
 */
export const postgresAvailable = await probePostgres();
if (!postgresAvailable) {
  if (process.env.CI === "true") {
    throw new Error(`persist-session tests: no PostgreSQL answers at ${postgresUrl}, and CI=true does not skip the PostgreSQL tests. Start one (.ci/run does) or set POSTGRES_URL.`);
  }
  console.log(`PostgreSQL tests skipped: no PostgreSQL at ${postgresUrl}. Start one or set POSTGRES_URL, then run npx vitest run test/postgres test/behaviour.test.ts.`);
}

export const postgresStoreKind: StoreKind = {
  name: "PostgresStore",
  async create() {
    const pool = connectPostgres();
    const schema = uniquePostgresSchema();
    return {
      open: () => new PostgresStore({ pool, schema }),
      ids: () => postgresIds(pool, schema),
      cleanup: async () => {
        await dropPostgresSchema(pool, schema);
        await pool.end();
      },
    };
  },
};

/** Every store the behavioural suite runs against; RedisStore and PostgresStore join when a server answers. */
export const storeKinds: StoreKind[] = [fileStoreKind, memoryStoreKind, ...(redisAvailable ? [redisStoreKind] : []), ...(postgresAvailable ? [postgresStoreKind] : [])];
