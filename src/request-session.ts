import { v4 as uuidv4 } from "uuid";
import { registrationOf, type Registration } from "./persist.js";
import type { RecordEntry } from "./records.js";
import { RecordTooLargeError } from "./serialization.js";
import type { SessionCore } from "./session-core.js";
import { Tracker, unwrap, type ChangeSink } from "./tracking.js";

/** A record this request locks before its handler: from a verified cookie, or the signed-in user's. */
export interface SessionCookie {
  readonly key: string;
  readonly id: string;
  /** Signed with an older secret. */
  readonly stale: boolean;
  /** The user-scoped record of the signed-in user (no cookie involved). */
  readonly user?: boolean;
}

/** What {@link RequestSession.inspect} reports; the shape of `inspectState()`. */
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

/** What a commit leaves for the adapter: headers to add, and the write to wait for. */
export interface CommitResult {
  readonly setCookies: readonly string[];
  /** Resolves when every change of the request is stored; `undefined` when nothing was written. */
  readonly durable: Promise<void> | undefined;
}

/** One persisted key within one request. */
class Binding implements ChangeSink {
  /** The locked record, once this request has one (restored, or minted on first change). */
  entry: RecordEntry | undefined;
  registration: Registration | undefined;
  /** The raw instance behind {@link proxy}. */
  target: object | undefined;
  proxy: object | undefined;
  changed = false;
  /** Unchanged but due for a rolling expiry refresh. */
  touch = false;
  /** Signed with an older secret: send it re-signed. */
  resign = false;
  cleared = false;
  committed = false;
  /** Keyed by the signed-in user, not by a cookie. */
  userScoped = false;

  constructor(
    readonly session: RequestSession,
    readonly key: string,
  ) {}

  assertPersistable(value: unknown, path: string): void {
    this.registration!.codec.assertPersistable(value, path);
  }

  assertWritable(path: string): void {
    if (this.committed) {
      throw new Error(
        `persist-session: ${path} was changed after the response was sent, so the change cannot be stored. ` +
          "Change state before sending the response (or its headers).",
      );
    }
  }

  markChanged(): void {
    if (this.entry === undefined) this.session.mint(this);
    this.changed = true;
  }
}

/** The persisted state of one request: its cookies, locked records and instances. */
export class RequestSession {
  readonly #bindings = new Map<string, Binding>();
  #result: CommitResult | undefined;

  constructor(
    readonly core: SessionCore,
    readonly secure: boolean,
    /** What the app's `user` resolver returned for this request. */
    readonly userId: string | undefined,
  ) {}

  /** Binds a verified cookie's (or the user's) locked and loaded record to this request. */
  attach(cookie: SessionCookie, entry: RecordEntry): void {
    const binding = this.#binding(cookie.key);
    if (cookie.user === true) {
      // Its id is fixed by the user: keep the lock even while nothing is stored, so a first change cannot race another device's.
      binding.userScoped = true;
      binding.entry = entry;
      binding.touch = entry.state === "present" && this.core.isDueForRefresh(entry.updatedAt);
      return;
    }
    if (entry.state !== "present") {
      this.core.records.release(entry);
      return;
    }
    binding.entry = entry;
    binding.resign = cookie.stale;
    binding.touch = this.core.isDueForRefresh(entry.updatedAt);
  }

  /** Releases every lock taken so far; for a request that could not start. */
  abandon(): void {
    for (const binding of this.#bindings.values()) {
      if (binding.entry !== undefined) this.core.records.release(binding.entry);
      binding.entry = undefined;
      binding.committed = true;
    }
  }

  /** This request's instance of the class, if it exists already. */
  instanceOf(registration: Registration): object | undefined {
    this.#checkScope(registration);
    const binding = this.#bindings.get(registration.key);
    if (binding === undefined) return undefined;
    if (binding.proxy !== undefined) return binding.proxy;
    const live = binding.entry?.live;
    if (live === undefined) return undefined;
    return this.#expose(binding, registration, live);
  }

  /** Makes `fresh` (just constructed) this request's instance, filled from the stored record if any. */
  adopt(registration: Registration, fresh: object): object {
    const binding = this.#binding(registration.key);
    const entry = binding.entry;
    if (entry?.stored !== undefined) {
      try {
        Object.assign(fresh, registration.codec.deserialize(entry.stored.data));
        entry.live = fresh;
        entry.stored = undefined;
      } catch (error) {
        const reason = error instanceof Error ? error.message : String(error);
        binding.touch = binding.resign = false;
        const quarantined = this.core.records.quarantine(entry, `unreadable data: ${reason}`);
        // A user's record keeps its id and lock for a change after the reset; a browser's gets a new id on its next change.
        if (!binding.userScoped) {
          binding.entry = undefined;
          void quarantined.finally(() => this.core.records.release(entry));
        }
        registration.resetToDefaults(fresh);
      }
    }
    if (binding.entry !== undefined && binding.entry.live === undefined) binding.entry.live = fresh;
    return this.#expose(binding, registration, fresh);
  }

  /** Gives a never-stored instance its record on its first change. */
  mint(binding: Binding): void {
    const entry = this.core.records.entry(uuidv4());
    if (!entry.tryLock()) throw new Error("persist-session: a freshly minted session id was already in use.");
    entry.state = "missing";
    entry.live = binding.target;
    entry.recordKey = binding.key;
    binding.entry = entry;
    binding.cleared = false;
  }

