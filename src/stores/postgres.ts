import { randomBytes } from "node:crypto";
import type { RecordChange } from "../change-feed.js";
import { positive } from "../option-checks.js";
import { ChangeNotices, formatChange, type ChangeSubscription } from "./change-message.js";
import { withDeadline } from "./deadline.js";
import { leaseLostError, newLeaseToken, ownLease, RenewedLease, type LeaseBackend } from "./lease.js";
import { CorruptRecordError, DEFAULT_QUARANTINE_TTL_SECONDS, isStoredRecordHeader, StoreUnavailableError, type Lease, type SessionStore, type StoredRecord, type StoreSecret } from "./store.js";

/** The rows a statement returned, as node-postgres (`pg`) gives them. */
export interface PostgresQueryResultLike {
  readonly rows: ReadonlyArray<Record<string, unknown>>;
  readonly rowCount: number | null;
}

/** A `LISTEN` notice, as node-postgres gives it. */
export interface PostgresNotificationLike {
  readonly channel: string;
  readonly payload?: string | undefined;
}

/**
 * A connection checked out of the pool. node-postgres's `PoolClient` fits as it is.
 * PostgresStore sends only parameterized statements through `query`, and uses the
 * events on the one connection it keeps for `LISTEN`.
 */
export interface PostgresPoolClientLike {
  /** Runs one statement; `values` are sent as parameters, never spliced into `text`. */
  query(text: string, values?: unknown[]): Promise<PostgresQueryResultLike>;
  /** Returns the connection to the pool; `true` (or an error) closes it instead. */
  release(destroy?: boolean | Error): void;
  /** `notification`: a `LISTEN` notice; `error` and `end`: the connection failed or closed. */
  on(event: "notification", listener: (message: PostgresNotificationLike) => void): unknown;
  on(event: "error", listener: (error: Error) => void): unknown;
  on(event: "end", listener: () => void): unknown;
  /** Removes a listener added with `on`. */
  removeListener(event: "notification", listener: (message: PostgresNotificationLike) => void): unknown;
  removeListener(event: "error", listener: (error: Error) => void): unknown;
  removeListener(event: "end", listener: () => void): unknown;
}

/**
 * The one method PostgresStore calls on a pool: check a connection out. A
 * node-postgres `Pool` (`new pg.Pool()`, v8) fits as it is, so this package
 * never imports `pg` itself. The app owns the pool: give it an `error`
 * listener (an idle connection's error is emitted there, and unhandled it ends
 * the process) and end it after `sessions.close()`.
 */
export interface PostgresPoolLike {
  connect(): Promise<PostgresPoolClientLike>;
}

/** Options of {@link PostgresStore}. */
export interface PostgresStoreOptions {
  /** A node-postgres `Pool` (see {@link PostgresPoolLike}). */
  pool: PostgresPoolLike;
  /**
   * The schema of the table: lowercase letters, digits and `_`, not starting with a digit.
   * Created with the table when missing.
   * @default "public"
   */
  schema?: string;
  /**
   * The table that holds the records, their leases and the generated secret: lowercase
   * letters, digits and `_`, up to 55 characters (its index is `<table>_expires`).
   * @default "persist_session"
   */
  table?: string;
  /**
   * Create the schema and table on first use when they are missing, safely when several
   * processes start at once. `false` for apps that run their own migrations: take the SQL
   * from {@link createTableSql} (or the README).
   * @default true
   */
  createTable?: boolean;
  /**
   * Milliseconds a process's lease on a record lasts without renewal. It is
   * renewed every third of this while held, so only a dead, paused or cut-off
   * holder loses it; that is also the longest such a holder blocks its browser's
   * requests. Keep it below `lockTimeout` so they then wait instead of failing.
   * @default 5000
   */
  leaseTime?: number;
  /**
   * Milliseconds any one statement may take, from checking a connection out of the pool to
   * its reply. A request whose statement gets no reply in time fails with a 503 instead of
   * hanging while PostgreSQL is unreachable; the connection is closed, not reused.
   * @default 2000
   */
  statementTimeout?: number;
  /**
   * Expired rows the sweep deletes per statement. Each batch is one short statement,
   * so requests' statements run between batches.
   * @default 500
   */
  sweepBatch?: number;
  /**
   * Seconds a set-aside (unreadable) record is kept for inspection before the sweep deletes it.
   * @default 2592000 (30 days, as for the FileStore and RedisStore)
   */
  quarantineTtl?: number;
  /**
   * The `LISTEN`/`NOTIFY` channel of live sync: letters, digits and `_.:-`, up to 63 bytes.
   * @default "<schema>.<table>"
   */
  channel?: string;
}

const DEFAULT_SCHEMA = "public";
const DEFAULT_TABLE = "persist_session";
const DEFAULT_LEASE_TIME_MS = 5000;
const DEFAULT_STATEMENT_TIMEOUT_MS = 2000;
const DEFAULT_SWEEP_BATCH = 500;
/** How often the `LISTEN` connection is checked when no notice arrives: a silent network cut sends no error. */
const LISTEN_CHECK_MS = 10_000;
/** How long the `LISTEN` connection's statements may take. */
const LISTEN_TIMEOUT_MS = 5000;
/** First and longest pause between attempts to reconnect the `LISTEN` connection. */
const RECONNECT_MIN_MS = 100;
const RECONNECT_MAX_MS = 5000;
/** The first key of every advisory lock this store takes (the second is a hash of what it guards): "ps" in ASCII, unlikely to meet an app's. */
const ADVISORY_LOCK_CLASS = 0x7073;
/** The most rows one grouped write statement carries. */
const ROWS_PER_STATEMENT = 100;
/** The generated secret's row; record ids are UUIDs and never meet it. */
const SECRET_ID = "secret";
/** An expiry the sweep never reaches. */
const NEVER = Number.MAX_SAFE_INTEGER;

