import type { IncomingMessage } from "node:http";
import { ChangeFeed } from "./change-feed.js";
import { outsideRequest } from "./context.js";
import { CookieSigner, SIGNED_VALUE_LENGTH } from "./cookie-signing.js";
import { consoleLogger, type Logger } from "./logger.js";
import { OutageLog } from "./outage-log.js";
import { RecordManager, type RecordEntry } from "./records.js";
import { registrationOf, userScopedKeys } from "./registry.js";
import { ClientGoneError, RequestState, type RecordTarget, type RequestHost } from "./request-state.js";
import { CookieWriter, type CookieOptions } from "./set-cookie.js";
import { FileStore } from "./stores/file.js";
import { CorruptRecordError, StoreStartError } from "./stores/store.js";
import { nonNegative, positive } from "./option-checks.js";
import { storedVersion } from "./versioning.js";
import { checkUserId, userRecordId } from "./user-scope.js";
import type { SessionStore } from "./stores/store.js";

/** Options of `persistSession()`. */
export interface PersistSessionOptions {
  /**
   * Secret(s) for the cookie signatures, 32 characters or more. With a list, the
   * first signs and every one verifies (rotation). Without one, the store keeps
   * a generated secret beside the data and a warning is logged.
   */
  secret?: string | readonly string[];
  /**
   * Where records live.
   * @default new FileStore({ dir: ".persist-session" })
   */
  store?: SessionStore;
  /**
   * Seconds a record lives after its last write; every use renews it (rolling), and it is the cookie's Max-Age.
   * @default 1209600 (14 days)
   */
  ttl?: number;
  cookie?: CookieOptions;
  /**
   * Largest serialized state of one class, in bytes; a commit over it fails and writes nothing.
   * @default 1048576 (1 MiB)
   */
  maxRecordBytes?: number;
  /**
   * Signed cookies honoured per request; any beyond are ignored.
   * @default 16
   */
  maxCookies?: number;
  /**
   * Seconds a record lives after its first write, however active its browser
   * is (an absolute limit beside the rolling `ttl`); unset, activity keeps a record alive.
   * @default undefined
   */
  maxLifetime?: number;
  /**
   * Milliseconds a request waits for an earlier request of the same browser to commit before it gets a 503.
   * @default 10000
   */
  lockTimeout?: number;
  /**
   * Seconds between sweeps of expired records and orphaned temporary files; 0 turns it off.
   * @default 600
   */
  sweepInterval?: number;
  /**
   * Idle records kept in memory between requests. With a shared store (RedisStore), a
   * record is kept only while this process keeps its lease, and one evicted releases it.
   * @default 1000
   */
  cacheSize?: number;
  /**
   * Believe `X-Forwarded-Proto` when deciding whether the request was HTTPS. Only behind a proxy you run.
   * @default false
   */
  trustProxy?: boolean;
  /** @default console */
  logger?: Logger;
  /**
   * The signed-in user's id for this request, for `@persist(key, { scope: "user" })`
   * state: read it from your own login session. Never take it from unauthenticated client input.
   */
  user?: (request: IncomingMessage | Request) => string | undefined | Promise<string | undefined>;
  /**
   * What user-scoped state does in a request without a user: `"reject"` throws at
   * `new State()`, `"browser"` keeps it per browser (a cookie) until the user signs in.
   * @default "reject"
   */
  anonymous?: "reject" | "browser";
  /**
   * Seconds between heartbeat comments on an events stream, so proxies keep it open.
   * @default 15
   */
  heartbeat?: number;
}

const DEFAULT_TTL_SECONDS = 14 * 24 * 60 * 60;
const DEFAULT_MAX_RECORD_BYTES = 1024 * 1024;
const DEFAULT_MAX_COOKIES = 16;
const DEFAULT_LOCK_TIMEOUT_MS = 10_000;
const DEFAULT_SWEEP_INTERVAL_SECONDS = 600;
const DEFAULT_CACHE_SIZE = 1000;
const DEFAULT_HEARTBEAT_SECONDS = 15;
/** Renew a record's expiry (a write and a Set-Cookie) once this share of the ttl has passed. */
const REFRESH_FRACTION = 0.1;
/** At most one warning a minute about duplicate cookie names: they come from clients, who must not fill the log. */
const DUPLICATE_WARNING_INTERVAL_MS = 60_000;

