/**
 * The React Router, SvelteKit and Astro adapters (#15) without their
 * frameworks: each is called as its framework calls it (a Request in, a
 * Response out), so the translation onto the lifecycle is tested here and the
 * real apps in test/frameworks/ check the frameworks themselves.
 */
import { readFileSync } from "node:fs";
import type { IncomingMessage } from "node:http";
import { fileURLToPath } from "node:url";
import type { RequestEvent } from "@sveltejs/kit";
import type { APIContext } from "astro";
import { afterEach, describe, expect, it } from "vitest";
import { MemoryStore, clearCookieState, persist, persistSession, type PersistSessionOptions, type Sessions } from "../src/index.js";
import { createMiddleware as createAstroMiddleware } from "../src/adapters/astro.js";
import { createMiddleware as createRouterMiddleware } from "../src/adapters/react-router.js";
import { createHandle } from "../src/adapters/sveltekit.js";

const SECRET = "framework-adapters-secret-0123456789-abc";
const Tally = persist("framework-tally")(
  class Tally {
    count = 0;
  },
);

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const opened: Sessions[] = [];
const logged = { warnings: [] as string[], errors: [] as string[] };

function makeSessions(options: PersistSessionOptions = {}): Sessions {
  const sessions = persistSession({
    secret: SECRET,
    store: new MemoryStore(),
    sweepInterval: 0,
    logger: { warn: (message) => void logged.warnings.push(message), error: (message) => void logged.errors.push(message) },
    ...options,
  });
  opened.push(sessions);
  return sessions;
}

afterEach(async () => {
  await Promise.all(opened.splice(0).map((sessions) => sessions.close()));
  logged.warnings.length = 0;
  logged.errors.length = 0;
});

/** React Router's call: `middleware({ request, … }, next)`. */
function routerHandler(sessions: Sessions) {
  const middleware = createRouterMiddleware(sessions);
  return (request: Request, next: () => Promise<Response>) => middleware({ request } as Parameters<typeof middleware>[0], next) as Promise<Response>;
}

function cookieOf(response: Response): string | undefined {
  return response.headers.getSetCookie().find((line) => line.startsWith("framework-tally="));
}

/** The `name=value` pair of the tally cookie, for the next request. */
function pairOf(response: Response): string {
  const line = cookieOf(response);
  expect(line).toBeDefined();
  return line!.split(";")[0]!;
}

/** A Response whose body is written by `write` while it is read, as a framework streams a render. */
function streamed(write: (push: (text: string) => void) => Promise<void>, headers: HeadersInit = {}): Response {
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  const body = new ReadableStream<Uint8Array>({ start: (c) => void (controller = c) });
  const encoder = new TextEncoder();
  // A cancelled stream is closed already: what the writer does then goes nowhere.
  const settle = (end: () => void) => {
    try {
      end();
    } catch {}
  };
  write((text) => settle(() => controller.enqueue(encoder.encode(text)))).then(
    () => settle(() => controller.close()),
    (error: unknown) => settle(() => controller.error(error)),
  );
  return new Response(body, { headers });
}

async function increment(handle: (request: Request, next: () => Promise<Response>) => Promise<Response>, cookie?: string): Promise<Response> {
  const headers: Record<string, string> = cookie === undefined ? {} : { cookie };
  return handle(new Request("http://app.test/inc", { method: "POST", headers }), async () => {
    const tally = new Tally();
    tally.count += 1;
    return new Response(String(tally.count));
  });
}