/** Schema and table names: lowercase, so they mean the same quoted or not in the app's own SQL. */
const IDENTIFIER = /^[a-z_][a-z0-9_]*$/;
const CHANNEL = /^[A-Za-z0-9_.:-]{1,63}$/;

/**
 * SQLSTATE codes and classes that mean "not now" rather than "wrong": the request gets a 503,
 * as when the server is down. 08 connection exception, 53 insufficient resources, 57 operator
 * intervention (shutdown, cancel, statement timeout), 58 system error; 40001/40P01 serialization
 * failure and deadlock, 55P03 lock not available, 25006 read-only transaction (a standby after failover).
 */
const UNAVAILABLE_CLASSES = new Set(["08", "53", "57", "58"]);
const UNAVAILABLE_CODES = new Set(["40001", "40P01", "55P03", "25006"]);

/** Where the table lives; validated before any SQL is built from it. */
interface TableName {
  readonly schema: string;
  readonly table: string;
}

/**
 * The SQL that creates PostgresStore's table, for apps that run their own migrations
 * (then pass `createTable: false`). It is what the store runs itself when the table is missing.
 *
 * Why the columns are what they are: a record is opaque text with the header fields beside
 * it; the lease lives in the record's own row, so a write can be checked against it in the
 * statement that applies it (see {@link PostgresStore}).
 *
 * @example
 * ```ts
 * import { createTableSql } from "persist-session/postgres";
 * await pool.query(createTableSql({ schema: "app" }));
 * ```
 */
export function createTableSql(options: { schema?: string; table?: string } = {}): string {
  const name = tableName(options.schema, options.table);
  const table = qualified(name);
  return `CREATE TABLE IF NOT EXISTS ${table} (
  id          text PRIMARY KEY,          -- the record's UUIDv4 (or "quarantine:<id>:<ms>", "secret")
  key         text,                      -- the @persist key; NULL while the row holds only a lease
  version     bigint,                    -- grows by one with every write
  updated_at  bigint,                    -- time of the write, ms since the epoch
  expires     bigint NOT NULL DEFAULT 0, -- the record counts as missing from then on, ms since the epoch
  data        text,                      -- the state (devalue text), never read by the store
  lease_token text,                      -- the random token of the process that holds the record
  lease_until timestamptz                -- when that lease runs out, by the database's clock
);
CREATE INDEX IF NOT EXISTS "${name.table}_expires" ON ${table} (expires);
`;
}

/**
 * Records in PostgreSQL, shared by every process of the app: one row per record in one
 * table, created on first use. Two processes never hold one record at once, a process
 * that stalled past its lease has its late write refused, and other processes' changes
 * reach live sync through `LISTEN`/`NOTIFY`.
 *
 * Why a lease in the record's row, and not the database's own locks:
 * - A session-level advisory lock (`pg_advisory_lock`) belongs to a connection, and a pool
 *   hands connections out per statement: the next statement of the same request may run on
 *   another connection, and the lock stays with one that serves someone else. It also
 *   vanishes with the connection, silently, when the pool or the server closes it.
 * - A row lock (`SELECT … FOR UPDATE`) would hold a transaction, and so a pooled connection,
 *   open for the whole request: ten slow requests would take a pool of ten.
 * - A version check alone (optimistic concurrency) detects the conflict only at the write,
 *   after the handler ran with its side effects; the library cannot re-run it.
 * - A lease row with a random token and an expiry holds across any connection and survives
 *   a restart of the database (it is data), and a holder that dies frees it when it runs out.
 *   Its expiry is read from the database's clock, the one clock every process shares. Every
 *   write of a known record is an `UPDATE … WHERE lease_token = $token AND lease_until > now()`,
 *   so the check and the write are one statement and nothing can come between them; the
 *   `NOTIFY` goes out in the same statement, so a refused write is never announced, and it
 *   is delivered only when that statement's transaction commits.
 *
 * @example
 * ```ts
 * import pg from "pg";
 * import { PostgresStore } from "persist-session/postgres";
 *
 * const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
 * pool.on("error", (error) => console.error("postgres:", error.message));
 * const sessions = persistSession({ secret, store: new PostgresStore({ pool }) });
 * ```
 */
