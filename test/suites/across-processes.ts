import { fileURLToPath } from "node:url";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { AppProcesses, assertBuilt, call, newBrowser, stream } from "../helpers/app-processes.js";
import { delay, eventually } from "../helpers/robustness.js";
import { EventReader } from "../helpers/sse.js";

/**
 * The promise across processes: two app processes over one shared store serve one browser
 * as if they were one. Children run test/fixtures/shared-store-app.mjs on the built package
 * (`npm run build` first; npm test does). Run by test/redis-processes.test.ts and
 * test/postgres-processes.test.ts, each with a harness that looks into its backend.
 */

/** One test's part of the backend (a key prefix, a schema). */
export interface ProcessesNamespace {
  /** What the app processes are told to find it (PREFIX, SCHEMA). */
  readonly env: Record<string, string>;
  /** Whether some process holds the lease of record `id` now. */
  leased(id: string): Promise<boolean>;
  /** The record as the backend stores it (its text, its row), to see it unchanged. */
  stored(id: string): Promise<unknown>;
  cleanup(): Promise<void>;
}

export interface ProcessesHarness {
  /** The store's class name. */
  readonly store: string;
  /** STORE for the fixture: "redis" or "postgres". */
  readonly kind: string;
  /** The built entry the children import, checked fresh before the suite. */
  readonly built: string;
  /** How the children reach the backend (REDIS_URL, POSTGRES_URL). */
  readonly env: Record<string, string>;
  setup(): Promise<void>;
  namespace(): ProcessesNamespace;
  teardown(): Promise<void>;
}

const FIXTURE = fileURLToPath(new URL("../fixtures/shared-store-app.mjs", import.meta.url));
const SECRET = "shared-processes-secret-0123456789-abcdef";
/** Short, so the kill and pause tests wait for expiry in about a second. */
const LEASE_TIME = 1000;
/** The default, for the tests that need no expiry: on a loaded machine an event-loop stall past a 1 s lease is a (correct) 503. */
const STEADY = { LEASE_TIME: "5000" };

