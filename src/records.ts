import { outsideRequest } from "./context.js";
import { CorruptRecordError, type Lease, type SessionStore, type StoredRecord } from "./stores/store.js";
import type { Logger } from "./logger.js";
import { splitVersion } from "./versioning.js";

/**
 * Writes of one record a store that applies them in order may have unanswered at once. More
 * than one lets a busy record be written once per event-loop turn instead of once per round
 * trip; past them, commits still coalesce into one write. Each holds a snapshot in memory.
 */
const ORDERED_WRITES_IN_FLIGHT = 16;

/**
 * A store whose writes take at least this long to be answered (a moving average) is "across a
 * network": a commit queued behind a write in flight is sent at the end of the event-loop turn,
 * beside it, with the other commits of that turn. Below it, as on loopback, commits wait for the
 * answer and coalesce into one write, as for any store: sending them per turn there cost 19 %
 * more CPU per request (more writes, each carrying fewer commits). Through a network the
 * pending write would otherwise wait a whole round trip with nothing to gather, since the
 * requests that could add to it wait for their own responses. Measured under load: loopback
 * Redis 0.18–0.33 ms, through bench/'s 0.5 ms proxy 1.4–1.5 ms.
 */
const SLOW_ROUND_TRIP_MS = 0.5;
/** Weight of the newest round trip in that moving average. */
const ROUND_TRIP_WEIGHT = 1 / 8;

/** First and longest pause between attempts to take a lease another process holds. */
const LEASE_POLL_MIN_MS = 4;
const LEASE_POLL_MAX_MS = 50;

/** Thrown to a request that waited longer than `lockTimeout` for another request of its browser. */
export class LockTimeoutError extends Error {
  override readonly name = "LockTimeoutError";
}

type WriteOp = { readonly kind: "set"; readonly record: StoredRecord } | { readonly kind: "delete" } | { readonly kind: "quarantine"; readonly reason: string };

interface Batch {
  op: WriteOp;
  readonly waiters: Array<{ resolve(): void; reject(error: unknown): void }>;
}

/**
 * Where an entry's writes go: one per {@link RecordManager}, so a write
 * allocates no closures of its own (the write path runs on every commit).
 */
interface WriteTarget {
  /** How many writes of one record may be unanswered at once: 1, or more for a store that applies them in order. */
  readonly inFlight: number;
  /** Moving average of the ms a write took to be answered; measured only when {@link inFlight} is above 1. */
  roundTripMs: number;
  apply(entry: RecordEntry, op: WriteOp): Promise<void>;
  /** After `op` is stored, before its waiters hear of it; never throws. */
  stored(entry: RecordEntry, op: WriteOp): void;
  /** After each batch, once the next one (if any) has started. */
  settled(entry: RecordEntry): void;
}

/** Who holds or waits for a record's lock: a request, named in the log line of a request that timed out behind it. */
export interface LockHolder {
  /** Like `GET /slow`. */
  describe(): string;
}

interface LockWaiter {
  readonly holder: LockHolder | undefined;
  resolve(): void;
  reject(error: unknown): void;
  timer: NodeJS.Timeout | undefined;
}

/**
 * One record as this process knows it: the lock that serializes the requests
 * of one browser, the in-process copy, and the queue of writes to the store.
 *
 * The rule (group commit): a request holds the lock from before its handler
 * runs until its response commits. At commit its changes are snapshotted and
 * the lock passes on at once; the response is held until a write containing
 * the snapshot is stored. Overlapping requests share writes, never lose them.
 * A store that applies a record's writes in order ({@link SessionStore.writesInOrder})
 * has several in flight: each is a whole snapshot, later than the one before,
 * so the last one stored is the newest whatever answers first.
 * If a write fails, every response waiting on it or on a later write not yet
 * sent fails (500), and the next request re-reads the record from the store: a
 * failed response's change may or may not be stored, a successful one's is.
 */
export class RecordEntry {
  #locked = false;
  /** The request holding the lock, when it said who it is. */
  #holder: LockHolder | undefined;
  readonly #lockQueue: LockWaiter[] = [];
  /** Writes sent and not yet answered. */
  #writing = 0;
  /** A send of {@link #pending} is scheduled for the end of this event-loop turn. */
  #sendingAtTurnEnd = false;
  /** The write the next answer lets start: what was committed while {@link #writing} was at its limit. */
  #pending: Batch | undefined;
  readonly #idleWaiters: Array<() => void> = [];