export class PostgresStore implements SessionStore {
  /** Other processes write the same records: the library re-reads a record unless it holds its lease. */
  readonly shared = true;
  /** The table, as `"schema"."table"`. */
  readonly table: string;
  // TS-private, not #private: apps wrap stores with Object.create(store) to count or log
  // calls, and #private fields are not reachable through a wrapper.
  private readonly name: TableName;
  private readonly db: PostgresStatements;
  private readonly pool: PostgresPoolLike;
  private readonly createTable: boolean;
  private readonly leaseTime: number;
  private readonly sweepBatch: number;
  private readonly quarantineTtl: number;
  private readonly channel: string;
  private readonly sql: StoreSql;
  private readonly leases = new Set<RenewedLease>();
  /**
   * Releases in flight, by record. The library releases a lease once the record is idle and may
   * ask for it again at once; on another pooled connection that request can reach the table
   * before the release, find this process's own old token there, and back off. It waits instead.
   */
  private readonly releasing = new Map<string, Promise<unknown>>();
  private readonly leaseBackend: LeaseBackend;
  /**
   * The row each lease returned when it was taken, until the holder reads it: the library takes
   * the lease and then reads the record, and while this process holds the lease and has not
   * written, no other process can have changed the row. Saves one round trip per request.
   */
  private readonly takenRows = new Map<string, { readonly lease: RenewedLease; readonly row: Record<string, unknown> | undefined }>();
  /** Just-minted records' first writes, one statement for all that arrive while the previous one is in flight. */
  private readonly firstWrites: GroupedWrites<void>;
  /** Writes under a lease, grouped the same way; each row's outcome is whether its fence held. */
  private readonly fencedWrites: GroupedWrites<boolean>;
  /** Other processes' changes, for the store's watchers: one `LISTEN` connection, opened by the first. */
  private readonly notices = new ChangeNotices((onError, onMessage) => this.follow(onError, onMessage));
  private tableReady: Promise<void> | undefined;
  private tableChecked = false;

  constructor(options: PostgresStoreOptions) {
    if (typeof options !== "object" || options === null) {
      throw new TypeError("persist-session: PostgresStore expects an options object. Pass { pool } with a node-postgres Pool (new pg.Pool()).");
    }
    const { pool } = options;
    if (typeof pool !== "object" || pool === null || typeof pool.connect !== "function") {
      throw new TypeError(`persist-session: option pool is invalid: ${pool === null ? "null" : typeof pool}. Pass a node-postgres Pool (new pg.Pool({ connectionString })).`);
    }
    this.name = tableName(options.schema, options.table);
    this.table = qualified(this.name);
    const { createTable = true } = options;
    if (typeof createTable !== "boolean") {
      throw new TypeError(`persist-session: option createTable is invalid: ${String(createTable)}. Use true or false.`);
    }
    this.channel = options.channel ?? `${this.name.schema}.${this.name.table}`;
    if (typeof this.channel !== "string" || !CHANNEL.test(this.channel)) {
      throw new TypeError(
        `persist-session: option channel is invalid: ${String(this.channel)}. Use up to 63 letters, digits and _.:- (the default, "<schema>.<table>", is too long for these names).`,
      );
    }
    this.pool = pool;
    this.createTable = createTable;
    this.leaseTime = positive("leaseTime", options.leaseTime, DEFAULT_LEASE_TIME_MS);
    this.quarantineTtl = positive("quarantineTtl", options.quarantineTtl, DEFAULT_QUARANTINE_TTL_SECONDS);
    this.sweepBatch = positive("sweepBatch", options.sweepBatch, DEFAULT_SWEEP_BATCH);
    if (!Number.isSafeInteger(this.sweepBatch)) {
      throw new TypeError(`persist-session: option sweepBatch is invalid: ${this.sweepBatch}. Use a whole number of rows.`);
    }
    const timeout = positive("statementTimeout", options.statementTimeout, DEFAULT_STATEMENT_TIMEOUT_MS);
    this.db = new PostgresStatements(pool, timeout, this.table);
    this.sql = storeSql(this.table);
    this.firstWrites = new GroupedWrites<void>(async (columns) => {
      await this.run(this.sql.insertNew, columns);
      return () => undefined;
    });
    this.fencedWrites = new GroupedWrites(async (columns) => {
      const { rows } = await this.run(this.sql.fencedWrite, [...columns, this.channel]);
      const applied = new Set(rows.map((row) => row["id"]));
      return (id) => applied.has(id);
    });
    this.leaseBackend = {
      renew: async (lease) => ((await this.run(this.sql.renew, [lease.id, lease.token, lease.leaseTime])).rowCount ?? 0) > 0,
      release: (lease) => {
        const released = this.run(this.sql.release, [lease.id, lease.token]);
        this.releasing.set(lease.id, released);
        const forget = () => {
          if (this.releasing.get(lease.id) === released) this.releasing.delete(lease.id);
        };
        released.then(forget, forget);
        return released;
      },
      ended: (lease) => {
        this.leases.delete(lease);
        if (this.takenRows.get(lease.id)?.lease === lease) this.takenRows.delete(lease.id);
      },
    };
  }

  /** The record in row `id`, or `undefined`; a row of another shape is a {@link CorruptRecordError}. */
  async get(id: string): Promise<StoredRecord | undefined> {
    const taken = this.takenRows.get(id);
    if (taken !== undefined) {
      this.takenRows.delete(id);
      if (taken.lease.held) return readRow(taken.row);
    }
    const { rows } = await this.run(this.sql.get, [id]);
    return readRow(rows[0]);
  }

  /**
   * Writes the record: under `lease`, one UPDATE applied only while the lease holds (else
   * {@link LeaseLostError}), with its NOTIFY; without one (a just-minted record), an INSERT
   * grouped with the other new records of the moment.
   */
  async set(id: string, record: StoredRecord, lease?: Lease): Promise<void> {
    const { key, version, updatedAt, expires, data } = record;
    await this.write(id, lease, [key, version, updatedAt, expires, data], { id, key, version });
  }

