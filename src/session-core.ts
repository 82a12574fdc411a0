import type { IncomingMessage } from "node:http";
import { parse as parseCookieHeader, serialize as serializeCookie } from "cookie";
import { ChangeFeed } from "./change-feed.js";
import { CookieSigner, SIGNED_VALUE_LENGTH } from "./cookie-signing.js";
import { consoleLogger, type Logger } from "./logger.js";
import { RecordManager } from "./records.js";
import { RequestSession, type SessionCookie } from "./request-session.js";
import { userScopedKeys } from "./persist.js";
import { FileStore } from "./stores/file.js";
import { CorruptRecordError } from "./stores/store.js";
import { nonNegative, positive } from "./option-checks.js";
import { checkUserId, userRecordId } from "./user-scope.js";
import type { SessionStore } from "./stores/store.js";

/** Cookie attributes; the session cookie is always HttpOnly. */
export interface CookieOptions {
  /** @default "/" */
  path?: string;
  /** @default undefined (the host that set it) */
  domain?: string;
  /** @default "lax" */
  sameSite?: "lax" | "strict" | "none";
  /**
   * `"auto"` sets Secure when the request came over HTTPS (see `trustProxy`).
   * @default "auto"
   */
  secure?: boolean | "auto";
}

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
   * Idle records kept in memory between requests (process-local stores).
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
/** Set-Cookie lines kept for reuse; see {@link SessionCore.sessionCookie}. */
const COOKIE_LINE_CACHE_SIZE = 1000;

/** The state shared by every request of one `persistSession()`. */
export class SessionCore {
  readonly records: RecordManager;
  readonly store: SessionStore;
  readonly logger: Logger;
  readonly ttlMs: number;
  readonly maxRecordBytes: number;
  readonly trustProxy: boolean;
  readonly anonymousAsBrowser: boolean;
  readonly heartbeatMs: number;
  /** Record changes stored by this process (and, through `store.watch`, by others). */
  readonly feed = new ChangeFeed();
  readonly #user: PersistSessionOptions["user"];
  #unwatch: (() => void) | undefined;
  #watching: Promise<void> | undefined;
  readonly #maxCookies: number;
  readonly #cookie: Required<Omit<CookieOptions, "domain">> & Pick<CookieOptions, "domain">;
  readonly #secret: string | readonly string[] | undefined;
  #signer: CookieSigner | Promise<CookieSigner> | undefined;
  #sweepTimer: NodeJS.Timeout | undefined;
  #firstSweep: NodeJS.Timeout | undefined;
  #closed = false;
  /** Set-Cookie lines by `<secure> <key> <id>`, oldest first. */
  readonly #cookieLines = new Map<string, string>();
  /**
   * What follows `name=value` in a live session cookie, for plain and secure
   * requests. They never change, and serializing them per cookie was a tenth
   * of a new session's CPU.
   */
  readonly #liveAttributes: readonly [string, string];

