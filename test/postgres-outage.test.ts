/**
 * PostgreSQL going away mid-stream: requests fail cleanly (503) and quickly,
 * none hangs, and the same app serves again once the server is back, with the
 * state it had (the records are rows: they outlive the outage).
 *
 * Runs a PostgreSQL server of its own (initdb + pg_ctl, a free port, a
 * temporary folder), stopped and frozen by its PID: other suites use the
 * machine's server on 5432 at the same time, and an outage there would fail them.
 */
import type pg from "pg";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { persistSession, type Sessions } from "../src/index.js";
import { PostgresStore } from "../src/postgres.js";
import { nodeApp } from "./fixtures/app.js";
import * as standard from "./fixtures/standard.js";
import { Browser, listen, type TestServer } from "./helpers/http.js";
import { requestsThroughOutage, timedPost } from "./helpers/outage.js";
import { postgresBin, PrivatePostgres } from "./helpers/private-postgres.js";
import { capturingLogger, delay, eventually } from "./helpers/robustness.js";
import { EventReader } from "./helpers/sse.js";
import { connectPostgres } from "./helpers/stores.js";

const SECRET = "postgres-outage-secret-0123456789-abcdefgh";
const STATEMENT_TIMEOUT = 500;
const LEASE_TIME = 1000;
/** No request may take longer than this, outage or not. */
const BOUND_MS = 3000;

if (postgresBin === undefined) {
  if (process.env.CI === "true") throw new Error("persist-session tests: no initdb/pg_ctl under /usr/lib/postgresql, and CI=true does not skip the PostgreSQL outage tests. Install postgresql.");
  console.log("PostgreSQL outage tests skipped: no initdb/pg_ctl under /usr/lib/postgresql. Install them (apt-get install postgresql), then run npx vitest run test/postgres-outage.test.ts.");
}