  /** Removes the record, fenced by `lease` as {@link set} is; under a lease the row stays, empty, until the lease is released. */
  async delete(id: string, lease?: Lease): Promise<void> {
    await this.write(id, lease, undefined, { id, key: "", version: 0 });
  }

  /** Moves the record to the row `quarantine:<id>:<ms>`, which the sweep deletes after `quarantineTtl` seconds. */
  async quarantine(id: string, _reason: string, lease?: Lease): Promise<void> {
    const fence = ownLease(this.leaseBackend, "PostgresStore", id, lease);
    this.takenRows.delete(id);
    const now = Date.now();
    const { rows } = await this.run(this.sql.quarantine, [id, fence?.token ?? null, `quarantine:${id}:${now}`, now + this.quarantineTtl * 1000]);
    if (fence !== undefined && Number(rows[0]?.["held"]) !== 1) throw this.leaseLost(id, fence);
  }

  /**
   * Takes the record's lease for `leaseTime` (renewed while held), or `undefined` when another
   * process holds it. The statement also returns the record, which the next {@link get} uses.
   */
  async lease(id: string): Promise<Lease | undefined> {
    await this.releasing.get(id)?.catch(() => undefined);
    const token = newLeaseToken();
    const startedAt = Date.now();
    let result: PostgresQueryResultLike;
    try {
      result = await this.run(this.sql.lease, [id, token, this.leaseTime]);
    } catch (error) {
      // The statement may still commit after we gave up on it: give the lease back if it did.
      this.run(this.sql.release, [id, token]).catch(() => undefined);
      throw error;
    }
    if (result.rows.length === 0) return undefined;
    const lease = new RenewedLease(this.leaseBackend, id, token, this.leaseTime, startedAt);
    this.leases.add(lease);
    this.takenRows.set(id, { lease, row: result.rows[0] });
    return lease;
  }