describe("a framework request through the lifecycle (React Router middleware)", () => {
  it("should commit a POST at the returned Response: stored, and the cookie set", async () => {
    const handle = routerHandler(makeSessions());
    const first = await increment(handle);
    expect(cookieOf(first)).toMatch(/HttpOnly/i);
    const second = await increment(handle, pairOf(first));
    expect(await second.text()).toBe("2");
  });

  it("should open a GET read-only: it reads, and a change throws naming actions", async () => {
    const handle = routerHandler(makeSessions());
    const cookie = pairOf(await increment(handle));
    const read = await handle(new Request("http://app.test/", { headers: { cookie } }), async () => new Response(String(new Tally().count)));
    expect(await read.text()).toBe("1");
    expect(read.headers.getSetCookie()).toEqual([]);
    const write = handle(new Request("http://app.test/", { headers: { cookie } }), async () => {
      new Tally().count += 1;
      return new Response("changed");
    });
    await expect(write).rejects.toThrow(/cannot be changed here: this request only reads state\. Loaders and the page render \(GET and HEAD requests\) only read it: change it in an action/);
    expect(await (await increment(handle, cookie)).text()).toBe("2");
  });

  it("should give a new visitor's GET no record and no cookie, even where it creates state", async () => {
    const handle = routerHandler(makeSessions());
    const response = await handle(new Request("http://app.test/"), async () => new Response(String(new Tally().count)));
    expect(await response.text()).toBe("0");
    expect(response.headers.getSetCookie()).toEqual([]);
  });

  it("should keep a GET open until its body has been read, so what streams after the headers reads state", async () => {
    const handle = routerHandler(makeSessions());
    const cookie = pairOf(await increment(handle));
    const response = await handle(new Request("http://app.test/", { headers: { cookie } }), async () =>
      streamed(async (push) => {
        push("count=");
        await sleep(10); // after the Response went back to the framework
        push(String(new Tally().count));
      }),
    );
    expect(await response.text()).toBe("count=1");
  });

  it("should end a GET whose body is cancelled (the client left): later uses of state throw", async () => {
    const handle = routerHandler(makeSessions());
    let late: Promise<unknown> | undefined;
    const response = await handle(new Request("http://app.test/"), async () =>
      streamed(async (push) => {
        push("start");
        late = sleep(20).then(() => new Tally());
        await late.catch(() => undefined);
      }),
    );
    await response.body!.cancel();
    await expect(late).rejects.toThrow(/was called after the response was sent/);
  });

  it("should throw after the commit when a POST's streamed body changes state", async () => {
    const handle = routerHandler(makeSessions());
    let late: Promise<unknown> | undefined;
    const response = await handle(new Request("http://app.test/", { method: "POST" }), async () => {
      const tally = new Tally();
      tally.count += 1;
      late = sleep(10).then(() => (tally.count += 1));
      return streamed(async () => void (await late!.catch(() => undefined)));
    });
    await response.text();
    await expect(late).rejects.toThrow(/was changed after the response was sent/);
  });

  it("should store nothing of a 5xx or a thrown handler", async () => {
    const handle = routerHandler(makeSessions());
    const cookie = pairOf(await increment(handle));
    const failed = await handle(new Request("http://app.test/inc", { method: "POST", headers: { cookie } }), async () => {
      new Tally().count += 10;
      return new Response("down", { status: 503 });
    });
    expect(failed.headers.getSetCookie()).toEqual([]);
    await expect(
      handle(new Request("http://app.test/inc", { method: "POST", headers: { cookie } }), async () => {
        new Tally().count += 100;
        throw new Error("handler failed");
      }),
    ).rejects.toThrow("handler failed");
    expect(await (await increment(handle, cookie)).text()).toBe("2");
  });

  it("should commit for a thrown Response (a redirect) and send its cookies with it", async () => {
    const handle = routerHandler(makeSessions());
    const thrown = await handle(new Request("http://app.test/inc", { method: "POST" }), async () => {
      new Tally().count += 1;
      throw new Response(null, { status: 302, headers: { location: "/" } });
    }).catch((error: unknown) => error);
    expect(thrown).toBeInstanceOf(Response);
    expect(await (await increment(handle, pairOf(thrown as Response))).text()).toBe("2");
  });

  it("should answer 503 with Retry-After when an earlier request of the browser holds the lock past lockTimeout", async () => {
    const handle = routerHandler(makeSessions({ lockTimeout: 50 }));
    const cookie = pairOf(await increment(handle));
    let release!: () => void;
    const held = handle(new Request("http://app.test/slow", { method: "POST", headers: { cookie } }), async () => {
      new Tally().count += 1;
      await new Promise<void>((resolve) => (release = resolve));
      return new Response("slow");
    });
    await sleep(5);
    const waited = await increment(handle, cookie);
    expect(waited.status).toBe(503);
    expect(waited.headers.get("retry-after")).toBe("1");
    release();
    await held;
  });

  it("should reset through clearCookieState: the cookie expires", async () => {
    const handle = routerHandler(makeSessions());
    const cookie = pairOf(await increment(handle));
    const reset = await handle(new Request("http://app.test/reset", { method: "POST", headers: { cookie } }), async () => {
      await clearCookieState(new Tally());
      return new Response("reset");
    });
    expect(cookieOf(reset)).toMatch(/Max-Age=0/);
  });

  it("should set Secure from the request URL, and from X-Forwarded-Proto only with trustProxy", async () => {
    const plain = routerHandler(makeSessions());
    const post = (url: string, headers: Record<string, string> = {}) => new Request(url, { method: "POST", headers });
    const run = (handle: ReturnType<typeof routerHandler>, request: Request) => handle(request, async () => ((new Tally().count += 1), new Response("ok")));
    expect(cookieOf(await run(plain, post("http://app.test/")))).not.toMatch(/Secure/);
    expect(cookieOf(await run(plain, post("https://app.test/")))).toMatch(/; Secure/);
    expect(cookieOf(await run(plain, post("http://app.test/", { "x-forwarded-proto": "https" })))).not.toMatch(/Secure/);
    const proxied = routerHandler(makeSessions({ trustProxy: true }));
    expect(cookieOf(await run(proxied, post("http://app.test/", { "x-forwarded-proto": "https" })))).toMatch(/; Secure/);
    expect(cookieOf(await run(proxied, post("https://app.test/", { "x-forwarded-proto": "http" })))).not.toMatch(/Secure/);
  });

  it("should refuse what persistSession() did not return", () => {
    expect(() => createRouterMiddleware({} as Sessions)).toThrow(TypeError);
  });
});

