/**
 * Limits and a failing disk: an oversize state, too many cookies, and a store
 * that cannot write each fail cleanly: a 500 with a message in the log, the
 * stored record untouched, and the next request working from what is stored.
 */
import { execFileSync } from "node:child_process";
import type http from "node:http";
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeEach, describe, expect, it } from "vitest";
import { FileStore, MemoryStore, persist, persistSession, type PersistSessionOptions, type SessionStore, type Sessions } from "../src/index.js";
import * as standard from "./fixtures/standard.js";
import { Browser, fromFetch, listen, stopAll, type TestServer } from "./helpers/http.js";
import { capturingLogger, delay, eventually, type CapturingLogger } from "./helpers/robustness.js";
import { wrapStore } from "./helpers/wrap-store.js";
import { storeKinds, type StoreBacking } from "./helpers/stores.js";
import { SECRET, type AdapterName } from "./suites/behaviour.js";

const MIB = 1024 * 1024;
const ADAPTERS = ["node:http", "fetch"] as const satisfies readonly AdapterName[];

/** Twenty classes, each its own cookie: more than the default cap of 16. */
const MANY = Array.from({ length: 20 }, (_, i) => {
  const name = `Many${String(i).padStart(2, "0")}`;
  const Class = { [name]: class {
    visits = 0;
  } }[name]!;
  return { key: `many-${String(i).padStart(2, "0")}`, Class: persist(`many-${String(i).padStart(2, "0")}`)(Class) };
});

type Route = (url: URL) => Promise<unknown> | unknown;

/** The routes these tests use; each runs inside the request. */
const route: Route = (url) => {
  if (url.pathname === "/many") {
    return Object.fromEntries(
      MANY.map(({ key, Class }) => {
        const instance = new Class();
        instance.visits += 1;
        return [key, instance.visits];
      }),
    );
  }
  const state = new standard.AppState();
  switch (url.pathname) {
    case "/inc":
      state.count += 1;
      break;
    case "/big":
      // Changed, then grown past the limit: neither change may be stored.
      state.count += 1;
      state.todos.push("x".repeat(Number(url.searchParams.get("bytes"))));
      break;
  }
  return { count: state.count, todos: state.todos.map((todo) => (todo.length > 40 ? `${todo.length} bytes` : todo)) };
};

function listener(adapter: AdapterName, sessions: Sessions): http.RequestListener {
  if (adapter === "fetch") {
    return fromFetch(sessions.fetch(async (request: Request) => Response.json(await route(new URL(request.url)))));
  }
  return (req, res) =>
    sessions(req, res, async () => {
      const body = JSON.stringify(await route(new URL(req.url ?? "/", "http://localhost")));
      res.writeHead(200, { "content-type": "application/json" });
      res.end(body);
    });
}

/** A store that forwards to `store`; `set` and `delete` fail with `failure` while it is set. */
function failingStore(store: SessionStore) {
  const wrapper = wrapStore(store, {
    failure: undefined as NodeJS.ErrnoException | undefined,
    gets: 0,
    get: (...args: Parameters<SessionStore["get"]>) => {
      wrapper.gets++;
      return store.get(...args);
    },
    set: async (...args: Parameters<SessionStore["set"]>) => {
      if (wrapper.failure !== undefined) throw wrapper.failure;
      return store.set(...args);
    },
    delete: async (...args: Parameters<SessionStore["delete"]>) => {
      if (wrapper.failure !== undefined) throw wrapper.failure;
      return store.delete(...args);
    },
  });
  return wrapper;
}

const errno = (code: string, message: string): NodeJS.ErrnoException => Object.assign(new Error(`${code}: ${message}`), { code });

