/**
 * Round trips to Redis per request (issue #22), over real HTTP and a real Redis: a request of a
 * browser this process served last takes up the lease it kept (no command before its handler),
 * another process asking for the record gets it at once (the "wanted" notice), and without a
 * subscriber connection leases are released at idle as before.
 *
 * How commands are counted: RedisStore sends every command through its client's `sendCommand`
 * and awaits each before it goes on (a request's commands are never pipelined with each other),
 * so each call is one round trip. The tests wrap `sendCommand` of the app's client and count.
 */
import { createHook } from "node:async_hooks";
import type http from "node:http";
import { afterEach, beforeAll, afterAll, describe, expect, it } from "vitest";
import { persistSession, type PersistSessionOptions } from "../src/index.js";
import { RedisStore, type RedisClientLike } from "../src/redis.js";
import { nodeApp } from "./fixtures/app.js";
import * as standard from "./fixtures/standard.js";
import { Browser, listen, stopAll, type RunningServer } from "./helpers/http.js";
import { capturingLogger, delay, eventually } from "./helpers/robustness.js";
import { connectRedis, deleteRedisKeys, redisAvailable, redisKeys, uniqueRedisPrefix, type TestRedisClient } from "./helpers/stores.js";

const SECRET = "redis-round-trips-secret-0123456789-abcdefgh";

/** A client that records the name of every command sent through it. */
interface CountingClient extends RedisClientLike {
  readonly sent: string[];
}

/** `client`, counting; `duplicate` only when `subscriber` (a subscriber connection can then be opened). */
function counting(client: TestRedisClient, { subscriber = true } = {}): CountingClient {
  const sent: string[] = [];
  const wrapper: CountingClient = {
    sent,
    sendCommand: (args: string[]) => {
      sent.push(args[0]!);
      return client.sendCommand(args);
    },
    get isReady() {
      return client.isReady;
    },
  };
  return subscriber ? Object.assign(wrapper, { duplicate: () => client.duplicate() }) : wrapper;
}

/** The names of the commands `client` sent while `run` ran (a request and what it waits for). */
async function commandsDuring(client: CountingClient, run: () => Promise<unknown>): Promise<string[]> {
  client.sent.length = 0;
  await run();
  return [...client.sent];
}

/** Ten tabs of one browser, 20 increments each, all on one record, at once. */
async function tenTabsIncrementing(browser: Browser): Promise<void> {
  await Promise.all(
    Array.from({ length: 10 }, async () => {
      for (let i = 0; i < 20; i++) await browser.json("/inc", { method: "POST" });
    }),
  );
}

