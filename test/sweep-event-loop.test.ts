/**
 * The sweep keeps off the event loop (#17, point 8). The review saw a sweep of
 * 100,000 records block the event loop for up to 68 ms while requests were
 * served; the figure under the benchmark's hot load is in bench/RESULTS.md
 * (`npm run bench -- scale`). Timings cannot be asserted on two shared cores,
 * so this guards the work itself: the listing and every live record's header
 * are read on the store's worker thread, so the event loop sees no file
 * operation for a record that has not expired, and a bounded few for one that
 * has (re-read under its lock, then deleted).
 */
import { createHook } from "node:async_hooks";
import { randomUUID } from "node:crypto";
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { FileStore, persistSession } from "../src/index.js";
import { StateCodec } from "../src/serialization.js";
import { SECRET } from "./suites/behaviour.js";

const LIVE = 1_500;
const EXPIRED = 500;

describe("the sweep's work on the event loop", () => {
  let dir: string;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "persist-session-sweep-work-"));
    const data = new StateCodec().serialize({ count: 7 }, "AppState");
    const now = Date.now();
    const write = (expires: number) =>
      writeFile(join(dir, randomUUID()), `${JSON.stringify({ v: 1, key: "std-app", version: 1, updatedAt: now, expires })}\n${data}`, { mode: 0o600 });
    for (let i = 0; i < LIVE; i += 100) await Promise.all(Array.from({ length: 100 }, () => write(now + 86_400_000)));
    for (let i = 0; i < EXPIRED; i += 100) await Promise.all(Array.from({ length: 100 }, () => write(now - 1000)));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("does no file operation on the event loop for a live record, and a few for each expired one", async () => {
    const sessions = persistSession({ secret: SECRET, store: new FileStore({ dir }), sweepInterval: 0, logger: { warn: () => undefined, error: () => undefined } });
    // Every request to libuv's pool (open, read, fstat, close, opendir…) the sweep makes from this thread.
    let operations = 0;
    const hook = createHook({
      init(_id, type) {
        if (type === "FSREQPROMISE" || type === "FSREQCALLBACK" || type === "FILEHANDLECLOSEREQ" || type === "DIRHANDLE") operations++;
      },
    });
    hook.enable();
    let removed: number;
    try {
      removed = await sessions.sweep();
    } finally {
      hook.disable();
      await sessions.close();
    }
    expect(removed).toBe(EXPIRED);
    expect((await readdir(dir)).filter((name) => name.length === 36)).toHaveLength(LIVE);
    // Reading one record under its lock: open, fstat, read, close. The old listing made three per record, live or not.
    console.log(`sweep-event-loop.test.ts: ${operations} file operations on the event loop for ${LIVE} live and ${EXPIRED} expired records`);
    expect(operations).toBeLessThanOrEqual(EXPIRED * 5 + 20);
  });
});