describe("SvelteKit handle", () => {
  const saved = { ORIGIN: process.env.ORIGIN, PROTOCOL_HEADER: process.env.PROTOCOL_HEADER };
  afterEach(() => {
    for (const [name, value] of Object.entries(saved)) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  });

  /** adapter-node's event: its URL (https when it guessed), and `platform.req`, the IncomingMessage. */
  function nodeEvent(url: string, { encrypted = false, headers = {} as Record<string, string> } = {}): RequestEvent {
    const request = new Request(url, { method: "POST", headers });
    const req = { headers, socket: { encrypted } } as unknown as IncomingMessage;
    return { url: new URL(url), request, platform: { req } } as unknown as RequestEvent;
  }

  async function secureOf(handle: ReturnType<typeof createHandle>, event: RequestEvent): Promise<boolean> {
    const response = await handle({
      event,
      resolve: async () => {
        new Tally().count += 1;
        return new Response("ok");
      },
    });
    return /; Secure/.test(cookieOf(response) ?? "");
  }

  it("should not believe adapter-node's https when neither ORIGIN nor PROTOCOL_HEADER says so, and warn once", async () => {
    delete process.env.ORIGIN;
    delete process.env.PROTOCOL_HEADER;
    const handle = createHandle(makeSessions());
    expect(await secureOf(handle, nodeEvent("https://127.0.0.1:3000/"))).toBe(false);
    expect(await secureOf(handle, nodeEvent("https://127.0.0.1:3000/"))).toBe(false);
    expect(logged.warnings.filter((line) => line.includes("adapter-node reports https"))).toHaveLength(1);
    expect(await secureOf(handle, nodeEvent("https://127.0.0.1:3000/", { encrypted: true }))).toBe(true);
  });

  it("should believe event.url where ORIGIN or the PROTOCOL_HEADER of the request speaks", async () => {
    const handle = createHandle(makeSessions());
    process.env.ORIGIN = "https://app.example";
    expect(await secureOf(handle, nodeEvent("https://app.example/"))).toBe(true);
    delete process.env.ORIGIN;
    process.env.PROTOCOL_HEADER = "X-Forwarded-Proto";
    expect(await secureOf(handle, nodeEvent("https://app.example/", { headers: { "x-forwarded-proto": "https" } }))).toBe(true);
    expect(await secureOf(handle, nodeEvent("http://app.example/", { headers: { "x-forwarded-proto": "http" } }))).toBe(false);
    expect(await secureOf(handle, nodeEvent("https://app.example/"))).toBe(false); // the header is missing: adapter-node guessed
  });

  it("should believe event.url without adapter-node (the dev server), and an `https` option over both", async () => {
    const devEvent = (url: string) => ({ url: new URL(url), request: new Request(url, { method: "POST" }), platform: undefined }) as unknown as RequestEvent;
    expect(await secureOf(createHandle(makeSessions()), devEvent("http://localhost:5173/"))).toBe(false);
    expect(await secureOf(createHandle(makeSessions()), devEvent("https://localhost:5173/"))).toBe(true);
    expect(await secureOf(createHandle(makeSessions(), { https: () => true }), devEvent("http://localhost:5173/"))).toBe(true);
  });
});