/** What an adapter knows of a request when it opens it; see {@link SessionCore.open}. */
export interface OpenInit {
  /**
   * The request's whole Cookie header, `undefined` when it has none. The raw
   * header rather than a framework's parsed cookies: only the header shows a
   * name sent twice (a cookie planted by a sibling subdomain), and one parser
   * keeps the checks the same in every framework.
   */
  readonly cookieHeader: string | undefined;
  /** Whether the request came over HTTPS as the framework knows it (its URL, its trusted proxy): decides `Secure`. */
  readonly https: boolean;
  /** The framework's request: given to the `user` option and named (method and path) in log lines. */
  readonly request?: IncomingMessage | Request;
  /**
   * Open a request that can only read state (a render, as a Next.js Server
   * Component is): no lock is taken, nothing is written or minted, and a change
   * throws with this text as its advice, like "Change state in a Server Action or a Route Handler."
   */
  readonly readOnly?: string;
}

/** The state shared by every request of one `persistSession()`: it opens requests and keeps their records. */
export class SessionCore implements RequestHost {
  readonly records: RecordManager;
  readonly store: SessionStore;
  readonly logger: Logger;
  readonly ttlMs: number;
  readonly maxRecordBytes: number;
  readonly trustProxy: boolean;
  readonly anonymousAsBrowser: boolean;
  readonly lockTimeoutMs: number;
  readonly maxLifetimeMs: number | undefined;
  readonly location: string;
  readonly heartbeatMs: number;
  /** An unreachable store, logged once per outage. */
  readonly outage: OutageLog;
  /** Record changes stored by this process (and, through `store.watch`, by others). */
  readonly feed = new ChangeFeed();
  readonly #user: PersistSessionOptions["user"];
  #unwatch: (() => void) | undefined;
  #watching: Promise<void> | undefined;
  readonly #maxCookies: number;
  readonly cookies: CookieWriter;
  readonly #secret: string | readonly string[] | undefined;
  #signer: CookieSigner | Promise<CookieSigner> | undefined;
  #sweepTimer: NodeJS.Timeout | undefined;
  #firstSweep: NodeJS.Timeout | undefined;
  #closed = false;
  #duplicateWarnedAt = Number.NEGATIVE_INFINITY;
  /** Messages of the store's failed starts logged so far: each once, not once per request that meets it. */
  readonly #startFailures = new Set<string>();

  constructor(options: PersistSessionOptions) {
    if (typeof options !== "object" || options === null) {
      throw new TypeError("persist-session: persistSession() expects an options object, for example { secret }.");
    }
    this.logger = options.logger ?? consoleLogger;
    this.outage = new OutageLog(this.logger);
    this.store = options.store ?? new FileStore();
    this.store.useLogger?.(this.logger);
    this.ttlMs = positive("ttl", options.ttl, DEFAULT_TTL_SECONDS) * 1000;
    this.maxLifetimeMs = options.maxLifetime === undefined ? undefined : positive("maxLifetime", options.maxLifetime, 0) * 1000;
    this.maxRecordBytes = positive("maxRecordBytes", options.maxRecordBytes, DEFAULT_MAX_RECORD_BYTES);
    this.#maxCookies = positive("maxCookies", options.maxCookies, DEFAULT_MAX_COOKIES);
    this.trustProxy = options.trustProxy ?? false;
    if (options.user !== undefined && typeof options.user !== "function") {
      throw new TypeError("persist-session: option user is invalid. Give a function (request) => the signed-in user's id or undefined.");
    }
    this.#user = options.user;
    if (options.anonymous !== undefined && options.anonymous !== "reject" && options.anonymous !== "browser") {
      throw new TypeError(`persist-session: option anonymous is invalid: ${String(options.anonymous)}. Use "reject" or "browser".`);
    }
    this.anonymousAsBrowser = options.anonymous === "browser";
    this.heartbeatMs = positive("heartbeat", options.heartbeat, DEFAULT_HEARTBEAT_SECONDS) * 1000;
    this.cookies = new CookieWriter(options.cookie ?? {}, this.ttlMs);
    this.lockTimeoutMs = positive("lockTimeout", options.lockTimeout, DEFAULT_LOCK_TIMEOUT_MS);
    this.location = this.store.describe?.() ?? "the store";
    this.records = new RecordManager(this.store, {
      lockTimeoutMs: this.lockTimeoutMs,
      // Shared stores keep an idle record only while its lease is kept (RecordManager's #settle).
      cacheLimit: nonNegative("cacheSize", options.cacheSize, DEFAULT_CACHE_SIZE),
      logger: this.logger,
      onStored: (id, key, version) => this.feed.publish({ id, key: key ?? "", version }),
      outage: this.outage,
    });
    this.#secret = options.secret;
    // A given secret is checked now, at start-up, not on the first request.
    if (options.secret !== undefined || this.store.secret === undefined) this.#signer = this.#createSigner();
    const sweepSeconds = nonNegative("sweepInterval", options.sweepInterval, DEFAULT_SWEEP_INTERVAL_SECONDS);
    const { expiredIds, removeExpired, removeOrphans } = this.store;
    if (sweepSeconds > 0 && (expiredIds !== undefined || removeExpired !== undefined || removeOrphans !== undefined)) {
      this.#sweepTimer = setInterval(() => void this.sweep(), sweepSeconds * 1000).unref();
      // A first sweep soon after start clears what a crash left behind.
      this.#firstSweep = setTimeout(() => void this.sweep(), 1000).unref();
    }
  }