for (const kind of storeKinds) {
  for (const adapter of ADAPTERS) {
    describe(`limits · ${kind.name} · ${adapter}`, () => {
      let backing: StoreBacking;
      let logger: CapturingLogger;
      const running: Array<{ server: TestServer; sessions: Sessions }> = [];
      const start = async (options: PersistSessionOptions = {}, store: SessionStore = backing.open()) => {
        const sessions = persistSession({ secret: SECRET, store, logger, sweepInterval: 0, ...options });
        const server = await listen(listener(adapter, sessions));
        running.push({ server, sessions });
        return { server, sessions, store, browser: () => new Browser(server.url) };
      };
      /** The app restarted on the same storage: what runs is stopped first, as a restart does (one engine per FileStore directory, #17). */
      const restart = async () => {
        await stopAll(running);
        return start();
      };
      /** The one stored record, as the store holds it now. */
      const storedRecord = async (store: SessionStore) => {
        const ids = await backing.ids();
        expect(ids).toHaveLength(1);
        return { id: ids[0]!, record: await store.get(ids[0]!) };
      };

      beforeEach(async () => {
        backing = await kind.create();
        logger = capturingLogger();
      });
      afterEach(async () => {
        await stopAll(running);
        await backing.cleanup();
      });

      it.each([
        ["the default 1 MiB limit", undefined, MIB + 1],
        ["a 300-byte maxRecordBytes", 300, 400],
      ] as const)("fails a commit over %s with a 500, writes nothing, and serves the stored state next", async (_name, maxRecordBytes, bytes) => {
        const app = await start(maxRecordBytes === undefined ? {} : { maxRecordBytes });
        const browser = app.browser();
        expect(await browser.json("/inc", { method: "POST" })).toEqual({ count: 1, todos: [] });
        const before = await storedRecord(app.store);

        const response = await browser.request(`/big?bytes=${bytes}`, { method: "POST" });
        expect(response.status).toBe(500);
        expect(await response.text()).toBe("Internal Server Error\n");
        const limit = maxRecordBytes ?? MIB;
        expect(logger.errors).toEqual([expect.stringMatching(new RegExp(`^persist-session: AppState's state is \\d+ bytes, over the ${limit}-byte limit\\. .*maxRecordBytes`))]);

        // Nothing written: the record is what it was.
        expect(await storedRecord(app.store)).toEqual(before);
        // The next request sees the stored state, not the oversized one left in memory.
        expect(await browser.json("/state")).toEqual({ count: 1, todos: [] });
        expect(await browser.json("/inc", { method: "POST" })).toEqual({ count: 2, todos: [] });
        const restarted = await restart();
        const again = restarted.browser();
        for (const [name, value] of browser.cookies) again.cookies.set(name, value);
        expect(await again.json("/state")).toEqual({ count: 2, todos: [] });
      });

      it("stores a state of exactly maxRecordBytes and refuses one byte more", async () => {
        // Measure the size of a state with a todo of n bytes, then set the limit to it.
        const measure = await start();
        const probe = measure.browser();
        await probe.json("/big?bytes=100", { method: "POST" });
        const { record } = await storedRecord(measure.store);
        const limit = Buffer.byteLength(record!.data) + 50;
        await backing.cleanup();
        backing = await kind.create();

        const app = await start({ maxRecordBytes: limit });
        const browser = app.browser();
        expect((await browser.request("/big?bytes=150", { method: "POST" })).status).toBe(200);
        expect(Buffer.byteLength((await storedRecord(app.store)).record!.data)).toBe(limit);
        expect((await browser.request("/big?bytes=1", { method: "POST" })).status).toBe(500);
        expect(await browser.json("/state")).toEqual({ count: 1, todos: ["150 bytes"] });
      });

      it.each([
        ["the default cap of 16", undefined, 16],
        ["maxCookies: 3", 3, 3],
      ] as const)("honours only %s signed cookies per request", async (_name, maxCookies, cap) => {
        const store = failingStore(backing.open());
        const app = await start(maxCookies === undefined ? {} : { maxCookies }, store);
        const browser = app.browser();
        expect(await browser.json("/many", { method: "POST" })).toEqual(Object.fromEntries(MANY.map(({ key }) => [key, 1])));
        expect(browser.cookies.size).toBe(MANY.length);

        // Cookies that are not ours do not count; of ours, the first `cap` in the header are honoured.
        const junk = Array.from({ length: 40 }, (_, i) => `junk${i}=${"z".repeat(80)}`).join("; ");
        const ours = MANY.map(({ key }) => `${key}=${browser.cookies.get(key)}`).join("; ");
        store.gets = 0;
        const response = await browser.request("/many", { method: "POST", cookie: `${junk}; ${ours}` });
        expect(response.status).toBe(200);
        const visits = (await response.json()) as Record<string, number>;
        expect(visits).toEqual(Object.fromEntries(MANY.map(({ key }, i) => [key, i < cap ? 2 : 1])));
        // The ignored ones were never read.
        expect(store.gets).toBeLessThanOrEqual(cap);
        expect(logger.errors).toEqual([]);
      });

      it.each([
        ["the disk is full", "ENOSPC", "no space left on device, write"],
        ["the file system is read-only", "EROFS", "read-only file system, open"],
      ] as const)("fails a write with a 500 when %s, keeps the stored record, and recovers", async (_name, code, message) => {
        const store = failingStore(backing.open());
        const app = await start({}, store);
        const browser = app.browser();
        expect(await browser.json("/inc", { method: "POST" })).toEqual({ count: 1, todos: [] });
        const before = await storedRecord(app.store);

        store.failure = errno(code, message);
        for (let i = 0; i < 2; i++) {
          const response = await browser.request("/inc", { method: "POST" });
          expect(response.status).toBe(500);
        }
        expect(logger.errors).toHaveLength(2);
        expect(logger.errors[0]).toMatch(new RegExp(`^persist-session: .*${code}`));
        expect(await storedRecord(app.store)).toEqual(before);
        // Reading needs no write: it still works, from the stored state.
        expect(await browser.json("/state")).toEqual({ count: 1, todos: [] });

        store.failure = undefined;
        expect(await browser.json("/inc", { method: "POST" })).toEqual({ count: 2, todos: [] });
        const restarted = await restart();
        const again = restarted.browser();
        for (const [name, value] of browser.cookies) again.cookies.set(name, value);
        expect(await again.json("/state")).toEqual({ count: 2, todos: [] });
      });
    });
  }
}

