/**
 * One process per FileStore directory (#17, point 2): the FileStore caches and
 * locks records in its own process, so a second process on the directory would
 * lose updates. The claim is taken at the store's first use (never when it is
 * constructed: `next build` constructs it); a second live process is refused then,
 * with an error naming the directory and the process holding it, which every
 * request of that process meets (a 500, logged once) and `sessions.ready()`
 * rejects with. A claim left by a killed process is taken over, by exactly one
 * of the processes that start at once; closing a store releases the claim, so a
 * restart on the same directory works, in this process or another. (Two stores on
 * one directory in one process are the core's business: they share the claim here.)
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rename, rm, writeFile } from "node:fs/promises";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import { FileStore, persistSession } from "../src/index.js";
import * as standard from "./fixtures/standard.js";
import { capturingLogger, delay } from "./helpers/robustness.js";

const BUILT = fileURLToPath(new URL("../dist/index.js", import.meta.url));
const HOLDER = fileURLToPath(new URL("./fixtures/claim-holder.mjs", import.meta.url));
const linux = process.platform === "linux";

interface Holder {
  readonly child: ChildProcess;
  /** "claimed <pid>" or "refused <message>". */
  readonly said: Promise<string>;
  readonly exited: Promise<number | null>;
}

function startHolder(dir: string): Holder {
  const child = spawn(process.execPath, [HOLDER, dir], { stdio: ["pipe", "pipe", "pipe"] });
  let out = "";
  const said = new Promise<string>((resolve, reject) => {
    child.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
      out += chunk;
      if (out.includes("\n")) resolve(out.trim());
    });
    let err = "";
    child.stderr!.setEncoding("utf8").on("data", (chunk: string) => (err += chunk));
    child.once("exit", (code) => reject(new Error(`claim-holder exited (${code}) before saying anything: ${err}`)));
  });
  said.catch(() => undefined);
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return { child, said, exited };
}

async function killed(holder: Holder): Promise<void> {
  holder.child.kill("SIGKILL");
  await holder.exited;
}