  /**
   * Opens a request: parse the cookie header, check each signed value (UUIDv4
   * syntax, then HMAC), and only then lock and load its record. When nothing
   * has to wait (no cookie, or a free and cached record) the request is open
   * at once; else its `ready` resolves when it is (and rejects, the request
   * aborted, when it cannot start). The caller runs the handler in the
   * request's context, then commits or aborts it.
   */
  open(init: OpenInit): RequestState {
    if (this.#closed) throw new Error("persist-session: this persistSession() was closed. Create a new one to serve requests.");
    const request = new RequestState(this, init.https, init.request, init.readOnly);
    const ready = this.#prepare(request, init);
    if (ready !== undefined) {
      request.ready = ready.catch((error: unknown) => {
        request.abort();
        throw error;
      });
    }
    return request;
  }

  #prepare(request: RequestState, init: OpenInit): Promise<void> | undefined {
    const signer = (this.#signer ??= this.#createSigner());
    if (signer instanceof Promise) return signer.then(() => this.#prepare(request, init));
    const user = this.#resolveUser(init.request);
    if (user instanceof Promise) return user.then((userId) => this.#lock(request, signer, init.cookieHeader, userId));
    return this.#lock(request, signer, init.cookieHeader, user);
  }

  /** The records an events stream of this request follows: its verified cookies' and its user's. No lock is taken. */
  async streamTargets(cookieHeader: string | undefined, request: IncomingMessage | Request): Promise<RecordTarget[]> {
    const signer = await (this.#signer ??= this.#createSigner());
    return this.#targets(signer, cookieHeader, await this.#resolveUser(request));
  }

  /** The stored version of a record, 0 when there is none; reads the store unless this process has it. */
  async currentVersion(id: string): Promise<number> {
    const entry = this.records.peek(id);
    if (entry !== undefined && !this.records.needsLoad(entry)) return entry.state === "present" ? entry.version : 0;
    try {
      const record = await this.records.read(id);
      return record !== undefined && record.expires > Date.now() ? record.version : 0;
    } catch (error) {
      if (error instanceof CorruptRecordError) return 0;
      throw error;
    }
  }

  /**
   * Starts forwarding other processes' changes into {@link feed}, once;
   * resolves when they are followed. A store that cannot follow them is
   * logged, not fatal: streams still carry this process's changes.
   */
  watchStore(): Promise<void> {
    // Outside the stream's request: the store's subscription (a connection) outlives it.
    this.#watching ??= outsideRequest(async () => {
      if (this.store.watch === undefined || this.#closed) return;
      try {
        const unwatch = await this.store.watch(
          (change) => this.feed.publish(change),
          (error) => this.logger.error("persist-session: live sync lost the store's change feed; other processes' changes may not reach open streams until it reconnects.", error),
        );
        if (this.#closed) unwatch();
        else this.#unwatch = unwatch;
      } catch (error) {
        this.#watching = undefined; // the next stream tries again
        this.logger.error("persist-session: live sync could not follow the store's changes; events streams carry only this process's changes.", error);
      }
    });
    return this.#watching;
  }

  #resolveUser(request: IncomingMessage | Request | undefined): string | undefined | Promise<string | undefined> {
    if (this.#user === undefined || request === undefined) return undefined;
    const user = this.#user(request);
    return user instanceof Promise ? user.then(checkUserId) : checkUserId(user);
  }

  #targets(signer: CookieSigner, cookieHeader: string | undefined, userId: string | undefined): RecordTarget[] {
    const cookies = this.#verifiedCookies(cookieHeader, signer);
    if (userId === undefined) return cookies;
    const userKeys = userScopedKeys();
    if (userKeys.length === 0) return cookies;
    // A signed-in user's state comes from the user, never from a browser cookie of the same key.
    // A browser's anonymous record of such a key is carried in only to be merged into the user's (the class's merge option).
    const targets: RecordTarget[] = [];
    for (const cookie of cookies) {
      if (!userKeys.includes(cookie.key)) targets.push(cookie);
      else if (this.anonymousAsBrowser && registrationOf(cookie.key)?.merge !== undefined) targets.push({ ...cookie, anonymous: true });
    }
    for (const key of userKeys) targets.push({ key, id: userRecordId(key, userId), oldSecret: false, user: true });
    return targets.sort(byKey);
  }

  /** Locks and loads the request's records, in key order; a promise only when something has to wait. */
  #lock(request: RequestState, signer: CookieSigner, cookieHeader: string | undefined, userId: string | undefined): Promise<void> | undefined {
    request.userId = userId;
    request.signer = signer;
    const targets = this.#targets(signer, cookieHeader, userId);
    if (request.readOnly !== undefined) return this.#readSnapshots(request, targets);
    for (let i = 0; i < targets.length; i++) {
      const target = targets[i]!;
      const entry = this.records.entry(target.id);
      const wait = request.lock(entry);
      if (wait !== undefined || this.records.needsLoad(entry) || needsRestore(target, entry)) return this.#lockAsync(request, targets, i, wait);
      request.attach(target, entry);
    }
    request.opened();
    return undefined;
  }

  async #lockAsync(request: RequestState, targets: readonly RecordTarget[], from: number, firstWait: Promise<void> | undefined): Promise<void> {
    let wait = firstWait;
    for (let i = from; i < targets.length; i++) {
      const target = targets[i]!;
      const entry = this.records.entry(target.id);
      if (i !== from) wait = request.lock(entry);
      if (wait !== undefined) await wait;
      try {
        await this.records.load(entry, target.key);
      } catch (error) {
        this.records.release(entry);
        throw error;
      }
      request.attach(target, entry);
      if (needsRestore(target, entry)) await request.restore(target, entry, registrationOf(target.key)!);
    }
    if (request.gone) throw new ClientGoneError("persist-session: the client left while its request was being opened.");
    request.opened();
  }

  /**
   * A read-only request reads what is stored, without a lock: a response that
   * was sent had its changes stored first, so it sees every change a client
   * has seen, and it never waits for (or delays) the browser's other requests.
   */
  #readSnapshots(request: RequestState, targets: readonly RecordTarget[]): Promise<void> | undefined {
    if (targets.length === 0) {
      request.opened();
      return undefined;
    }
    return (async () => {
      const now = Date.now();
      for (const target of targets) {
        let record;
        try {
          record = await this.records.read(target.id);
        } catch (error) {
          // A corrupt record is set aside by the next request that may write; this one reads it as none.
          if (!(error instanceof CorruptRecordError)) throw error;
        }
        let fields: Record<string, unknown> | undefined;
        const registration = registrationOf(target.key);
        if (registration !== undefined && record !== undefined && record.key === target.key && record.expires > now) {
          // Migrated and validated as for a request that may write; a newer or unusable record reads as fresh state.
          const restored = await registration.versioning.restore(target.key, record.data, (text) => registration.codec.deserialize(text));
          if (restored.kind === "current") fields = restored.fields;
        }
        request.attachSnapshot(target, fields);
      }
      request.opened();
    })();
  }