/**
 * A handler does not know its response failed at the commit: what it writes
 * afterwards must go nowhere, not crash the process with a write after end
 * (node:http) or keep a streaming body running unread (Fetch).
 */
describe.each([
  ["the state is over maxRecordBytes", "oversize"],
  ["the store cannot write", "store"],
] as const)("a response that fails while its handler still writes, because %s", (_name, cause) => {
  let logger: CapturingLogger;
  let store: ReturnType<typeof failingStore>;
  const running: Array<{ server: TestServer; sessions: Sessions }> = [];
  const start = async (listen_: (sessions: Sessions) => http.RequestListener) => {
    const sessions = persistSession({ secret: SECRET, store, logger, sweepInterval: 0, maxRecordBytes: 1000 });
    const server = await listen(listen_(sessions));
    running.push({ server, sessions });
    return new Browser(server.url);
  };
  const change = () => {
    const state = new standard.AppState();
    state.count += 1;
    if (cause === "oversize") state.todos.push("x".repeat(2000));
  };

  beforeEach(() => {
    logger = capturingLogger();
    store = failingStore(new MemoryStore());
    if (cause === "store") store.failure = errno("ENOSPC", "no space left on device, write");
  });
  afterEach(async () => {
    await stopAll(running);
  });

  it("node:http: answers 500, drops the handler's later writes, and keeps serving", async () => {
    let finished = false;
    const browser = await start((sessions) => (req, res) =>
      sessions(req, res, async () => {
        if (req.url === "/hello") return void res.end("hello");
        change();
        res.writeHead(200, { "content-type": "text/plain" });
        res.write("a");
        await delay(30);
        res.write("b");
        res.writeHead(201);
        res.flushHeaders();
        res.end("c", () => (finished = true));
      }),
    );
    const response = await browser.request("/stream", { method: "POST" });
    expect(response.status).toBe(500);
    expect(await response.text()).toBe("Internal Server Error\n");
    expect(logger.errors).toEqual([expect.stringMatching(cause === "oversize" ? /over the 1000-byte limit/ : /ENOSPC/)]);
    // The handler's end() callback still runs; the process is still up and serving.
    await eventually(() => finished, "the handler's end callback");
    expect(await (await browser.request("/hello")).text()).toBe("hello");
  });

  it("fetch: answers 500 and cancels the handler's streaming body", async () => {
    let cancelled = false;
    let timer: NodeJS.Timeout | undefined;
    const browser = await start((sessions) =>
      fromFetch(
        sessions.fetch(async () => {
          change();
          const body = new ReadableStream<string>({
            start(controller) {
              timer = setInterval(() => controller.enqueue("tick\n"), 5);
            },
            cancel() {
              cancelled = true;
              clearInterval(timer);
            },
          });
          return new Response(body.pipeThrough(new TextEncoderStream()), { headers: { "content-type": "text/event-stream" } });
        }),
      ),
    );
    try {
      const response = await browser.request("/stream", { method: "POST" });
      expect(response.status).toBe(500);
      expect(await response.text()).toBe("Internal Server Error\n");
      await eventually(() => cancelled, "the handler's body to be cancelled");
    } finally {
      clearInterval(timer);
    }
  });
});

