import type { StateContext } from "./context.js";
import type { Logger } from "./logger.js";
import type { RecordEntry, RecordManager } from "./records.js";
import { registrationOf, type Registration } from "./registry.js";
import { RecordTooLargeError } from "./serialization.js";
import { mintId, type CookieSigner } from "./cookie-signing.js";
import type { CookieWriter, SetCookie } from "./set-cookie.js";
import { Tracker, unwrap, type ChangeSink } from "./tracking.js";
import { checkAtCommit, splitVersion, storedVersion } from "./versioning.js";

/** A record a request locks before its handler runs: from a verified cookie, or the signed-in user's. */
export interface RecordTarget {
  readonly key: string;
  readonly id: string;
  /** Signed with a secret other than the first: send the cookie re-signed. */
  readonly oldSecret: boolean;
  /** The user-scoped record of the signed-in user (no cookie involved). */
  readonly user?: boolean;
  /** A browser's anonymous record of a user-scoped key, carried into this request to be merged into the user's. */
  readonly anonymous?: boolean;
}

/** What {@link RequestState.inspect} reports; the shape of `inspectState()`. */
export interface StateInfo {
  /** The `@persist` key, which is also the cookie's name. */
  readonly key: string;
  /** The record's id (the UUID in the cookie); `undefined` until the state is first changed. */
  readonly id: string | undefined;
  /** Whether the store holds a record for it (after this request's commit, a changed state will be). */
  readonly stored: boolean;
  /** Increases by one on every write; 0 when not stored. */
  readonly version: number;
  readonly updatedAt: Date | undefined;
  readonly expires: Date | undefined;
  /** Size of the stored data in bytes; 0 when not stored. */
  readonly bytes: number;
  /** Changed in this request and not yet committed. */
  readonly changed: boolean;
  /** Where the store keeps records (a directory, "memory of this process", a Redis prefix). */
  readonly location: string;
}

/** What a commit leaves for the adapter: the cookies to set, and the write to wait for. */
export interface CommitResult {
  /** Cookies the response must set, in the order given. */
  readonly cookies: readonly SetCookie[];
  /** Resolves when every change of the request is stored; `undefined` when nothing was written. */
  readonly stored: Promise<void> | undefined;
}

/** What a request needs of the engine that opened it, and nothing more. */
export interface RequestHost {
  readonly records: RecordManager;
  readonly logger: Logger;
  readonly ttlMs: number;
  readonly maxRecordBytes: number;
  readonly lockTimeoutMs: number;
  /** A record's absolute lifetime from its first write, when set. */
  readonly maxLifetimeMs: number | undefined;
  readonly anonymousAsBrowser: boolean;
  /** Where the store keeps records, for {@link StateInfo.location}. */
  readonly location: string;
  readonly cookies: CookieWriter;
  isDueForRefresh(updatedAt: number): boolean;
}

/**
 * Where a request is in its lifecycle:
 * - `opening`: taking its records' locks and loading them; the handler has not run.
 * - `open`: the handler runs and may change state.
 * - `committed`: its changes are stored (or being stored); later changes throw.
 * - `aborted`: it failed; nothing of it is stored; later changes throw.
 * - `abandoned`: its client left and the handler did not reach its commit point
 *   within `lockTimeout`; nothing of it is stored, and later changes are
 *   ignored with one warning (never thrown into a handler nobody waits for).
 */
export type RequestPhase = "opening" | "open" | "committed" | "aborted" | "abandoned";

/**
 * What one persisted key of a request has to do at its commit:
 * - `unchanged`: nothing.
 * - `resign`: send the cookie again, signed with the current secret.
 * - `refresh`: rewrite the unchanged record and its cookie (rolling expiry).
 * - `changed`: write the record (and its cookie).
 * - `cleared`: delete the record and expire its cookie (`clearCookieState`).
 * - `newer`: the record was written by a newer version of the class than this
 *   code's (a rolled-back deploy): never written, deleted or set aside here.
 */
type BindingState = "unchanged" | "resign" | "refresh" | "changed" | "cleared" | "newer";

const EMPTY_RESULT: CommitResult = Object.freeze({ cookies: Object.freeze([]) as readonly SetCookie[], stored: undefined });