  /**
   * Verified record cookies of a header, in key order (so two requests lock in
   * the same order). Only names of registered keys are looked at, and at most
   * `maxCookies` signatures are checked per request, so forged values cost no
   * more than any other cookie. A key whose cookie appears twice counts as
   * absent: browsers send the cookie with the longer Path first, so the first
   * could be one planted by a sibling subdomain (cookie tossing).
   */
  #verifiedCookies(header: string | undefined, signer: CookieSigner): RecordTarget[] {
    if (header === undefined || header === "") return [];
    /** Registered names met so far, with where their first value is; a request carries a few. */
    const seen: string[] = [];
    /** Where the first value of each name in `seen` starts and ends, two numbers per name (no tuple per cookie). */
    const values: number[] = [];
    let duplicates: string[] | undefined;
    // RFC 6265 section 4.2.1: cookie-string = cookie-pair *( ";" SP cookie-pair ). Browsers send exactly that;
    // anything else is read leniently, and a pair that is not ours is skipped, never an error.
    for (let start = 0; start < header.length; ) {
      let end = header.indexOf(";", start);
      if (end < 0) end = header.length;
      const eq = header.indexOf("=", start);
      if (eq > start && eq < end) {
        const name = trimmed(header, start, eq);
        if (registrationOf(name) !== undefined) {
          if (seen.includes(name)) {
            (duplicates ??= []).push(name);
          } else {
            seen.push(name);
            values.push(eq + 1, end);
          }
        }
      }
      start = end + 1;
    }
    // Verified only once the whole header is read: a name sent twice means no session for it, so its
    // values cost no HMAC (a header of one registered name 180 times cost nine of them per secret).
    const found: RecordTarget[] = [];
    let checks = 0;
    for (let i = 0; i < seen.length; i++) {
      const name = seen[i]!;
      if (duplicates?.includes(name) === true) continue;
      const value = trimmed(header, values[2 * i]!, values[2 * i + 1]!);
      // The cheap length check first, and at most maxCookies HMACs whatever the header holds.
      if (value.length !== SIGNED_VALUE_LENGTH || checks >= this.#maxCookies) continue;
      checks++;
      const verified = signer.verify(name, value);
      if (verified !== undefined) found.push({ key: name, id: verified.id, oldSecret: verified.stale });
    }
    if (duplicates !== undefined) this.#warnDuplicates(duplicates);
    return found.length > 1 ? found.sort(byKey) : found;
  }

