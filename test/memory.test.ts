/**
 * What a stored session costs in memory (issue #22, the new-session path): a record lives as
 * long as its session, so what it keeps alive is carried through every young-generation
 * collection of a load of new sessions, and then held in the old generation.
 *
 * Measured over real HTTP: many new sessions on a MemoryStore, the heap after a full
 * collection before and after them. What one must hold: the record (key, version, two times,
 * its devalue text), the store's map slot and the id, about 250 bytes. Each id used to keep
 * the tree of strings node builds `crypto.randomUUID()` from (about 14 nodes): 666 bytes.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MemoryStore, persist, persistSession, type Sessions } from "../src/index.js";
import { RedisStore } from "../src/redis.js";
import { Browser, listen, type TestServer } from "./helpers/http.js";
import { connectRedis, deleteRedisKeys, redisAvailable, redisKeys, uniqueRedisPrefix, type TestRedisClient } from "./helpers/stores.js";
import { wrapStore } from "./helpers/wrap-store.js";

const SECRET = "memory-test-secret-0123456789-abcdefghijkl";
const SESSIONS = 10_000;
/** Bytes per stored session that the test allows: room above ~250, far below the 666 of ids kept as trees. */
const BYTES_PER_SESSION = 400;
const REQUESTS_ON_REDIS = 5_000;
/** Far below the ~2,300 bytes a request was kept alive with by each command's timer. */
const BYTES_PER_REQUEST_ON_REDIS = 300;

@persist("memory-counter")
class Counter {
  count = 0;
}

setFlagsFromString("--expose-gc");
const collect = runInNewContext("gc") as () => void;

/** `count` requests without a cookie to the server on `port`, ten at a time: each makes a session. */
async function newSessions(port: number, agent: http.Agent, count: number): Promise<void> {
  const one = () =>
    new Promise<void>((resolve, reject) => {
      http
        .get({ host: "127.0.0.1", port, path: "/", agent }, (res) => {
          if (res.statusCode !== 200 || res.headers["set-cookie"] === undefined) reject(new Error(`answered ${res.statusCode}`));
          res.resume();
          res.on("end", resolve);
        })
        .on("error", reject);
    });
  for (let sent = 0; sent < count; sent += 10) await Promise.all(Array.from({ length: 10 }, one));
}

/** A node:http server counting with {@link Counter} under `sessions`, and a keep-alive agent for it. */
async function counterServer(sessions: Sessions): Promise<{ server: http.Server; agent: http.Agent; port: number }> {
  const server = http.createServer((req, res) =>
    sessions(req, res, () => {
      const counter = new Counter();
      counter.count += 1;
      res.end(String(counter.count));
    }),
  );
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, agent: new http.Agent({ keepAlive: true, maxSockets: 10 }), port: (server.address() as AddressInfo).port };
}

async function stopServer(server: http.Server, agent: http.Agent): Promise<void> {
  agent.destroy();
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
}

/** Heap in use after full collections, once what is pending settled. */
async function heapUsed(): Promise<number> {
  await new Promise((resolve) => setTimeout(resolve, 50));
  collect();
  collect();
  return process.memoryUsage().heapUsed;
}

describe("memory per stored session", () => {
  const store = new MemoryStore();
  let sessions: Sessions;
  let server: http.Server;
  let agent: http.Agent;
  let port: number;

  beforeAll(async () => {
    sessions = persistSession({ secret: SECRET, store, sweepInterval: 0 });
    ({ server, agent, port } = await counterServer(sessions));
  });

  afterAll(async () => {
    await stopServer(server, agent);
    await sessions.close();
  });

  it(`keeps a new session in under ${BYTES_PER_SESSION} bytes of heap`, async () => {
    // Warm-up: compiled code, the agent's sockets and the record cache (1,000 records) at its size.
    await newSessions(port, agent, 2_000);
    const before = await heapUsed();
    const storedBefore = store.size;
    await newSessions(port, agent, SESSIONS);
    const perSession = ((await heapUsed()) - before) / SESSIONS;
    expect(store.size - storedBefore).toBe(SESSIONS);
    expect(perSession).toBeLessThan(BYTES_PER_SESSION);
    // Each session is really held (the measurement is not of an empty store).
    expect(perSession).toBeGreaterThan(100);
  });
});

describe.skipIf(!redisAvailable)("memory per request on RedisStore (node-redis)", () => {
  let redis: TestRedisClient;
  let prefix: string;

  beforeAll(async () => {
    redis = await connectRedis();
    prefix = uniqueRedisPrefix();
  });
  afterAll(async () => {
    await deleteRedisKeys(redis, prefix);
    redis.destroy();
  });

  // node-redis times every command with AbortSignal.timeout, whose timer stays for its 5 s
  // command timeout after the answer, with the async context it was made in. The records live in
  // Redis, so a request should leave nothing behind; sent from inside the request, each command
  // kept that request (its IncomingMessage, its state) alive those 5 s: about 2,300 bytes each.
  it(`keeps nothing of a finished request alive through the client's timers (under ${BYTES_PER_REQUEST_ON_REDIS} bytes each)`, async () => {
    const sessions = persistSession({ secret: SECRET, store: new RedisStore({ client: redis, prefix }), sweepInterval: 0 });
    const { server, agent, port } = await counterServer(sessions);
    try {
      await newSessions(port, agent, 2_000);
      const before = await heapUsed();
      await newSessions(port, agent, REQUESTS_ON_REDIS);
      const perRequest = ((await heapUsed()) - before) / REQUESTS_ON_REDIS;
      expect(perRequest).toBeLessThan(BYTES_PER_REQUEST_ON_REDIS);
      expect((await redisKeys(redis, prefix)).length).toBe(2_000 + REQUESTS_ON_REDIS);
    } finally {
      await stopServer(server, agent);
      await sessions.close();
    }
  });
});

describe("the record cache (cacheSize)", () => {
  const CACHE_SIZE = 32;
  let server: TestServer | undefined;
  let sessions: Sessions | undefined;

  afterAll(async () => {
    await server?.close();
    await sessions?.close();
  });

  it("drops the least recently used sixteenth at once when it grows past cacheSize, and keeps the rest", async () => {
    let reads = 0;
    const memory = new MemoryStore();
    const store = wrapStore(memory, { get: (id: string) => (reads++, memory.get(id)) });
    sessions = persistSession({ secret: SECRET, store, sweepInterval: 0, cacheSize: CACHE_SIZE });
    const app = sessions;
    server = await listen((req, res) =>
      app(req, res, () => {
        const counter = new Counter();
        counter.count += 1;
        res.end(String(counter.count));
      }),
    );
    const browsers = Array.from({ length: CACHE_SIZE + 1 }, () => new Browser(server!.url));
    // One at a time, so the cache's order is the browsers' order.
    for (const browser of browsers) expect(await (await browser.request("/")).text()).toBe("1");
    expect(reads).toBe(0);

    // 33 records went idle; the cache kept the newest 30 (32 less a sixteenth): the third
    // and second oldest are read from the store again, the fourth oldest is still in memory.
    // (Evicting only the one record over the limit would have kept all three.)
    const readsFor = async (browser: Browser) => {
      const before = reads;
      expect(await (await browser.request("/")).text()).toBe("2");
      return reads - before;
    };
    expect(await readsFor(browsers[2]!)).toBe(1);
    expect(await readsFor(browsers[3]!)).toBe(0);
    expect(await readsFor(browsers[1]!)).toBe(1);
  });
});