  constructor(options: PersistSessionOptions) {
    if (typeof options !== "object" || options === null) {
      throw new TypeError("persist-session: persistSession() expects an options object, for example { secret }.");
    }
    this.logger = options.logger ?? consoleLogger;
    this.store = options.store ?? new FileStore();
    this.store.useLogger?.(this.logger);
    this.ttlMs = positive("ttl", options.ttl, DEFAULT_TTL_SECONDS) * 1000;
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
    const { path = "/", domain, sameSite = "lax", secure = "auto" } = options.cookie ?? {};
    if (!["lax", "strict", "none"].includes(sameSite)) {
      throw new TypeError(`persist-session: option cookie.sameSite is invalid: ${String(sameSite)}. Use "lax", "strict" or "none".`);
    }
    this.#cookie = { path, domain, sameSite, secure };
    // Round up: a ttl under a second would otherwise send Max-Age=0, which deletes the cookie at once.
    const liveAttributes = (https: boolean) => this.#serializeCookie("k", "v", Math.ceil(this.ttlMs / 1000), https).slice("k=v".length);
    this.#liveAttributes = [liveAttributes(false), liveAttributes(true)];
    this.records = new RecordManager(this.store, {
      lockTimeoutMs: positive("lockTimeout", options.lockTimeout, DEFAULT_LOCK_TIMEOUT_MS),
      cacheLimit: this.store.shared === true ? 0 : nonNegative("cacheSize", options.cacheSize, DEFAULT_CACHE_SIZE),
      logger: this.logger,
      onStored: (id, key, version) => this.feed.publish({ id, key: key ?? "", version }),
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
   * syntax, then HMAC), and only then lock and load its record. Synchronous
   * when nothing has to wait (no cookie, or a free and cached record).
   */
  begin(cookieHeader: string | undefined, secure: boolean, request?: IncomingMessage | Request): RequestSession | Promise<RequestSession> {
    if (this.#closed) throw new Error("persist-session: this persistSession() was closed. Create a new one to serve requests.");
    const signer = (this.#signer ??= this.#createSigner());
    if (signer instanceof Promise) return signer.then(() => this.begin(cookieHeader, secure, request));
    const user = this.#resolveUser(request);
    if (user instanceof Promise) return user.then((userId) => this.#open(signer, cookieHeader, secure, userId));
    return this.#open(signer, cookieHeader, secure, user);
  }

  /** The records an events stream of this request follows: its verified cookies' and its user's. No lock is taken. */
  async streamTargets(cookieHeader: string | undefined, request: IncomingMessage | Request): Promise<SessionCookie[]> {
    const signer = await (this.#signer ??= this.#createSigner());
    return this.#targets(signer, cookieHeader, await this.#resolveUser(request));
  }

  /** The stored version of a record, 0 when there is none; reads the store unless this process has it. */
  async currentVersion(id: string): Promise<number> {
    const entry = this.records.peek(id);
    if (entry !== undefined && !this.records.needsLoad(entry)) return entry.state === "present" ? entry.version : 0;
    try {
      const record = await this.store.get(id);
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
    this.#watching ??= (async () => {
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
    })();
    return this.#watching;
  }

  #resolveUser(request: IncomingMessage | Request | undefined): string | undefined | Promise<string | undefined> {
    if (this.#user === undefined || request === undefined) return undefined;
    const user = this.#user(request);
    return user instanceof Promise ? user.then(checkUserId) : checkUserId(user);
  }

  #targets(signer: CookieSigner, cookieHeader: string | undefined, userId: string | undefined): SessionCookie[] {
    const cookies = this.#sessionCookies(cookieHeader, signer);
    if (userId === undefined) return cookies;
    const userKeys = userScopedKeys();
    if (userKeys.length === 0) return cookies;
    // A signed-in user's state comes from the user, never from a browser cookie of the same key.
    const targets: SessionCookie[] = cookies.filter((cookie) => !userKeys.includes(cookie.key));
    for (const key of userKeys) targets.push({ key, id: userRecordId(key, userId), stale: false, user: true });
    return targets.sort(byKey);
  }

  #open(signer: CookieSigner, cookieHeader: string | undefined, secure: boolean, userId: string | undefined): RequestSession | Promise<RequestSession> {
    const session = new RequestSession(this, secure, userId);
    const cookies = this.#targets(signer, cookieHeader, userId);
    for (let i = 0; i < cookies.length; i++) {
      const cookie = cookies[i]!;
      const entry = this.records.entry(cookie.id);
      const wait = this.records.acquire(entry);
      if (wait !== undefined || this.records.needsLoad(entry)) {
        return this.#beginAsync(session, cookies, i, wait);
      }
      session.attach(cookie, entry);
    }
    return session;
  }

  async #beginAsync(session: RequestSession, cookies: readonly SessionCookie[], from: number, firstWait: Promise<void> | undefined): Promise<RequestSession> {
    let i = from;
    let wait = firstWait;
    try {
      for (; i < cookies.length; i++) {
        const cookie = cookies[i]!;
        const entry = this.records.entry(cookie.id);
        if (i !== from) wait = this.records.acquire(entry);
        if (wait !== undefined) await wait;
        try {
          await this.records.load(entry, cookie.key);
        } catch (error) {
          this.records.release(entry);
          throw error;
        }
        session.attach(cookie, entry);
      }
      return session;
    } catch (error) {
      session.abandon();
      throw error;
    }
  }

  /** Verified session cookies of a header, in key order (so two requests lock in the same order). */
  #sessionCookies(header: string | undefined, signer: CookieSigner): SessionCookie[] {
    if (header === undefined || header === "") return [];
    let pairs: Record<string, string | undefined>;
    try {
      pairs = parseCookieHeader(header);
    } catch {
      return [];
    }
    const found: SessionCookie[] = [];
    for (const key of Object.keys(pairs)) {
      const value = pairs[key];
      // The cheap length check first: most cookies of a site are not ours.
      if (value === undefined || value.length !== SIGNED_VALUE_LENGTH) continue;
      const verified = signer.verify(key, value);
      if (verified === undefined) continue;
      found.push({ key, ...verified });
      if (found.length >= this.#maxCookies) break;
    }
    return found.sort(byKey);
  }

  isDueForRefresh(updatedAt: number): boolean {
    return Date.now() - updatedAt > this.ttlMs * REFRESH_FRACTION;
  }

  /**
   * The Set-Cookie line of a record. It is the same on every commit of the record
   * (fixed Max-Age, no Expires), and signing plus serializing it was about 11% of
   * a hot-session request's CPU (bench/profile.mjs), so recent lines are reused.
   */
  sessionCookie(key: string, id: string, secure: boolean): string {
    const cacheKey = `${secure ? "s" : "-"} ${key} ${id}`;
    let line = this.#cookieLines.get(cacheKey);
    if (line !== undefined) return line;
    const signer = this.#signer as CookieSigner;
    // Keys are checked cookie names at @persist and signed values are base64url: no escaping needed.
    line = `${key}=${signer.sign(key, id)}${this.#liveAttributes[secure ? 1 : 0]}`;
    if (this.#cookieLines.size >= COOKIE_LINE_CACHE_SIZE) this.#cookieLines.delete(this.#cookieLines.keys().next().value!);
    this.#cookieLines.set(cacheKey, line);
    return line;
  }

  expiredCookie(key: string, secure: boolean): string {
    return this.#serializeCookie(key, "", 0, secure);
  }

  #serializeCookie(key: string, value: string, maxAge: number, secure: boolean): string {
    const { path, domain, sameSite } = this.#cookie;
    return serializeCookie(key, value, {
      httpOnly: true,
      sameSite,
      path,
      domain,
      maxAge,
      ...(maxAge === 0 ? { expires: new Date(0) } : {}),
      // SameSite=None is refused by browsers without Secure.
      secure: this.#cookie.secure === "auto" ? secure || sameSite === "none" : this.#cookie.secure,
    });
  }

  /** Runs a sweep now; resolves with how many files or records it removed. */
  async sweep(): Promise<number> {
    try {
      return await this.records.sweep();
    } catch (error) {
      this.logger.error("persist-session: the sweep failed; it will run again.", error);
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
    const pending = this.store.secret().then(
      (generated) => {
        this.logger.warn(`persist-session: no secret given; using a generated one kept in ${where}. Pass \`secret\` (32+ characters) in production.`);
        this.#signer = new CookieSigner([generated]);
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

function byKey(a: { key: string }, b: { key: string }): number {
  return a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
}
