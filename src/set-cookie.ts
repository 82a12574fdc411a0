import { serialize as serializeCookie } from "cookie";
import type { CookieSigner } from "./cookie-signing.js";

/** Cookie attributes; the state cookie is always HttpOnly. */
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

/** The attributes of one cookie to set, in the shape framework cookie APIs take (`cookies().set(name, value, attributes)`). */
export interface CookieAttributes {
  readonly httpOnly: true;
  readonly secure: boolean;
  readonly sameSite: "lax" | "strict" | "none";
  readonly path: string;
  readonly domain?: string;
  /** Seconds; 0 deletes the cookie. */
  readonly maxAge: number;
  /** Set (to the epoch) only on a deletion, for clients that ignore Max-Age=0. */
  readonly expires?: Date;
}

/** A cookie a commit asks the response to set: structured, and as a ready `Set-Cookie` header value. */
export interface SetCookie {
  readonly name: string;
  readonly value: string;
  readonly attributes: CookieAttributes;
  /** The `Set-Cookie` header value, for adapters that write headers themselves. */
  readonly header: string;
}

/** Whether the key carries a cookie name prefix that browsers enforce (`__Host-`, `__Secure-`). */
function isPrefixed(key: string): boolean {
  return key.startsWith("__Host-") || key.startsWith("__Secure-");
}

/** The longest {@link CookieWriter.renewalMs}. */
const COOKIE_RENEWAL_MAX_MS = 60_000;

/** Live cookies kept for reuse; see {@link CookieWriter.live}. */
const LIVE_COOKIE_CACHE_SIZE = 1000;

/** Builds the cookies of one `persistSession()`: its attributes, signed values, and a cache of both. */
export class CookieWriter {
  readonly #options: Required<Omit<CookieOptions, "domain">> & Pick<CookieOptions, "domain">;
  readonly #maxAge: number;
  /** By `<https> <key> <id>`, oldest first. */
  readonly #live = new Map<string, SetCookie>();
  /** What follows `name=value` in a live cookie's header, for plain and secure requests: serializing it per cookie was a tenth of a new session's CPU. */
  readonly #liveAttributes: readonly [{ attributes: CookieAttributes; suffix: string }, { attributes: CookieAttributes; suffix: string }];

  /**
   * How long a cookie this process set stays fresh enough that a change need not set it again:
   * a minute, or a hundredth of the ttl when that is shorter. The browser's cookie then expires
   * at most that long before its record. Setting it on every change was 8 % of a hot request's
   * instructions (node checks and writes the header), for a Max-Age moved by seconds.
   */
  readonly renewalMs: number;

  constructor(options: CookieOptions, ttlMs: number) {
    const { path = "/", domain, sameSite = "lax", secure = "auto" } = options;
    if (!["lax", "strict", "none"].includes(sameSite)) {
      throw new TypeError(`persist-session: option cookie.sameSite is invalid: ${String(sameSite)}. Use "lax", "strict" or "none".`);
    }
    this.#options = { path, domain, sameSite, secure };
    // Round up: a ttl under a second would otherwise send Max-Age=0, which deletes the cookie at once.
    this.#maxAge = Math.ceil(ttlMs / 1000);
    this.renewalMs = Math.min(COOKIE_RENEWAL_MAX_MS, ttlMs / 100);
    const live = (https: boolean) => {
      const attributes = this.#attributes(this.#maxAge, https);
      return { attributes, suffix: serializeCookie("k", "v", attributes).slice("k=v".length) };
    };
    this.#liveAttributes = [live(false), live(true)];
  }

  /**
   * The cookie that carries record `id` of `key`. It is the same on every
   * commit of the record (fixed Max-Age, no Expires), and signing plus
   * serializing it was a tenth of a hot request's CPU (bench/README.md), so
   * recent ones are reused; `keep: false` builds one without keeping it.
   */
  live(signer: CookieSigner, key: string, id: string, https: boolean, keep = true): SetCookie {
    const cacheKey = keep ? `${https ? "s" : "-"} ${key} ${id}` : "";
    let cookie = keep ? this.#live.get(cacheKey) : undefined;
    if (cookie !== undefined) return cookie;
    const value = signer.sign(key, id);
    const { attributes, suffix } = isPrefixed(key) ? this.#prefixed(key, this.#maxAge, https) : this.#liveAttributes[https ? 1 : 0];
    // Keys are checked cookie names at @persist and signed values are base64url: no escaping needed.
    cookie = { name: key, value, attributes, header: `${key}=${value}${suffix}` };
    if (!keep) return cookie;
    if (this.#live.size >= LIVE_COOKIE_CACHE_SIZE) this.#live.delete(this.#live.keys().next().value!);
    this.#live.set(cacheKey, cookie);
    return cookie;
  }

  /** The cookie that deletes `key`'s cookie in the browser. */
  expired(key: string, https: boolean): SetCookie {
    const base = isPrefixed(key) ? this.#prefixed(key, 0, https).attributes : this.#attributes(0, https);
    const attributes = { ...base, expires: new Date(0) };
    return { name: key, value: "", attributes, header: serializeCookie(key, "", attributes) };
  }

  /**
   * RFC 6265bis section 4.1.3: browsers accept a `__Secure-` cookie only with
   * Secure, and a `__Host-` one only with Secure, Path=/ and no Domain. A key
   * named so gets exactly that, whatever the cookie options say, so no other
   * host (a sibling subdomain) can set or shadow it.
   */
  #prefixed(key: string, maxAge: number, https: boolean): { attributes: CookieAttributes; suffix: string } {
    const { domain: _domain, ...base } = this.#attributes(maxAge, https);
    const attributes: CookieAttributes = key.startsWith("__Host-") ? { ...base, secure: true, path: "/" } : { ...this.#attributes(maxAge, https), secure: true };
    return { attributes, suffix: serializeCookie("k", "v", attributes).slice("k=v".length) };
  }

  #attributes(maxAge: number, https: boolean): CookieAttributes {
    const { path, domain, sameSite, secure } = this.#options;
    return {
      httpOnly: true,
      // SameSite=None is refused by browsers without Secure.
      secure: secure === "auto" ? https || sameSite === "none" : secure,
      sameSite,
      path,
      ...(domain === undefined ? {} : { domain }),
      maxAge,
    };
  }
}
