/**
 * PostgresStore against a real PostgreSQL: the table and its creation, rows,
 * leases and their fence, quarantine, the sweep, the shared secret, live sync
 * through LISTEN/NOTIFY, hostile names and ids, timeouts, option errors. The
 * HTTP behaviour runs in the shared suite (test/behaviour.test.ts); processes
 * in test/postgres-processes.test.ts, an outage in test/postgres-outage.test.ts.
 */
import type pg from "pg";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { CorruptRecordError, type StoredRecord } from "../src/index.js";
import { createTableSql, PostgresStore, StoreUnavailableError, type PostgresPoolLike, type PostgresStoreOptions } from "../src/postgres.js";
import { eventually } from "./helpers/robustness.js";
import { connectPostgres, dropPostgresSchema, postgresAvailable, postgresIds, uniquePostgresSchema } from "./helpers/stores.js";
import { collectChanges, describeSharedStore, leasedWrite } from "./suites/shared-store.js";

const ID = "0b7c8a52-3f3e-4c1a-9d7e-2a1b3c4d5e6f";
const OTHER_ID = "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f";
const MINUTE = 60_000;
const TABLE = "persist_session";

function record(overrides: Partial<StoredRecord> = {}): StoredRecord {
  const now = Date.now();
  return { key: "cart", version: 1, updatedAt: now, expires: now + MINUTE, data: '[{"items":1},2]', ...overrides };
}

/** A pool that forwards to `pool` and keeps the text of every statement sent through it. */
function countingPool(pool: pg.Pool): PostgresPoolLike & { statements: string[] } {
  const statements: string[] = [];
  return {
    statements,
    connect: async () => {
      const client = await pool.connect();
      return new Proxy(client, {
        get(target, property) {
          if (property === "query") {
            return (text: string, values?: unknown[]) => {
              statements.push(text);
              return target.query(text, values);
            };
          }
          const value = Reflect.get(target, property) as unknown;
          return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(target) : value;
        },
      });
    },
  };
}

