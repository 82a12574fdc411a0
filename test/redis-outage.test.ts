/**
 * Redis going away mid-stream: requests fail cleanly (503) and quickly, none
 * hangs, and the same app serves again once Redis is back.
 *
 * Runs its own redis-server on a free port rather than stopping the shared one
 * on 6379: other suites use that one at the same time, and an outage there would
 * fail them.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { persistSession, type Sessions } from "../src/index.js";
import { RedisStore } from "../src/redis.js";
import { nodeApp } from "./fixtures/app.js";
import * as standard from "./fixtures/standard.js";
import { Browser, listen, type TestServer } from "./helpers/http.js";
import { capturingLogger, delay, eventually } from "./helpers/robustness.js";
import { freePort, requestsThroughOutage, timedPost } from "./helpers/outage.js";
import { EventReader } from "./helpers/sse.js";
import { connectRedis, type TestRedisClient } from "./helpers/stores.js";

const SECRET = "redis-outage-secret-0123456789-abcdefghij";
const COMMAND_TIMEOUT = 500;
/** No request may take longer than this, outage or not. */
const BOUND_MS = 3000;

const redisServerFound = spawnSync("redis-server", ["--version"]).status === 0;
if (!redisServerFound) {
  if (process.env.CI === "true") throw new Error("persist-session tests: redis-server is not on PATH, and CI=true does not skip the Redis outage tests. Install redis-server.");
  console.log("Redis outage tests skipped: redis-server is not on PATH. Install it (apt-get install redis-server), then run npx vitest run test/redis-outage.test.ts.");
}

/** A redis-server of this suite's own, stopped and started at will. */
class PrivateRedis {
  #child: ChildProcess | undefined;
  #exited: Promise<void> = Promise.resolve();

  constructor(
    readonly port: number,
    readonly dir: string,
  ) {}

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    const child = spawn("redis-server", ["--port", String(this.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", this.dir], {
      stdio: "ignore",
    });
    this.#child = child;
    this.#exited = new Promise((resolve) => child.once("exit", () => resolve()));
    await eventually(() => ping(this.port), `redis-server on port ${this.port} to answer`);
  }

  /** Shuts it down as `redis-cli shutdown nosave` would, and waits for the process to end. */
  async stop(): Promise<void> {
    spawnSync("redis-cli", ["-p", String(this.port), "shutdown", "nosave"]);
    this.#child?.kill("SIGKILL");
    await this.#exited;
    this.#child = undefined;
  }
}

/** Whether something answers PING with PONG on `port`, within half a second. */
function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(500, () => done(false));
    socket.once("error", () => done(false));
    socket.once("connect", () => socket.write("PING\r\n"));
    socket.once("data", (data) => done(data.toString().startsWith("+PONG")));
  });
}