  /** What the store holds as far as this process knows; `unloaded` until read. */
  state: "unloaded" | "missing" | "present" = "unloaded";
  /** The key of the stored record. */
  recordKey: string | undefined;
  /** Read from the store, not yet turned into an instance. */
  stored: StoredRecord | undefined;
  /** The instance: the truth for this process while the entry is cached. */
  live: object | undefined;
  version = 0;
  updatedAt = 0;
  expires = 0;
  /** Size of the stored data, for inspection. */
  bytes = 0;
  /** When the record was first written, when its data keeps it (for `maxLifetime`). */
  createdAt: number | undefined;
  /**
   * When this process last set the record's cookie on a response (`Date.now()`; 0: not yet), and
   * whether that cookie was Secure: see {@link CookieWriter.renewalMs}.
   */
  cookieSetAt = 0;
  cookieSecure = false;
  /** A write failed or a commit was refused: re-read before the next use. */
  stale = false;
  /**
   * The store's cross-process lease (shared stores), held from the read until
   * the entry is idle, and kept past that when the store can keep it (see
   * {@link Lease.keep}). While held, no other process can have written, so the
   * next request of this process may trust the in-process copy, and every
   * queued write is fenced by it.
   */
  lease: Lease | undefined;

  constructor(readonly id: string) {}

  get locked(): boolean {
    return this.#locked;
  }

  get busy(): boolean {
    return this.#locked || this.#writing > 0;
  }

  /** Takes the lock now if it is free. */
  tryLock(holder?: LockHolder): boolean {
    if (this.#locked) return false;
    this.#locked = true;
    this.#holder = holder;
    this.#resumeLease();
    return true;
  }

  /**
   * The lock of a record this process kept the lease of is taken: take the lease up again, so
   * the request trusts the in-process copy with no command before its handler. When too little
   * of it is left, drop it without a release: the store's next lease(id) takes it over.
   */
  #resumeLease(): void {
    const lease = this.lease;
    // Outside the request, like every call to the store: a store's lease may start its renewal here.
    if (lease?.resume !== undefined && !outsideRequest(resume, lease)) this.lease = undefined;
  }

