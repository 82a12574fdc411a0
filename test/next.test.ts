// persist-session/next without a Next server: `next/headers` is replaced by what Next's own
// classes give each kind of request (a render: the request's cookies, sealed; a Server Action:
// the response's cookies; the render after an action: the request's cookies Next rebuilt from
// what the action set). The real app is test/frameworks/next, run by test/frameworks/run.mjs.
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeEach, describe, expect, it, vi } from "vitest";
import { RequestCookies } from "next/dist/server/web/spec-extension/cookies.js";
import { MutableRequestCookiesAdapter, RequestCookiesAdapter, responseCookiesToRequestCookies } from "next/dist/server/web/spec-extension/adapters/request-cookies.js";
import { clearCookieState, FileStore, MemoryStore, persist, persistSession } from "../src/index.js";
import { nextState } from "../src/next.js";
import { controlFlowStatus, cookieHeaderOf, isNextHttps, rendersOnly } from "../src/adapters/next-request.js";

const next = vi.hoisted(() => ({ jar: undefined as unknown, headers: new Headers() }));
vi.mock("next/headers.js", () => ({ cookies: async () => next.jar, headers: async () => next.headers }));

const SECRET = "next-adapter-secret-0123456789-abcdefghij";
const KEY = "next-test-counter";
const READ_ONLY_ERROR =
  "persist-session: NextCounter.count cannot be changed here: this request only reads state. Server Components only read state: change it in a Server Action or a Route Handler.";

const Counter = persist(KEY)(
  class NextCounter {
    count = 0;
  },
);

const dir = mkdtempSync(join(tmpdir(), "persist-session-next-"));
const store = join(dir, "store");
const sessions = persistSession({ secret: SECRET, store: new FileStore({ dir: store }), sweepInterval: 0 });
const withState = nextState(sessions);
afterAll(async () => {
  await sessions.close();
  rmSync(dir, { recursive: true, force: true });
});

const records = () => {
  try {
    return readdirSync(store).filter((name) => /^[0-9a-f-]{36}$/.test(name)).length;
  } catch {
    return 0;
  }
};

type Jar = ReturnType<typeof MutableRequestCookiesAdapter.wrap>;

/** What Next gives a Server Action: the response's cookies, which it sends. */
function actionRequest(cookie?: string, headers: Record<string, string> = {}): Jar {
  next.headers = new Headers({ host: "app.test", "x-forwarded-proto": "http", "next-action": "0abc", ...(cookie === undefined ? {} : { cookie }), ...headers });
  const jar = MutableRequestCookiesAdapter.wrap(new RequestCookies(next.headers));
  next.jar = jar;
  return jar;
}

/** What Next gives a Server Component render: the request's cookies, sealed. */
function renderRequest(cookie?: string): void {
  next.headers = new Headers({ host: "app.test", "x-forwarded-proto": "http", ...(cookie === undefined ? {} : { cookie }) });
  next.jar = RequestCookiesAdapter.seal(new RequestCookies(next.headers));
}

/** The browser's Cookie header after an action set `jar`. */
function cookieAfter(jar: Jar): string {
  const cookie = jar.get(KEY);
  expect(cookie).toBeDefined();
  return `${KEY}=${cookie!.value}`;
}

const increment = withState(async () => ++new Counter().count);
const read = withState(async () => new Counter().count);
const change = withState(async () => {
  new Counter().count += 1;
});