describe("Astro middleware", () => {
  function astroContext(request: Request, isPrerendered = false): APIContext {
    return { request, url: new URL(request.url), isPrerendered } as unknown as APIContext;
  }

  it("should leave prerendered pages alone: no request opened, the headers never read", async () => {
    const middleware = createAstroMiddleware(makeSessions());
    const request = new Request("http://localhost/");
    Object.defineProperty(request, "headers", { get: () => expect.unreachable("headers of a prerendered page were read") });
    const response = await middleware(astroContext(request, true), async () => new Response("static"));
    expect(await (response as Response).text()).toBe("static");
  });

  it("should render a POST page in full before the commit, so a late component's change is stored", async () => {
    const middleware = createAstroMiddleware(makeSessions());
    const page = () =>
      streamed(
        async (push) => {
          push("<p>");
          await sleep(10); // a component rendering after the middleware got the Response
          const tally = new Tally();
          tally.count += 1;
          push(`${tally.count}</p>`);
        },
        { "content-type": "text/html" },
      );
    const first = (await middleware(astroContext(new Request("http://localhost/", { method: "POST" })), async () => page())) as Response;
    expect(await first.text()).toBe("<p>1</p>");
    const second = (await middleware(astroContext(new Request("http://localhost/", { method: "POST", headers: { cookie: pairOf(first) } })), async () => page())) as Response;
    expect(await second.text()).toBe("<p>2</p>");
  });

  it("should fail a POST page whose component fails, storing nothing", async () => {
    const middleware = createAstroMiddleware(makeSessions());
    const failing = middleware(astroContext(new Request("http://localhost/", { method: "POST" })), async () =>
      streamed(
        async () => {
          new Tally().count += 1;
          await sleep(5);
          throw new Error("component failed");
        },
        { "content-type": "text/html" },
      ),
    );
    await expect(failing).rejects.toThrow("component failed");
  });
});

describe("the framework entries", () => {
  it.each([
    ["persist-session/react-router", "react-router"],
    ["persist-session/sveltekit", "@sveltejs/kit"],
    ["persist-session/astro", "astro"],
  ])("should resolve %s to built JavaScript with types that loads nothing of %s", (entry, framework) => {
    const resolved = import.meta.resolve(entry);
    expect(resolved).toMatch(/\/dist\/adapters\/[a-z-]+\.js$/);
    const code = readFileSync(fileURLToPath(resolved), "utf8");
    expect(code).not.toMatch(new RegExp(`^import[^\\n]* from "${framework}`, "m"));
    expect(code).toMatch(/^import [^\n]* from "\.\/web-framework\.js";$/m);
    expect(readFileSync(fileURLToPath(resolved).replace(/\.js$/, ".d.ts"), "utf8")).toContain(`from "${framework}"`);
  });
});
