import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { persist, persistSession, type PersistSessionOptions, type SessionStore, type StoredRecord } from "../../src/index.js";
import { LeaseLostError, StoreUnavailableError } from "../../src/redis.js";
import { capturingLogger, delay, eventually } from "../helpers/robustness.js";
import { EventReader } from "../helpers/sse.js";

/**
 * What every store shared by several processes must show (RedisStore, PostgresStore): one
 * holder of a record's lease at a time, renewed while held and freed when its holder dies;
 * writes fenced by it; and other processes' changes followed for live sync, refused or
 * lease-less writes never announced. Each store's own file runs it with a harness that
 * reaches into the backend as another process would.
 */

/** A store shared by several processes: one that leases records and follows their changes. */
export type SharedStore = SessionStore & Required<Pick<SessionStore, "lease" | "watch" | "close" | "quarantine">>;

/** A fresh namespace of one backend (a key prefix, a schema) for one test. */
export interface SharedNamespace {
  /** A store over the namespace, as another process of the app would open it. */
  open(options?: { leaseTime?: number }): SharedStore;
  /** Gives the lease of `id` to `token` for `ms` in the backend, as another process taking it would. */
  takeOver(id: string, token: string, ms: number): Promise<void>;
  /** Makes the lease of `id` run out in the backend now, with no new holder. */
  expire(id: string): Promise<void>;
  /** The token holding `id`'s lease in the backend, or `undefined`. */
  holder(id: string): Promise<string | undefined>;
  /** Sends `message` on the stores' change channel. */
  publish(message: string): Promise<void>;
  /** How many connections follow the change channel now. */
  listeners(): Promise<number>;
  cleanup(): Promise<void>;
}

export interface SharedStoreHarness {
  /** The store's class name, as its messages say it. */
  readonly store: string;
  /** What a holder is cut off from, as the lease-lost message says it. */
  readonly backend: string;
  create(): Promise<SharedNamespace>;
}

const ID = "0b7c8a52-3f3e-4c1a-9d7e-2a1b3c4d5e6f";
const OTHER_ID = "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f";
const MINUTE = 60_000;
const SECRET = "shared-store-suite-secret-0123456789-abcdef";

/** Collects what `watched` hears of other processes' changes, and of its failures. */
export async function collectChanges(watched: SessionStore & Required<Pick<SessionStore, "watch">>) {
  const changes: unknown[] = [];
  const errors: Error[] = [];
  const stop = await watched.watch(
    (change) => changes.push(change),
    (error) => errors.push(error),
  );
  return { changes, errors, stop };
}

/** Writes as a process serving a known record does: under the record's lease. */
export async function leasedWrite(writer: SessionStore & Required<Pick<SessionStore, "lease">>, id: string, next: StoredRecord | "delete"): Promise<void> {
  const lease = await writer.lease(id);
  expect(lease).toBeDefined();
  try {
    await (next === "delete" ? writer.delete(id, lease) : writer.set(id, next, lease));
  } finally {
    await lease!.release();
  }
}

function record(overrides: Partial<StoredRecord> = {}): StoredRecord {
  const now = Date.now();
  return { key: "cart", version: 1, updatedAt: now, expires: now + MINUTE, data: '[{"items":1},2]', ...overrides };
}