describe.skipIf(postgresBin === undefined)("PostgresStore when PostgreSQL goes away", () => {
  let server: PrivatePostgres;
  let pool: pg.Pool;
  let sessions: Sessions;
  let http: TestServer;
  const logger = capturingLogger();
  const post = (browser: Browser, path: string) => timedPost(browser, path, BOUND_MS + 2000);
  /** Whether the app's pool gets an answer from the server now. */
  const answers = () => pool.query("SELECT 1").then(
    () => true,
    () => false,
  );

  beforeAll(async () => {
    server = await PrivatePostgres.create();
    await server.start();
    pool = connectPostgres(server.url);
    sessions = persistSession({
      secret: SECRET,
      store: new PostgresStore({ pool, statementTimeout: STATEMENT_TIMEOUT, leaseTime: LEASE_TIME }),
      logger,
      sweepInterval: 0,
    });
    const app = nodeApp(standard);
    http = await listen((req, res) => sessions(req, res, () => app(req, res)));
  }, 60_000);
  afterEach(async () => {
    // Whatever a test did, the next one starts with the server up and answering.
    server.resume();
    if (!server.running) await server.start();
    await eventually(answers, "the pool to reach the server again", 10_000);
    logger.clear();
  });
  afterAll(async () => {
    await http?.close();
    await sessions?.close();
    await pool?.end();
    await server?.destroy();
  });

  it("answers 503 while PostgreSQL is down, never hangs, and recovers with its state without restarting the app", async () => {
    const browser = new Browser(http.url);
    expect((await post(browser, "/inc")).status).toBe(200);
    // The pool makes new connections by itself once the server is back.
    const { outcomes, restartedAt, stoppedAt } = await requestsThroughOutage((path) => post(browser, path), server);
    const countBefore = Math.max(...outcomes.filter((outcome) => outcome.at <= stoppedAt && outcome.status === 200).map((outcome) => outcome.count!));

    expect(outcomes.filter((outcome) => outcome.status !== 200 && outcome.status !== 503)).toEqual([]);
    expect(outcomes.some((outcome) => outcome.status === 503)).toBe(true);
    expect(Math.max(...outcomes.map((outcome) => outcome.ms))).toBeLessThan(BOUND_MS);
    expect(logger.errors.some((message) => /^persist-session: PostgreSQL (failed|did not answer)/.test(message))).toBe(true);
    // The records are rows: the count goes on from where it was, not from zero.
    const after = outcomes.filter((outcome) => outcome.at > restartedAt && outcome.status === 200).map((outcome) => outcome.count!);
    expect(countBefore).toBeGreaterThanOrEqual(2);
    expect(Math.min(...after)).toBeGreaterThan(countBefore);
    expect((await post(browser, "/inc")).status).toBe(200);
  });

  it("fails a request whose write meets the outage with a 503 and stores nothing of it", async () => {
    const browser = new Browser(http.url);
    const first = await post(browser, "/inc");
    expect(first.status).toBe(200);
    // Read, then the server goes away before the write.
    const pending = post(browser, "/inc-slow?ms=400");
    await delay(100);
    try {
      await server.stop();
      const outcome = await pending;
      expect(outcome.status).toBe(503);
      expect(outcome.ms).toBeLessThan(400 + BOUND_MS);
    } finally {
      await server.start();
    }
    await eventually(answers, "the pool to reach the server again", 10_000);
    // The failed request's increment is not there: the next one counts from the stored state.
    const recovered = await eventually(async () => {
      const outcome = await post(browser, "/inc");
      return outcome.status === 200 && outcome;
    }, "requests to succeed again", 10_000);
    expect(recovered.count).toBe(first.count! + 1);
  });

  it("keeps an events stream following other processes' changes across an outage", async () => {
    const browser = new Browser(http.url);
    expect((await post(browser, "/inc")).status).toBe(200);
    const cookie = browser.cookieHeader();
    const id = /=([0-9a-f-]{36})\./.exec(cookie)![1]!;
    const events = new EventReader(await sessions.fetchEvents(new Request("http://localhost/events", { headers: { cookie } })));
    // Another process's store: the same table, its own pool.
    const otherPool = connectPostgres(server.url);
    const writer = new PostgresStore({ pool: otherPool, statementTimeout: STATEMENT_TIMEOUT });
    // As another process serving this browser writes: under the record's lease (false while someone else holds it, or the server is away).
    const write = async (version: number) => {
      const lease = await writer.lease(id).catch(() => undefined);
      if (lease === undefined) return false;
      try {
        await writer.set(id, { key: "std-app", version, updatedAt: Date.now(), expires: Date.now() + 60_000, data: "[{}]" }, lease);
      } finally {
        await lease.release().catch(() => undefined);
      }
      return true;
    };
    try {
      expect((await events.next()).event).toBe("ready");
      expect(await write(5)).toBe(true);
      expect(await events.next(1000)).toMatchObject({ event: "change", data: JSON.stringify({ key: "std-app", version: 5 }) });

      await server.stop();
      await eventually(() => logger.errors.some((message) => message.startsWith("persist-session: live sync lost the store's change feed")), "the lost feed to be logged");
      await server.start();
      // Another process writes once the server is back: the stream hears it after its LISTEN connection is back.
      await eventually(
        async () => {
          if (!(await write(6))) return false;
          return (await events.drain(300)).some((event) => event.data === JSON.stringify({ key: "std-app", version: 6 }));
        },
        "the change after the outage to reach the stream",
        15_000,
      );
      expect(logger.errors.filter((message) => message.startsWith("persist-session: live sync lost"))).toHaveLength(1);
    } finally {
      await events.close();
      await writer.close();
      await otherPool.end();
    }
  });

  it("answers 503 within statementTimeout when PostgreSQL is up but does not answer, and serves again once it does", async () => {
    const browser = new Browser(http.url);
    const first = await post(browser, "/inc");
    expect(first.status).toBe(200);
    server.pause();
    try {
      const outcome = await post(browser, "/inc");
      expect(outcome.status).toBe(503);
      expect(outcome.ms).toBeLessThan(STATEMENT_TIMEOUT * 4);
      // Logged once for the outage (#17), with what to do.
      expect(logger.errors).toContain(
        `persist-session: PostgreSQL did not answer within ${STATEMENT_TIMEOUT} ms. Check the server and the network, or raise PostgresStore's statementTimeout option. ` +
          "Further failures are counted, not logged, until the store answers again.",
      );
    } finally {
      server.resume();
    }
    // Once it answers again, whatever lease the timed-out request took runs out or is released, and the state is intact.
    const recovered = await eventually(async () => {
      const outcome = await post(browser, "/inc");
      return outcome.status === 200 && outcome;
    }, "requests to succeed again", 10_000);
    expect(recovered.count).toBeGreaterThan(first.count!);
  });
});