  /**
   * Deletes expired rows (records, set-aside records, and rows a dead holder's lease left) in
   * batches of `sweepBatch`, one short statement each. Each batch takes a transaction-level
   * advisory lock first (`pg_try_advisory_xact_lock`): it lasts only as long as the statement,
   * so it holds under a pool, and when another process has it, that process is sweeping and
   * this one stops. Rows whose lease is held are skipped, and rows a request has locked at that
   * moment too (`FOR UPDATE SKIP LOCKED`), so the sweep never waits for a request.
   */
  async removeExpired(now: number): Promise<number> {
    let removed = 0;
    for (;;) {
      const { rows } = await this.run(this.sql.sweep, [ADVISORY_LOCK_CLASS, `sweep ${this.table}`, now, this.sweepBatch]);
      const batch = rows[0];
      if (batch?.["mine"] !== true) return removed;
      const count = Number(batch["removed"]);
      removed += count;
      if (count < this.sweepBatch) return removed;
      // Let requests' statements have the pool between batches.
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  /**
   * Follows every process's writes through `LISTEN` on the store's channel, on a connection of
   * its own checked out of the pool (and held while the store is open), which reconnects by
   * itself. A write without a lease (a just-minted record's first) is not announced: no browser
   * has its id yet.
   */
  watch(listener: (change: RecordChange) => void, onError: (error: Error) => void): Promise<() => void> {
    return this.notices.listen(listener, onError);
  }

  /** The secret kept in the row `secret`, generated by the first process that asks. */
  async secret(): Promise<StoreSecret> {
    // The first process to start generates it (ON CONFLICT DO NOTHING); every other one reads that one.
    const generated = randomBytes(48).toString("base64url");
    const { rows } = await this.run(this.sql.secret, [SECRET_ID, Date.now(), NEVER, generated]);
    const secret = rows[0]?.["data"];
    if (typeof secret !== "string" || secret.length < 32) {
      throw new Error(`persist-session: the generated secret in row "${SECRET_ID}" of ${this.table} is missing or too short. Delete the row, or pass \`secret\` to persistSession().`);
    }
    // 48 random bytes: the row holds the value generated here only if this call inserted it.
    return { secret, created: secret === generated };
  }

  /** `postgres "schema"."table"`, for logs and the demo. */
  describe(): string {
    return `postgres ${this.table}`;
  }

  /** Releases the leases this store still holds and the `LISTEN` connection. The pool stays open: the app owns it. */
  async close(): Promise<void> {
    await Promise.allSettled([...[...this.leases].map((lease) => lease.release()), this.notices.close()]);
  }

  /** Runs a statement once the table is known to exist. */
  private async run(text: string, values: unknown[]): Promise<PostgresQueryResultLike> {
    if (!this.tableChecked) await this.ensureTable();
    return this.db.query(text, values);
  }

  /** Checks, once, that the table exists, and creates it when it may. A failure is retried by the next statement. */
  private ensureTable(): Promise<void> {
    this.tableReady ??= this.checkTable().then(
      () => {
        this.tableChecked = true;
      },
      (error: unknown) => {
        this.tableReady = undefined;
        throw error;
      },
    );
    return this.tableReady;
  }

  private async checkTable(): Promise<void> {
    const { rows } = await this.db.query("SELECT to_regclass($1) IS NOT NULL AS present", [this.table]);
    if (rows[0]?.["present"] === true) return;
    if (!this.createTable) {
      throw new Error(
        `persist-session: the table ${this.table} does not exist, and PostgresStore's createTable option is false. Create it with the SQL from createTableSql() (see the README), or leave createTable on.`,
      );
    }
    // CREATE … IF NOT EXISTS is not safe against itself: two processes starting at once can both
    // find the table missing and one fails on a duplicate catalog entry. An advisory lock held
    // by the creating transaction serializes them; the second then finds the table made.
    // CREATE SCHEMA checks the role's privilege on the database before it checks IF NOT EXISTS,
    // so it runs only for a schema that is missing.
    await this.db.transaction(async (query) => {
      await query("SELECT pg_advisory_xact_lock($1, hashtext($2))", [ADVISORY_LOCK_CLASS, `create ${this.table}`]);
      const { rows: found } = await query("SELECT to_regnamespace($1) IS NOT NULL AS present", [this.name.schema]);
      if (found[0]?.["present"] !== true) await query(`CREATE SCHEMA IF NOT EXISTS "${this.name.schema}"`);
      await query(createTableSql(this.name));
    });
  }

  /** Applies a write (`values` undefined: a delete) under `lease`, and announces `change` to other processes with it. */
  private async write(id: string, lease: Lease | undefined, values: unknown[] | undefined, change: RecordChange): Promise<void> {
    const fence = ownLease(this.leaseBackend, "PostgresStore", id, lease);
    this.takenRows.delete(id);
    if (fence === undefined) {
      // A just-minted record: no lease to check and no one to tell (no browser has its id yet).
      if (values === undefined) await this.run(this.sql.deleteNew, [id]);
      else await this.firstWrites.add(id, values);
      return;
    }
    // A delete empties the row and keeps it, with its lease, until the lease is released.
    if (!(await this.fencedWrites.add(id, [fence.token, ...(values ?? [null, null, null, 0, null]), formatChange(change)]))) throw this.leaseLost(id, fence);
  }

  private leaseLost(id: string, lease: RenewedLease): Error {
    return leaseLostError(id, lease, this.leaseTime, "PostgreSQL", "PostgresStore");
  }

  /** Starts the `LISTEN` connection; resolves once it listens. */
  private async follow(onError: (error: Error) => void, onMessage: (message: string) => void): Promise<ChangeSubscription> {
    if (!this.tableChecked) await this.ensureTable();
    const listener = new ChangeListener(this.pool, this.db, this.channel, onError, onMessage);
    await listener.start();
    return listener;
  }
}

/** The statements of one table; built once per store from the validated, quoted name. Ids and values are always parameters. */
interface StoreSql {
  readonly get: string;
  readonly lease: string;
  readonly renew: string;
  readonly release: string;
  readonly insertNew: string;
  readonly deleteNew: string;
  readonly fencedWrite: string;
  readonly quarantine: string;
  readonly sweep: string;
  readonly secret: string;
}

function storeSql(table: string): StoreSql {
  const leaseHeld = "lease_token = $2 AND lease_until > now()";
  // Lease statements commit without waiting for their WAL flush (synchronous_commit off for
  // their own transaction only), so taking, renewing and releasing a lease costs no disk flush.
  // That is safe because the lease only grants; the fence enforces: if the database crashes
  // before it flushed a lease, the holder's writes find another token (or none) in the row and
  // are refused, and a lost release or renewal only makes others wait, or the lease end sooner.
  // Record writes keep the server's setting: a write that was answered is durable.
  const relaxed = "relaxed AS MATERIALIZED (SELECT set_config('synchronous_commit', 'off', true))";
  return {
    get: `SELECT key, version, updated_at, expires, data FROM ${table} WHERE id = $1`,
    // Takes the lease when it is free or ran out, creating the row when there is none, and
    // returns the record as it is (see takenRows). No row returned: another process holds it.
    lease:
      `WITH ${relaxed} INSERT INTO ${table} AS r (id, lease_token, lease_until) SELECT $1::text, $2::text, now() + $3::float8 * interval '1 millisecond' FROM relaxed ` +
      "ON CONFLICT (id) DO UPDATE SET lease_token = excluded.lease_token, lease_until = excluded.lease_until " +
      "WHERE r.lease_until IS NULL OR r.lease_until <= now() " +
      "RETURNING r.key, r.version, r.updated_at, r.expires, r.data",
    renew: `WITH ${relaxed} UPDATE ${table} SET lease_until = now() + $3::float8 * interval '1 millisecond' FROM relaxed WHERE id = $1 AND ${leaseHeld}`,
    // A row that holds nothing but the lease goes with it.
    release:
      `WITH ${relaxed}, emptied AS (DELETE FROM ${table} USING relaxed WHERE id = $1 AND lease_token = $2 AND data IS NULL RETURNING 1) ` +
      `UPDATE ${table} SET lease_token = NULL, lease_until = NULL FROM relaxed WHERE id = $1 AND lease_token = $2 AND data IS NOT NULL`,
    // Many rows in one statement: each parameter is an array, one element per record.
    insertNew:
      `INSERT INTO ${table} (id, key, version, updated_at, expires, data) ` +
      "SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::text[]) " +
      "ON CONFLICT (id) DO UPDATE SET key = excluded.key, version = excluded.version, updated_at = excluded.updated_at, expires = excluded.expires, data = excluded.data",
    deleteNew: `DELETE FROM ${table} WHERE id = $1`,
    // The fence: each row is applied only while its token holds its lease, and announced by the
    // same statement; the ids returned are the writes that were applied.
    fencedWrite:
      "WITH incoming AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::text[], $8::text[]) " +
      "AS w (id, token, key, version, updated_at, expires, data, notice)), " +
      `written AS (UPDATE ${table} AS r SET key = w.key, version = w.version, updated_at = w.updated_at, expires = w.expires, data = w.data ` +
      "FROM incoming AS w WHERE r.id = w.id AND r.lease_token = w.token AND r.lease_until > now() RETURNING r.id, w.notice) " +
      "SELECT id, pg_notify($9, notice) FROM written",
    // Copies the record to its quarantine row and empties its own (keeping the lease); held = 0 under a lease: the fence refused.
    quarantine:
      `WITH source AS (SELECT id, key, version, updated_at, data FROM ${table} WHERE id = $1 AND ($2::text IS NULL OR ${leaseHeld}) FOR UPDATE), ` +
      `moved AS (INSERT INTO ${table} (id, key, version, updated_at, expires, data) SELECT $3::text, key, version, updated_at, $4::bigint, data FROM source WHERE data IS NOT NULL), ` +
      `emptied AS (UPDATE ${table} AS r SET key = NULL, version = NULL, updated_at = NULL, expires = 0, data = NULL FROM source WHERE r.id = source.id) ` +
      "SELECT count(*)::int AS held FROM source",
    sweep:
      "WITH turn AS MATERIALIZED (SELECT pg_try_advisory_xact_lock($1, hashtext($2)) AS mine), " +
      `gone AS (DELETE FROM ${table} WHERE id IN (SELECT id FROM ${table} WHERE (SELECT mine FROM turn) AND expires < $3 ` +
      "AND (lease_until IS NULL OR lease_until <= now()) LIMIT $4 FOR UPDATE SKIP LOCKED) RETURNING 1) " +
      "SELECT (SELECT mine FROM turn) AS mine, (SELECT count(*) FROM gone)::int AS removed",
    secret:
      `WITH made AS (INSERT INTO ${table} (id, key, version, updated_at, expires, data) VALUES ($1, '', 1, $2, $3, $4) ON CONFLICT (id) DO NOTHING RETURNING data) ` +
      `SELECT data FROM made UNION ALL SELECT data FROM ${table} WHERE id = $1`,
  };
}

/**
 * Group commit of row writes: while one statement of writes is in flight, the writes that
 * arrive wait for it and then go together, as one statement (each column an array for
 * `unnest`) and one commit; with nothing in flight a write goes at once. A commit is a WAL
 * flush, and a commit that sends NOTIFY also holds the database's notification lock until it
 * is flushed, so commits that notify run one at a time across every process: per statement,
 * not per record, they are shared. `send` resolves with each row's outcome; a failed
 * statement fails every write in it.
 */
class GroupedWrites<R> {
  #pending = new Map<string, { readonly values: unknown[]; readonly waiters: Array<{ resolve: (outcome: R) => void; reject: (error: unknown) => void }> }>();
  #sending = false;

  constructor(private readonly send: (columns: unknown[][]) => Promise<(id: string) => R>) {}

  /** Resolves with the outcome of the row `id`, `values` (one per column after the id) once a statement with it has committed. */
  add(id: string, values: unknown[]): Promise<R> {
    return new Promise((resolve, reject) => {
      // One row twice in one statement would fail it (ON CONFLICT, UPDATE … FROM): the later write wins, and both hear its outcome.
      const waiters = this.#pending.get(id)?.waiters ?? [];
      waiters.push({ resolve, reject });
      this.#pending.delete(id);
      this.#pending.set(id, { values, waiters });
      if (!this.#sending) this.#next();
    });
  }

  #next(): void {
    if (this.#pending.size === 0) {
      this.#sending = false;
      return;
    }
    let batch = this.#pending;
    this.#pending = new Map();
    if (batch.size > ROWS_PER_STATEMENT) {
      // Bounded, so one statement stays small: the rest go in the next.
      const entries = [...batch];
      batch = new Map(entries.slice(0, ROWS_PER_STATEMENT));
      this.#pending = new Map(entries.slice(ROWS_PER_STATEMENT));
    }
    this.#sending = true;
    // Column arrays for unnest(): the ids, then each value's column.
    const columns: unknown[][] = [[...batch.keys()]];
    for (const { values } of batch.values()) values.forEach((value, i) => (columns[i + 1] ??= []).push(value));
    this.send(columns).then(
      (outcome) => {
        for (const [id, { waiters }] of batch) for (const waiter of waiters) waiter.resolve(outcome(id));
        this.#next();
      },
      (error: unknown) => {
        for (const { waiters } of batch.values()) for (const waiter of waiters) waiter.reject(error);
        this.#next();
      },
    );
  }
}

/** The record in a row as the store reads it; `undefined` for no row or one without data (a lease, or deleted under one). */
function readRow(row: Record<string, unknown> | undefined): StoredRecord | undefined {
  if (row === undefined || row["data"] === null || row["data"] === undefined) return undefined;
  const { key, data } = row;
  const header = { key, version: integer(row["version"]), updatedAt: integer(row["updated_at"]), expires: integer(row["expires"]) };
  if (!isStoredRecordHeader(header)) throw new CorruptRecordError("a row with fields of an unknown shape");
  if (typeof data !== "string" || data === "") throw new CorruptRecordError("a row with empty data");
  return { ...header, data };
}

/** A bigint column's value: a string (node-postgres's default) or a number (an app's type parser); NaN for anything else (NULL). */
function integer(value: unknown): number {
  if (typeof value === "number") return value;
  return typeof value === "string" && value !== "" ? Number(value) : Number.NaN;
}

function tableName(schema: unknown = DEFAULT_SCHEMA, table: unknown = DEFAULT_TABLE): TableName {
  if (typeof schema !== "string" || !IDENTIFIER.test(schema) || schema.length > 63) {
    throw new TypeError(`persist-session: option schema is invalid: ${String(schema)}. Use up to 63 lowercase letters, digits and _, not starting with a digit.`);
  }
  if (typeof table !== "string" || !IDENTIFIER.test(table) || table.length > 55) {
    throw new TypeError(`persist-session: option table is invalid: ${String(table)}. Use up to 55 lowercase letters, digits and _, not starting with a digit.`);
  }
  return { schema, table };
}

function qualified({ schema, table }: TableName): string {
  return `"${schema}"."${table}"`;
}

/** A PostgreSQL error that is not about reaching the server (a missing table, a privilege); the request gets a 500. */
class PostgresStatementError extends Error {
  override readonly name = "PostgresStatementError";
  constructor(
    readonly code: string,
    message: string,
    options: { cause: unknown },
  ) {
    super(message, options);
  }
}

/** Runs statements on pooled connections with the guards every one needs: a deadline, and a connection that failed or timed out is closed, never reused. */
class PostgresStatements {
  constructor(
    private readonly pool: PostgresPoolLike,
    private readonly timeout: number,
    private readonly table: string,
  ) {}

  query(text: string, values?: unknown[]): Promise<PostgresQueryResultLike> {
    return this.withConnection((client) => client.query(text, values), this.timeout, false);
  }

  /**
   * Runs `work` in one transaction on one connection. DDL may wait for other sessions' locks,
   * so the whole gets several statements' time; on any failure the connection is closed,
   * which rolls the transaction back whatever state it was left in.
   */
  transaction(work: (query: (text: string, values?: unknown[]) => Promise<PostgresQueryResultLike>) => Promise<void>): Promise<void> {
    return this.withConnection(
      async (client) => {
        await client.query("BEGIN");
        await work((text, values) => client.query(text, values));
        await client.query("COMMIT");
      },
      this.timeout * 5,
      true,
    );
  }

  /** Checks a connection out, runs `work` on it and gives it back, all within `timeout` ms. */
  private withConnection<T>(work: (client: PostgresPoolClientLike) => Promise<T>, timeout: number, destroyOnError: boolean): Promise<T> {
    let client: PostgresPoolClientLike | undefined;
    let done = false;
    const giveBack = (destroy: boolean) => {
      if (done) return;
      done = true;
      client?.release(destroy);
    };
    return withDeadline(
      async () => {
        const taken = await this.pool.connect();
        if (done) {
          // The deadline passed while the pool was connecting: the connection itself is fine.
          taken.release();
          throw new Error("gave up before the pool gave a connection");
        }
        client = taken;
        // A connection can fail while checked out between statements (the server's goodbye can
        // arrive in the packet that ends a reply): node-postgres then emits `error` on it, which
        // unheard would end the process. Heard, it closes the connection instead of reusing it.
        let failed = false;
        const onError = () => {
          failed = true;
        };
        taken.on("error", onError);
        try {
          const result = await work(taken);
          taken.removeListener("error", onError);
          giveBack(failed);
          return result;
        } catch (error) {
          taken.removeListener("error", onError);
          giveBack(failed || destroyOnError || connectionBroken(error));
          throw error;
        }
      },
      timeout,
      () => {
        // The statement may be stuck on this connection: close it so the pool does not hand it out again.
        giveBack(true);
        return new StoreUnavailableError(
          `persist-session: PostgreSQL did not answer within ${timeout} ms. Check the server and the network, or raise PostgresStore's statementTimeout option.`,
        );
      },
      (error) => this.storeError(error),
    );
  }

  storeError(error: unknown): Error {
    if (error instanceof StoreUnavailableError || error instanceof PostgresStatementError) return error;
    const message = error instanceof Error ? error.message : String(error);
    const code = sqlState(error);
    if (code === undefined || UNAVAILABLE_CODES.has(code) || UNAVAILABLE_CLASSES.has(code.slice(0, 2))) {
      return new StoreUnavailableError(`persist-session: PostgreSQL failed: ${message}. Check that the server is running and reachable; requests succeed again once it is.`, {
        cause: error,
      });
    }
    if (code === "42P01") {
      return new PostgresStatementError(
        code,
        `persist-session: PostgreSQL has no table ${this.table} (${message}). Create it with the SQL from createTableSql(), or leave PostgresStore's createTable option on.`,
        { cause: error },
      );
    }
    return new PostgresStatementError(
      code,
      `persist-session: PostgreSQL refused a statement: ${message} (SQLSTATE ${code}). Check the table ${this.table} against createTableSql() and the role's privileges on it.`,
      { cause: error },
    );
  }
}

/** The SQLSTATE of a server error (node-postgres puts it in `code`), or `undefined` for a failure to reach the server. */
function sqlState(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

/** Whether a failed statement leaves its connection unfit for reuse: anything but an ordinary SQL error. */
function connectionBroken(error: unknown): boolean {
  const code = sqlState(error);
  return code === undefined || code.startsWith("08") || code.startsWith("57P");
}

/**
 * The connection that `LISTEN`s for other processes' changes: checked out of the pool and
 * held, checked every {@link LISTEN_CHECK_MS} when idle, and replaced by a new one (with
 * backoff) when it fails. Each outage is reported once.
 */
class ChangeListener {
  #client: PostgresPoolClientLike | undefined;
  #stopped = false;
  #reported = false;
  #retryTimer: NodeJS.Timeout | undefined;
  #checkTimer: NodeJS.Timeout | undefined;
  #attempt = 0;
  #detach: ((closing: boolean) => void) | undefined;

  constructor(
    private readonly pool: PostgresPoolLike,
    private readonly db: PostgresStatements,
    private readonly channel: string,
    private readonly onError: (error: Error) => void,
    private readonly onNotice: (payload: string) => void,
  ) {}

  /** Connects and listens; rejects, having let everything go, when it cannot (the caller may try again later). */
  async start(): Promise<void> {
    try {
      await this.#connect();
    } catch (error) {
      await this.stop();
      throw error;
    }
  }

  /** Stops listening: UNLISTEN, then the connection goes back to the pool (closed if UNLISTEN failed). */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#retryTimer);
    clearTimeout(this.#checkTimer);
    const client = this.#client;
    if (client === undefined) return;
    const unlistened = await this.#within(() => client.query(`UNLISTEN "${this.channel}"`), "UNLISTEN").then(
      () => true,
      () => false,
    );
    if (this.#client === client) this.#drop(!unlistened);
  }

  async #connect(): Promise<void> {
    const connecting = this.pool.connect();
    const client = await this.#within(() => connecting, "a connection for live sync").catch((error: unknown) => {
      // A connection the pool hands over after the deadline goes straight back.
      connecting.then((late) => late.release(), () => undefined);
      throw error;
    });
    if (this.#stopped) {
      client.release();
      return;
    }
    this.#attach(client);
    try {
      await this.#within(() => client.query(`LISTEN "${this.channel}"`), "LISTEN");
    } catch (error) {
      if (this.#client === client) this.#drop(true);
      throw error;
    }
    this.#attempt = 0;
    this.#reported = false;
    this.#scheduleCheck();
  }

  /** `run` under the listener's own deadline, its failures as store errors. */
  #within<T>(run: () => Promise<T>, what: string): Promise<T> {
    return withDeadline(
      run,
      LISTEN_TIMEOUT_MS,
      () => new StoreUnavailableError(`persist-session: PostgreSQL did not answer ${what} within ${LISTEN_TIMEOUT_MS} ms. Check the server, the network and the pool's size.`),
      (error) => this.db.storeError(error),
    );
  }

