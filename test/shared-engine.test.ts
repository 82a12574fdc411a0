// One engine per FileStore directory per process, whichever copy of the package asks.
// Next.js loads an app's modules once per module graph, each graph with its own copy of
// persist-session (issue #15: 20 concurrent increments through two copies ended at +10).
// Two copies of the built package stand in for two graphs: dist/ copied twice, so that
// every module of each is its own, under a node_modules folder, so that Node loads them
// as it loads a package (vitest leaves those alone).
import { cpSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { readdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";

type Api = typeof import("../src/index.js");

const SECRET = "shared-engine-secret-0123456789-abcdefgh";
const kCore = Symbol.for("persist-session.core.v1");
const ROOT = fileURLToPath(new URL("..", import.meta.url));
/** Inside the repository, so the copies resolve cookie, devalue and uuid from its node_modules. */
const COPIES = join(ROOT, "test", ".generated", "shared-engine", "node_modules");

let a: Api;
let b: Api;
let dir: string;
const open: Array<{ close(): Promise<void> }> = [];

beforeAll(async () => {
  rmSync(join(COPIES, ".."), { recursive: true, force: true });
  for (const name of ["a", "b"]) {
    cpSync(join(ROOT, "dist"), join(COPIES, name), { recursive: true });
    writeFileSync(join(COPIES, name, "package.json"), JSON.stringify({ name, type: "module" }));
  }
  a = (await import(join(COPIES, "a", "index.js"))) as Api;
  b = (await import(join(COPIES, "b", "index.js"))) as Api;
});
afterAll(() => rmSync(join(COPIES, ".."), { recursive: true, force: true }));
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "persist-session-shared-"));
});
afterEach(async () => {
  await Promise.all(open.splice(0).map((sessions) => sessions.close()));
  rmSync(dir, { recursive: true, force: true });
});

function start(api: Api, options: Parameters<Api["persistSession"]>[0] = {}) {
  const sessions = api.persistSession({ secret: SECRET, store: new api.FileStore({ dir }), sweepInterval: 0, ...options });
  open.push(sessions);
  return sessions;
}

/**
 * 20 concurrent read-await-write increments of one browser, alternating between the two
 * `persistSession()` results: every one counts (+20) only if they share one engine.
 */
async function expectTwentyIncrements(both: ReturnType<typeof start>[], Counter: new () => { count: number }): Promise<void> {
  const handlers = both.map((sessions) =>
    sessions.fetch(async (request) => {
      const counter = new Counter();
      if (request.method === "POST") {
        const seen = counter.count;
        await new Promise((resolve) => setImmediate(resolve)); // the other one's requests run meanwhile
        counter.count = seen + 1;
      }
      return new Response(String(counter.count));
    }),
  );
  const post = (i: number, cookie?: string) => handlers[i % 2]!(new Request("http://localhost/", { method: "POST", headers: cookie === undefined ? {} : { cookie } }));
  const cookie = (await post(0)).headers.getSetCookie()[0]!.split(";")[0]!;
  const counts = await Promise.all(Array.from({ length: 20 }, (_, i) => post(i, cookie).then((response) => response.text())));
  expect(counts.map(Number).sort((x, y) => x - y)).toEqual(Array.from({ length: 20 }, (_, i) => i + 2));
  for (const handler of handlers) expect(await (await handler(new Request("http://localhost/", { headers: { cookie } }))).text()).toBe("21");
}

describe("two copies of the package in one process", () => {
  it("are separate copies: each has its own classes", () => {
    expect(a.FileStore).not.toBe(b.FileStore);
    expect(a.persistSession).not.toBe(b.persistSession);
  });

  it("share one engine per store directory: 20 concurrent increments through both end at +20", async () => {
    const Counter = a.persist("shared-engine-counter")(
      class Counter {
        count = 0;
      },
    );
    await expectTwentyIncrements([start(a), start(b)], Counter);
    expect((await readdir(dir)).filter((name) => /^[0-9a-f-]{36}$/.test(name))).toHaveLength(1);
  });

  it("are served by the engine of the copy that came first, which closes with the last of them", async () => {
    const first = start(a);
    const second = start(b);
    const core = (first as unknown as Record<symbol, unknown>)[kCore];
    expect(core).toBeDefined();
    expect((second as unknown as Record<symbol, unknown>)[kCore]).toBe(core);
    await first.close();
    // Still open for the other copy.
    const response = await second.fetch(async () => new Response("served"))(new Request("http://localhost/"));
    expect(await response.text()).toBe("served");
    await second.close();
    const third = start(b);
    expect((third as unknown as Record<symbol, unknown>)[kCore]).not.toBe(core);
  });

  it("refuses a second copy's persistSession() on the directory with other options, naming the option", () => {
    start(a);
    expect(() => start(b, { ttl: 60 })).toThrow(/persist-session: the store .* is served already by another persistSession\(\) in this process \(of another copy of persist-session\), with another option ttl\./);
    expect(() => start(b, { secret: "another-secret-0123456789-abcdefghijkl" })).toThrow(/with another option secret\./);
  });

  it("keep apart what is not on a directory", () => {
    const memory = [a.persistSession({ secret: SECRET, store: new a.MemoryStore(), sweepInterval: 0 }), b.persistSession({ secret: SECRET, store: new b.MemoryStore(), sweepInterval: 0 })];
    open.push(...memory);
    expect((memory[0] as unknown as Record<symbol, unknown>)[kCore]).not.toBe((memory[1] as unknown as Record<symbol, unknown>)[kCore]);
  });
});

// #17, point 2: the same copy opening one directory twice (two modules of an app, or one module
// evaluated again by a dev server's reload) had two engines, and lost updates like two copies did.
describe("two persistSession() calls of one copy on one directory", () => {
  const counter = (api: Api, key: string) =>
    api.persist(key)(
      class Counter {
        count = 0;
      },
    );

  it("share one engine: 20 concurrent increments through both end at +20", async () => {
    const Counter = counter(a, "same-copy-counter");
    await expectTwentyIncrements([start(a), start(a)], Counter);
  });

  it("close the engine with the last of them, and a restart after that gets a new one that reads the directory", async () => {
    const Counter = counter(a, "same-copy-restart");
    const first = start(a);
    const second = start(a);
    expect((second as unknown as Record<symbol, unknown>)[kCore]).toBe((first as unknown as Record<symbol, unknown>)[kCore]);
    const bump = (sessions: ReturnType<typeof start>, cookie?: string) =>
      sessions.fetch(async () => new Response(String(++new Counter().count)))(new Request("http://localhost/", { headers: cookie === undefined ? {} : { cookie } }));
    const cookie = (await bump(first)).headers.getSetCookie()[0]!.split(";")[0]!;
    await first.close();
    expect(await (await bump(second, cookie)).text()).toBe("2");
    await second.close();
    const restarted = start(a);
    expect((restarted as unknown as Record<symbol, unknown>)[kCore]).not.toBe((first as unknown as Record<symbol, unknown>)[kCore]);
    expect(await (await bump(restarted, cookie)).text()).toBe("3");
  });

  it("refuses the second with other options, naming the directory and the option", () => {
    start(a);
    expect(() => start(a, { ttl: 60 })).toThrow(`persist-session: the store ${dir} is served already by another persistSession() in this process, with another option ttl. `);
  });
});
