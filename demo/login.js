// The demo's sign-in: a name, no password (it is a demo), kept in a signed cookie
//
//   demo-user=<name>.<base64url HMAC-SHA256(key, "demo-user\n" + name)>
//
// The key is derived (HKDF) from the demo's session secret, so only this server
// can mint the cookie. The user id handed to persist-session comes from here and
// nowhere else: a forged, tampered or malformed cookie means "signed out".
import { createHmac, hkdfSync, timingSafeEqual } from "node:crypto";
// The library's own cookie parser (a dependency of persist-session).
import { parse as parseCookie } from "cookie";

export const USER_COOKIE = "demo-user";
/** What a name may be: it appears in the cookie, the page and the user-scoped record's id. */
export const USER_NAME = /^[a-z0-9_-]{1,32}$/;
/** `<name>.<43 base64url characters>`; anything else is not even checked. */
const SIGNED_USER = /^([a-z0-9_-]{1,32})\.([A-Za-z0-9_-]{43})$/;
/** The cookie lives as long as the demo's state does (14 days). */
const MAX_AGE_SECONDS = 14 * 24 * 60 * 60;

/** @param {unknown} name */
export function isValidName(name) {
  return typeof name === "string" && USER_NAME.test(name);
}

/**
 * The sign-in of one demo server.
 * @param {string} secret the session secret (given or generated); the cookie key is derived from it
 */
export function createLogin(secret) {
  // Never derive a key from nothing: an empty or short secret would make the cookie forgeable.
  if (typeof secret !== "string" || secret.length < 32) {
    throw new TypeError("the session secret is missing or shorter than 32 characters, so sign-in cookies cannot be signed. Check SESSION_SECRET or the store's .secret file.");
  }
  const key = Buffer.from(hkdfSync("sha256", secret, "persist-session demo", "demo-user cookie v1", 32));
  /** Requests already looked at: the `user` resolver and the handler ask for the same request. */
  const seen = new WeakMap();

  /** @param {string} name */
  const sign = (name) => createHmac("sha256", key).update(`${USER_COOKIE}\n${name}`).digest("base64url");

  /**
   * The verified user name of a request, or undefined.
   * @param {import("node:http").IncomingMessage | Request} request
   */
  function userOf(request) {
    if (seen.has(request)) return seen.get(request);
    const header = typeof request.headers.get === "function" ? request.headers.get("cookie") : request.headers.cookie;
    const user = typeof header === "string" ? verify(parseCookie(header)[USER_COOKIE]) : undefined;
    seen.set(request, user);
    return user;
  }

  /** @param {string | undefined} value */
  function verify(value) {
    const match = value === undefined ? null : SIGNED_USER.exec(value);
    if (match === null) return undefined;
    const [, name, signature] = match;
    // Both are 43 ASCII characters here; the comparison takes the same time wherever they differ.
    return timingSafeEqual(Buffer.from(signature), Buffer.from(sign(name))) ? name : undefined;
  }

  return {
    userOf,
    /** The Set-Cookie line that signs `name` in (check it with isValidName first). */
    signInCookie(name) {
      if (!isValidName(name)) throw new TypeError("demo: a user name must be 1 to 32 characters of a-z, 0-9, _ and -.");
      return `${USER_COOKIE}=${name}.${sign(name)}; Max-Age=${MAX_AGE_SECONDS}; Path=/; HttpOnly; SameSite=Lax`;
    },
    /** The Set-Cookie line that signs out. */
    signOutCookie() {
      return `${USER_COOKIE}=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Path=/; HttpOnly; SameSite=Lax`;
    },
  };
}