  #attach(client: PostgresPoolClientLike): void {
    const onNotification = (message: PostgresNotificationLike) => {
      if (message.channel === this.channel && typeof message.payload === "string") this.onNotice(message.payload);
    };
    const onFailure = (error?: Error) => this.#lost(client, error ?? new Error("the connection ended"));
    const onEnd = () => onFailure();
    client.on("notification", onNotification);
    client.on("error", onFailure);
    client.on("end", onEnd);
    this.#client = client;
    this.#detach = (closing) => {
      client.removeListener("notification", onNotification);
      client.removeListener("end", onEnd);
      // On a connection being closed the error listener stays: it may still emit one, and unheard it would end the process.
      if (!closing) client.removeListener("error", onFailure);
    };
  }

  /** Gives the connection back (closed when `destroy`) and forgets it. */
  #drop(destroy: boolean): void {
    const client = this.#client;
    if (client === undefined) return;
    this.#client = undefined;
    this.#detach?.(destroy);
    this.#detach = undefined;
    clearTimeout(this.#checkTimer);
    // The connection holds a LISTEN: it goes back for reuse only once told UNLISTEN.
    client.release(destroy);
  }

  #lost(client: PostgresPoolClientLike, error: Error): void {
    if (this.#client !== client || this.#stopped) return;
    this.#drop(true);
    if (!this.#reported) {
      this.#reported = true;
      this.onError(error);
    }
    this.#retry();
  }

  #retry(): void {
    if (this.#stopped) return;
    clearTimeout(this.#retryTimer);
    const delay = Math.min(RECONNECT_MAX_MS, RECONNECT_MIN_MS * 2 ** this.#attempt++);
    this.#retryTimer = setTimeout(() => {
      this.#connect().catch(() => this.#retry());
    }, delay).unref();
  }

  /** A silent network cut sends no error: a periodic statement on the connection finds it. */
  #scheduleCheck(): void {
    clearTimeout(this.#checkTimer);
    const client = this.#client;
    if (client === undefined || this.#stopped) return;
    this.#checkTimer = setTimeout(() => {
      this.#within(() => client.query("SELECT 1"), "the live-sync connection's check").then(
        () => this.#scheduleCheck(),
        (error: unknown) => this.#lost(client, error instanceof Error ? error : new Error(String(error))),
      );
    }, LISTEN_CHECK_MS).unref();
  }
}