export function describeSharedStore(harness: SharedStoreHarness): void {
  describe(`${harness.store} (shared-store contract)`, () => {
    let backend: SharedNamespace;
    let store: SharedStore;
    const stores: SharedStore[] = [];
    const open = (options?: { leaseTime?: number }) => {
      const opened = backend.open(options);
      stores.push(opened);
      return opened;
    };
    // Node-style application of @persist, so this file needs no decorator syntax.
    const Visits = persist(`shared-store-${harness.store.toLowerCase()}-visits`)(
      class Visits {
        count = 0;
      },
    );
    /** Sessions over `store` counting visits, after one visit: its cookie and record id. */
    const visitedOnce = async (options: Partial<PersistSessionOptions>) => {
      const sessions = persistSession({ secret: SECRET, store, sweepInterval: 0, ...options });
      const handler = sessions.fetch(async () => {
        new Visits().count += 1;
        return new Response("ok");
      });
      const first = await handler(new Request("http://localhost/"));
      const cookie = first.headers.getSetCookie()[0]!.split(";")[0]!;
      const id = /=([0-9a-f-]{36})\./.exec(cookie)![1]!;
      return { sessions, handler, cookie, id };
    };

    beforeEach(async () => {
      backend = await harness.create();
      store = open();
    });
    afterEach(async () => {
      for (const opened of stores.splice(0)) await opened.close();
      await backend.cleanup();
    });

    describe("leases", () => {
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
        // A holder that died: its token stays until its time runs out.
        await backend.takeOver(ID, "dead-holder-token", 300);
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
        await backend.takeOver(ID, "newer-holder-token", MINUTE);
        await expect(store.set(ID, record({ version: 2 }), lease)).rejects.toThrow(LeaseLostError);
        expect(lease.held).toBe(false);
        await expect(store.delete(ID, lease)).rejects.toBeInstanceOf(StoreUnavailableError);
        await expect(store.quarantine(ID, "x", lease)).rejects.toBeInstanceOf(LeaseLostError);
        expect((await store.get(ID))?.version).toBe(1);
        // Releasing a lost lease leaves the new holder's alone.
        await lease.release();
        expect(await backend.holder(ID)).toBe("newer-holder-token");
      });

      it("refuses a write under a lease that expired with no new holder", async () => {
        await store.set(ID, record({ version: 1 }));
        const lease = (await store.lease(ID))!;
        // Expired in the backend before this process could tell (it was paused): locally it still looks held.
        await backend.expire(ID);
        expect(lease.held).toBe(true);
        const refused = (await store.set(ID, record({ version: 2 }), lease).catch((error: unknown) => error)) as Error;
        expect(refused).toBeInstanceOf(LeaseLostError);
        expect(refused.message).toMatch(
          new RegExp(
            `^persist-session: a write of record ${ID} was refused because this process no longer held its lease \\(it was paused or cut off from ${harness.backend} for over \\d+ ms[^)]*\\), ` +
              `so another process may have written since; nothing was written\\. Retry the request; if pauses this long are expected, raise ${harness.store}'s leaseTime option\\.$`,
          ),
        );
        expect((await store.get(ID))?.version).toBe(1);
      });

      it("refuses a lease issued for another record or by another store", async () => {
        const lease = (await store.lease(ID))!;
        await expect(store.set(OTHER_ID, record(), lease)).rejects.toThrow(TypeError);
        await expect(open().set(ID, record(), lease)).rejects.toThrow(
          `persist-session: ${harness.store} was given a lease it did not issue for record ${ID}. Pass the lease from this store's lease(id).`,
        );
        await lease.release();
      });

      it("releases its leases on close", async () => {
        const closing = open();
        await closing.lease(ID);
        expect(await backend.holder(ID)).toEqual(expect.any(String));
        await closing.close();
        expect(await backend.holder(ID)).toBeUndefined();
      });

      it("answers 503 after lockTimeout while another process holds the record, then serves once it is free", async () => {
        const logger = capturingLogger();
        const { sessions, handler, cookie, id } = await visitedOnce({ lockTimeout: 300, logger });
        try {
          await backend.takeOver(id, "another-process", 1500);
          const started = Date.now();
          const blocked = await handler(new Request("http://localhost/", { headers: { cookie } }));
          expect(blocked.status).toBe(503);
          expect(Date.now() - started).toBeGreaterThanOrEqual(250);
          expect(Date.now() - started).toBeLessThan(1500);
          expect(logger.errors).toEqual([
            "persist-session: a request waited 300 ms for another process serving the same browser to release its record. Send responses (or their headers) sooner, or raise the lockTimeout option.",
          ]);
          // The other holder's lease runs out: the browser is served again, from the stored state.
          await eventually(async () => (await handler(new Request("http://localhost/", { headers: { cookie } }))).status === 200, "the record to be free", 5000);
          expect(await store.get(id)).toMatchObject({ version: 2 });
        } finally {
          await sessions.close();
        }
      });
    });

    describe("change feed (live sync across processes)", () => {
      const collect = collectChanges;

      it("hears every process's writes and deletes, on a connection of its own that close() ends", async () => {
        const watched = await collect(store);
        expect(await backend.listeners()).toBe(1);
        const writer = open(); // another process's store: same namespace, its own instance
        await leasedWrite(writer, ID, record({ key: "cart", version: 4 }));
        await leasedWrite(writer, OTHER_ID, "delete");
        await eventually(() => watched.changes.length === 2, "both notices");
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
        await eventually(async () => (await backend.listeners()) === 0, "the store's listening connection to close");
      });

      it("announces no write without a lease: that is a just-minted record no browser knows yet", async () => {
        const watched = await collect(store);
        const writer = open();
        await writer.set(OTHER_ID, record({ version: 1 }));
        await writer.delete(OTHER_ID);
        await leasedWrite(writer, ID, record({ version: 3 }));
        await eventually(() => watched.changes.length > 0, "the leased write's notice");
        await delay(100);
        expect(watched.changes).toEqual([{ id: ID, key: "cart", version: 3 }]);
      });

      it("publishes nothing for a write its lease fence refused", async () => {
        const watched = await collect(store);
        const lease = await store.lease(ID);
        await backend.takeOver(ID, "another-process", MINUTE);
        await expect(store.set(ID, record(), lease)).rejects.toBeInstanceOf(LeaseLostError);
        await delay(200);
        expect(watched.changes).toEqual([]);
      });

      it("ignores messages on the channel that are not its own change notices", async () => {
        const watched = await collect(store);
        for (const junk of ["nope", "{}", "null", JSON.stringify({ id: "../../etc/passwd", key: "x", version: 1 }), JSON.stringify({ id: ID, key: "x", version: -1 }), JSON.stringify({ id: ID, key: 7, version: 1 })]) {
          await backend.publish(junk);
        }
        await backend.publish(JSON.stringify({ id: ID, key: "x", version: 2 }));
        await eventually(() => watched.changes.length > 0, "the valid notice");
        expect(watched.changes).toEqual([{ id: ID, key: "x", version: 2 }]);
      });

      it("streams a change written by another process to this process's events stream within 1 s, and stops listening on sessions.close()", async () => {
        const { sessions, cookie, id } = await visitedOnce({ logger: capturingLogger() });
        try {
          const events = new EventReader(await sessions.fetchEvents(new Request("http://localhost/events", { headers: { cookie } })));
          try {
            expect((await events.next()).event).toBe("ready");
            const stored = (await store.get(id))!;
            // Another process writes version 2.
            await leasedWrite(open(), id, { ...stored, version: 2 });
            expect(await events.next(1000)).toMatchObject({ event: "change", data: JSON.stringify({ key: `shared-store-${harness.store.toLowerCase()}-visits`, version: 2 }) });
          } finally {
            await events.close();
          }
        } finally {
          await sessions.close();
        }
        await eventually(async () => (await backend.listeners()) === 0, "sessions.close() to end the subscription");
      });
    });
  });
}
