import type { RecordChange } from "../change-feed.js";
import type { Logger } from "../logger.js";

/**
 * The contract between persist-session and a storage backend. Small on purpose:
 * the library does the locking, expiry and serialization; a store moves opaque
 * records by id. Ids reaching a store have passed the strict UUIDv4 check.
 */

/** One stored state. `data` is devalue text the store never interprets. */
export interface StoredRecord {
  /** The `@persist` key the record belongs to; a record read under another key is quarantined. */
  readonly key: string;
  /** Increases by one on every write of the record. */
  readonly version: number;
  /** Milliseconds since the epoch of the write. */
  readonly updatedAt: number;
  /** Milliseconds since the epoch after which the record counts as missing. */
  readonly expires: number;
  readonly data: string;
}

/**
 * A storage backend. Every method may reject; a rejection fails the request
 * (500 or, for {@link StoreUnavailableError}, 503), it never becomes fresh state.
 */
export interface SessionStore {
  /**
   * The record, or `undefined` when there is none. Throws {@link CorruptRecordError}
   * when what is stored cannot be a record: the library then quarantines it.
   */
  get(id: string): Promise<StoredRecord | undefined>;
  /**
   * Replaces the record atomically: a reader sees the old record or the new one, never a mix.
   * With `lease` (stores that implement {@link lease}), the write is fenced: it is
   * applied only while the lease still holds, else it rejects with {@link LeaseLostError}.
   * Without one, the record is new (just minted) and no other process knows its id.
   */
  set(id: string, record: StoredRecord, lease?: Lease): Promise<void>;
  /** Removes the record; removing a missing record succeeds. Fenced by `lease` as {@link set} is. */
  delete(id: string, lease?: Lease): Promise<void>;
  /** Moves an unreadable record aside so a person can inspect it; never deletes it. Fenced by `lease` as {@link set} is. */
  quarantine?(id: string, reason: string, lease?: Lease): Promise<void>;
  /**
   * Takes the exclusive use of a record across processes, or `undefined` when
   * another process holds it (the library retries with backoff until its
   * `lockTimeout`, then answers 503). The library takes it before reading a
   * record, keeps it while requests of this process use the record or writes of
   * it are queued, and releases it once the record is idle, unless the lease can
   * be kept for this process's next request ({@link Lease.keep}). The store keeps
   * the lease alive while it is held and lets it expire when its holder dies.
   *
   * A store may read the record in the same round trip and answer the {@link get}
   * that follows from it (RedisStore and PostgresStore do): while the lease holds,
   * no other process can have written the record since.
   */
  lease?(id: string): Promise<Lease | undefined>;
  /**
   * Ids whose stored expiry may be before `now`, or whose record reads as none (what an
   * interrupted write left). The library re-reads each under its lock and deletes it only if it
   * is expired or still reads as none; one that throws is left for a request to quarantine.
   */
  expiredIds?(now: number): AsyncIterable<string>;
  /**
   * Deletes the records whose expiry is before `now` itself, in bounded batches, skipping any
   * record another request holds, and resolves with how many it removed: for a backend that can
   * check each record's lease in the statement that deletes it (PostgreSQL), where listing ids
   * for the library to lease, re-read and delete one by one would cost four round trips each.
   */
  removeExpired?(now: number): Promise<number>;
  /**
   * Prepares the store for use and resolves once it can serve, or rejects saying why it cannot
   * (a {@link StoreStartError} for what only a person can fix). A store does this at its first use
   * by itself; `sessions.ready()` calls it so a start-up script can fail at once. It must not be
   * done in the constructor: frameworks import the app's modules at build time (`next build`).
   */
  ready?(): Promise<void>;
  /** Removes what an interrupted write left behind. */
  removeOrphans?(): Promise<number>;
  /** A secret kept with the data, generated once, for apps that pass none; says whether this call generated it. */
  secret?(): Promise<StoreSecret>;
  /**
   * `true` when the store applies one record's writes in the order they were started, even
   * while earlier ones are still unanswered: it sends them in order on one connection, and no
   * write is ever sent again behind a later one's back (RedisStore sends its fenced scripts with
   * EVAL, so a script cache Redis lost cannot make it retry one). While the store's writes take
   * half a millisecond or more to be answered (a moving average), the library then sends a busy
   * record's next write at the end of its commit's event-loop turn, without waiting for the answer
   * to the one before (up to sixteen at once), so a slow round trip to the store no longer limits
   * how often one record is written. Absent or `false`: one write of a record at a time, the ones
   * committed meanwhile coalesced into the next.
   */
  readonly writesInOrder?: boolean;
  /** Where the records live, for logs and the demo. */
  describe?(): string;
  /**
   * Tells `listener` about records written by other processes (Redis pub/sub),
   * for live sync. Resolves, once changes are followed, with the function that
   * stops listening; `onError` hears of failures after that (a lost
   * subscriber connection). Stores that only serve one process leave it out:
   * the library sees its own writes.
   */
  watch?(listener: (change: RecordChange) => void, onError: (error: Error) => void): Promise<() => void>;
  /** Given persistSession's logger once, for what the store must report (a store directory others can read). */
  useLogger?(logger: Logger): void;
  /** Releases timers and connections. */
  close?(): Promise<void>;
  /**
   * `true` when other processes write the same records (Redis). The library then
   * re-reads the record on every request instead of trusting its in-process copy,
   * except while it holds the record's {@link lease} since its last read.
   */
  readonly shared?: boolean;
}

