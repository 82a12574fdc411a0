/**
 * The sweep runs while requests are served, over records whose expiry is far,
 * near or past. It must never delete a record a request is using or has just
 * renewed: every acknowledged increment survives, and only records that really
 * expired go. Timings are seeded (printed; `SEED=<n>` repeats them).
 *
 * The oracle needs no timing luck: each response says when its handler started
 * and ended, and a record written by a commit after `handlerEnd` cannot expire
 * before `handlerEnd + ttl`. A request whose handler started before that moment
 * must find the previous state, whatever the sweep did meanwhile.
 */
import type http from "node:http";
import { parse as parseDevalue } from "devalue";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { inspectState, persistSession, type SessionStore, type Sessions } from "../src/index.js";
import * as standard from "./fixtures/standard.js";
import { Browser, listen, stopAll, type TestServer } from "./helpers/http.js";
import { capturingLogger, delay, seededRandom, testSeed, type CapturingLogger } from "./helpers/robustness.js";
import { wrapStore } from "./helpers/wrap-store.js";
import { fileStoreKind, memoryStoreKind, type StoreBacking, type StoreKind } from "./helpers/stores.js";
import { SECRET } from "./suites/behaviour.js";

const TTL_MS = 500;
const RUN_MS = 2_500;
const ACTIVE = 6;
const PASSIVE = 30;

interface Reply {
  count: number;
  restored: boolean;
  handlerStart: number;
  handlerEnd: number;
}

function listener(sessions: Sessions): http.RequestListener {
  return (req, res) =>
    sessions(req, res, async () => {
      const handlerStart = Date.now();
      const url = new URL(req.url ?? "/", "http://localhost");
      const state = new standard.AppState();
      const restored = inspectState(state).stored;
      if (req.method === "POST") {
        const before = state.count;
        await delay(Number(url.searchParams.get("ms") ?? 0));
        state.count = before + 1;
      }
      const reply: Reply = { count: state.count, restored, handlerStart, handlerEnd: Date.now() };
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify(reply));
    });
}

/** What one browser knows it stored, and until when the store must keep it. */
class Tracked {
  /** The record id of the browser's cookie, once it has one. */
  id: string | undefined;
  count = 0;
  /** The stored record cannot expire before this. */
  aliveUntil = 0;
  strict = 0;
  lenient = 0;

  constructor(readonly browser: Browser) {}

  /** Checks a reply against what was acknowledged before it. */
  check(reply: Reply, changed: boolean, where: string): void {
    const expected = this.count + (changed ? 1 : 0);
    if (this.aliveUntil === 0) {
      // Nothing stored yet.
      expect(reply, where).toMatchObject({ restored: false, count: changed ? 1 : 0 });
    } else if (reply.handlerStart < this.aliveUntil) {
      // Loaded before the record could have expired: it must be there.
      this.strict++;
      expect(reply, where).toMatchObject({ restored: true, count: expected });
    } else {
      // It may have expired (the server stalled past the ttl): either is right, but nothing in between.
      this.lenient++;
      expect([expected, changed ? 1 : 0], where).toContain(reply.count);
    }
    this.count = reply.count;
    if (changed) this.aliveUntil = reply.handlerEnd + TTL_MS;
    this.id = [...this.browser.cookies.values()][0]?.slice(0, 36);
  }
}

interface Variant {
  readonly kind: StoreKind;
  /** 0: every request reads the store, so a wrongly deleted record shows at once. */
  readonly cacheSize: number | undefined;
  /**
   * Milliseconds between the ids a listing yields, as a SCAN over a large
   * keyspace or a directory of many files takes: the listing is then older than
   * what requests have renewed since, and only a re-check under the lock tells.
   */
  readonly listingLagMs: number;
}

const VARIANTS: Variant[] = [
  { kind: fileStoreKind, cacheSize: undefined, listingLagMs: 0 },
  { kind: fileStoreKind, cacheSize: 0, listingLagMs: 0 },
  { kind: fileStoreKind, cacheSize: undefined, listingLagMs: 40 },
  { kind: memoryStoreKind, cacheSize: 0, listingLagMs: 40 },
];