/** Thrown into a request's open when its client left while it waited for a lock: its handler does not run. */
export class ClientGoneError extends Error {
  override readonly name = "ClientGoneError";
}

/** One persisted key within one request. */
class Binding implements ChangeSink {
  /** The locked record, once this request has one (restored, or minted on first change). */
  entry: RecordEntry | undefined;
  /** A browser record cleared in this request before a change minted its successor: deleted at commit. */
  replaced: RecordEntry | undefined;
  registration: Registration | undefined;
  /** The raw instance behind {@link proxy}. */
  target: object | undefined;
  proxy: object | undefined;
  state: BindingState = "unchanged";
  /** The browser's anonymous record of a user-scoped key, merged into the user's at open and deleted at commit. */
  anonymous: RecordEntry | undefined;
  /** `rotateStateIds()` was called: the record moves to a new id at commit. */
  rotate = false;
  /** A read-only request's copy of what is stored, read without a lock. */
  snapshot: Record<string, unknown> | undefined;
  /** What the commit serialized of the record, for its write: a field, not a Map per commit (one allocation less on every commit). */
  serialized: { data: string; bytes: number } | undefined;

  constructor(
    readonly request: RequestState,
    readonly key: string,
    /** Keyed by the signed-in user, not by a cookie. */
    readonly userScoped: boolean,
  ) {}

  assertPersistable(value: unknown, path: string): void {
    this.registration!.codec.assertPersistable(value, path);
  }

  assertWritable(path: string): void {
    if (this.state === "newer") {
      const { className, version } = this.registration!.versioning;
      throw new Error(
        `persist-session: ${path} cannot be changed: the stored ${className} was written by a newer version of the class than this code's (${version}), and is left untouched. ` +
          "Roll the deploy forward to change it.",
      );
    }
    this.request.assertWritable(path);
  }

  markChanged(): void {
    if (this.request.phase !== "open") return; // abandoned: the change is ignored
    if (this.state === "cleared" && !this.userScoped) {
      // The reset record goes at commit; the change starts a record under a new id.
      this.replaced = this.entry;
      this.entry = undefined;
    }
    if (this.entry === undefined) this.request.mint(this);
    this.state = "changed";
  }
}

/**
 * The persisted state of one request, and its lifecycle: opened by the
 * engine (records locked and loaded), run by an adapter, then exactly one of
 * {@link commit} (every change stored, cookies returned) or {@link abort}
 * (nothing of it stored, locks released).
 */
export class RequestState implements StateContext {
  readonly #bindings = new Map<string, Binding>();
  #result: CommitResult | undefined;
  #phase: RequestPhase = "opening";
  /** Cancels the lock wait in progress while opening; see {@link disconnected}. */
  #cancelWait: ((error: Error) => void) | undefined;
  #gone = false;
  #abandonTimer: NodeJS.Timeout | undefined;
  #warnedIgnored = false;
  /** A binding of a `validate: "always"` class is in this request: its commit checks the state first. */
  #checksCommits = false;
  /** Locks and loads still to come, when the open had to wait; rejects (after aborting) when the request cannot start. */
  ready: Promise<void> | undefined;
  /** Called once when the request commits, aborts or is abandoned. */
  onFinish: (() => void) | undefined;
  /** What the app's `user` resolver returned for this request; set while opening. */
  userId: string | undefined;
  /** Signs this request's cookies; set while opening, before any handler runs. */
  signer: CookieSigner | undefined;

  constructor(
    readonly host: RequestHost,
    /** Whether the request came over HTTPS: decides the cookies' `Secure`. */
    readonly https: boolean,
    /** The framework's request, for log lines that name it. */
    readonly request: unknown,
    /**
     * Set for a request that can only read (a Next.js Server Component render):
     * it takes no lock, writes nothing, mints nothing, and a change throws with
     * this advice.
     */
    readonly readOnly?: string,
  ) {}

  get phase(): RequestPhase {
    return this.#phase;
  }

  /** Whether the client went away; the handler may still be running. */
  get gone(): boolean {
    return this.#gone;
  }