describe("persist-session/next", () => {
  let cookie: string;
  beforeEach(async () => {
    const jar = actionRequest();
    expect(await increment()).toBe(1);
    cookie = cookieAfter(jar);
  });

  it("stores a Server Action's change and sets its cookie through next/headers: HttpOnly, SameSite=Lax, Secure as X-Forwarded-Proto says", async () => {
    const jar = actionRequest();
    expect(await increment()).toBe(1);
    expect(jar.get(KEY)).toMatchObject({ httpOnly: true, sameSite: "lax", secure: false, path: "/" });
    // A change of that record is stored under the same cookie.
    const again = actionRequest(cookieAfter(jar));
    expect(await increment()).toBe(2);
    expect(again.get(KEY)?.value).toBe(jar.get(KEY)!.value);
    const overHttps = actionRequest(undefined, { "x-forwarded-proto": "https" });
    await increment();
    expect(overHttps.get(KEY)).toMatchObject({ httpOnly: true, sameSite: "lax", secure: true });
  });

  it("lets a Server Component read the state, and a change there throws naming Server Actions and Route Handlers, storing nothing", async () => {
    renderRequest(cookie);
    expect(await read()).toBe(1);
    await expect(change()).rejects.toThrow(READ_ONLY_ERROR);
    await expect(withState(async () => clearCookieState(new Counter()))()).rejects.toThrow(
      "persist-session: clearCookieState() cannot be changed here: this request only reads state. Server Components only read state",
    );
    actionRequest(cookie);
    expect(await read()).toBe(1);
  });

  it("never creates a record or a cookie in a render, not even for a change a new visitor's render tries", async () => {
    const before = records();
    renderRequest();
    expect(await read()).toBe(0);
    await expect(change()).rejects.toThrow(READ_ONLY_ERROR);
    expect(records()).toBe(before);
  });

  it("shows the page Next renders after an action, in the same request, the cookie the action set", async () => {
    const jar = actionRequest();
    expect(await increment()).toBe(1);
    // Next's synchronizeMutableCookies: the render's cookies are what the action left; the raw header is unchanged.
    next.jar = RequestCookiesAdapter.seal(responseCookiesToRequestCookies(jar));
    expect(await read()).toBe(1);
  });

  it("stores the change of an action that ends in redirect() or notFound(), and nothing of one that throws", async () => {
    const redirect = Object.assign(new Error("NEXT_REDIRECT"), { digest: "NEXT_REDIRECT;push;/done;303;" });
    actionRequest(cookie);
    await expect(
      withState(async () => {
        new Counter().count += 1;
        throw redirect;
      })(),
    ).rejects.toBe(redirect);
    actionRequest(cookie);
    await expect(
      withState(async () => {
        new Counter().count += 1;
        throw new Error("the payment failed");
      })(),
    ).rejects.toThrow("the payment failed");
    expect(await read()).toBe(2);
  });

  it("runs a Route Handler (a Request first) as sessions.fetch does: Set-Cookie on its Response, Secure from Next's URL", async () => {
    const POST = withState(async (request: Request) => Response.json({ count: ++new Counter().count, path: new URL(request.url).pathname }));
    const response = await POST(new Request("https://app.test/api/count", { method: "POST", headers: { cookie } }));
    expect(await response.json()).toEqual({ count: 2, path: "/api/count" });
    expect(response.headers.getSetCookie()[0]).toMatch(new RegExp(`^${KEY}=.*; HttpOnly; Secure; SameSite=Lax$`));
  });

  it("runs a wrapped function that another calls in the caller's request: no second lock, one cookie", async () => {
    const jar = actionRequest(cookie);
    const twice = withState(async () => {
      await change();
      await change();
      return new Counter().count;
    });
    expect(await twice()).toBe(3);
    expect(jar.getAll().filter((set) => set.name === KEY)).toHaveLength(1);
  });

  it("refuses at start-up what cannot work in Next: a MemoryStore, something else than sessions, the Edge runtime", () => {
    const memory = persistSession({ secret: SECRET, store: new MemoryStore(), sweepInterval: 0 });
    expect(() => nextState(memory)).toThrow(/^persist-session: nextState\(\) needs a store every module graph of the app reaches: the FileStore \(the default\) or a RedisStore\./);
    expect(() => nextState({} as never)).toThrow(new TypeError("persist-session: nextState() expects what persistSession() returns: nextState(persistSession({ secret }))."));
    vi.stubEnv("NEXT_RUNTIME", "edge");
    try {
      expect(() => nextState(sessions)).toThrow(/^persist-session: the Edge runtime cannot run persist-session: .* Use it on the Node\.js runtime/);
    } finally {
      vi.unstubAllEnvs();
    }
    return memory.close();
  });
});

describe("reading Next's request", () => {
  it("tells a render's cookies (sealed request cookies) from an action's (the response's)", () => {
    expect(rendersOnly(RequestCookiesAdapter.seal(new RequestCookies(new Headers({ cookie: "a=1" }))))).toBe(true);
    expect(rendersOnly(MutableRequestCookiesAdapter.wrap(new RequestCookies(new Headers({ cookie: "a=1" }))))).toBe(false);
  });

  it.each([
    ["http", false],
    ["https", true],
    ["https,http", true],
    [undefined, false],
  ])("sees X-Forwarded-Proto %s as https: %s, as Next computes the request's URL", (proto, https) => {
    expect(isNextHttps(new Headers(proto === undefined ? {} : { "x-forwarded-proto": proto }))).toBe(https);
  });

  const jar = (cookies: Record<string, string>) => ({ getAll: () => Object.entries(cookies).map(([name, value]) => ({ name, value })) });
  it.each([
    ["nothing sent, nothing set", undefined, {}, undefined],
    ["the header as sent when the jar agrees", "a=1; b=x%20y", { a: "1", b: "x y" }, "a=1; b=x%20y"],
    ["a name sent twice stays twice (cookie tossing)", "k=old; k=planted", { k: "planted" }, "k=old; k=planted"],
    ["a value the action set replaces every one sent", "k=old; k=planted; a=1", { k: "new", a: "1" }, "a=1; k=new"],
    ["a cookie the action added is appended, encoded", "a=1", { a: "1", k: "v;w" }, "a=1; k=v%3Bw"],
    ["one the action deleted is empty", "a=1; k=old", { a: "1", k: "" }, "a=1; k="],
    ["one Next could not read is left out", "a=1; b=%zz", { a: "1" }, "a=1"],
  ])("builds the Cookie header to open: %s", (_name, raw, cookies, header) => {
    expect(cookieHeaderOf(raw, jar(cookies))).toBe(header);
  });

  it.each([
    ["redirect()", 307, "NEXT_REDIRECT;replace;/a;b;307;"],
    ["permanentRedirect()", 308, "NEXT_REDIRECT;push;/a;308;"],
    ["a Server Action's redirect()", 303, "NEXT_REDIRECT;push;/done;303;"],
    ["notFound()", 404, "NEXT_HTTP_ERROR_FALLBACK;404"],
    ["forbidden()", 403, "NEXT_HTTP_ERROR_FALLBACK;403"],
    ["a dynamic-usage bail-out", undefined, "DYNAMIC_SERVER_USAGE"],
    ["an error of the app", undefined, undefined],
  ])("reads %s as an answer with status %s", (_name, status, digest) => {
    expect(controlFlowStatus(Object.assign(new Error("x"), digest === undefined ? {} : { digest }))).toBe(status);
  });
});