describe("one process per FileStore directory", () => {
  let dir: string;
  const holders: Holder[] = [];
  const stores: FileStore[] = [];

  beforeAll(() => {
    if (!existsSync(BUILT)) throw new Error("dist/ is missing: run `npm run build` (npm test does) before this suite.");
  });
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "persist-session-claim-"));
  });
  afterEach(async () => {
    for (const holder of holders.splice(0)) await killed(holder);
    for (const store of stores.splice(0)) await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** A store of this process that has claimed the directory (its first use). */
  const open = async () => {
    const store = new FileStore({ dir });
    stores.push(store);
    await store.ready();
    return store;
  };
  const hold = async () => {
    const holder = startHolder(dir);
    holders.push(holder);
    expect(await holder.said).toBe(`claimed ${holder.child.pid}`);
    return holder;
  };

  it("refuses a second live process at start, naming the directory and the process", async () => {
    const holder = await hold();
    const refusal = new RegExp(
      `^persist-session: the store directory ${dir} is in use by another process \\(pid ${holder.child.pid}, since \\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z\\)\\. ` +
        "A FileStore serves one process per directory: two would lose each other's updates\\. Stop that process, give this one a directory of its own, or use RedisStore",
    );
    await expect(new FileStore({ dir }).ready()).rejects.toThrow(refusal);
    await expect(persistSession({ store: new FileStore({ dir }), secret: "s".repeat(40), sweepInterval: 0 }).ready()).rejects.toThrow(refusal);
    // And the other way round.
    await killed(holders.pop()!);
    await open();
    const second = startHolder(dir);
    holders.push(second);
    expect(await second.said).toMatch(new RegExp(`^refused persist-session: the store directory ${dir} is in use by another process \\(pid ${process.pid}, `));
    expect(await second.exited).toBe(3);
  });

  it("fails each request of a refused process with a 500, logs the refusal once, and takes over once the other is gone", async () => {
    const holder = await hold();
    const logger = capturingLogger();
    const sessions = persistSession({ store: new FileStore({ dir }), secret: "s".repeat(40), logger, sweepInterval: 0 });
    const bump = () =>
      sessions.fetch(async () => {
        new standard.AppState().count += 1;
        return new Response("ok");
      })(new Request("http://localhost/", { method: "POST" }));
    try {
      expect((await Promise.all(Array.from({ length: 4 }, bump))).map((response) => response.status)).toEqual([500, 500, 500, 500]);
      expect(logger.errors).toEqual([
        expect.stringMatching(
          new RegExp(`^persist-session: the store directory ${dir} is in use by another process \\(pid ${holder.child.pid}, .* Until then every request that uses state fails \\(500\\); this is logged once\\.$`),
        ),
      ]);
      await killed(holders.pop()!);
      expect((await bump()).status).toBe(200);
      expect(JSON.parse(await readFile(join(dir, ".claim"), "utf8"))).toMatchObject({ pid: process.pid });
      expect(logger.errors).toHaveLength(1);
    } finally {
      await sessions.close();
    }
  });

  it("says why before any request: the first sweep meets the refusal and logs it, once", async () => {
    const holder = await hold();
    const logger = capturingLogger();
    // The default sweepInterval: its first sweep runs soon after start, and the directory exists.
    const sessions = persistSession({ store: new FileStore({ dir }), secret: "s".repeat(40), logger });
    try {
      await vi.waitFor(() => expect(logger.errors).toHaveLength(1), { timeout: 20_000, interval: 50 });
      expect(logger.errors[0]).toMatch(new RegExp(`^persist-session: the store directory ${dir} is in use by another process \\(pid ${holder.child.pid}, `));
      expect(await sessions.sweep()).toBe(0);
      expect(logger.errors).toHaveLength(1);
    } finally {
      await sessions.close();
    }
  });

  it("takes over the claim of a process that was killed", async () => {
    const holder = await hold();
    await killed(holders.pop()!);
    // The claim is still there, naming a process that is gone.
    expect(JSON.parse(await readFile(join(dir, ".claim"), "utf8"))).toMatchObject({ pid: holder.child.pid });
    await open();
    expect(JSON.parse(await readFile(join(dir, ".claim"), "utf8"))).toMatchObject({ pid: process.pid });
  });

  it("lets exactly one of several processes starting at once take over a stale claim", async () => {
    for (let round = 0; round < 2; round++) {
      await hold();
      await killed(holders.pop()!);
      const racing = Array.from({ length: 6 }, () => startHolder(dir));
      holders.push(...racing);
      const said = await Promise.all(racing.map((holder) => holder.said));
      const winners = racing.filter((_, i) => said[i]!.startsWith("claimed"));
      expect(winners, `round ${round}: ${said.join(" | ")}`).toHaveLength(1);
      const winner = winners[0]!.child.pid!;
      for (const [i, line] of said.entries()) {
        if (racing[i]!.child.pid === winner) continue;
        expect(line).toMatch(new RegExp(`^refused persist-session: the store directory ${dir} is in use by another process \\(pid ${winner}, `));
      }
      for (const holder of holders.splice(0)) await killed(holder);
    }
  });

  it("names the process that won a takeover, not one that was still taking the stale claim over", async () => {
    // A stale claim, and the takeover guard for it that a live process (the taker) holds in the middle of taking it over.
    await hold();
    await killed(holders.pop()!);
    const stale = await readFile(join(dir, ".claim"));
    const guard = join(dir, `.claim-takeover-${createHash("sha256").update(stale).digest("hex").slice(0, 32)}`);
    const elsewhere = [await mkdtemp(join(tmpdir(), "persist-session-claim-")), await mkdtemp(join(tmpdir(), "persist-session-claim-"))];
    try {
      const [taker, winner] = elsewhere.map((other) => {
        const holder = startHolder(other);
        holders.push(holder);
        return holder;
      });
      for (const holder of [taker!, winner!]) expect(await holder.said).toMatch(/^claimed /);
      await writeFile(guard, await readFile(join(elsewhere[0]!, ".claim")), { mode: 0o600 });
      const late = startHolder(dir);
      holders.push(late);
      await delay(300);
      // The takeover ends with a third process holding the claim (the taker lost it, as a racer can).
      await writeFile(join(dir, ".claim.next"), await readFile(join(elsewhere[1]!, ".claim")), { mode: 0o600 });
      await rename(join(dir, ".claim.next"), join(dir, ".claim"));
      await rm(guard);
      expect(await late.said).toMatch(new RegExp(`^refused persist-session: the store directory ${dir} is in use by another process \\(pid ${winner!.child.pid}, `));
    } finally {
      for (const other of elsewhere) await rm(other, { recursive: true, force: true });
    }
  });

  it("names the process holding the takeover when its takeover does not finish within the wait", async () => {
    await hold();
    await killed(holders.pop()!);
    const stale = await readFile(join(dir, ".claim"));
    const guard = join(dir, `.claim-takeover-${createHash("sha256").update(stale).digest("hex").slice(0, 32)}`);
    const elsewhere = await mkdtemp(join(tmpdir(), "persist-session-claim-"));
    try {
      const taker = startHolder(elsewhere);
      holders.push(taker);
      expect(await taker.said).toMatch(/^claimed /);
      // The taker holds the guard and never finishes: the late process waits, then is refused by name.
      await writeFile(guard, await readFile(join(elsewhere, ".claim")), { mode: 0o600 });
      const late = startHolder(dir);
      holders.push(late);
      expect(await late.said).toMatch(new RegExp(`^refused persist-session: the store directory ${dir} is in use by another process \\(pid ${taker.child.pid}, `));
    } finally {
      await rm(elsewhere, { recursive: true, force: true });
    }
  });

  it("releases the claim on close(), so a restart on the directory works, here or in another process", async () => {
    const first = await open();
    const second = await open(); // the same process: one claim, shared
    await first.close();
    expect(existsSync(join(dir, ".claim")), "still held by the second store").toBe(true);
    const blocked = startHolder(dir);
    holders.push(blocked);
    expect(await blocked.said).toMatch(/^refused /);
    await second.close();
    expect(existsSync(join(dir, ".claim"))).toBe(false);
    // A restart in this process…
    const restarted = persistSession({ store: new FileStore({ dir }), secret: "s".repeat(40), sweepInterval: 0 });
    await restarted.ready();
    expect(JSON.parse(await readFile(join(dir, ".claim"), "utf8"))).toMatchObject({ pid: process.pid });
    await restarted.close();
    expect(existsSync(join(dir, ".claim"))).toBe(false);
    // …and in another one, which closes its store in turn.
    const next = await hold();
    next.child.stdin!.write("close\n");
    expect(await next.exited).toBe(0);
    expect(existsSync(join(dir, ".claim"))).toBe(false);
    await open();
  });

  it.skipIf(!linux)("takes over a claim whose pid now belongs to another process, and keeps one from another host", async () => {
    const claim = (fields: Record<string, unknown>) =>
      writeFile(join(dir, ".claim"), `${JSON.stringify({ pid: 1, start: "1", host: hostname(), boot: undefined, thread: 0, nonce: "n", since: "2020-01-01T00:00:00.000Z", ...fields })}\n`, { mode: 0o600 });
    // pid 1 is alive, but it did not start at that time: the pid was reused since.
    await claim({});
    await (await open()).close();
    stores.pop();
    // pid 1 with its real start time: a live process, refused.
    const stat = await readFile("/proc/1/stat", "latin1");
    await claim({ start: stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19] });
    await expect(new FileStore({ dir }).ready()).rejects.toThrow(/is in use by another process \(pid 1, since 2020-01-01T00:00:00\.000Z\)/);
    // Another host cannot be checked from here: live.
    await claim({ host: "some-other-host", pid: 999_999 });
    await expect(new FileStore({ dir }).ready()).rejects.toThrow(/is in use by another process \(pid 999999 on host some-other-host, since /);
  });
});