/**
 * The same with a real file system refusing writes: chmod 0500 on the store
 * directory; as root (where chmod stops nothing) the directory is made
 * immutable with `chattr +i` instead, and the test is skipped if neither works.
 */
type Protection = { name: string; apply(dir: string): Promise<void>; undo(dir: string): Promise<void> };

async function findProtection(): Promise<Protection | undefined> {
  const probe = await mkdtemp(join(tmpdir(), "persist-session-probe-"));
  const candidates: Protection[] = [
    { name: "chmod 0500", apply: (dir) => chmod(dir, 0o500), undo: (dir) => chmod(dir, 0o700) },
    {
      name: "chattr +i",
      apply: async (dir) => void execFileSync("chattr", ["+i", dir], { stdio: "ignore" }),
      undo: async (dir) => void execFileSync("chattr", ["-i", dir], { stdio: "ignore" }),
    },
  ];
  try {
    for (const candidate of candidates) {
      try {
        await candidate.apply(probe);
      } catch {
        continue;
      }
      let refused = false;
      try {
        await writeFile(join(probe, "x"), "x");
      } catch {
        refused = true;
      }
      await candidate.undo(probe);
      if (refused) return candidate;
      await rm(join(probe, "x"), { force: true });
    }
    return undefined;
  } finally {
    await rm(probe, { recursive: true, force: true });
  }
}

const protection = await findProtection();

/** What is in the store directory but its claim (`.claim`, which names the process using it). */
async function recordNames(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((name) => name !== ".claim");
}

describe.each(ADAPTERS)("a store directory that refuses writes · FileStore · %s", (adapter) => {
  let parent: string;
  let dir: string;
  let protectedDir: string | undefined;
  let logger: CapturingLogger;
  const running: Array<{ server: TestServer; sessions: Sessions }> = [];

  beforeEach(async () => {
    parent = await mkdtemp(join(tmpdir(), "persist-session-readonly-"));
    dir = join(parent, "store");
    await mkdir(dir, { mode: 0o700 });
    logger = capturingLogger();
  });
  afterEach(async () => {
    if (protectedDir !== undefined) await protection!.undo(protectedDir);
    protectedDir = undefined;
    await stopAll(running);
    await rm(parent, { recursive: true, force: true });
  });
  afterAll(() => {
    if (protection === undefined) console.log("limits.test.ts: no way to make a directory refuse writes here (root without chattr): the real file-system case was skipped");
  });

  it.skipIf(protection === undefined)(`fails with a 500 while the directory is read-only (${protection?.name ?? "unavailable"}), keeps the record, and recovers`, async () => {
    const sessions = persistSession({ secret: SECRET, store: new FileStore({ dir }), logger, sweepInterval: 0 });
    const server = await listen(listener(adapter, sessions));
    running.push({ server, sessions });
    const browser = new Browser(server.url);
    expect(await browser.json("/inc", { method: "POST" })).toEqual({ count: 1, todos: [] });
    const [id] = (await readdir(dir)).filter((name) => !name.startsWith("."));
    const before = await readFile(join(dir, id!));

    await protection!.apply(dir);
    protectedDir = dir;
    const response = await browser.request("/inc", { method: "POST" });
    expect(response.status).toBe(500);
    expect(logger.errors).toEqual([expect.stringMatching(/^persist-session: .*(EACCES|EPERM|EROFS)/)]);
    expect(await readFile(join(dir, id!))).toEqual(before);
    expect(await recordNames(dir)).toEqual([id]);
    expect(await browser.json("/state")).toEqual({ count: 1, todos: [] });

    await protection!.undo(dir);
    protectedDir = undefined;
    expect(await browser.json("/inc", { method: "POST" })).toEqual({ count: 2, todos: [] });
    expect(await recordNames(dir)).toEqual([id]);
    expect((await readFile(join(dir, id!), "utf8")).length).toBeGreaterThan(0);
  });
});