  /**
   * Resolves once the lock is ours, in arrival order; rejects after `timeoutMs`
   * with a message naming the request that held it. `onWait` receives a
   * function that withdraws from the queue (a client that left), rejecting with its error.
   */
  lock(timeoutMs: number, holder?: LockHolder, onWait?: (cancel: (error: Error) => void) => void): Promise<void> {
    if (this.tryLock(holder)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const waiter: LockWaiter = { holder, resolve, reject, timer: undefined };
      const withdraw = (error: Error) => {
        const index = this.#lockQueue.indexOf(waiter);
        if (index < 0) return; // it has the lock already
        this.#lockQueue.splice(index, 1);
        clearTimeout(waiter.timer);
        reject(error);
      };
      waiter.timer = setTimeout(() => {
        const held = this.#holder === undefined ? "" : ` (${this.#holder.describe()}, still running)`;
        withdraw(
          new LockTimeoutError(
            `persist-session: a request waited ${timeoutMs} ms for another request of the same browser${held} to commit. ` +
              "Send the response (or its headers) sooner, mount the state only on the routes that use it, or raise the lockTimeout option.",
          ),
        );
      }, timeoutMs);
      this.#lockQueue.push(waiter);
      onWait?.(withdraw);
    });
  }

  unlock(): void {
    const next = this.#lockQueue.shift();
    if (next === undefined) {
      this.#locked = false;
      this.#holder = undefined;
      return;
    }
    clearTimeout(next.timer);
    this.#holder = next.holder;
    next.resolve();
  }

  /**
   * Queues `op` behind the write in flight; queued ops coalesce, the last one wins. A store that
   * applies writes in order and answers slowly ({@link SLOW_ROUND_TRIP_MS}) gets the queued one
   * sent at the end of this event-loop turn, beside those in flight: a slow round trip no longer
   * holds every commit behind it, while a quick one still gathers the commits made meanwhile into
   * one write.
   */
  enqueue(op: WriteOp, target: WriteTarget): Promise<void> {
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject };
      if (this.#writing === 0) {
        this.#start({ op, waiters: [waiter] }, target);
        return;
      }
      if (this.#pending === undefined) {
        this.#pending = { op, waiters: [waiter] };
      } else {
        this.#pending.op = op;
        this.#pending.waiters.push(waiter);
      }
      if (!this.#sendingAtTurnEnd && this.#writing < target.inFlight && target.roundTripMs >= SLOW_ROUND_TRIP_MS) {
        this.#sendingAtTurnEnd = true;
        setImmediate(() => this.#sendPending(target));
      }
    });
  }

  /** The end of the turn that queued {@link #pending}: sends it beside the writes in flight, if there is still room. */
  #sendPending(target: WriteTarget): void {
    this.#sendingAtTurnEnd = false;
    const pending = this.#pending;
    if (pending === undefined || this.#writing >= target.inFlight) return;
    this.#pending = undefined;
    this.#start(pending, target);
  }

  /** Resolves when no write is in flight or queued. */
  idle(): Promise<void> {
    if (this.#writing === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  #start(batch: Batch, target: WriteTarget): void {
    this.#writing++;
    const sentAt = target.inFlight > 1 ? performance.now() : 0;
    const failed = (error: unknown) => {
      // The write not yet sent was built on the failed one's copy: fail it too. Writes already
      // sent settle by their own answers (each holds a whole snapshot, this one's changes too).
      const waiters = [...batch.waiters, ...(this.#pending?.waiters ?? [])];
      this.#pending = undefined;
      this.stale = true;
      for (const waiter of waiters) waiter.reject(error);
      this.#next(target);
    };
    let stored: Promise<void>;
    try {
      stored = target.apply(this, batch.op);
    } catch (error) {
      stored = Promise.reject(error); // a store that throws instead of rejecting
    }
    stored.then(() => {
      if (sentAt !== 0) target.roundTripMs += (performance.now() - sentAt - target.roundTripMs) * ROUND_TRIP_WEIGHT;
      target.stored(this, batch.op);
      for (const waiter of batch.waiters) waiter.resolve();
      this.#next(target);
    }, failed);
  }

  #next(target: WriteTarget): void {
    this.#writing--;
    const pending = this.#pending;
    this.#pending = undefined;
    if (pending !== undefined) {
      this.#start(pending, target);
    } else if (this.#writing === 0) {
      for (const resolve of this.#idleWaiters.splice(0)) resolve();
    }
    target.settled(this);
  }
}

/** Options of {@link RecordManager}. */
export interface RecordManagerOptions {
  readonly lockTimeoutMs: number;
  /** How many idle records to keep in memory (of a shared store, only those whose lease is kept). */
  readonly cacheLimit: number;
  readonly logger: Logger;
  /** Told after each record write or delete is stored: feeds live sync. */
  readonly onStored?: (id: string, key: string | undefined, version: number) => void;
  /** Told when the store answered, while it was unreachable before (see OutageLog). */
  readonly outage?: { readonly active: boolean; answered(): void };
}

/** The records of one `persistSession()`: locks, loading, writes, the idle cache and the sweep. */
export class RecordManager {
  readonly #entries = new Map<string, RecordEntry>();
  #sweeping: Promise<number> | undefined;
  readonly #writeTarget: WriteTarget;

  constructor(
    readonly store: SessionStore,
    readonly options: RecordManagerOptions,
  ) {
    this.#writeTarget = {
      inFlight: store.writesInOrder === true ? ORDERED_WRITES_IN_FLIGHT : 1,
      roundTripMs: 0,
      // A store returning something other than a Promise still counts as done.
      apply: (entry, op) => Promise.resolve(outsideRequest(apply, this.store, entry.id, op, entry.lease)),
      stored: (entry, op) => {
        if (this.options.outage?.active === true) this.options.outage.answered();
        try {
          if (op.kind === "set") this.options.onStored?.(entry.id, op.record.key, op.record.version);
          else if (op.kind === "delete") this.options.onStored?.(entry.id, entry.recordKey, 0);
        } catch (error) {
          // The write is stored: a listener's failure must not fail the requests waiting for it.
          this.options.logger.error(`persist-session: telling listeners that record ${entry.id} changed failed.`, error);
        }
      },
      settled: (entry) => this.#settle(entry),
    };
  }

  /** The entry for `id`, created when this process has none. */
  entry(id: string): RecordEntry {
    let entry = this.#entries.get(id);
    if (entry === undefined) {
      entry = new RecordEntry(id);
      this.#entries.set(id, entry);
    }
    return entry;
  }

  /** The entry for `id` if this process has one; never creates it. */
  peek(id: string): RecordEntry | undefined {
    return this.#entries.get(id);
  }

  /** Whether {@link load} must run before the entry's state can be trusted. */
  needsLoad(entry: RecordEntry): boolean {
    return this.#mustRead(entry) || this.#expired(entry);
  }

  /** Reads the record under the lock; corrupt or foreign records are quarantined and count as missing. */
  async load(entry: RecordEntry, key: string): Promise<void> {
    if (!this.#mustRead(entry)) {
      if (this.#expired(entry)) await this.delete(entry);
      return;
    }
    await entry.idle();
    if (this.store.lease !== undefined) await this.#takeLease(entry);
    this.forget(entry);
    let record: StoredRecord | undefined;
    try {
      record = await this.read(entry.id);
    } catch (error) {
      if (!(error instanceof CorruptRecordError)) throw error;
      await this.quarantine(entry, error.message);
      return;
    }
    if (this.options.outage?.active === true) this.options.outage.answered();
    entry.stale = false;
    if (record === undefined) {
      entry.state = "missing";
      return;
    }
    entry.state = "present";
    entry.recordKey = record.key;
    entry.stored = record;
    entry.version = record.version;
    entry.updatedAt = record.updatedAt;
    entry.expires = record.expires;
    entry.bytes = Buffer.byteLength(record.data);
    entry.createdAt = splitVersion(record.data).createdAt;
    if (record.key !== key) {
      await this.quarantine(entry, `the record belongs to key "${record.key}", the cookie to "${key}"`);
    } else if (this.#expired(entry)) {
      await this.delete(entry);
    }
  }

  /** The stored record, read from the store (outside the request, like every call to it), not from this process's copy. */
  read(id: string): Promise<StoredRecord | undefined> {
    return outsideRequest(() => this.store.get(id));
  }

  /** Drops the in-process copy so the next user re-reads the store. */
  forget(entry: RecordEntry): void {
    entry.state = "unloaded";
    entry.stored = undefined;
    entry.live = undefined;
    entry.recordKey = undefined;
    entry.createdAt = undefined;
  }

  /** Moves an unreadable record aside (never deletes it) and logs why. */
  async quarantine(entry: RecordEntry, reason: string): Promise<void> {
    this.forget(entry);
    entry.state = "missing";
    entry.stale = false;
    this.options.logger.warn(`persist-session: record ${entry.id} could not be restored (${reason}); it was set aside and the request got fresh state.`);
    await this.write(entry, { kind: "quarantine", reason }).catch((error: unknown) => {
      this.options.logger.error(`persist-session: record ${entry.id} could not be set aside.`, error);
    });
  }

  /** Drops the in-process copy and queues the record's deletion; resolves once it is stored. */
  delete(entry: RecordEntry): Promise<void> {
    this.forget(entry);
    entry.state = "missing";
    return this.write(entry, { kind: "delete" });
  }

  /** Queues a write of the entry; resolves once it (or a later write that includes it) is stored. */
  write(entry: RecordEntry, op: WriteOp): Promise<void> {
    return entry.enqueue(op, this.#writeTarget);
  }

  release(entry: RecordEntry): void {
    entry.unlock();
    this.#settle(entry);
  }

  /** Deletes expired records and orphaned temporary files, skipping every record in use. */
  sweep(): Promise<number> {
    this.#sweeping ??= outsideRequest(() => this.#sweep()).finally(() => {
      this.#sweeping = undefined;
    });
    return this.#sweeping;
  }

  /** Resolves once every queued write has been stored (or has failed). */
  async flush(): Promise<void> {
    await Promise.all([...this.#entries.values()].map((entry) => entry.idle()));
  }

  /** How many records this process holds in memory. */
  get size(): number {
    return this.#entries.size;
  }

  async #sweep(): Promise<number> {
    let removed = 0;
    const { store } = this;
    if (store.expiredIds !== undefined) {
      for await (const id of store.expiredIds(Date.now())) {
        const known = this.#entries.get(id);
        // Busy, or kept with its lease for this process's next request: in use, so not expired.
        if (known?.busy === true || known?.lease !== undefined) continue;
        const entry = this.entry(id);
        if (!entry.tryLock()) continue;
        try {
          if (store.lease !== undefined) {
            // Another process is using the record, so it is not idle: skip it this round.
            entry.lease = await store.lease(id);
            if (entry.lease === undefined) continue;
          }
          // Re-read under the lock: a request may have renewed it since the listing. Unreadable
          // records stay for the request path to quarantine; an empty one (the store listed it,
          // yet it holds no record) is the leftover of an interrupted first write.
          let record: StoredRecord | undefined;
          try {
            record = await store.get(id);
          } catch {
            continue;
          }
          if (record === undefined || record.expires <= Date.now()) {
            await this.delete(entry);
            removed++;
          }
        } catch (error) {
          this.options.logger.error(`persist-session: the sweep could not delete record ${id}.`, error);
        } finally {
          this.release(entry);
        }
      }
    }
    if (store.removeExpired !== undefined) removed += await store.removeExpired(Date.now());
    if (store.removeOrphans !== undefined) removed += await store.removeOrphans();
    return removed;
  }

  #expired(entry: RecordEntry): boolean {
    return entry.state === "present" && entry.expires <= Date.now();
  }

  /** The in-process copy cannot be trusted: never read, a write failed, or another process may have written. */
  #mustRead(entry: RecordEntry): boolean {
    return entry.state === "unloaded" || entry.stale || (this.store.shared === true && !this.#leased(entry));
  }

  /** Whether this process holds the store's lease on the record, so its in-process copy is the truth. */
  #leased(entry: RecordEntry): boolean {
    return entry.lease?.held === true;
  }

  /**
   * Takes the store's lease, polling with backoff: the process holding it is
   * serving the same browser and releases it once its writes are stored, or
   * it died and the lease expires. Bounded by `lockTimeout` like the in-process lock.
   */
  async #takeLease(entry: RecordEntry): Promise<void> {
    if (this.#leased(entry)) return;
    this.#releaseLease(entry);
    const store = this.store;
    const deadline = Date.now() + this.options.lockTimeoutMs;
    for (let attempt = 0; ; attempt++) {
      const lease = await outsideRequest(() => store.lease!(entry.id));
      if (lease !== undefined) {
        entry.lease = lease;
        return;
      }
      // Jitter keeps processes that wait for one record from polling in step.
      const delay = Math.min(LEASE_POLL_MAX_MS, LEASE_POLL_MIN_MS * 1.5 ** attempt) * (0.5 + Math.random() / 2);
      if (Date.now() + delay > deadline) {
        throw new LockTimeoutError(
          `persist-session: a request waited ${this.options.lockTimeoutMs} ms for another process serving the same browser to release its record. ` +
            "Send responses (or their headers) sooner, or raise the lockTimeout option.",
        );
      }
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }

  #releaseLease(entry: RecordEntry): void {
    const lease = entry.lease;
    if (lease === undefined) return;
    entry.lease = undefined;
    // When the store cannot be reached the lease expires by itself.
    outsideRequest(() => lease.release()).catch(() => undefined);
  }

  /**
   * Keeps idle entries as a bounded LRU cache: any present record of a process-local store, and
   * of a shared store those whose lease the store lets this process keep (while it holds, no
   * other process can write the record, so the copy stays the truth). Others release their lease.
   */
  #settle(entry: RecordEntry): void {
    if (entry.busy) return;
    // Idle: no request of this process uses the record and its writes are stored, so other processes may have it.
    if (this.#entries.get(entry.id) !== entry) {
      this.#releaseLease(entry);
      return;
    }
    this.#entries.delete(entry.id);
    const cached = this.options.cacheLimit > 0 && entry.state === "present" && !entry.stale;
    const lease = entry.lease;
    // What keeping starts (a store's first listening for requests of the lease, its timers) outlives the request.
    const kept = cached && lease?.keep !== undefined && outsideRequest(() => lease.keep!(() => this.#keptLeaseEnded(entry, lease)));
    if (!kept) this.#releaseLease(entry);
    // A shared store's copy is the truth only while its lease holds.
    if (!cached || (this.store.shared === true && !kept)) return;
    this.#entries.set(entry.id, entry);
    const limit = this.options.cacheLimit;
    if (this.#entries.size <= limit) return;
    // Evicted in batches: a Map keeps a deleted entry's slot until it next grows, and each walk
    // from the oldest steps over every such slot. Evicting one record per new session made that
    // walk a new session's dearest step in this module (~2,800 instructions at cacheSize 1000).
    const keep = limit - (limit >> 4);
    for (const [id, candidate] of this.#entries) {
      if (this.#entries.size <= keep) break;
      if (candidate.busy) continue;
      this.#entries.delete(id);
      this.#releaseLease(candidate);
    }
  }

  /** A kept lease ran out or was given up (another process asked): the copy is no longer the truth. */
  #keptLeaseEnded(entry: RecordEntry, lease: Lease): void {
    if (entry.lease !== lease || entry.busy) return;
    entry.lease = undefined;
    if (this.#entries.get(entry.id) === entry) this.#entries.delete(entry.id);
  }
}

/** Sends `op` to the store. */
function apply(store: SessionStore, id: string, op: WriteOp, lease: Lease | undefined): Promise<void> {
  switch (op.kind) {
    case "set":
      return store.set(id, op.record, lease);
    case "delete":
      return store.delete(id, lease);
    case "quarantine":
      return store.quarantine !== undefined ? store.quarantine(id, op.reason, lease) : Promise.resolve();
  }
}

function resume(lease: Lease): boolean {
  return lease.resume!();
}