describe.skipIf(!redisAvailable)("RedisStore round trips per request", () => {
  let redis: TestRedisClient;
  let prefix: string;
  const running: RunningServer[] = [];
  const clients: TestRedisClient[] = [];

  beforeAll(async () => {
    redis = await connectRedis();
  });
  afterAll(() => {
    redis?.destroy();
  });
  afterEach(async () => {
    await stopAll(running);
    for (const client of clients.splice(0)) client.destroy();
    await deleteRedisKeys(redis, prefix);
  });

  /** One app process over the test's prefix, with a client of its own; `wrap` sees that client first. */
  const startProcess = async (
    options: {
      leaseTime?: number;
      wrap?: (client: TestRedisClient) => RedisClientLike;
      sessions?: Partial<PersistSessionOptions>;
      /** Told of each request as it reaches the server, before the session's middleware. */
      arrived?: () => void;
      /** Runs before the app on each request, inside the session's middleware (its locks taken). */
      before?: (req: http.IncomingMessage) => Promise<void>;
    } = {},
  ) => {
    const raw = await connectRedis();
    clients.push(raw);
    const client = options.wrap?.(raw) ?? raw;
    const logger = capturingLogger();
    const sessions = persistSession({ secret: SECRET, store: new RedisStore({ client, prefix, leaseTime: options.leaseTime }), sweepInterval: 0, logger, ...options.sessions });
    const app = nodeApp(standard);
    const { arrived, before } = options;
    const server = await listen((req, res) => {
      arrived?.();
      return sessions(req, res, before === undefined ? () => app(req, res) : () => void before(req).then(() => app(req, res)));
    });
    running.push({ server, sessions });
    return { url: server.url, logger };
  };

  const idOf = (browser: Browser) => /=([0-9a-f-]{36})\./.exec(browser.cookieHeader())![1]!;
  const leaseHeld = async (id: string) => (await redis.exists(`${prefix}lease:${id}`)) === 1;
  /** Whether some process listens for requests for kept leases on this prefix. */
  const listening = async () => ((await redis.sendCommand(["PUBSUB", "NUMSUB", `${prefix}wanted`])) as [string, number])[1] > 0;

  /** A browser of the process at `url` whose record's lease that process now keeps (it served it last). */
  const browserWithKeptLease = async (url: string) => {
    const browser = new Browser(url);
    await browser.json("/inc", { method: "POST" }); // mints the record: no lease
    await browser.json("/inc", { method: "POST" }); // takes the lease, and starts listening for requests of it
    await eventually(listening, "the process to listen for requests of its kept leases");
    // Kept at idle from now on (two requests: the first may settle before the process has read the subscription's reply).
    await browser.json("/inc", { method: "POST" });
    await browser.json("/inc", { method: "POST" });
    return browser;
  };

  it("costs one command per changing request and none per unchanged one while one process serves a browser back to back", async () => {
    prefix = uniqueRedisPrefix();
    let client: CountingClient | undefined;
    const { url } = await startProcess({ wrap: (raw) => (client = counting(raw)) });
    const browser = await browserWithKeptLease(url);
    expect(await leaseHeld(idOf(browser))).toBe(true);

    const changing: string[][] = [];
    const unchanged: string[][] = [];
    for (let i = 1; i <= 10; i++) {
      changing.push(await commandsDuring(client!, async () => expect(await browser.json("/inc", { method: "POST" })).toMatchObject({ count: 4 + i })));
      unchanged.push(await commandsDuring(client!, async () => expect(await browser.json("/state")).toMatchObject({ count: 4 + i })));
    }
    // The fenced WRITE script only (by EVAL: see the next tests): it also extends the kept lease and publishes the change.
    expect(changing).toEqual(Array.from({ length: 10 }, () => ["EVAL"]));
    expect(unchanged).toEqual(Array.from({ length: 10 }, () => []));
  });

  it("starts no timer of the lease's per request while one process serves a browser back to back", async () => {
    prefix = uniqueRedisPrefix();
    const { url } = await startProcess();
    const browser = await browserWithKeptLease(url);
    // Every timer made while the requests run, by the module that made it: a kept lease taken up
    // for a request and kept again after it once cost two new timers (the renewal interval, the
    // lapse timeout) per request, each an async resource with its hooks.
    const made: string[] = [];
    const hook = createHook({
      init(_id, type) {
        if (type === "Timeout") made.push(new Error().stack ?? "");
      },
    });
    const stackTraceLimit = Error.stackTraceLimit;
    Error.stackTraceLimit = 40; // deep enough to reach the library's frame under node's timer internals
    hook.enable();
    try {
      for (let i = 1; i <= 10; i++) expect(await browser.json("/inc", { method: "POST" })).toMatchObject({ count: 4 + i });
    } finally {
      hook.disable();
      Error.stackTraceLimit = stackTraceLimit;
    }
    expect(made.length).toBeGreaterThan(0); // the hook saw the timers of the requests (node:http's, the client's)
    expect(made.filter((stack) => stack.includes("lease."))).toEqual([]);
  });

  it("costs two commands after another process had the record, and reads its change", async () => {
    prefix = uniqueRedisPrefix();
    let client: CountingClient | undefined;
    const { url } = await startProcess({ wrap: (raw) => (client = counting(raw)) });
    // The other process keeps no idle records, so it releases the lease once its write is stored.
    const other = await startProcess({ sessions: { cacheSize: 0 } });
    const browser = await browserWithKeptLease(url);
    const id = idOf(browser);

    const there = new Browser(other.url);
    there.cookies.set(...([...browser.cookies][0] as [string, string]));
    expect(await there.json("/inc", { method: "POST" })).toMatchObject({ count: 5 });
    await eventually(async () => !(await leaseHeld(id)), "the other process to release the lease");

    const sent = await commandsDuring(client!, async () => expect(await browser.json("/inc", { method: "POST" })).toMatchObject({ count: 6 }));
    // ACQUIRE (the lease and the record in one script), then WRITE.
    expect(sent).toEqual(["EVALSHA", "EVAL"]);
  });

  it("costs two commands once the kept lease ran out", async () => {
    prefix = uniqueRedisPrefix();
    // Short, so the test waits little; long enough that a loaded machine does not lose it mid-request (a 503).
    const leaseTime = 1000;
    let client: CountingClient | undefined;
    const { url } = await startProcess({ leaseTime, wrap: (raw) => (client = counting(raw)) });
    const browser = await browserWithKeptLease(url);
    await delay(leaseTime * 1.5);

    const sent = await commandsDuring(client!, async () => expect(await browser.json("/inc", { method: "POST" })).toMatchObject({ count: 5 }));
    expect(sent).toEqual(["EVALSHA", "EVAL"]);
  });

  it("gives another process a record whose lease this one keeps well within the lease time", async () => {
    prefix = uniqueRedisPrefix();
    // Long leases and a longer lockTimeout: without the wanted notice, the other process would be
    // served only once the kept lease ran out, a whole LEASE_TIME after the keeper's last write.
    const LEASE_TIME = 10_000;
    const keeper = await startProcess({ leaseTime: LEASE_TIME, sessions: { lockTimeout: 3 * LEASE_TIME } });
    const other = await startProcess({ leaseTime: LEASE_TIME, sessions: { lockTimeout: 3 * LEASE_TIME } });
    const browser = await browserWithKeptLease(keeper.url);
    const id = idOf(browser);
    // Idle, and still held: kept, not released.
    await delay(100);
    expect(await leaseHeld(id)).toBe(true);

    const there = new Browser(other.url);
    there.cookies.set(...([...browser.cookies][0] as [string, string]));
    const started = Date.now();
    expect(await there.json("/inc", { method: "POST" })).toMatchObject({ count: 5 });
    expect(Date.now() - started).toBeLessThan(LEASE_TIME / 2);
    // And back: the keeper re-reads the record, nothing is lost either way.
    const back = Date.now();
    expect(await browser.json("/inc", { method: "POST" })).toMatchObject({ count: 6 });
    expect(Date.now() - back).toBeLessThan(LEASE_TIME / 2);
    expect(await there.json("/state")).toMatchObject({ count: 6 });
    expect([...keeper.logger.errors, ...other.logger.errors]).toEqual([]);
  });

  it("hands a kept lease over within the asker's own attempt once the asker listens too", async () => {
    prefix = uniqueRedisPrefix();
    const keeper = await startProcess();
    const browser = await browserWithKeptLease(keeper.url);
    const id = idOf(browser);
    const raw = await connectRedis();
    clients.push(raw);
    const asker = new RedisStore({ client: raw, prefix });
    try {
      // The asker's first refused attempt starts its listening (and the keeper gives the lease up).
      await asker.lease(id);
      await eventually(async () => ((await redis.sendCommand(["PUBSUB", "NUMSUB", `${prefix}wanted`])) as [string, number])[1] === 2, "the asker to listen");
      await browser.json("/inc", { method: "POST" });
      await browser.json("/inc", { method: "POST" }); // kept again
      expect(await leaseHeld(id)).toBe(true);
      // Refused, asks, hears the keeper's released:<id>, and takes it: one call.
      const lease = await asker.lease(id);
      expect(lease?.held).toBe(true);
      await lease!.release();
    } finally {
      await asker.close();
    }
  });

  /** `client`, holding every WRITE's answer `holdMs` before passing it on (Redis has applied it by then), and counting the most unanswered at once. */
  const slowAnswers = (client: TestRedisClient, holdMs: number) => {
    const writes = { unanswered: 0, most: 0 };
    const wrapper = counting(client);
    return {
      writes,
      client: Object.assign(wrapper, {
        sendCommand: async (args: string[]) => {
          if (args[0] !== "EVAL") return client.sendCommand(args);
          writes.most = Math.max(writes.most, ++writes.unanswered);
          try {
            const reply = await client.sendCommand(args);
            await delay(holdMs);
            return reply;
          } finally {
            writes.unanswered--;
          }
        },
      }),
    };
  };

  it("sends a busy record's next write before the one before is answered, and loses none of ten tabs' overlapping requests", async () => {
    prefix = uniqueRedisPrefix();
    let writes: { unanswered: number; most: number } | undefined;
    const { url, logger } = await startProcess({
      wrap: (raw) => {
        const slow = slowAnswers(raw, 5);
        writes = slow.writes;
        return slow.client;
      },
    });
    const browser = await browserWithKeptLease(url);
    writes!.most = 0;
    await tenTabsIncrementing(browser);
    expect(await browser.json("/state")).toMatchObject({ count: 4 + 200 });
    // One at a time before (each waited for the answer to the one before); never more than the limit of sixteen.
    expect(writes!.most).toBeGreaterThan(1);
    expect(writes!.most).toBeLessThanOrEqual(16);
    expect(logger.errors).toEqual([]);
  });

  it("sends a commit queued behind a slow write within its own turn, though no later commit follows", async () => {
    prefix = uniqueRedisPrefix();
    let writes: { unanswered: number; most: number } | undefined;
    let entered = false;
    let open: () => void = () => {};
    const gate = new Promise<void>((resolve) => (open = resolve));
    let arrived = 0;
    const { url, logger } = await startProcess({
      wrap: (raw) => {
        // 100 ms per write: the moving average of the store's round trips says "across a network".
        const slow = slowAnswers(raw, 100);
        writes = slow.writes;
        return slow.client;
      },
      arrived: () => arrived++,
      before: async (req) => {
        if (req.url !== "/gated") return;
        entered = true;
        await gate; // holding the record's lock
        req.url = "/inc";
      },
    });
    const browser = await browserWithKeptLease(url);
    writes!.most = 0;
    arrived = 0;
    const first = browser.json("/gated", { method: "POST" });
    await eventually(async () => entered, "the first request to hold the lock");
    const second = browser.json("/inc", { method: "POST" });
    await eventually(async () => arrived === 2, "the second request to reach the server");
    await delay(20); // now queued on the lock
    // The first commits and its write goes; the lock passes to the second, which commits at once,
    // microseconds later. Before, its write waited for the first's answer (nothing else came to
    // gather into it): one write at a time. Now it goes at the end of that turn, beside the first.
    open();
    expect(await first).toMatchObject({ count: 5 });
    expect(await second).toMatchObject({ count: 6 });
    expect(writes!.most).toBe(2);
    expect(await browser.json("/state")).toMatchObject({ count: 6 });
    expect(logger.errors).toEqual([]);
  });

  it("loses no write while Redis forgets its scripts under overlapping requests", async () => {
    prefix = uniqueRedisPrefix();
    const { url, logger } = await startProcess({ wrap: (raw) => slowAnswers(raw, 2).client });
    const browser = await browserWithKeptLease(url);
    let flushing = true;
    const flushes = (async () => {
      let count = 0;
      while (flushing) {
        await redis.sendCommand(["SCRIPT", "FLUSH"]);
        count++;
        await delay(3);
      }
      return count;
    })();
    await tenTabsIncrementing(browser);
    flushing = false;
    expect(await flushes).toBeGreaterThan(5);
    expect(await browser.json("/state")).toMatchObject({ count: 4 + 200 });
    expect(logger.errors).toEqual([]);
  });

  it("releases leases at idle when no subscriber connection can exist", async () => {
    prefix = uniqueRedisPrefix();
    let client: CountingClient | undefined;
    const { url, logger } = await startProcess({ wrap: (raw) => (client = counting(raw, { subscriber: false })) });
    const browser = new Browser(url);
    await browser.json("/inc", { method: "POST" });
    const id = idOf(browser);
    // One cycle first, not counted: Redis may not have the ACQUIRE script cached (EVALSHA, then EVAL).
    await browser.json("/inc", { method: "POST" });
    await eventually(async () => !(await leaseHeld(id)), "the lease to be released at idle");
    for (let count = 3; count <= 5; count++) {
      const sent = await commandsDuring(client!, async () => {
        expect(await browser.json("/inc", { method: "POST" })).toMatchObject({ count });
        await eventually(async () => !(await leaseHeld(id)), "the lease to be released at idle");
      });
      // ACQUIRE, WRITE, then RELEASE at idle: nothing could tell this process that another one asks for the record.
      expect(sent).toEqual(["EVALSHA", "EVAL", "EVALSHA"]);
    }
    expect(await listening()).toBe(false);
    expect(logger.errors).toEqual([]);
  });

  it.each([
    ["an unreadable value", (key: string) => redis.set(key, "garbage")],
    ["a value of another type", (key: string) => redis.hSet(key, "field", "value")],
  ])("sets aside %s read with the lease, and serves fresh state", async (_name, corrupt) => {
    prefix = uniqueRedisPrefix();
    const { url, logger } = await startProcess();
    const browser = new Browser(url);
    await browser.json("/inc", { method: "POST" }); // minted: no lease, nothing kept
    const id = idOf(browser);
    await redis.del(`${prefix}${id}`);
    await corrupt(`${prefix}${id}`);

    expect(await browser.json("/inc", { method: "POST" })).toMatchObject({ count: 1 });
    expect(logger.warnings).toEqual([expect.stringMatching(new RegExp(`^persist-session: record ${id} could not be restored \\(.+\\); it was set aside and the request got fresh state\\.$`))]);
    const keys = await redisKeys(redis, `${prefix}quarantine:${id}:`);
    expect(keys).toHaveLength(1);
  });
});
