// What the Next.js adapter reads from Next's request APIs: pure functions over
// the objects `cookies()` and `headers()` give, so they are tested without Next.

/**
 * The advice a change in a Server Component render throws with.
 *
 * @example
 * ```ts
 * await sessions.open({ cookieHeader, https, readOnly: READ_ONLY_ADVICE });
 * ```
 */
export const READ_ONLY_ADVICE = "Server Components only read state: change it in a Server Action or a Route Handler.";

/**
 * One cookie as Next's `cookies()` lists it.
 *
 * @example
 * ```ts
 * const cookie: NextCookie = { name: "counter", value: "…" };
 * ```
 */
export interface NextCookie {
  readonly name: string;
  readonly value: string;
}

/**
 * What the adapter reads of Next's `cookies()`.
 *
 * @example
 * ```ts
 * const list: NextCookieList = await cookies();
 * ```
 */
export interface NextCookieList {
  getAll(): NextCookie[];
}

/**
 * Whether Next gave a render's cookies, which cannot be set. Next hands a
 * Server Action or Route Handler the response's cookies (a `ResponseCookies`,
 * writable) and a render, or a route forced static, the request's (a
 * `RequestCookies` sealed so that `set` throws). Only the request's count
 * themselves (`size`); calling `set` to find out would set a cookie where it works.
 *
 * @example
 * ```ts
 * const readOnly = rendersOnly(await cookies()); // true in a Server Component
 * ```
 */
export function rendersOnly(jar: object): boolean {
  return "size" in jar;
}

/**
 * Whether Next sees the request as HTTPS: the protocol of the URL it computes
 * for the request, which is its `X-Forwarded-Proto` (Next sets it from the
 * connection when no proxy did, and keeps a proxy's). Next's own test
 * (next-server.ts, attachRequestMeta) is that it contains "https".
 *
 * @example
 * ```ts
 * const https = isNextHttps(await headers());
 * ```
 */
export function isNextHttps(headerList: { get(name: string): string | null }): boolean {
  return headerList.get("x-forwarded-proto")?.includes("https") === true;
}

/**
 * The Cookie header to open a request with. The raw header shows a name sent
 * twice (a cookie planted by a sibling subdomain counts as absent then), so
 * it is the base. But when Next renders the page after a Server Action in the
 * same request, the raw header is what the browser sent before the action,
 * and only `cookies()` shows what the action set. So a cookie the jar holds
 * with a value the browser did not send is taken from the jar, once; one the
 * jar no longer holds (Next could not read it) is left out; the rest stays
 * exactly as sent.
 *
 * @example
 * ```ts
 * cookieHeaderOf("a=1; b=2", { getAll: () => [{ name: "a", value: "1" }, { name: "b", value: "3" }] }); // "a=1; b=3"
 * ```
 */
export function cookieHeaderOf(raw: string | undefined, jar: NextCookieList): string | undefined {
  const current = new Map<string, string>();
  for (const { name, value } of jar.getAll()) current.set(name, value);
  const pairs: Array<{ name: string; value: string; text: string }> = [];
  const sent = new Map<string, string[]>();
  for (const piece of (raw ?? "").split(";")) {
    const text = piece.trim();
    const eq = text.indexOf("=");
    if (eq <= 0) continue;
    const pair = { name: text.slice(0, eq).trim(), value: text.slice(eq + 1).trim(), text };
    pairs.push(pair);
    sent.set(pair.name, [...(sent.get(pair.name) ?? []), pair.value]);
  }
  /** Next decodes values (`decodeURIComponent`); either form of a value the browser sent is unchanged. */
  const unchanged = (name: string): boolean => {
    const value = current.get(name);
    return value !== undefined && (sent.get(name) ?? []).some((text) => text === value || decoded(text) === value);
  };
  const header = pairs.filter((pair) => unchanged(pair.name)).map((pair) => pair.text);
  for (const [name, value] of current) if (!unchanged(name)) header.push(`${name}=${encodeURIComponent(value)}`);
  return header.length === 0 ? undefined : header.join("; ");
}

function decoded(text: string): string | undefined {
  try {
    return decodeURIComponent(text);
  } catch {
    return undefined;
  }
}

/**
 * The status of one of Next's control-flow throws: `redirect()`,
 * `permanentRedirect()`, `notFound()`, `forbidden()`, `unauthorized()`. They
 * are answers, not failures, so the request commits. `undefined` for any
 * other error. Next marks them by their `digest`: `NEXT_REDIRECT;type;url;status;`
 * (client/components/redirect-error.ts) and `NEXT_HTTP_ERROR_FALLBACK;status`.
 *
 * @example
 * ```ts
 * controlFlowStatus(Object.assign(new Error(), { digest: "NEXT_REDIRECT;push;/done;303;" })); // 303
 * ```
 */
export function controlFlowStatus(error: unknown): number | undefined {
  const digest = typeof error === "object" && error !== null ? (error as { digest?: unknown }).digest : undefined;
  if (typeof digest !== "string") return undefined;
  const parts = digest.split(";");
  if (parts[0] === "NEXT_REDIRECT") return statusOr(parts.at(-2), 307);
  if (parts[0] === "NEXT_HTTP_ERROR_FALLBACK") return statusOr(parts[1], 404);
  return undefined;
}

function statusOr(text: string | undefined, fallback: number): number {
  const status = Number(text);
  return Number.isInteger(status) && status >= 100 && status < 600 ? status : fallback;
}

/**
 * A Fetch `Request` standing for a Server Action or a render, which Next
 * gives no `Request`: its headers, for the `user` option, and its method, for
 * log lines. Next does not tell their path; the URL is the host's root.
 *
 * @example
 * ```ts
 * const request = requestOf(await headers(), https, "POST");
 * ```
 */
export function requestOf(headerList: Headers, https: boolean, method: "GET" | "POST"): Request {
  let url: URL;
  try {
    url = new URL(`${https ? "https" : "http"}://${headerList.get("host") ?? "localhost"}/`);
  } catch {
    url = new URL("http://localhost/"); // a Host header no URL can hold
  }
  return new Request(url, { method, headers: headerList });
}