export function describeAcrossProcesses(harness: ProcessesHarness): void {
  describe(`${harness.store} across processes`, () => {
    const processes = new AppProcesses(FIXTURE, { STORE: harness.kind, SECRET, LEASE_TIME: String(LEASE_TIME), ...harness.env });
    let space: ProcessesNamespace | undefined;
    const startApps = (count: number, env: Record<string, string> = {}) => {
      space = harness.namespace();
      const { env: where } = space;
      return Promise.all(Array.from({ length: count }, () => processes.start({ ...where, ...env })));
    };
    const counterKey = `${harness.kind}-counter`;

    beforeAll(async () => {
      assertBuilt(harness.built);
      await harness.setup();
    });
    afterEach(async () => {
      await processes.stopAll();
      await space?.cleanup();
      space = undefined;
    });
    afterAll(async () => {
      await harness.teardown();
    });

    it("counts exactly 100 when 100 overlapping requests of one browser alternate between two processes", async () => {
      const apps = await startApps(2, STEADY);
      const { cookie } = await newBrowser(apps[0]!);

      const { replies, maxInFlight } = await stream(apps, cookie, 100, 12);

      expect(maxInFlight).toBeGreaterThanOrEqual(10);
      expect(replies.filter((reply) => reply.status !== 200)).toEqual([]);
      // Each request saw the previous one's write: the counts it answered are 1..100, each once.
      expect(replies.map((reply) => reply.count).sort((a, b) => a! - b!)).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
      for (const app of apps) expect((await call(app, "/state", cookie)).count).toBe(100);
    });

    it("loses updates without the lease (the control: the test above can fail)", async () => {
      const apps = await startApps(2, { UNLEASED: "1" });
      const { cookie } = await newBrowser(apps[0]!);
      await stream(apps, cookie, 40, 12);
      expect((await call(apps[0]!, "/state", cookie)).count).toBeLessThan(40);
    });

    it("pushes a change made through one process to an events stream held by the other within 1 s", async () => {
      const [writer, streamer] = await startApps(2, STEADY);
      const alice = await newBrowser(writer!);
      const bob = await newBrowser(writer!);
      const open = async (cookie: string) => {
        const response = await fetch(`${streamer!.url}/events`, { headers: { cookie } });
        expect(response.headers.get("content-type")).toMatch(/^text\/event-stream/);
        const events = new EventReader(response);
        expect((await events.next()).event).toBe("ready");
        return events;
      };
      const [aliceEvents, bobEvents] = await Promise.all([open(alice.cookie), open(bob.cookie)]);
      try {
        const latencies: number[] = [];
        for (let count = 1; count <= 3; count++) {
          const written = await call(writer!, "/inc-slow?ms=1", alice.cookie);
          expect(written).toMatchObject({ status: 200, count });
          const answered = Date.now();
          // Version 1 was the /start write; each increment is one more.
          expect(await aliceEvents.next(1000)).toMatchObject({ event: "change", data: JSON.stringify({ key: counterKey, version: count + 1 }) });
          latencies.push(Date.now() - answered);
        }
        console.log(`${harness.kind} live sync across processes: ${latencies.join(", ")} ms after the writer's response`);
        // Another browser's stream on the same process hears nothing of it.
        expect(await bobEvents.drain(300)).toEqual([]);
      } finally {
        await Promise.all([aliceEvents.close(), bobEvents.close()]);
      }
    });

    it("serves the browser on the other process within the lease time after the holder is killed", async () => {
      const [holder, other] = await startApps(2);
      const { cookie, id } = await newBrowser(holder!);

      // A handler that never finishes: its process keeps renewing the lease until it dies.
      const hung = call(holder!, "/inc-slow?ms=60000", cookie).catch(() => undefined);
      await eventually(() => space!.leased(id), "the holder to take the lease");
      await delay(LEASE_TIME); // renewed meanwhile: the lease outlives its first term
      expect(await space!.leased(id)).toBe(true);
      await processes.stop(holder!, "SIGKILL");
      await hung;

      const reply = await call(other!, "/inc-slow?ms=1", cookie);
      expect(reply.status).toBe(200);
      // It waited for the dead holder's lease to run out, and not much longer than that.
      expect(reply.ms).toBeGreaterThan(100);
      expect(reply.ms).toBeLessThan(LEASE_TIME + 1500);
      // The killed request's increment never landed.
      expect(reply.count).toBe(1);
    });

    it("refuses the late write of a process paused past its lease, keeping the newer state", async () => {
      const [paused, other] = await startApps(2);
      const { cookie, id } = await newBrowser(other!);
      await eventually(async () => !(await space!.leased(id)), "the first request's lease to be released");

      // It reads count 0, then sleeps 300 ms before writing 1: stop it in between.
      const late = call(paused!, "/inc-slow?ms=300", cookie);
      await eventually(() => space!.leased(id), "the paused process to take the lease", 2000);
      paused!.child.kill("SIGSTOP");
      try {
        await delay(LEASE_TIME + 500);
        // Its lease ran out while it was stopped: the other process serves the browser.
        for (let i = 1; i <= 3; i++) expect(await call(other!, "/inc-slow?ms=1", cookie)).toMatchObject({ status: 200, count: i });
        await eventually(async () => !(await space!.leased(id)), "the other process to release the lease");
      } finally {
        paused!.child.kill("SIGCONT");
      }
      const before = await space!.stored(id);
      expect(before).toBeDefined();

      // Resumed, it writes count 1 under its expired lease: refused, not applied.
      expect((await late).status).toBe(503);
      expect(await space!.stored(id)).toEqual(before);
      expect((await call(other!, "/state", cookie)).count).toBe(3);
      expect(paused!.stderr.join("")).toContain("was refused because this process no longer held its lease");
      // And it serves the browser again from the newer state.
      expect(await call(paused!, "/inc-slow?ms=1", cookie)).toMatchObject({ status: 200, count: 4 });
    });
  });
}