  #warnDuplicates(duplicates: readonly string[]): void {
    const now = Date.now();
    if (now - this.#duplicateWarnedAt < DUPLICATE_WARNING_INTERVAL_MS) return;
    this.#duplicateWarnedAt = now;
    this.logger.warn(
      `persist-session: a request carried the cookie ${[...new Set(duplicates)].join(", ")} more than once (one may have been set by another subdomain); it got fresh state. ` +
        "Use a __Host- prefixed key in production so no other host can set it.",
    );
  }

  isDueForRefresh(updatedAt: number): boolean {
    return Date.now() - updatedAt > this.ttlMs * REFRESH_FRACTION;
  }

  /**
   * Every user-scoped record of `userId`, as that user's requests would see it
   * (migrated and validated): for a privacy export. Takes each record's lock
   * like a request, so it never reads a half-committed state.
   */
  async exportUser(userId: string): Promise<UserRecord[]> {
    const id = requireUserId("exportUser", userId);
    const found: UserRecord[] = [];
    for (const key of userScopedKeys()) {
      const registration = registrationOf(key)!;
      await this.#withUserRecord(key, id, "exportUser()", async (entry) => {
        if (entry.state !== "present") return;
        // A copy, through the stored form: the export must not share objects with the live state.
        const data = entry.stored?.data ?? registration.versioning.encode(registration.codec.serialize(entry.live!, registration.className));
        const restored = await registration.versioning.restore(key, data, (text) => registration.codec.deserialize(text));
        if (restored.kind !== "current") return;
        const state = registration.construct();
        Object.assign(state, restored.fields);
        found.push({ key, version: entry.version, state, updatedAt: new Date(entry.updatedAt), expires: new Date(entry.expires) });
      });
    }
    return found;
  }

  /**
   * Deletes every user-scoped record of `userId` (a privacy erasure); the
   * user's open events streams get a change. Resolves with how many were deleted.
   */
  async deleteUser(userId: string): Promise<number> {
    const id = requireUserId("deleteUser", userId);
    let deleted = 0;
    for (const key of userScopedKeys()) {
      await this.#withUserRecord(key, id, "deleteUser()", async (entry) => {
        if (entry.state !== "present") return;
        await this.records.delete(entry);
        deleted++;
      });
    }
    return deleted;
  }

  async #withUserRecord(key: string, userId: string, caller: string, use: (entry: RecordEntry) => Promise<void>): Promise<void> {
    if (this.#closed) throw new Error(`persist-session: ${caller} was called after this persistSession() was closed.`);
    const entry = this.records.entry(userRecordId(key, userId));
    await entry.lock(this.lockTimeoutMs, { describe: () => caller });
    try {
      await this.records.load(entry, key);
      await use(entry);
    } finally {
      this.records.release(entry);
    }
  }

  /**
   * Starts the store now instead of at the first request (a FileStore checks and claims its
   * directory) and, when no `secret` was given, reads or generates the store's: rejects with
   * what stops it, for a start-up script that wants to fail at once.
   */
  async ready(): Promise<void> {
    if (this.#closed) throw new Error("persist-session: this persistSession() was closed. Create a new one to serve requests.");
    await outsideRequest(() => this.store.ready?.());
    await (this.#signer ??= this.#createSigner());
  }

  /**
   * Logs a store that could not start, once per distinct reason: it fails every request until
   * someone fixes it, and a line per request would bury the one that says how.
   */
  reportStartFailure(error: StoreStartError): void {
    if (this.#startFailures.has(error.message)) return;
    this.#startFailures.add(error.message);
    this.logger.error(`${error.message} Until then every request that uses state fails (500); this is logged once.`, error);
  }

  /** Runs a sweep now; resolves with how many files or records it removed. */
  async sweep(): Promise<number> {
    try {
      return await this.records.sweep();
    } catch (error) {
      if (error instanceof StoreStartError) this.reportStartFailure(error);
      else this.logger.error("persist-session: the sweep failed; it will run again.", error);
      return 0;
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#sweepTimer);
    // The first sweep too: run after close, it would reach a store (a pool) the app has ended.
    clearTimeout(this.#firstSweep);
    this.#unwatch?.();
    await this.records.flush();
    await this.store.close?.();
  }

  #createSigner(): CookieSigner | Promise<CookieSigner> {
    const secret = this.#secret;
    if (secret !== undefined) return new CookieSigner(typeof secret === "string" ? [secret] : secret);
    if (this.store.secret === undefined) {
      throw new TypeError("persist-session: option secret is missing, and this store cannot keep a generated one. Pass `secret`.");
    }
    const where = this.store.describe?.() ?? "the store";
    const store = this.store;
    const pending = outsideRequest(() => store.secret!()).then(
      ({ secret: kept, created }) => {
        const which = created ? `generated one and kept it in ${where}` : `using the secret already kept in ${where} (this start did not generate it)`;
        this.logger.warn(`persist-session: no secret given; ${which}. Pass \`secret\` (32+ characters) in production.`);
        this.#signer = new CookieSigner([kept]);
        return this.#signer;
      },
      (error: unknown) => {
        this.#signer = undefined; // try again on the next request
        throw error;
      },
    );
    pending.catch(() => undefined);
    return pending;
  }
}

/** One user-scoped record of a user, as {@link SessionCore.exportUser} hands it out. */
export interface UserRecord {
  /** The `@persist` key. */
  readonly key: string;
  /** Increases by one on every write. */
  readonly version: number;
  /** An instance of the class with the stored state, as the user's requests would see it. */
  readonly state: object;
  readonly updatedAt: Date;
  readonly expires: Date;
}

function requireUserId(caller: string, userId: unknown): string {
  const id = checkUserId(userId);
  if (id === undefined) throw new TypeError(`persist-session: ${caller}() expects a user id, the string your \`user\` option returns for that user.`);
  return id;
}

/**
 * Whether a record just read must be migrated or validated before the handler
 * runs (a versioned class; asynchronous, so it happens while opening). A
 * record of a newer version is handled at attach and never restored here.
 */
function needsRestore(target: RecordTarget, entry: RecordEntry): boolean {
  if (entry.stored === undefined || target.anonymous === true) return false;
  const versioning = registrationOf(target.key)?.versioning;
  return versioning !== undefined && versioning.upgrades && storedVersion(entry.stored.data) <= versioning.version;
}

/** `text.slice(start, end)` without the spaces and tabs around it (RFC 7230 OWS), as the `cookie` package reads pairs. */
function trimmed(text: string, start: number, end: number): string {
  while (start < end && (text.charCodeAt(start) === 0x20 || text.charCodeAt(start) === 0x09)) start++;
  while (end > start && (text.charCodeAt(end - 1) === 0x20 || text.charCodeAt(end - 1) === 0x09)) end--;
  return text.slice(start, end);
}

function byKey(a: { key: string }, b: { key: string }): number {
  return a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
}