  /** `GET /path` of the request, for the log line of a request that waited on it. */
  describe(): string {
    const request = this.request as { method?: unknown; url?: unknown; originalUrl?: unknown } | undefined;
    if (typeof request?.method !== "string" || typeof request.url !== "string") return "a request";
    // Express and h3 take a mount's prefix off `url` while the mounted handler runs; `originalUrl` keeps it.
    const url = typeof request.originalUrl === "string" ? request.originalUrl : request.url;
    // The path only: a query string may carry tokens, and logs are read by many.
    const start = url.startsWith("/") ? 0 : url.indexOf("/", url.indexOf("//") + 2);
    const path = start < 0 ? "/" : url.slice(start).split(/[?#]/, 1)[0];
    return `${request.method} ${path}`;
  }

  /** Locks `entry` for this request; `undefined` when it was free. Cancelled by {@link disconnected}. */
  lock(entry: RecordEntry): Promise<void> | undefined {
    if (entry.tryLock(this)) return undefined;
    return entry.lock(this.host.lockTimeoutMs, this, (cancel) => (this.#cancelWait = cancel)).finally(() => {
      this.#cancelWait = undefined;
    });
  }

  /** Gives a read-only request the stored data of a record, read without its lock. */
  attachSnapshot(target: RecordTarget, fields: Record<string, unknown> | undefined): void {
    this.#binding(target.key, target.user === true).snapshot = fields;
  }

  /** Binds a verified cookie's (or the user's) locked and loaded record to this request. */
  attach(target: RecordTarget, entry: RecordEntry): void {
    if (target.anonymous === true) {
      // Locked (it is about to be merged and deleted); bound when the user's record of the key is.
      if (entry.state === "present") this.#binding(target.key, true).anonymous = entry;
      else this.host.records.release(entry);
      return;
    }
    const binding = this.#binding(target.key, target.user === true);
    if (entry.stored !== undefined && storedVersion(entry.stored.data) > (registrationOf(target.key)?.versioning.version ?? 1)) {
      // Written by a newer release: this code neither reads, rewrites, nor sets it aside.
      binding.state = "newer";
      this.host.records.release(entry);
      return;
    }
    if (target.user === true) {
      // Its id is fixed by the user: keep the lock even while nothing is stored, so a first change cannot race another device's.
      binding.entry = entry;
      if (entry.state === "present" && this.host.isDueForRefresh(entry.updatedAt)) binding.state = "refresh";
      return;
    }
    if (entry.state !== "present") {
      this.host.records.release(entry);
      return;
    }
    binding.entry = entry;
    binding.state = this.host.isDueForRefresh(entry.updatedAt) ? "refresh" : target.oldSecret ? "resign" : "unchanged";
  }

  /** The records are locked and loaded: merge what must be merged, then the handler may run. */
  opened(): void {
    if (this.#phase !== "opening") return;
    this.#phase = "open";
    for (const binding of this.#bindings.values()) if (binding.anonymous !== undefined) this.#merge(binding);
  }

  /**
   * Folds the browser's anonymous state into the signed-in user's with the
   * class's `merge`, once: the browser record is deleted at this commit, so the
   * next request (also holding both locks, one after the other) finds none.
   */
  #merge(binding: Binding): void {
    const registration = registrationOf(binding.key);
    const anonymous = binding.anonymous!;
    const entry = binding.entry;
    if (registration?.merge === undefined || entry === undefined || binding.state === "newer") {
      binding.anonymous = undefined;
      this.host.records.release(anonymous);
      return;
    }
    const instanceOf = (record: RecordEntry): object => {
      if (record.live !== undefined) return record.live;
      const instance = registration.construct();
      if (record.stored !== undefined) Object.assign(instance, registration.codec.deserialize(splitVersion(record.stored.data).text));
      return instance;
    };
    const user = instanceOf(entry);
    registration.merge(user, instanceOf(anonymous));
    if (registration.versioning.checksCommits) this.#checksCommits = true; // the merged state is a change like any other
    entry.live = user;
    entry.stored = undefined;
    binding.state = "changed";
  }

  /** Gives every browser-scoped record of this request a new id at commit (`rotateStateIds()`). */
  rotate(): void {
    this.assertWritable("rotateStateIds()");
    for (const binding of this.#bindings.values()) {
      if (binding.userScoped || binding.state === "newer") continue;
      // A record minted in this request has a new id already.
      if (binding.entry !== undefined && binding.entry.state === "present") binding.rotate = true;
    }
  }

  /**
   * The client went away. While opening, the lock wait ends and the handler
   * never runs. While the handler runs, it runs on and commits as usual; only
   * if it has not reached its commit point within `lockTimeout` is the request
   * abandoned, so a handler that never answers cannot hold the browser's records.
   */
  disconnected(): void {
    if (this.#gone) return;
    this.#gone = true;
    if (this.#phase === "opening") {
      this.#cancelWait?.(new ClientGoneError("persist-session: the client left while its request waited for a lock."));
      return;
    }
    if (this.#phase !== "open") return;
    this.#abandonTimer = setTimeout(() => this.#end("abandoned"), this.host.lockTimeoutMs);
    this.#abandonTimer.unref();
  }

  /** Throws unless the handler may still change state; an abandoned request's changes are let through, ignored, with one warning. */
  assertWritable(path: string): void {
    switch (this.#phase) {
      case "open":
        if (this.readOnly !== undefined) throw new Error(`persist-session: ${path} cannot be changed here: this request only reads state. ${this.readOnly}`);
        return;
      case "abandoned":
        if (!this.#warnedIgnored) {
          this.#warnedIgnored = true;
          this.host.logger.warn(
            `persist-session: ${path} was changed by ${this.describe()} after its client left and it did not answer within lockTimeout; the change was ignored.`,
          );
        }
        return;
      case "aborted":
        throw new Error(`persist-session: ${path} was changed after its request failed, so the change cannot be stored. The failed request's changes were discarded.`);
      default:
        throw new Error(
          `persist-session: ${path} was changed after the response was sent, so the change cannot be stored. ` +
            "Change state before sending the response (or its headers).",
        );
    }
  }

  /** This request's instance of the class, if it exists already. */
  instanceOf(registration: Registration): object | undefined {
    this.#checkScope(registration);
    const binding = this.#bindings.get(registration.key);
    if (binding?.proxy !== undefined) return binding.proxy;
    this.#assertCreatable(registration);
    const live = binding?.entry?.live;
    if (live === undefined) return undefined;
    return this.#expose(binding!, registration, live);
  }

  /** Makes `fresh` (just constructed) this request's instance, filled from the stored record if any. */
  adopt(registration: Registration, fresh: object): object {
    const binding = this.#binding(registration.key, false);
    const entry = binding.entry;
    if (this.#phase !== "open" || binding.state === "newer") return this.#expose(binding, registration, fresh); // defaults, detached
    if (binding.snapshot !== undefined) {
      Object.assign(fresh, binding.snapshot);
    } else if (entry?.stored !== undefined) {
      try {
        Object.assign(fresh, registration.codec.deserialize(entry.stored.data));
        entry.live = fresh;
        entry.stored = undefined;
      } catch (error) {
        const reason = error instanceof Error ? error.message : String(error);
        const quarantined = this.host.records.quarantine(entry, `unreadable data: ${reason}`);
        binding.state = "unchanged";
        // A user's record keeps its id and lock for a change after the reset; a browser's gets a new id on its next change.
        if (!binding.userScoped) {
          binding.entry = undefined;
          void quarantined.finally(() => this.host.records.release(entry));
        }
        registration.resetToDefaults(fresh);
      }
    }
    if (binding.entry !== undefined && binding.entry.live === undefined) binding.entry.live = fresh;
    return this.#expose(binding, registration, fresh);
  }

  /**
   * Settles a freshly read record of a versioned class before the handler
   * runs: migrated and validated into an instance (written back at commit when
   * migrated), left alone when newer, or set aside when unusable.
   */
  async restore(target: RecordTarget, entry: RecordEntry, registration: Registration): Promise<void> {
    const stored = entry.stored!;
    const binding = this.#binding(target.key, target.user === true);
    const restored = await registration.versioning.restore(target.key, stored.data, (text) => registration.codec.deserialize(text));
    if (restored.kind === "newer") {
      binding.state = "newer";
      binding.entry = undefined;
      this.host.records.release(entry);
      return;
    }
    if (restored.kind === "unusable") {
      await this.host.records.quarantine(entry, restored.reason);
      binding.state = "unchanged";
      if (!binding.userScoped) {
        binding.entry = undefined;
        this.host.records.release(entry);
      }
      return;
    }
    const instance = registration.construct();
    Object.assign(instance, restored.fields);
    entry.live = instance;
    entry.stored = undefined;
    // A migrated record is written back at the commit, so each record is migrated once.
    if (restored.migrated) binding.state = "changed";
  }

  /** Gives a never-stored instance its record on its first change. */
  mint(binding: Binding): void {
    const entry = this.host.records.entry(mintId());
    if (!entry.tryLock(this)) throw new Error("persist-session: a freshly minted record id was already in use.");
    entry.state = "missing";
    entry.live = binding.target;
    entry.recordKey = binding.key;
    binding.entry = entry;
  }

  /** What is stored for `state`, as of this moment of the request. */
  inspect(state: object): StateInfo {
    const binding = this.#bindingOf(state, "inspectState()");
    const entry = binding.state === "cleared" ? undefined : binding.entry;
    const stored = entry !== undefined && entry.state === "present";
    return {
      key: binding.key,
      id: stored || binding.state === "changed" ? entry?.id : undefined,
      stored,
      version: stored ? entry.version : 0,
      updatedAt: stored ? new Date(entry.updatedAt) : undefined,
      expires: stored ? new Date(entry.expires) : undefined,
      bytes: stored ? entry.bytes : 0,
      changed: binding.state === "changed",
      location: this.host.location,
    };
  }

  /**
   * Resets `state` to its defaults; at the commit its record is deleted and
   * its cookie expired, like any other change (an aborted request deletes nothing).
   */
  clear(state: object): void {
    const binding = this.#bindingOf(state, "clearCookieState()");
    binding.assertWritable("clearCookieState()");
    binding.registration!.resetToDefaults(binding.target!);
    if (this.#phase !== "open") return;
    if (binding.replaced !== undefined) {
      // Cleared, changed, cleared again: the minted successor goes unused.
      this.host.records.release(binding.entry!);
      binding.entry = binding.replaced;
      binding.replaced = undefined;
    }
    binding.state = "cleared";
  }

  /**
   * The commit point: snapshots every changed record, queues its write, and
   * releases the locks at once (the next request of this browser continues
   * from the in-process copy). Idempotent; after an abort it commits nothing.
   * A `status` of 500 or more aborts instead: a failing response stores none
   * of its changes. Throws, after aborting, when a record cannot be stored or
   * a `validate: "always"` schema refuses it; an asynchronous schema's
   * refusal rejects `stored` instead, with nothing queued.
   */
  commit(status = 200): CommitResult {
    if (this.#result !== undefined) return this.#result;
    if (this.#phase !== "open") return EMPTY_RESULT;
    if (status >= 500) {
      this.abort();
      return EMPTY_RESULT;
    }
    const now = Date.now();
    const { maxLifetimeMs } = this.host;
    // Serialize (and check) everything first: a record that cannot be stored fails the request before anything is queued.
    let checked: Promise<void> | undefined;
    try {
      for (const binding of this.#bindings.values()) {
        const entry = binding.entry;
        if (entry === undefined) continue;
        if (maxLifetimeMs !== undefined && (binding.state === "changed" || binding.state === "refresh" || binding.rotate)) entry.createdAt ??= now;
        const rewrite = binding.state === "changed" || binding.rotate || (binding.state === "refresh" && (entry.stored === undefined || maxLifetimeMs !== undefined));
        binding.serialized = rewrite ? this.#serialize(binding, entry) : undefined;
      }
      // One boolean for every class without validate: "always": their commits take no extra step.
      if (this.#checksCommits) checked = this.#check();
    } catch (error) {
      this.abort();
      throw error;
    }
    this.#finish("committed");
    const cookies: SetCookie[] = [];
    if (checked === undefined) {
      const writes: Array<Promise<void>> = [];
      try {
        this.#result = this.#done(cookies, writes, this.#settle(cookies, writes, now));
      } catch (error) {
        for (const write of writes) write.catch(() => undefined);
        throw error;
      }
      return this.#result;
    }
    // An asynchronous check: the cookies are decided now (the adapter sends them only once `stored`
    // resolves), the store is told nothing and every lock stays held until the check has passed.
    const rotatedAway = this.#settle(cookies, undefined, now);
    const stored = checked.then(
      () => {
        const writes: Array<Promise<void>> = [];
        this.#settle(undefined, writes, now);
        return this.#done(cookies, writes, rotatedAway).stored;
      },
      (error: unknown) => {
        this.#discard(rotatedAway);
        throw error;
      },
    );
    this.#result = { cookies, stored };
    return this.#result;
  }

  /**
   * One pass over the bindings after the commit point. With `cookies`: the
   * rotations and the cookies to set (returns the records a rotation left
   * behind). With `writes`: the store's writes and deletes, and the locks
   * released. A commit does both in one pass; one that waits for an
   * asynchronous check does the first at once and the second once it passed.
   */
  #settle(cookies: SetCookie[] | undefined, writes: Array<Promise<void>> | undefined, now: number): RecordEntry[] | undefined {
    const { records } = this.host;
    /** Records a rotation left behind: deleted once the response with the new cookies is out. */
    let rotatedAway: RecordEntry[] | undefined;
    for (const binding of this.#bindings.values()) {
      if (cookies !== undefined && binding.rotate && binding.state !== "cleared") {
        // The data moves to a fresh id; the old record stays locked until it is deleted.
        (rotatedAway ??= []).push(binding.entry!);
        binding.entry = this.#successor(binding.entry!);
        if (binding.state !== "changed") binding.state = "refresh";
      }
      const entry = binding.entry;
      if (writes !== undefined && binding.replaced !== undefined) {
        writes.push(records.delete(binding.replaced));
        records.release(binding.replaced);
      }
      if (binding.anonymous !== undefined) {
        // Merged into the user's record at open: the browser's copy goes, with its cookie.
        if (writes !== undefined) {
          writes.push(records.delete(binding.anonymous));
          records.release(binding.anonymous);
        }
        if (cookies !== undefined) cookies.push(this.host.cookies.expired(binding.key, this.https));
      }
      switch (binding.state) {
        case "cleared":
          if (writes !== undefined && entry !== undefined) {
            writes.push(records.delete(entry));
            if (binding.userScoped) entry.live = binding.target; // the user's id stays: the reset instance is its state
          }
          if (cookies !== undefined && !binding.userScoped) cookies.push(this.host.cookies.expired(binding.key, this.https));
          break;
        case "changed":
        case "refresh": {
          // Never written before: a new visitor, who may never come back (a crawler, a one-page visit). Its
          // cookie is not kept for reuse, which cost a new session a cache entry that outlived the young
          // generation; a returning browser's cookie is kept from its next commit.
          const fresh = entry!.version === 0;
          if (writes !== undefined) {
            const snapshot = binding.serialized ?? { data: entry!.stored!.data, bytes: entry!.bytes };
            binding.serialized = undefined;
            writes.push(this.#write(entry!, binding.key, snapshot, now));
          }
          if (cookies !== undefined && !binding.userScoped && this.#setsCookie(entry!, now)) {
            cookies.push(this.#liveCookie(binding.key, entry!.id, !fresh));
          }
          break;
        }
        case "resign":
          if (cookies !== undefined) cookies.push(this.#liveCookie(binding.key, entry!.id, true));
          break;
        case "unchanged":
          break;
      }
      if (writes !== undefined && entry !== undefined) records.release(entry);
    }
    return rotatedAway;
  }

  #done(cookies: SetCookie[], writes: Array<Promise<void>>, rotatedAway: RecordEntry[] | undefined): CommitResult {
    // One write (the usual case) is waited for as it is: Promise.all and its .then were two more promises per request.
    const stored = writes.length === 0 ? undefined : writes.length === 1 ? writes[0] : Promise.all(writes).then(() => undefined);
    if (rotatedAway !== undefined) this.#deleteAfterResponse(rotatedAway, stored);
    return cookies.length === 0 && stored === undefined ? EMPTY_RESULT : { cookies, stored };
  }

  /**
   * Checks every changed state of a `validate: "always"` class with its
   * schema, as the handler left it (the raw instance: the check reads only).
   * Throws at the first synchronous refusal; a promise when a schema is asynchronous.
   */
  #check(): Promise<void> | undefined {
    let pending: Array<Promise<void>> | undefined;
    for (const binding of this.#bindings.values()) {
      if (binding.state !== "changed" || binding.entry === undefined) continue;
      const registration = binding.registration ?? registrationOf(binding.key);
      const state = binding.target ?? binding.entry.live;
      if (registration === undefined || !registration.versioning.checksCommits || state === undefined) continue;
      const check = checkAtCommit(registration.versioning, binding.key, state);
      if (check !== undefined) (pending ??= []).push(check);
    }
    if (pending === undefined) return undefined;
    return pending.length === 1 ? pending[0] : Promise.all(pending).then(() => undefined);
  }

  /**
   * A commit whose asynchronous check refused its state: nothing was queued,
   * so nothing of the request is stored. Every record it held is dropped from
   * this process (the handler changed the copies in place) and its lock
   * released: the next request re-reads what the store still holds.
   */
  #discard(rotatedAway: readonly RecordEntry[] | undefined): void {
    const { records } = this.host;
    const drop = (entry: RecordEntry | undefined) => {
      if (entry === undefined) return;
      records.forget(entry);
      entry.stale = true;
      records.release(entry);
    };
    for (const binding of this.#bindings.values()) {
      drop(binding.anonymous);
      drop(binding.replaced);
      drop(binding.entry);
      binding.entry = binding.replaced = binding.anonymous = undefined;
    }
    for (const entry of rotatedAway ?? []) drop(entry);
  }

  /**
   * Ends the request without storing anything of it: a failed handler, a 5xx,
   * or a request that could not start. Changed records are dropped from this
   * process, so the next request re-reads what is stored; every lock is released.
   */
  abort(): void {
    this.#end("aborted");
  }

  #end(phase: "aborted" | "abandoned"): void {
    if (this.#phase === "committed" || this.#phase === "aborted" || this.#phase === "abandoned") return;
    this.#finish(phase);
    const { records } = this.host;
    for (const binding of this.#bindings.values()) {
      if (binding.anonymous !== undefined) records.release(binding.anonymous);
      binding.anonymous = undefined;
      for (const entry of [binding.entry, binding.replaced]) {
        if (entry === undefined) continue;
        // The handler changed the in-process copy in place: it is no longer what is stored. An
        // abandoned handler may change it still, untracked: it must not be the process's copy either.
        if (binding.state === "changed" || binding.state === "cleared" || phase === "abandoned") {
          records.forget(entry);
          entry.stale = true;
        }
        records.release(entry);
      }
      binding.entry = binding.replaced = undefined;
    }
  }

  #finish(phase: "committed" | "aborted" | "abandoned"): void {
    this.#phase = phase;
    clearTimeout(this.#abandonTimer);
    this.onFinish?.();
    this.onFinish = undefined;
  }

  /**
   * The old records of a rotation are deleted only once the new ones are
   * stored and the response carrying their cookies has been handed over (the
   * adapters release it as soon as the writes are stored, so a later tick
   * follows it): a crash before that leaves the old record, which is what the
   * browser's cookie still names, and never a browser whose cookie names
   * nothing. A crash after it can leave the old record until it expires; it
   * holds only what was there before the rotation.
   */
  #deleteAfterResponse(old: readonly RecordEntry[], stored: Promise<void> | undefined): void {
    const { records } = this.host;
    const settle = (deleteThem: boolean) => {
      for (const entry of old) {
        if (deleteThem) records.delete(entry).catch((error: unknown) => this.host.logger.error(`persist-session: a rotated-away record ${entry.id} could not be deleted; it expires by itself.`, error));
        records.release(entry);
      }
    };
    (stored ?? Promise.resolve()).then(
      () => setImmediate(() => settle(true)),
      () => settle(false), // the new records were not stored: the old ones stay the browser's
    );
  }

  /** A fresh, locked entry that takes over `entry`'s state under a new id (a rotation). */
  #successor(entry: RecordEntry): RecordEntry {
    const next = this.host.records.entry(mintId());
    if (!next.tryLock(this)) throw new Error("persist-session: a freshly minted record id was already in use.");
    next.state = "missing";
    next.live = entry.live;
    next.recordKey = entry.recordKey;
    next.createdAt = entry.createdAt;
    next.version = entry.version;
    entry.live = undefined;
    return next;
  }

  /**
   * Whether this commit sets the record's cookie: unless this process set the same cookie (same
   * Secure) less than {@link CookieWriter.renewalMs} ago. A new record, a rotation's successor, an
   * entry read afresh (or after a failed write) have set none; a rolling refresh comes a tenth of
   * the ttl after the last write, so after the cookie that write set.
   */
  #setsCookie(entry: RecordEntry, now: number): boolean {
    if (now - entry.cookieSetAt < this.host.cookies.renewalMs && entry.cookieSecure === this.https) return false;
    entry.cookieSetAt = now;
    entry.cookieSecure = this.https;
    return true;
  }

  #liveCookie(key: string, id: string, keep: boolean): SetCookie {
    return this.host.cookies.live(this.signer!, key, id, this.https, keep);
  }

  #write(entry: RecordEntry, key: string, snapshot: { data: string; bytes: number }, now: number): Promise<void> {
    const { maxLifetimeMs } = this.host;
    const idle = now + this.host.ttlMs;
    // An absolute lifetime caps the rolling expiry: the store then forgets the record by itself too.
    const expires = maxLifetimeMs === undefined ? idle : Math.min(idle, (entry.createdAt ?? now) + maxLifetimeMs);
    const record = { key, version: entry.version + 1, updatedAt: now, expires, data: snapshot.data };
    entry.version = record.version;
    entry.updatedAt = now;
    entry.expires = record.expires;
    entry.bytes = snapshot.bytes;
    entry.recordKey = key;
    entry.state = "present";
    if (entry.stored !== undefined) entry.stored = record;
    return this.host.records.write(entry, { kind: "set", record });
  }

  #serialize(binding: Binding, entry: RecordEntry): { data: string; bytes: number } {
    // A refresh of a cached record the handler never touched has no registration of its own yet.
    const registration = binding.registration ?? registrationOf(binding.key);
    const instance = binding.target ?? entry.live;
    if (registration === undefined || (instance === undefined && entry.stored === undefined)) {
      throw new Error(`persist-session: no @persist class is registered for key "${binding.key}".`);
    }
    const text = instance !== undefined ? registration.codec.serialize(instance, registration.className) : splitVersion(entry.stored!.data).text;
    const data = registration.versioning.encode(text, this.host.maxLifetimeMs === undefined ? undefined : entry.createdAt);
    const bytes = Buffer.byteLength(data);
    if (bytes > this.host.maxRecordBytes) throw new RecordTooLargeError(registration.className, bytes, this.host.maxRecordBytes);
    return { data, bytes };
  }

  #bindingOf(state: object, caller: string): Binding {
    // A scan, not a WeakMap: a request has a binding or two, and a WeakMap per request cost more than it saved.
    const target = unwrap(state);
    for (const binding of this.#bindings.values()) {
      if (binding.target !== undefined && (binding.proxy === state || binding.target === target)) return binding;
    }
    throw new TypeError(`persist-session: ${caller} expects an instance of a @persist class created in this request.`);
  }

  /** A new instance after the commit point would be an instance nobody stores: refuse it. */
  #assertCreatable(registration: Registration): void {
    if (this.#phase === "open" || this.#phase === "abandoned") return;
    throw new Error(
      `persist-session: new ${registration.className}() was called after ${this.#phase === "aborted" ? "its request failed" : "the response was sent"}, so its changes could not be stored. ` +
        "Create and change state before sending the response (or its headers).",
    );
  }

  #checkScope(registration: Registration): void {
    if (registration.scope !== "user") return;
    if (this.userId !== undefined) {
      if (this.#bindings.get(registration.key)?.userScoped !== true) {
        throw new Error(`persist-session: ${registration.className} was declared after this request started. Import @persist classes before serving requests.`);
      }
      return;
    }
    if (!this.host.anonymousAsBrowser) {
      throw new Error(
        `persist-session: ${registration.className} is user-scoped, but this request has no user (the \`user\` option of persistSession() returned nothing). ` +
          'Sign the user in first, or set `anonymous: "browser"` to keep such state per browser until then.',
      );
    }
  }

  #binding(key: string, userScoped: boolean): Binding {
    let binding = this.#bindings.get(key);
    if (binding === undefined) {
      binding = new Binding(this, key, userScoped);
      this.#bindings.set(key, binding);
    }
    return binding;
  }

  #expose(binding: Binding, registration: Registration, target: object): object {
    binding.registration = registration;
    if (registration.versioning.checksCommits) this.#checksCommits = true;
    binding.target = target;
    binding.proxy = new Tracker(binding).track(target, registration.className);
    return binding.proxy;
  }
}
