/**
 * The durable FileStore's write-ahead journal, through the FileStore API: what a
 * power cut leaves (record files missing what the page cache held, the fdatasynced
 * journal intact) is rebuilt at the next start; torn and hostile segments are
 * refused; segments go with the checkpoint; without syncfs every write is fsynced.
 *
 * A power cut cannot be caused here, so each test builds its state on disk: the
 * record files as of the last checkpoint, plus the journal segments written since.
 */
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse, stringify } from "devalue";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { FileStore, type StoredRecord } from "../src/index.js";
import { capturingLogger, eventually, type CapturingLogger } from "./helpers/robustness.js";

const A = "0b7f1a52-8a0e-4a0e-9a3c-1c2d3e4f5a6b";
const B = "1c8e2b63-9b1f-4b1f-8b4d-2d3e4f5a6b7c";
const C = "2d9f3c74-ac20-4c20-9c5e-3e4f5a6b7c8d";
const D = "3ea04d85-bd31-4d31-ad6f-4f5a6b7c8d9e";
const SEGMENT = /^journal-\d+\.log$/;

function record(version: number, count: number): StoredRecord {
  const now = Date.now();
  return { key: "counter", version, updatedAt: now, expires: now + 3_600_000, data: stringify({ count }) };
}

async function countOf(store: FileStore, id: string): Promise<number | undefined> {
  const stored = await store.get(id);
  return stored === undefined ? undefined : (parse(stored.data) as { count: number }).count;
}

/** The journal's segments in store directory `dir`. */
async function segments(dir: string): Promise<string[]> {
  const names = await readdir(join(dir, "journal")).catch(() => []);
  return names.filter((name) => SEGMENT.test(name));
}