// Leases, their fence and the change feed, as every shared store must show them.
describe.skipIf(!postgresAvailable)("PostgresStore: the shared-store contract", () => {
  let pool: pg.Pool;
  beforeAll(() => {
    pool = connectPostgres();
  });
  afterAll(async () => {
    await pool?.end();
  });
  describeSharedStore({
    store: "PostgresStore",
    backend: "PostgreSQL",
    create: async () => {
      const schema = uniquePostgresSchema();
      const table = `"${schema}"."${TABLE}"`;
      // The table first, so the backend can be reached into before a store has made it.
      await pool.query(`CREATE SCHEMA "${schema}"`);
      await pool.query(createTableSql({ schema }));
      const channel = `${schema}.${TABLE}`;
      return {
        open: (options) => new PostgresStore({ pool, schema, ...options }),
        takeOver: async (id, token, ms) => {
          await pool.query(
            `INSERT INTO ${table} (id, lease_token, lease_until) VALUES ($1, $2, now() + $3 * interval '1 millisecond') ` +
              "ON CONFLICT (id) DO UPDATE SET lease_token = excluded.lease_token, lease_until = excluded.lease_until",
            [id, token, ms],
          );
        },
        expire: async (id) => void (await pool.query(`UPDATE ${table} SET lease_until = now() - interval '1 second' WHERE id = $1`, [id])),
        holder: async (id) => ((await pool.query(`SELECT lease_token FROM ${table} WHERE id = $1`, [id])).rows[0]?.lease_token as string | null | undefined) ?? undefined,
        publish: async (message) => void (await pool.query("SELECT pg_notify($1, $2)", [channel, message])),
        listeners: async () => (await pool.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE query = $1", [`LISTEN "${channel}"`])).rows[0].n as number,
        cleanup: () => dropPostgresSchema(pool, schema),
      };
    },
  });
});

describe.skipIf(!postgresAvailable)("PostgresStore", () => {
  let pool: pg.Pool;
  let schema: string;
  let store: PostgresStore;
  const stores: PostgresStore[] = [];
  const open = (options: Partial<PostgresStoreOptions> = {}) => {
    const opened = new PostgresStore({ pool, schema, ...options });
    stores.push(opened);
    return opened;
  };
  const table = () => `"${schema}"."${TABLE}"`;
  const row = async (id: string) => (await pool.query(`SELECT * FROM ${table()} WHERE id = $1`, [id])).rows[0] as Record<string, unknown> | undefined;

  beforeAll(() => {
    pool = connectPostgres();
  });
  afterAll(async () => {
    await pool?.end();
  });
  beforeEach(() => {
    schema = uniquePostgresSchema();
    store = open();
  });
  afterEach(async () => {
    for (const opened of stores.splice(0)) await opened.close();
    await dropPostgresSchema(pool, schema);
  });

  describe("the table", () => {
    it("creates its schema and table on first use, as createTableSql() says", async () => {
      expect((await pool.query("SELECT to_regclass($1) AS found", [table()])).rows[0].found).toBeNull();
      expect(await store.get(ID)).toBeUndefined();
      const columns = await pool.query(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
        [schema, TABLE],
      );
      expect(columns.rows.map((column) => `${column.column_name} ${column.data_type}${column.is_nullable === "NO" ? " not null" : ""}`)).toEqual([
        "id text not null",
        "key text",
        "version bigint",
        "updated_at bigint",
        "expires bigint not null",
        "data text",
        "lease_token text",
        "lease_until timestamp with time zone",
      ]);
      const indexes = await pool.query("SELECT indexname FROM pg_indexes WHERE schemaname = $1 ORDER BY indexname", [schema]);
      expect(indexes.rows.map((index) => index.indexname)).toEqual([`${TABLE}_expires`, `${TABLE}_pkey`]);
      // The same SQL, run again (an app's migration after the store made the table), changes nothing.
      await pool.query(createTableSql({ schema }));
    });

    it("creates the table once when eight processes start at the same moment", async () => {
      // Eight pools: eight processes' connections, all finding the table missing at once.
      const pools = Array.from({ length: 8 }, () => connectPostgres());
      try {
        const starters = pools.map((own) => new PostgresStore({ pool: own, schema }));
        const results = await Promise.allSettled(starters.map((starter, i) => starter.set(`${i}b7c8a52-3f3e-4c1a-9d7e-2a1b3c4d5e6f`, record())));
        expect(results.filter((result) => result.status === "rejected")).toEqual([]);
        expect(await postgresIds(pool, schema)).toHaveLength(8);
      } finally {
        await Promise.all(pools.map((own) => own.end()));
      }
    });

    it("uses the schema and table it is given, and the default names otherwise", async () => {
      const named = open({ table: "app_sessions" });
      await named.set(ID, record());
      expect(await postgresIds(pool, schema, "app_sessions")).toEqual([ID]);
      expect(named.describe()).toBe(`postgres "${schema}"."app_sessions"`);
      expect(new PostgresStore({ pool }).table).toBe('"public"."persist_session"');
      expect(store.shared).toBe(true);
    });

    it("with createTable: false, says how to make the table when it is missing, and works once it exists", async () => {
      const migrated = open({ createTable: false });
      await expect(migrated.get(ID)).rejects.toThrow(
        `persist-session: the table "${schema}"."${TABLE}" does not exist, and PostgresStore's createTable option is false. Create it with the SQL from createTableSql() (see the README), or leave createTable on.`,
      );
      await pool.query(`CREATE SCHEMA "${schema}"`);
      await pool.query(createTableSql({ schema }));
      await migrated.set(ID, record({ version: 6 }));
      expect(await migrated.get(ID)).toMatchObject({ key: "cart", version: 6 });
    });

    it("turns a statement PostgreSQL refuses into an error that is not a 503, and says what to check", async () => {
      // A table of the right name made by someone else, without the store's columns.
      await pool.query(`CREATE SCHEMA "${schema}"`);
      await pool.query(`CREATE TABLE ${table()} (id text PRIMARY KEY)`);
      const error = (await store.get(ID).catch((caught: unknown) => caught)) as Error;
      expect(error).not.toBeInstanceOf(StoreUnavailableError);
      expect(error.message).toMatch(
        new RegExp(`^persist-session: PostgreSQL refused a statement: column "key" does not exist \\(SQLSTATE 42703\\)\\. Check the table "${schema}"\\."${TABLE}" against createTableSql\\(\\) and the role's privileges on it\\.$`),
      );
    });
  });

  describe("records", () => {
    it("stores a record as one row, its header fields beside the opaque data, and reads back exactly what was written", async () => {
      const written = record({ data: "line\nbreaks, 'quotes', \"doubles\", \\ and ü; DROP TABLE x; --" });
      await store.set(ID, written);
      expect(await row(ID)).toMatchObject({ key: "cart", version: "1", updated_at: String(written.updatedAt), expires: String(written.expires), data: written.data, lease_token: null });
      expect(await store.get(ID)).toEqual(written);
      expect(await store.get(OTHER_ID)).toBeUndefined();
    });

    it("writes new records that arrive together in one statement and one commit, the later of two writes of one record winning", async () => {
      await store.get(ID); // the table exists
      const counting = countingPool(pool);
      const batching = open({ pool: counting });
      const ids = Array.from({ length: 20 }, (_, i) => `${String(i).padStart(8, "0")}-3f3e-4c1a-9d7e-2a1b3c4d5e6f`);
      await Promise.all([...ids.map((id) => batching.set(id, record({ data: `[${id.slice(0, 8)}]` }))), batching.set(ids[3]!, record({ version: 2, data: "[later]" }))]);
      const inserts = counting.statements.filter((text) => text.startsWith("INSERT"));
      // The first goes at once; the others wait for it and go together.
      expect(inserts.length).toBeLessThanOrEqual(3);
      expect(await postgresIds(pool, schema)).toEqual(ids);
      expect(await store.get(ids[3]!)).toMatchObject({ version: 2, data: "[later]" });
      expect(await store.get(ids[7]!)).toMatchObject({ version: 1, data: "[00000007]" });
    });

    it("writes records under their leases together in one statement, each checked against its own lease and announced only if applied", async () => {
      const ids = Array.from({ length: 10 }, (_, i) => `${String(i).padStart(8, "0")}-3f3e-4c1a-9d7e-2a1b3c4d5e6f`);
      for (const id of ids) await store.set(id, record({ version: 1 }));
      const counting = countingPool(pool);
      const writer = open({ pool: counting });
      const leases = await Promise.all(ids.map((id) => writer.lease(id)));
      // Another process took the lease of the fourth record since.
      await pool.query(`UPDATE ${table()} SET lease_token = 'another-process' WHERE id = $1`, [ids[3]]);
      const watched = await collectChanges(store);
      const outcomes = await Promise.all(ids.map((id, i) => writer.set(id, record({ version: 2 }), leases[i]).then(() => "stored", (error: Error) => error.name)));
      expect(outcomes).toEqual(ids.map((_, i) => (i === 3 ? "LeaseLostError" : "stored")));
      expect(counting.statements.filter((text) => text.includes("pg_notify")).length).toBeLessThanOrEqual(3);
      expect((await store.get(ids[3]!))?.version).toBe(1);
      expect((await store.get(ids[4]!))?.version).toBe(2);
      await eventually(() => watched.changes.length === 9, "the nine applied writes' notices");
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(watched.changes).toHaveLength(9);
      expect(watched.changes).not.toContainEqual(expect.objectContaining({ id: ids[3] }));
      for (const lease of leases) await lease?.release();
    });

    it("fails every write of a batch that PostgreSQL refuses, and the next batch stands on its own", async () => {
      await store.get(ID);
      const first = store.set(OTHER_ID, record()); // in flight: the next two wait and go together
      const outcomes = [
        store.set("2c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f", record({ data: "nul \u0000 byte" })),
        store.set("3c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f", record()),
      ].map((write) => write.then(() => "stored", (error: Error) => error.message));
      await first;
      const [refused, sharing] = await Promise.all(outcomes);
      expect(refused).toMatch(/^persist-session: PostgreSQL refused a statement: invalid byte sequence .*\(SQLSTATE 22021\)/);
      expect(sharing).toBe(refused);
      await store.set(ID, record());
      expect(await postgresIds(pool, schema)).toEqual([ID, OTHER_ID].sort());
    });

    it("deletes, and deleting a missing record succeeds", async () => {
      await store.set(ID, record());
      await store.delete(ID);
      await store.delete(ID);
      expect(await row(ID)).toBeUndefined();
    });

    it.each([
      ["empty data", `'cart', 1, 1, 2, ''`, "a row with empty data"],
      ["no key", `NULL, 1, 1, 2, '[1]'`, "a row with fields of an unknown shape"],
      ["no version", `'cart', NULL, 1, 2, '[1]'`, "a row with fields of an unknown shape"],
      ["a version past 2^53", `'cart', 9007199254740993, 1, 2, '[1]'`, "a row with fields of an unknown shape"],
    ])("throws CorruptRecordError for a row with %s", async (_name, values, message) => {
      await store.get(ID); // creates the table
      await pool.query(`INSERT INTO ${table()} (id, key, version, updated_at, expires, data) VALUES ($1, ${values})`, [ID]);
      await expect(store.get(ID)).rejects.toThrow(new CorruptRecordError(message));
    });

    it("quarantines by moving the row aside for 7 days, keeping the record's own row free for a new state", async () => {
      await store.get(ID);
      await pool.query(`INSERT INTO ${table()} (id, key, version, updated_at, expires, data) VALUES ($1, 'cart', 3, 1, 2, '')`, [ID]);
      const before = Date.now();
      await store.quarantine(ID, "unreadable");
      const { rows } = await pool.query(`SELECT id, version, expires, data FROM ${table()} WHERE id LIKE 'quarantine:%'`);
      expect(rows).toHaveLength(1);
      expect(rows[0].id).toMatch(new RegExp(`^quarantine:${ID}:\\d+$`));
      expect(rows[0]).toMatchObject({ version: "3", data: "" });
      expect(Number(rows[0].expires) - before).toBeGreaterThan(30 * 24 * 60 * MINUTE - MINUTE);
      expect(Number(rows[0].expires) - before).toBeLessThanOrEqual(30 * 24 * 60 * MINUTE + MINUTE);
      expect(await store.get(ID)).toBeUndefined();
      // Nothing to set aside is no error.
      await store.quarantine(OTHER_ID, "gone already");
    });

    it("gives every process the secret the first one generated", async () => {
      const first = await store.secret();
      expect(first.created).toBe(true);
      expect(first.secret.length).toBeGreaterThanOrEqual(32);
      expect(await open().secret()).toEqual({ secret: first.secret, created: false });
      // The secret's row is not a record and never expires.
      expect(await postgresIds(pool, schema)).toEqual([]);
      expect(await store.removeExpired(Number.MAX_SAFE_INTEGER - 1)).toBe(0);
      expect(await open().secret()).toEqual({ secret: first.secret, created: false });
    });

    it("refuses a stored secret that is too short", async () => {
      await store.get(ID);
      await pool.query(`INSERT INTO ${table()} (id, data, expires) VALUES ('secret', 'short', 0)`);
      await expect(store.secret()).rejects.toThrow(
        `persist-session: the generated secret in row "secret" of ${table()} is missing or too short. Delete the row, or pass \`secret\` to persistSession().`,
      );
    });
  });

  describe("hostile input", () => {
    it.each([
      "x'; DROP TABLE persist_session; --",
      "' OR '1'='1",
      '"; DROP SCHEMA public CASCADE; --',
      "$$; DROP TABLE persist_session; $$",
      "\\'",
    ])("sends the id %j as a parameter, never as SQL text", async (hostile) => {
      await store.set(ID, record());
      expect(await store.get(hostile)).toBeUndefined();
      await store.delete(hostile);
      const lease = await store.lease(hostile);
      await lease?.release();
      // The table and its record are untouched, and no statement carried the id in its text.
      expect(await store.get(ID)).toMatchObject({ key: "cart" });
      const counting = countingPool(pool);
      const counted = open({ pool: counting });
      await counted.get(hostile);
      await counted.delete(hostile);
      expect(counting.statements.length).toBeGreaterThan(0);
      for (const text of counting.statements) expect(text).not.toContain(hostile);
    });

    const anyPool = { connect: async () => ({}) as never };
    it.each([
      [{ pool: undefined }, "persist-session: option pool is invalid: undefined. Pass a node-postgres Pool (new pg.Pool({ connectionString }))."],
      [{ pool: {} }, "persist-session: option pool is invalid: object. Pass a node-postgres Pool (new pg.Pool({ connectionString }))."],
      [{ pool: anyPool, table: "sessions; DROP TABLE users" }, "persist-session: option table is invalid: sessions; DROP TABLE users. Use up to 55 lowercase letters, digits and _, not starting with a digit."],
      [{ pool: anyPool, table: 'x"."y' }, 'persist-session: option table is invalid: x"."y. Use up to 55 lowercase letters, digits and _, not starting with a digit.'],
      [{ pool: anyPool, table: "Sessions" }, "persist-session: option table is invalid: Sessions. Use up to 55 lowercase letters, digits and _, not starting with a digit."],
      [{ pool: anyPool, table: "t".repeat(56) }, `persist-session: option table is invalid: ${"t".repeat(56)}. Use up to 55 lowercase letters, digits and _, not starting with a digit.`],
      [{ pool: anyPool, schema: "1app" }, "persist-session: option schema is invalid: 1app. Use up to 63 lowercase letters, digits and _, not starting with a digit."],
      [{ pool: anyPool, schema: "public\u0000" }, "persist-session: option schema is invalid: public\u0000. Use up to 63 lowercase letters, digits and _, not starting with a digit."],
      [{ pool: anyPool, schema: "" }, "persist-session: option schema is invalid: . Use up to 63 lowercase letters, digits and _, not starting with a digit."],
      [{ pool: anyPool, schema: "s".repeat(40), table: "t".repeat(40) }, /^persist-session: option channel is invalid: s{40}\.t{40}\. Use up to 63 letters/],
      [{ pool: anyPool, channel: 'changes"; NOTIFY x' }, /^persist-session: option channel is invalid: changes"; NOTIFY x\./],
      [{ pool: anyPool, createTable: "no" }, "persist-session: option createTable is invalid: no. Use true or false."],
      [{ pool: anyPool, leaseTime: 0 }, "persist-session: option leaseTime is invalid: 0. Use a positive number."],
      [{ pool: anyPool, statementTimeout: -1 }, "persist-session: option statementTimeout is invalid: -1. Use a positive number."],
      [{ pool: anyPool, sweepBatch: 2.5 }, "persist-session: option sweepBatch is invalid: 2.5. Use a whole number of rows."],
      [{ pool: anyPool, quarantineTtl: Number.NaN }, "persist-session: option quarantineTtl is invalid: NaN. Use a positive number."],
    ])("rejects bad options %o", (options, message) => {
      const create = () => new PostgresStore(options as unknown as PostgresStoreOptions);
      if (message instanceof RegExp) expect(create).toThrow(message);
      else expect(create).toThrow(new TypeError(message));
    });
  });

  describe("leases", () => {
    it("returns the record with the lease, so reading it right after costs no second statement", async () => {
      await store.set(ID, record({ version: 4 }));
      const counting = countingPool(pool);
      const counted = open({ pool: counting });
      const lease = (await counted.lease(ID))!;
      const taken = counting.statements.length;
      expect(await counted.get(ID)).toMatchObject({ version: 4 });
      expect(counting.statements).toHaveLength(taken);
      // Read once: the next read, and any read after a write, goes to the table.
      await counted.set(ID, record({ version: 5 }), lease);
      expect(await counted.get(ID)).toMatchObject({ version: 5 });
      expect(counting.statements.length).toBeGreaterThan(taken + 1);
      await lease.release();
    });

    it("takes a lease again right after releasing it, without meeting its own release on another connection", async () => {
      await store.set(ID, record());
      let lease = (await store.lease(ID))!;
      for (let i = 0; i < 20; i++) {
        // As the library does once a record is idle: the release is not awaited before the next request asks.
        void lease.release();
        const again = await store.lease(ID);
        expect(again?.held).toBe(true);
        lease = again!;
      }
      await lease.release();
    });

    it("keeps a lease when its connections are closed: the lease is a row, not a connection's lock", async () => {
      const application = `lease-test-${schema}`;
      const own = connectPostgres(undefined, { application_name: application });
      try {
        const holder = new PostgresStore({ pool: own, schema });
        await holder.set(ID, record());
        const lease = (await holder.lease(ID))!;
        // The server closes every connection of the holder's pool (as a restart, or the pool's idle timeout, would).
        const { rowCount } = await pool.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", [application]);
        expect(rowCount).toBeGreaterThan(0);
        await eventually(async () => holder.set(ID, record({ version: 2 }), lease).then(() => true, () => false), "a write on a new connection");
        expect(await store.lease(ID)).toBeUndefined();
        expect((await store.get(ID))?.version).toBe(2);
        await holder.close();
      } finally {
        await own.end();
      }
    });

  });

  describe("the sweep", () => {
    const insertRows = async (ids: string[], expires: number) => {
      for (const id of ids) await store.set(id, record({ expires }));
    };
    const ids = (n: number, prefix: string) => Array.from({ length: n }, (_, i) => `${prefix}${String(i).padStart(4, "0")}-3f3e-4c1a-9d7e-2a1b3c4d5e6f`);

    it("deletes expired rows in batches, keeping live ones and any whose lease is held", async () => {
      const expired = ids(10, "0000");
      const live = ids(2, "1111");
      await insertRows(expired, Date.now() - 1000);
      await insertRows(live, Date.now() + MINUTE);
      const held = (await store.lease(expired[0]!))!;
      const counting = countingPool(pool);
      const sweeper = open({ pool: counting, sweepBatch: 3 });
      expect(await sweeper.removeExpired(Date.now())).toBe(9);
      // 3 + 3 + 3, then one that finds nothing left: four bounded statements, not one per row.
      expect(counting.statements.filter((text) => text.includes("pg_try_advisory_xact_lock"))).toHaveLength(4);
      expect(await postgresIds(pool, schema)).toEqual([expired[0], ...live].sort());
      await held.release();
      expect(await sweeper.removeExpired(Date.now())).toBe(1);
    });

    it("leaves the rows to the process already sweeping: one at a time", async () => {
      await insertRows(ids(3, "0000"), Date.now() - 1000);
      await store.get(ID);
      const other = await pool.connect();
      try {
        await other.query("BEGIN");
        // Another process is in the middle of a batch: it holds the sweep's advisory lock.
        await other.query("SELECT pg_advisory_xact_lock($1, hashtext($2))", [0x7073, `sweep ${table()}`]);
        expect(await store.removeExpired(Date.now())).toBe(0);
        expect(await postgresIds(pool, schema)).toHaveLength(3);
      } finally {
        await other.query("ROLLBACK");
        other.release();
      }
      expect(await store.removeExpired(Date.now())).toBe(3);
    });

    it("skips a row a request is writing at that moment instead of waiting for it", async () => {
      const [busy, idle] = ids(2, "0000");
      await insertRows([busy!, idle!], Date.now() - 1000);
      const other = await pool.connect();
      try {
        await other.query("BEGIN");
        await other.query(`SELECT 1 FROM ${table()} WHERE id = $1 FOR UPDATE`, [busy]);
        const started = Date.now();
        expect(await open({ statementTimeout: 5000 }).removeExpired(Date.now())).toBe(1);
        expect(Date.now() - started).toBeLessThan(2000);
      } finally {
        await other.query("ROLLBACK");
        other.release();
      }
      expect(await postgresIds(pool, schema)).toEqual([busy]);
    });

    it("removes what a dead holder's lease left, and set-aside records once their time is up", async () => {
      await store.get(ID);
      await pool.query(`INSERT INTO ${table()} (id, lease_token, lease_until) VALUES ($1, 'dead', now() - interval '1 second')`, [ID]);
      await store.set(OTHER_ID, record());
      await store.quarantine(OTHER_ID, "test");
      // The dead holder's row, and the row the quarantine emptied; the set-aside copy stays for now.
      expect(await store.removeExpired(Date.now())).toBe(2);
      expect(await store.removeExpired(Date.now() + 31 * 24 * 60 * MINUTE)).toBe(1);
      expect((await pool.query(`SELECT id FROM ${table()} WHERE id <> 'secret'`)).rows).toEqual([]);
    });
  });

  describe("an unresponsive database", () => {
    it("fails a statement blocked behind another transaction with a 503 within statementTimeout, and closes its connection", async () => {
      await store.set(ID, record());
      // A pool of one connection: if the stuck one were handed out again, the next statement would wait behind it.
      const single = connectPostgres(undefined, { max: 1 });
      try {
        const timed = new PostgresStore({ pool: single, schema, statementTimeout: 300 });
        await timed.get(ID);
        const other = await pool.connect();
        try {
          await other.query("BEGIN");
          await other.query(`SELECT 1 FROM ${table()} WHERE id = $1 FOR UPDATE`, [ID]);
          const started = Date.now();
          await expect(timed.lease(ID)).rejects.toThrow(
            new StoreUnavailableError("persist-session: PostgreSQL did not answer within 300 ms. Check the server and the network, or raise PostgresStore's statementTimeout option."),
          );
          expect(Date.now() - started).toBeLessThan(300 * 5);
          // Still blocked over there, yet the next statement runs on a new connection.
          expect(await timed.get(ID)).toMatchObject({ key: "cart" });
        } finally {
          await other.query("ROLLBACK");
          other.release();
        }
        await timed.close();
      } finally {
        await single.end();
      }
    });

    it("fails with a 503, not a hang, when the pool never gives a connection", async () => {
      const stuck = new PostgresStore({ pool: { connect: () => new Promise(() => undefined) }, schema, statementTimeout: 200 });
      const started = Date.now();
      await expect(stuck.get(ID)).rejects.toBeInstanceOf(StoreUnavailableError);
      expect(Date.now() - started).toBeLessThan(1500);
    });

    it("fails at once with a 503 when nothing listens on the server's port", async () => {
      const nowhere = connectPostgres("postgres://postgres@127.0.0.1:1/test");
      try {
        const offline = new PostgresStore({ pool: nowhere, schema });
        const started = Date.now();
        const error = (await offline.get(ID).catch((caught: unknown) => caught)) as Error;
        expect(error).toBeInstanceOf(StoreUnavailableError);
        expect(error.message).toMatch(/^persist-session: PostgreSQL failed: .*ECONNREFUSED.*\. Check that the server is running and reachable; requests succeed again once it is\.$/);
        expect(Date.now() - started).toBeLessThan(1000);
      } finally {
        await nowhere.end();
      }
    });
  });

  describe("change feed (live sync across processes)", () => {
    const listening = async (channel: string) =>
      (await pool.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND query = $1", [`LISTEN "${channel}"`])).rows[0].n as number;
    const collect = collectChanges;

    it("reconnects its LISTEN connection by itself when the server ends it, and reports the loss once", async () => {
      const watched = await collect(store);
      const channel = `${schema}.${TABLE}`;
      await pool.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND query = $1", [`LISTEN "${channel}"`]);
      await eventually(() => watched.errors.length > 0, "the lost connection to be reported");
      await eventually(async () => (await listening(channel)) === 1, "a new LISTEN connection");
      await leasedWrite(open(), ID, record({ version: 7 }));
      await eventually(() => watched.changes.length > 0, "a notice after the reconnect");
      expect(watched.changes).toEqual([{ id: ID, key: "cart", version: 7 }]);
      expect(watched.errors).toHaveLength(1);
    });

  });
});