describe.skipIf(!redisServerFound)("RedisStore when Redis goes away", () => {
  let redis: PrivateRedis;
  let client: TestRedisClient;
  let sessions: Sessions;
  let server: TestServer;
  const logger = capturingLogger();

  beforeAll(async () => {
    redis = new PrivateRedis(await freePort(), await mkdtemp(join(tmpdir(), "persist-session-redis-")));
    await redis.start();
    client = await connectRedis(redis.url);
    sessions = persistSession({
      secret: SECRET,
      store: new RedisStore({ client, commandTimeout: COMMAND_TIMEOUT, leaseTime: 1000 }),
      logger,
      sweepInterval: 0,
    });
    const app = nodeApp(standard);
    server = await listen((req, res) => sessions(req, res, () => app(req, res)));
  });
  afterEach(async () => {
    // Whatever a test did, the next one starts with Redis up.
    if (!(await ping(redis.port))) await redis.start();
    await eventually(() => client.isReady, "the client to reconnect", 10_000);
    logger.clear();
  });
  afterAll(async () => {
    await server?.close();
    await sessions?.close();
    client?.destroy();
    await redis?.stop();
    await rm(redis.dir, { recursive: true, force: true });
  });

  const post = (browser: Browser, path: string) => timedPost(browser, path, BOUND_MS + 2000);

  it("answers 503 while Redis is down, never hangs, and recovers without restarting the app", async () => {
    const browser = new Browser(server.url);
    expect((await post(browser, "/inc")).status).toBe(200);
    // The client reconnects by itself once Redis is back.
    const { outcomes, restartedAt } = await requestsThroughOutage((path) => post(browser, path), redis, { recoveryMs: 10_000 });

    expect(outcomes.filter((outcome) => outcome.status !== 200 && outcome.status !== 503)).toEqual([]);
    expect(outcomes.some((outcome) => outcome.status === 503)).toBe(true);
    expect(Math.max(...outcomes.map((outcome) => outcome.ms))).toBeLessThan(BOUND_MS);
    // One line for the outage, not one per failed request (#17), and its count once Redis answers.
    const failed = outcomes.filter((outcome) => outcome.status === 503).length;
    expect(logger.errors.filter((message) => /^persist-session: Redis (is not connected|failed|did not answer)/.test(message))).toHaveLength(1);
    expect(logger.errors.filter((message) => /Further failures are counted, not logged, until the store answers again\.$/.test(message))).toHaveLength(1);
    expect(logger.warnings.filter((message) => /^persist-session: the store answers again; \d+ requests? failed while it could not be reached\.$/.test(message))).toHaveLength(1);
    expect(Number(/again; (\d+)/.exec(logger.warnings.find((message) => message.includes("answers again"))!)![1])).toBeGreaterThanOrEqual(failed);
    // Redis restarted empty (no persistence here): the browser starts over, and counting works again.
    const after = outcomes.filter((outcome) => outcome.at > restartedAt && outcome.status === 200).map((outcome) => outcome.count!);
    expect(Math.max(...after)).toBeGreaterThanOrEqual(2);
    expect((await post(browser, "/inc")).status).toBe(200);
  });

  it("fails a request whose write meets the outage with a 503 and stores nothing half-written", async () => {
    const browser = new Browser(server.url);
    expect((await post(browser, "/inc")).status).toBe(200);
    // Read, then Redis goes away before the write.
    const pending = post(browser, "/inc-slow?ms=400");
    await delay(100);
    try {
      await redis.stop();
      const outcome = await pending;
      expect(outcome.status).toBe(503);
      expect(outcome.ms).toBeLessThan(400 + BOUND_MS);
    } finally {
      await redis.start();
    }
    await eventually(() => client.isReady, "the client to reconnect", 10_000);
    // Nothing of the failed request is there: Redis came back empty, and the app serves from that.
    expect(await post(browser, "/inc")).toMatchObject({ status: 200, count: 1 });
  });

  it("keeps an events stream following other processes' changes across an outage", async () => {
    const browser = new Browser(server.url);
    expect((await post(browser, "/inc")).status).toBe(200);
    const cookie = browser.cookieHeader();
    const id = /=([0-9a-f-]{36})\./.exec(cookie)![1]!;
    const events = new EventReader(await sessions.fetchEvents(new Request("http://localhost/events", { headers: { cookie } })));
    const writer = new RedisStore({ client, commandTimeout: COMMAND_TIMEOUT });
    // As another process serving this browser writes: under the record's lease (false while someone else holds it).
    const write = async (version: number) => {
      const lease = await writer.lease(id);
      if (lease === undefined) return false;
      try {
        await writer.set(id, { key: "std-app", version, updatedAt: Date.now(), expires: Date.now() + 60_000, data: "[{}]" }, lease);
      } finally {
        await lease.release();
      }
      return true;
    };
    try {
      expect((await events.next()).event).toBe("ready");
      expect(await write(5)).toBe(true);
      expect(await events.next(1000)).toMatchObject({ event: "change", data: JSON.stringify({ key: "std-app", version: 5 }) });

      await redis.stop();
      await eventually(() => logger.errors.some((message) => message.startsWith("persist-session: live sync lost the store's change feed")), "the lost feed to be logged");
      await redis.start();
      await eventually(() => client.isReady, "the client to reconnect", 10_000);
      // Another process writes once Redis is back: the stream hears it after its subscriber reconnects.
      await eventually(async () => {
        if (!(await write(6))) return false;
        return (await events.drain(300)).some((event) => event.data === JSON.stringify({ key: "std-app", version: 6 }));
      }, "the change after the outage to reach the stream", 10_000);
      expect(logger.errors.filter((message) => message.startsWith("persist-session: live sync lost"))).toHaveLength(1);
    } finally {
      await events.close();
    }
  });

  it("answers 503 within commandTimeout when Redis is up but does not answer", async () => {
    const browser = new Browser(server.url);
    expect((await post(browser, "/inc")).status).toBe(200);
    const admin = await connectRedis(redis.url);
    try {
      await admin.sendCommand(["CLIENT", "PAUSE", "1500", "ALL"]);
      const outcome = await post(browser, "/inc");
      expect(outcome.status).toBe(503);
      expect(outcome.ms).toBeLessThan(COMMAND_TIMEOUT * 3);
      expect(logger.errors).toContain(
        `persist-session: Redis did not answer within ${COMMAND_TIMEOUT} ms. Check the server and the network, or raise RedisStore's commandTimeout option. ` +
          "Further failures are counted, not logged, until the store answers again.",
      );
    } finally {
      await admin.sendCommand(["CLIENT", "UNPAUSE"]).catch(() => undefined);
      admin.destroy();
    }
    // Once it answers again, the lease the timed-out request may still hold expires or is released, and the state is intact.
    await eventually(async () => (await post(browser, "/inc")).status === 200, "requests to succeed again", 5000);
  });
});