/** The same store, with a listing taken at once and handed out slowly. */
function lagging(store: SessionStore, lagMs: number): SessionStore {
  if (lagMs === 0 || store.expiredIds === undefined) return store;
  const list = store.expiredIds.bind(store);
  return wrapStore(store, {
    async *expiredIds(now: number) {
      const ids: string[] = [];
      for await (const id of list(now)) ids.push(id);
      for (const id of ids) {
        await delay(lagMs);
        yield id;
      }
    },
  });
}

describe.each(VARIANTS)("the sweep under load · $kind.name · cacheSize $cacheSize · listing lag $listingLagMs ms", ({ kind, cacheSize, listingLagMs }) => {
  let backing: StoreBacking;
  let logger: CapturingLogger;
  const running: Array<{ server: TestServer; sessions: Sessions }> = [];
  const start = async (store: SessionStore = lagging(backing.open(), listingLagMs)) => {
    const sessions = persistSession({ secret: SECRET, store, logger, sweepInterval: 0, ttl: TTL_MS / 1000, ...(cacheSize === undefined ? {} : { cacheSize }) });
    const server = await listen(listener(sessions));
    running.push({ server, sessions });
    return { sessions, server };
  };

  beforeEach(async () => {
    backing = await kind.create();
    logger = capturingLogger();
  });
  afterEach(async () => {
    await stopAll(running);
    await backing.cleanup();
  });

  it("keeps every acknowledged increment while sweeping continuously, and removes only expired records", async () => {
    const seed = testSeed();
    console.log(`sweep-under-load.test.ts (${kind.name}, cacheSize ${cacheSize}): seed ${seed} (SEED=${seed} to repeat)`);
    const random = seededRandom(seed);

    // Passive records, written by an earlier process, then given expiries: past, during the run, or far away.
    const creator = await start();
    const created: Array<{ cookies: Browser; id: string }> = [];
    for (let i = 0; i < PASSIVE; i++) {
      const browser = new Browser(creator.server.url);
      expect(((await browser.json("/work", { method: "POST" })) as unknown as Reply).count).toBe(1);
      created.push({ cookies: browser, id: [...browser.cookies.values()][0]!.slice(0, 36) });
    }
    await creator.sessions.close();
    const store = backing.open();
    const began = Date.now();
    const app = await start();
    const passive: Array<{ tracked: Tracked; id: string; expires: number; visitAt: number | undefined }> = [];
    for (const [i, { cookies, id }] of created.entries()) {
      const stored = (await store.get(id))!;
      const shape = i % 3;
      const expires = shape === 0 ? began - 1000 : shape === 1 ? began + random() * RUN_MS : began + 3_600_000;
      await store.set(id, { ...stored, expires });
      const tracked = new Tracked(rebase(cookies, app.server.url));
      tracked.id = id;
      tracked.count = 1;
      tracked.aliveUntil = expires;
      // Half of them are visited once during the run, some right around their expiry.
      const visitAt = random() < 0.5 ? (shape === 1 && random() < 0.5 ? expires - began - 20 + random() * 40 : random() * RUN_MS) : undefined;
      passive.push({ tracked, id, expires, visitAt });
    }

    // The sweep, back to back, for the whole run.
    let sweeping = true;
    let sweeps = 0;
    let removed = 0;
    const sweeper = (async () => {
      while (sweeping) {
        removed += await app.sessions.sweep();
        sweeps++;
        await delay(1);
      }
    })();

    const deadline = Date.now() + RUN_MS;
    const active = Array.from({ length: ACTIVE }, () => new Tracked(new Browser(app.server.url)));

    // The auditor reads the store itself, all along: while a record cannot have expired, the store must hold
    // it with every acknowledged increment, even when this process would still serve it from memory.
    const everyone = [...active, ...passive.map((record) => record.tracked)];
    const auditStore = backing.open();
    const violations: string[] = [];
    let audits = 0;
    let auditing = true;
    const auditor = (async () => {
      while (auditing) {
        for (const [i, tracked] of everyone.entries()) {
          const { id, count, aliveUntil } = tracked;
          const at = Date.now();
          if (id === undefined || at >= aliveUntil) continue;
          const record = await auditStore.get(id);
          audits++;
          const stored = record === undefined ? undefined : (parseDevalue(record.data) as { count: number }).count;
          if (stored === undefined || stored < count) {
            violations.push(`browser ${i} at +${at - began} ms: the store holds ${stored ?? "nothing"}, ${count} was acknowledged and lives until +${aliveUntil - began} ms (seed ${seed})`);
          }
        }
        await delay(2);
      }
    })();
    const plans = active.map(() => Array.from({ length: 200 }, () => ({ ms: handlerMs(random()), gap: random() < 0.3 ? random() * 250 : 0 })));
    let requests = 0;
    const work = async (tracked: Tracked, ms: number, where: string) => {
      const reply = (await tracked.browser.json(`/work?ms=${ms}`, { method: "POST" })) as unknown as Reply;
      requests++;
      tracked.check(reply, true, where);
    };
    const runActive = async (tracked: Tracked, index: number) => {
      for (const [step, { ms, gap }] of plans[index]!.entries()) {
        if (Date.now() > deadline) return;
        await work(tracked, ms, `active ${index}, request ${step} (seed ${seed})`);
        if (gap > 0) await delay(gap);
      }
    };
    const runPassive = async (record: (typeof passive)[number], index: number) => {
      if (record.visitAt === undefined) return;
      await delay(Math.max(0, began + record.visitAt - Date.now()));
      await work(record.tracked, 0, `passive ${index}, expires ${record.expires - began} ms into the run (seed ${seed})`);
    };
    await Promise.all([...active.map(runActive), ...passive.map(runPassive)]);
    // One last quick write each, all together, so the read-back below comes well within the ttl.
    await Promise.all(active.map((tracked, index) => work(tracked, 0, `active ${index}, last request (seed ${seed})`)));
    sweeping = false;
    auditing = false;
    await Promise.all([sweeper, auditor]);
    expect(violations).toEqual([]);
    await app.sessions.close();

    // A new process sweeps first: what really expired is gone, what did not is there.
    const reader = await start(backing.open());
    const sweptAt = Date.now();
    await reader.sessions.sweep();
    const left = new Set(await backing.ids());
    for (const record of passive) {
      if (record.visitAt === undefined) expect(left.has(record.id), `passive record expiring at +${record.expires - began} ms`).toBe(record.expires > sweptAt);
    }
    // Then every browser finds its last acknowledged count.
    for (const [i, tracked] of [...active, ...passive.map((record) => record.tracked)].entries()) {
      const browser = rebase(tracked.browser, reader.server.url);
      const reply = (await browser.json("/state")) as unknown as Reply;
      tracked.check(reply, false, `final read of browser ${i} (seed ${seed})`);
    }
    expect(logger.errors).toEqual([]);
    expect(logger.warnings).toEqual([]);

    const strict = active.reduce((sum, tracked) => sum + tracked.strict, 0);
    const lenient = active.reduce((sum, tracked) => sum + tracked.lenient, 0);
    console.log(`  ${requests} requests during ${sweeps} sweeps (${removed} removed), ${audits} audits; of the active browsers' requests ${strict} checked strictly, ${lenient} could have expired`);
    expect(sweeps).toBeGreaterThan(10);
    expect(audits).toBeGreaterThan(100);
    // The oracle did its job: only a server stalled past the ttl makes an active browser's request lenient.
    expect(strict).toBeGreaterThan(4 * lenient);
  }, 30_000);
});

/** Handler durations: mostly short, some close to the ttl, some past it (the stored expiry passes mid-request). */
function handlerMs(r: number): number {
  if (r < 0.5) return Math.floor(r * 60);
  if (r < 0.8) return 300 + Math.floor((r - 0.5) * 500);
  return TTL_MS + Math.floor((r - 0.8) * 1000);
}

/** The same cookies, pointed at another server. */
function rebase(browser: Browser, url: string): Browser {
  const moved = new Browser(url);
  for (const [name, value] of browser.cookies) moved.cookies.set(name, value);
  return moved;
}
