/**
 * The FileStore's record-file changes run on one worker thread, in batches
 * (src/stores/file-thread.ts). Through the public FileStore: each change of a
 * batch settles as its own, a failure keeps its system error code, and the
 * thread neither keeps an idle process alive nor lets one exit mid-change.
 */
import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { FileStore, type StoredRecord } from "../src/index.js";

const run = promisify(execFile);
const ROOT = join(import.meta.dirname, "..");

function record(version: number, data: string): StoredRecord {
  const now = Date.now();
  return { key: "app-state", version, updatedAt: now, expires: now + 60_000, data };
}

describe("FileStore's file thread", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "persist-session-thread-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("settles each change of a batch as its own, failures beside successes", async () => {
    const good = new FileStore({ dir: join(dir, "good") });
    const gone = new FileStore({ dir: join(dir, "gone") });
    await good.set(randomUUID(), record(1, "[0]"));
    await gone.set(randomUUID(), record(1, "[0]"));
    // The second store's directory disappears: its writes fail, in the same batches as the first's.
    await rm(join(dir, "gone"), { recursive: true });
    const ids = Array.from({ length: 200 }, () => randomUUID());
    const outcomes = await Promise.allSettled(
      ids.map((id, index) => (index % 4 === 3 ? gone : good).set(id, record(1, `[${index}]`))),
    );
    outcomes.forEach((outcome, index) => {
      if (index % 4 === 3) {
        expect(outcome.status).toBe("rejected");
        expect((outcome as PromiseRejectedResult).reason).toMatchObject({ code: "ENOENT" });
      } else expect(outcome.status).toBe("fulfilled");
    });
    for (const [index, id] of ids.entries()) {
      if (index % 4 !== 3) expect((await good.get(id))?.data).toBe(`[${index}]`);
    }
  });

  it("replaces, creates over an existing file and deletes, each through the thread", async () => {
    const store = new FileStore({ dir });
    const id = randomUUID();
    await store.set(id, record(1, "[1]"));
    await store.set(id, record(2, "[2]"));
    expect(await store.get(id)).toMatchObject({ version: 2, data: "[2]" });
    // A first write whose file exists after all (EEXIST from the thread) replaces it.
    const other = randomUUID();
    await writeFile(join(dir, other), "left by someone", { mode: 0o600 });
    await store.set(other, record(1, "[3]"));
    expect(await store.get(other)).toMatchObject({ version: 1, data: "[3]" });
    await store.delete(id);
    await store.delete(id);
    expect(await store.get(id)).toBeUndefined();
    expect((await readdir(dir)).filter((name) => name.endsWith(".tmp"))).toEqual([]);
  });

  it("lets an idle process exit, and finishes a change in flight before it does", async () => {
    const id = randomUUID();
    // Imported by the package's name, as users do: the thread starts from the built code.
    const script = `
      import { FileStore } from "persist-session";
      const store = new FileStore({ dir: ${JSON.stringify(dir)} });
      await store.set(${JSON.stringify(randomUUID())}, ${JSON.stringify(record(1, "[0]"))});
      // Not awaited: only the thread's work keeps the process alive now.
      const large = { ...${JSON.stringify(record(1, ""))}, data: JSON.stringify("x".repeat(100_000)) };
      void store.set(${JSON.stringify(id)}, large);
    `;
    const { stderr } = await run(process.execPath, ["--input-type=module", "-e", script], { cwd: ROOT, timeout: 20_000 });
    expect(stderr).toBe("");
    const text = await readFile(join(dir, id), "utf8");
    expect(text.endsWith(`"${"x".repeat(100_000)}"`)).toBe(true);
  });
});