/** How long a store keeps a set-aside (unreadable) record for a person to inspect: 30 days, in seconds. */
export const DEFAULT_QUARANTINE_TTL_SECONDS = 30 * 24 * 60 * 60;

/** What {@link SessionStore.secret} gives: the secret, and whether this call generated it (else it was there already). */
export interface StoreSecret {
  readonly secret: string;
  /** `false` when the secret was found in the store: generated by an earlier start, or by another process. */
  readonly created: boolean;
}

/** Exclusive use of one record across processes, from {@link SessionStore.lease}. */
export interface Lease {
  /**
   * Whether this process still holds the lease as far as it can tell. A lease
   * can be lost without this process noticing at once (it was paused past the
   * lease time), which is why the store also fences each write.
   */
  readonly held: boolean;
  /** Gives the lease up; it rejects only when the store cannot be reached, and the lease then expires by itself. */
  release(): Promise<void>;
  /**
   * The record went idle (no request of this process uses it, its writes are stored): keep the
   * lease for this process's next request instead of releasing it, so that request needs no
   * command before its handler. Only a store that releases a kept lease as soon as another
   * process asks for the record may say yes; `false` (or no `keep`) and the library releases it.
   * `onEnd` hears when a kept lease ends before {@link resume} (it ran out, or was asked for and
   * released): the library then drops its in-process copy.
   */
  keep?(onEnd: () => void): boolean;
  /**
   * A request of this process takes a kept lease up again; renewal restarts. `false` when too
   * little of it remains for the request to finish under it, or it ended: the library then drops
   * it without a release and takes the lease anew with {@link SessionStore.lease}, where the store
   * takes this one over. A lease that was not kept answers `true` and is left as it is.
   */
  resume?(): boolean;
}

/** What a store throws from `get` when the stored bytes cannot be a record. */
export class CorruptRecordError extends Error {
  override readonly name = "CorruptRecordError";
}

/**
 * What a store throws when it cannot start: its FileStore directory is not this user's, is open
 * to others, or is claimed by another live process. The message says what to do. Every use of
 * the store fails with it (a 500) until the cause is gone; persistSession logs each distinct
 * one once, not once per request, and `sessions.ready()` rejects with it.
 */
export class StoreStartError extends Error {
  override readonly name = "StoreStartError";
}

/** What a store throws when its backend cannot be reached; the request gets a 503. */
export class StoreUnavailableError extends Error {
  // Typed `string` so subclasses (LeaseLostError) can name themselves.
  override readonly name: string = "StoreUnavailableError";
}

/**
 * What a store throws when a write is refused because its lease was lost (the
 * holder was paused or cut off past the lease time and another process may have
 * written since). Nothing was written; the request gets a 503 and a retry
 * starts from the newer state.
 */
export class LeaseLostError extends StoreUnavailableError {
  override readonly name = "LeaseLostError";
}

/** Checks the fields of a record read back from storage. */
export function isStoredRecordHeader(value: unknown): value is Omit<StoredRecord, "data"> {
  if (typeof value !== "object" || value === null) return false;
  const { key, version, updatedAt, expires } = value as Record<string, unknown>;
  return (
    typeof key === "string" &&
    Number.isSafeInteger(version) &&
    Number.isFinite(updatedAt) &&
    Number.isFinite(expires)
  );
}