  /** What is stored for `state`, as of this moment of the request. */
  inspect(state: object): StateInfo {
    const binding = this.#bindingOf(state, "inspectState()");
    const entry = binding.entry;
    const stored = entry !== undefined && entry.state === "present";
    return {
      key: binding.key,
      id: entry?.id,
      stored,
      version: stored ? entry.version : 0,
      updatedAt: stored ? new Date(entry.updatedAt) : undefined,
      expires: stored ? new Date(entry.expires) : undefined,
      bytes: stored ? entry.bytes : 0,
      changed: binding.changed,
      location: this.core.store.describe?.() ?? "the store",
    };
  }

  #bindingOf(state: object, caller: string): Binding {
    // A scan, not a WeakMap: a request has a binding or two, and a WeakMap per request cost more than it saved.
    const target = unwrap(state);
    for (const binding of this.#bindings.values()) {
      if (binding.target !== undefined && (binding.proxy === state || binding.target === target)) return binding;
    }
    throw new TypeError(`persist-session: ${caller} expects an instance of a @persist class created in this request.`);
  }

  /** Deletes the record of `state`, expires its cookie and resets the instance to its defaults. */
  async clear(state: object): Promise<void> {
    const binding = this.#bindingOf(state, "clearCookieState()");
    binding.assertWritable("clearCookieState()");
    binding.registration!.resetToDefaults(binding.target!);
    binding.changed = binding.touch = binding.resign = false;
    binding.cleared = true;
    const entry = binding.entry;
    if (entry === undefined) return;
    const records = this.core.records;
    const deleted = records.delete(entry);
    if (binding.userScoped) {
      // The user's id stays the same, so keep the lock and the instance for a change after the reset.
      entry.live = binding.target;
      binding.cleared = false;
    } else {
      binding.entry = undefined;
      records.release(entry);
    }
    await deleted;
  }

  /**
   * The commit point: snapshots every changed record, queues its write, and
   * releases the locks at once (the next request of this browser continues
   * from the in-process copy). Idempotent. Throws, after releasing everything,
   * when a record cannot be stored; that record is re-read by the next request.
   */
  commit(): CommitResult {
    if (this.#result !== undefined) return this.#result;
    const setCookies: string[] = [];
    const writes: Array<Promise<void>> = [];
    let failure: unknown;
    const now = Date.now();
    for (const binding of this.#bindings.values()) {
      binding.committed = true;
      const entry = binding.entry;
      if (entry === undefined) {
        if (binding.cleared) setCookies.push(this.core.expiredCookie(binding.key, this.secure));
        continue;
      }
      try {
        if (binding.changed || binding.touch) {
          // A refresh of an untouched record rewrites what is stored, whose size is known.
          const { data, bytes } = binding.changed || entry.stored === undefined ? this.#serialize(binding, entry) : { data: entry.stored.data, bytes: entry.bytes };
          const record = { key: binding.key, version: entry.version + 1, updatedAt: now, expires: now + this.core.ttlMs, data };
          entry.version = record.version;
          entry.updatedAt = now;
          entry.expires = record.expires;
          entry.bytes = bytes;
          entry.recordKey = binding.key;
          entry.state = "present";
          if (entry.stored !== undefined) entry.stored = record;
          writes.push(this.core.records.write(entry, { kind: "set", record }));
          if (!binding.userScoped) setCookies.push(this.core.sessionCookie(binding.key, entry.id, this.secure));
        } else if (binding.resign) {
          setCookies.push(this.core.sessionCookie(binding.key, entry.id, this.secure));
        }
      } catch (error) {
        failure ??= error;
        entry.stale = true;
      } finally {
        this.core.records.release(entry);
      }
    }
    if (failure !== undefined) {
      for (const write of writes) write.catch(() => undefined);
      throw failure;
    }
    // One write (the usual case) is waited for as it is: Promise.all and its .then were two more promises per request.
    const durable = writes.length === 0 ? undefined : writes.length === 1 ? writes[0] : Promise.all(writes).then(() => undefined);
    this.#result = { setCookies, durable };
    return this.#result;
  }

  #serialize(binding: Binding, entry: RecordEntry): { data: string; bytes: number } {
    // A refresh of a cached record the handler never touched has no registration of its own yet.
    const registration = binding.registration ?? registrationOf(binding.key);
    const instance = binding.target ?? entry.live;
    if (registration === undefined || instance === undefined) {
      throw new Error(`persist-session: no @persist class is registered for key "${binding.key}".`);
    }
    const data = registration.codec.serialize(instance, registration.className);
    const bytes = Buffer.byteLength(data);
    if (bytes > this.core.maxRecordBytes) throw new RecordTooLargeError(registration.className, bytes, this.core.maxRecordBytes);
    return { data, bytes };
  }

  #checkScope(registration: Registration): void {
    if (registration.scope !== "user") return;
    if (this.userId !== undefined) {
      if (this.#bindings.get(registration.key)?.userScoped !== true) {
        throw new Error(`persist-session: ${registration.className} was declared after this request started. Import @persist classes before serving requests.`);
      }
      return;
    }
    if (!this.core.anonymousAsBrowser) {
      throw new Error(
        `persist-session: ${registration.className} is user-scoped, but this request has no user (the \`user\` option of persistSession() returned nothing). ` +
          'Sign the user in first, or set `anonymous: "browser"` to keep such state per browser until then.',
      );
    }
  }

  #binding(key: string): Binding {
    let binding = this.#bindings.get(key);
    if (binding === undefined) {
      binding = new Binding(this, key);
      this.#bindings.set(key, binding);
    }
    return binding;
  }

  #expose(binding: Binding, registration: Registration, target: object): object {
    binding.registration = registration;
    binding.target = target;
    binding.proxy = new Tracker(binding).track(target, registration.className);
    return binding.proxy;
  }
}