describe("FileStore durable: the write-ahead journal", () => {
  let dir: string;
  let crashed: string;
  let logger: CapturingLogger;
  const stores: FileStore[] = [];

  function open(at: string, durable = true): FileStore {
    const store = new FileStore({ dir: at, durable });
    store.useLogger(logger);
    stores.push(store);
    return store;
  }

  /** The disk after a power cut: `files` as the last checkpoint left them, the store's secret (fsynced when made), and the journal as it is now. */
  async function powerCut(files: ReadonlyMap<string, Buffer>): Promise<void> {
    for (const [name, bytes] of files) await writeFile(join(crashed, name), bytes, { mode: 0o600 });
    await copyFile(join(dir, ".secret"), join(crashed, ".secret"));
    await mkdir(join(crashed, "journal"), { recursive: true, mode: 0o700 });
    for (const name of await segments(dir)) await copyFile(join(dir, "journal", name), join(crashed, "journal", name));
  }

  async function recordFiles(at: string): Promise<Map<string, Buffer>> {
    const names = (await readdir(at)).filter((name) => /^[0-9a-f-]{36}$/.test(name));
    return new Map(await Promise.all(names.map(async (name) => [name, await readFile(join(at, name))] as const)));
  }

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "persist-session-journal-"));
    crashed = await mkdtemp(join(tmpdir(), "persist-session-journal-crashed-"));
    logger = capturingLogger();
  });
  afterEach(async () => {
    vi.useRealTimers();
    for (const store of stores.splice(0)) await store.close();
    await rm(dir, { recursive: true, force: true });
    await rm(crashed, { recursive: true, force: true });
  });

  it("rebuilds acknowledged writes and deletions that a power cut kept out of the record files", async () => {
    // No checkpoint but the ones the test asks for.
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
    const store = open(dir);
    await store.set(A, record(1, 1));
    await store.set(B, record(1, 1));
    await store.set(C, record(1, 1));
    await store.close();
    expect(await segments(dir), "a checkpoint removes its segments").toEqual([]);
    const checkpointed = await recordFiles(dir);

    await store.set(A, record(2, 2));
    await store.set(B, record(2, 4));
    await store.set(B, record(3, 5));
    await store.delete(C);
    await store.set(D, record(1, 7));
    expect(await segments(dir)).toHaveLength(1);
    await powerCut(checkpointed);

    const restarted = open(crashed);
    expect(await countOf(restarted, A)).toBe(2);
    expect(await countOf(restarted, B)).toBe(5);
    expect(await countOf(restarted, C)).toBeUndefined();
    expect(await countOf(restarted, D)).toBe(7);
    // Replayed into the record files, made durable, and the segments removed.
    expect([...(await recordFiles(crashed)).keys()].sort()).toEqual([A, B, D].sort());
    expect(await segments(crashed)).toEqual([]);
    expect(logger.warnings).toEqual([]);
    expect(logger.errors).toEqual([]);
  });

  it("is replayed by a store that is not durable, too", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
    const store = open(dir);
    await store.set(A, record(1, 3));
    await powerCut(new Map());

    const plain = open(crashed, false);
    expect(await countOf(plain, A)).toBe(3);
    expect(await segments(crashed)).toEqual([]);
  });

  it("stops at an entry a crash cut short, warns, and keeps the whole entries before it", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
    const store = open(dir);
    await store.set(A, record(1, 1));
    await store.set(B, record(1, 2));
    await powerCut(new Map());
    const [segment] = await segments(crashed);
    const path = join(crashed, "journal", segment!);
    const whole = await readFile(path);
    // Drop the last 10 bytes: B's entry is torn.
    await writeFile(path, whole.subarray(0, whole.length - 10));

    const restarted = open(crashed);
    expect(await countOf(restarted, A)).toBe(1);
    expect(await countOf(restarted, B)).toBeUndefined();
    expect(logger.warnings).toEqual([expect.stringMatching(new RegExp(`^persist-session: journal segment ${segment} ends in \\d+ bytes that are not an entry written with this store's key: a write a crash cut short`))]);
  });

  it("refuses entries with a wrong MAC or an id that is not a UUIDv4, so no path leaves the store", async () => {
    const escape = join(crashed, "..", `escaped-${process.pid}`);
    await writeFile(join(crashed, ".secret"), `${"s".repeat(64)}\n`, { mode: 0o600 });
    await mkdir(join(crashed, "journal"), { mode: 0o700 });
    await writeFile(
      join(crashed, "journal", "journal-1.log"),
      // A record id that walks out of the directory, then a real id with a MAC that does not match.
      `../escaped-${process.pid} 5 AAAAAAAAAAAAAAAAAAAAAA\nhello${A} 5 AAAAAAAAAAAAAAAAAAAAAA\nhello`,
      { mode: 0o600 },
    );
    await writeFile(join(crashed, "journal", "journal-2.log"), `${B} 5 AAAAAAAAAAAAAAAAAAAAAA\nhello`, { mode: 0o600 });

    const restarted = open(crashed);
    expect(await countOf(restarted, A)).toBeUndefined();
    expect(await countOf(restarted, B)).toBeUndefined();
    await expect(stat(escape)).rejects.toMatchObject({ code: "ENOENT" });
    expect(await recordFiles(crashed)).toEqual(new Map());
    expect(logger.warnings).toHaveLength(2);
    expect(await segments(crashed)).toEqual([]);
  });

  it("checkpoints on its own: the segment goes, the record files stay", async () => {
    const store = open(dir);
    await store.set(A, record(1, 9));
    const [segment] = await segments(dir);
    expect(segment).toBeDefined();
    expect((await stat(join(dir, "journal", segment!))).mode & 0o777).toBe(0o600);
    expect((await stat(join(dir, "journal"))).mode & 0o777).toBe(0o700);
    await eventually(async () => (await segments(dir)).length === 0, "the checkpoint", 15_000);
    expect(await countOf(open(dir), A)).toBe(9);
    expect(logger.errors).toEqual([]);
  });

  it("without syncfs, fsyncs every write and keeps no journal", async () => {
    const path = process.env.PATH;
    const store = open(dir);
    // No `sync` to be found while the store starts.
    process.env.PATH = crashed;
    try {
      await store.get(A);
    } finally {
      process.env.PATH = path;
    }
    expect(logger.warnings).toEqual([expect.stringContaining("syncfs (`sync -f`) is not available here")]);
    await store.set(A, record(1, 4));
    await store.set(A, record(2, 6));
    expect(await segments(dir)).toEqual([]);
    expect(await countOf(open(dir), A)).toBe(6);
  });
});
