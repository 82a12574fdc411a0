/**
 * The store directory is ours, or the FileStore refuses to start (#17, point 1): at its
 * first use, or at `sessions.ready()` / `store.ready()` for a start-up script (never in
 * the constructor, which `next build` runs).
 * The review had another local user create the directory (0777, in a /tmp-like
 * parent) and plant `.secret`: the app logged "using a generated one" and signed
 * with the planted secret, so that user could forge any visitor's cookie. A
 * planted journal segment rewrote a victim's record at the next start, and four
 * record files replaced by FIFOs blocked libuv's thread pool, so every browser
 * hung. Each of those is a case here.
 *
 * The cases with another user run as root, with that user's side done by
 * `setpriv` as uid 65534 (nobody) or by `chown 65534`; elsewhere they are
 * skipped with one line.
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { closeSync, constants, openSync } from "node:fs";
import { chmod, chown, lstat, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse, stringify } from "devalue";
import { afterAll, afterEach, beforeEach, describe, expect, it } from "vitest";
import { FileStore, persistSession, type Sessions } from "../src/index.js";
import { nodeApp } from "./fixtures/app.js";
import * as standard from "./fixtures/standard.js";
import { Browser, listen, type TestServer } from "./helpers/http.js";
import { capturingLogger, type CapturingLogger } from "./helpers/robustness.js";
import { SECRET } from "./suites/behaviour.js";

const root = process.getuid?.() === 0;
const NOBODY = 65534;
const ID = "0b7f1a52-8a0e-4a0e-9a3c-1c2d3e4f5a6b";
afterAll(() => {
  if (!root) console.log("store-directory.test.ts: not root, so the cases with another local user (uid 65534 through setpriv) were skipped");
});

/** Runs a shell command as uid/gid 65534 with no supplementary groups: another local user. */
function asNobody(command: string): void {
  execFileSync("setpriv", ["--reuid", String(NOBODY), "--regid", String(NOBODY), "--clear-groups", "sh", "-c", command], { stdio: "pipe" });
}

function mkfifo(path: string): void {
  execFileSync("mkfifo", ["-m", "600", path]);
}

/** Gives a FIFO a writer for a moment, so an open() blocked on it (the old code's) returns. */
function unblockFifo(path: string): void {
  try {
    closeSync(openSync(path, constants.O_WRONLY | constants.O_NONBLOCK));
  } catch {
    // No reader waiting, or not a FIFO (any more).
  }
}

const quiet = { warn: () => undefined, error: () => undefined };

describe("the store directory is ours, or the store refuses to start", () => {
  let parent: string;
  let dir: string;

  beforeEach(async () => {
    parent = await mkdtemp(join(tmpdir(), "persist-session-ours-"));
    dir = join(parent, "store");
  });
  afterEach(async () => {
    await rm(parent, { recursive: true, force: true });
  });

  it.skipIf(!root)("refuses a directory another user prepared with a planted secret, as the review did, and says how to fix it", async () => {
    // A /tmp-like parent: everyone may create in it, nobody may remove another's entries.
    await chmod(parent, 0o1777);
    asNobody(`mkdir -m 0777 ${dir} && printf '%s\\n' ${"p".repeat(64)} > ${dir}/.secret && chmod 600 ${dir}/.secret`);
    await expect(persistSession({ store: new FileStore({ dir }), logger: quiet, sweepInterval: 0 }).ready()).rejects.toThrow(
      new RegExp(`^persist-session: the store directory ${dir} belongs to uid ${NOBODY}, not to this process \\(uid 0\\): whoever owns it can read and forge every session\\. Remove it and let persist-session create it`),
    );
    // The default directory too, with the message naming it.
    asNobody(`mkdir -m 0700 ${parent}/.persist-session`);
    const cwd = process.cwd();
    process.chdir(parent);
    try {
      await expect(persistSession({ secret: SECRET, logger: quiet, sweepInterval: 0 }).ready()).rejects.toThrow(
        `persist-session: the default store directory (.persist-session in ${parent}) ${parent}/.persist-session belongs to uid ${NOBODY}`,
      );
    } finally {
      process.chdir(cwd);
    }
  });

  it.each(["777", "770", "730", "702"])("refuses its own directory when others can write it (mode %s), saying to chmod 700", async (mode) => {
    await mkdir(dir, { mode: 0o700 });
    await chmod(dir, Number.parseInt(mode, 8));
    await expect(new FileStore({ dir }).ready()).rejects.toThrow(
      `persist-session: the store directory ${dir} is writable by other users (mode ${mode}): they could plant records, a secret or journal entries. Run \`chmod 700 ${dir}\``,
    );
  });

  it("refuses a symlink as the store directory", async () => {
    const real = join(parent, "real");
    await mkdir(real, { mode: 0o700 });
    await symlink(real, dir);
    await expect(new FileStore({ dir }).ready()).rejects.toThrow(`persist-session: the store directory ${dir} is a symbolic link`);
  });

  it("refuses a symlink as the journal directory", async () => {
    await mkdir(dir, { mode: 0o700 });
    await mkdir(join(parent, "elsewhere"), { mode: 0o700 });
    await symlink(join(parent, "elsewhere"), join(dir, "journal"));
    await expect(new FileStore({ dir }).ready()).rejects.toThrow(`persist-session: the journal directory ${dir}/journal is a symbolic link`);
  });

  const secretCases: ReadonlyArray<readonly [string, (path: string) => Promise<void>, string, boolean]> = [
    ["a symlink to a secret file elsewhere", async (path) => {
      await writeFile(join(parent, "planted"), `${"p".repeat(64)}\n`, { mode: 0o600 });
      await symlink(join(parent, "planted"), path);
    }, "a symbolic link", false],
    ["a FIFO", async (path) => mkfifo(path), "a FIFO", false],
    ["readable by others (mode 644)", async (path) => writeFile(path, `${"p".repeat(64)}\n`, { mode: 0o644 }), "mode 644, open to other users (the store writes 0600)", false],
    ["another user's file", async (path) => {
      await writeFile(path, `${"p".repeat(64)}\n`, { mode: 0o600 });
      await chown(path, NOBODY, NOBODY);
    }, `owned by uid ${NOBODY}, not by this process (uid 0)`, true],
  ];
  it.each(secretCases)("refuses to start with a .secret that is %s, without reading it", async (_name, plant, reason, needsRoot) => {
    if (needsRoot && !root) return;
    await mkdir(dir, { mode: 0o700 });
    await plant(join(dir, ".secret"));
    try {
      await expect(persistSession({ store: new FileStore({ dir }), logger: quiet, sweepInterval: 0 }).ready()).rejects.toThrow(
        `persist-session: the secret file ${dir}/.secret is ${reason}, so it was not used: someone else may know it and forge every visitor's cookie. Delete it`,
      );
    } finally {
      unblockFifo(join(dir, ".secret"));
    }
  });

  it("says whether the secret it uses was generated now or was already there", async () => {
    const warnings: string[] = [];
    const logger = { warn: (message: string) => void warnings.push(message), error: () => undefined };
    const change = (sessions: Sessions) =>
      sessions.fetch(async () => {
        new standard.AppState().count += 1;
        return new Response("ok");
      })(new Request("http://localhost/"));
    const first = persistSession({ store: new FileStore({ dir }), logger, sweepInterval: 0 });
    await change(first);
    await first.close();
    const second = persistSession({ store: new FileStore({ dir }), logger, sweepInterval: 0 });
    await change(second);
    await second.close();
    expect(warnings).toEqual([
      `persist-session: no secret given; generated one and kept it in ${dir}. Pass \`secret\` (32+ characters) in production.`,
      `persist-session: no secret given; using the secret already kept in ${dir} (this start did not generate it). Pass \`secret\` (32+ characters) in production.`,
    ]);
  });
});

describe("the directory is checked and claimed at the store's first use, not when the store is made", () => {
  let parent: string;
  let dir: string;
  const running: Array<{ close(): Promise<void> }> = [];

  beforeEach(async () => {
    parent = await mkdtemp(join(tmpdir(), "persist-session-lazy-"));
    dir = join(parent, "store");
  });
  afterEach(async () => {
    for (const closable of running.splice(0)) await closable.close();
    await rm(parent, { recursive: true, force: true });
  });

  /** `next build` imports the app's modules, constructing its store: that must leave nothing behind (#15). */
  it("creates, checks and claims nothing in the constructor; the first request does, once", async () => {
    const cwd = process.cwd();
    process.chdir(parent);
    try {
      const sessions = persistSession({ secret: SECRET, store: new FileStore({ dir }), logger: quiet, sweepInterval: 0 });
      const byDefault = persistSession({ secret: SECRET, logger: quiet, sweepInterval: 0 });
      running.push(sessions, byDefault);
      expect(await readdir(parent)).toEqual([]);
      const app = nodeApp(standard);
      const server = await listen((req, res) => sessions(req, res, () => app(req, res)));
      running.push(server);
      const browser = new Browser(server.url);
      expect(await browser.json("/inc", { method: "POST" })).toMatchObject({ count: 1 });
      expect(await browser.json("/inc", { method: "POST" })).toMatchObject({ count: 2 });
      expect(await readdir(parent)).toEqual(["store"]);
      expect((await lstat(dir)).mode & 0o777).toBe(0o700);
      expect(JSON.parse(await readFile(join(dir, ".claim"), "utf8"))).toMatchObject({ pid: process.pid });
    } finally {
      process.chdir(cwd);
    }
  });

  it("fails every request with a 500 while the directory is refused, logs the reason once, and serves once it is fixed", async () => {
    await mkdir(dir, { mode: 0o700 });
    await chmod(dir, 0o777);
    const logger = capturingLogger();
    const sessions = persistSession({ secret: SECRET, store: new FileStore({ dir }), logger, sweepInterval: 0 });
    running.push(sessions);
    const app = nodeApp(standard);
    const server = await listen((req, res) => sessions(req, res, () => app(req, res)));
    running.push(server);
    const statuses = await Promise.all(Array.from({ length: 5 }, () => new Browser(server.url).request("/inc", { method: "POST" }).then((response) => response.status)));
    expect(statuses).toEqual([500, 500, 500, 500, 500]);
    expect(logger.errors).toEqual([
      `persist-session: the store directory ${dir} is writable by other users (mode 777): they could plant records, a secret or journal entries. ` +
        `Run \`chmod 700 ${dir}\` (and check what is in it), or give the store a directory of its own. Until then every request that uses state fails (500); this is logged once.`,
    ]);
    await expect(sessions.ready()).rejects.toThrow(`persist-session: the store directory ${dir} is writable by other users (mode 777)`);
    expect(logger.errors).toHaveLength(1);
    // Fixed while the app runs: the next request starts the store.
    await chmod(dir, 0o700);
    expect(await new Browser(server.url).json("/inc", { method: "POST" })).toMatchObject({ count: 1 });
    await sessions.ready();
  });
});

describe("record files are read only when they are regular files of ours", () => {
  let parent: string;
  let dir: string;
  let logger: CapturingLogger;
  let sessions: Sessions;
  let server: TestServer;
  const fifos: string[] = [];

  beforeEach(async () => {
    parent = await mkdtemp(join(tmpdir(), "persist-session-records-"));
    dir = join(parent, "store");
    logger = capturingLogger();
    // cacheSize 0: every request opens its record file.
    sessions = persistSession({ secret: SECRET, store: new FileStore({ dir }), logger, sweepInterval: 0, cacheSize: 0 });
    const app = nodeApp(standard);
    server = await listen((req, res) => sessions(req, res, () => app(req, res)));
  });
  afterEach(async () => {
    // The old code's blocked opens would otherwise hold libuv's threads (and this process) forever.
    for (const fifo of fifos.splice(0)) for (const name of await readdir(dir).catch(() => [])) if (name.startsWith(fifo)) unblockFifo(join(dir, name));
    await server.close();
    await sessions.close();
    await rm(parent, { recursive: true, force: true });
  });

  /** A browser with a stored count, and its record's file name. */
  async function visitor(count: number): Promise<{ browser: Browser; id: string }> {
    const browser = new Browser(server.url);
    for (let i = 0; i < count; i++) await browser.json("/inc", { method: "POST" });
    return { browser, id: browser.cookies.get("std-app")!.slice(0, 36) };
  }

  it("sets aside FIFOs, symlinks and files open to others at a record's name, never reading or blocking on them", async () => {
    const bait = join(parent, "bait");
    const good = await visitor(3);
    await writeFile(bait, await readFile(join(dir, good.id)), { mode: 0o600 });
    const cases: Array<{ name: string; reason: string; plant: (path: string) => Promise<void> }> = [];
    // Four FIFOs at once, as the review had: libuv has four threads.
    for (let i = 0; i < 4; i++) {
      cases.push({ name: `FIFO ${i}`, reason: "a FIFO", plant: async (path) => {
        fifos.push(path.slice(dir.length + 1));
        mkfifo(path);
      } });
    }
    cases.push({ name: "a symlink to a valid record elsewhere", reason: "a symbolic link", plant: (path) => symlink(bait, path) });
    cases.push({ name: "a record readable by others", reason: "mode 644, open to other users (the store writes 0600)", plant: async (path) => chmod(path, 0o644) });
    if (root) cases.push({ name: "another user's record", reason: `owned by uid ${NOBODY}, not by this process (uid 0)`, plant: async (path) => chown(path, NOBODY, NOBODY) });
    const visitors = await Promise.all(cases.map(() => visitor(2)));
    for (const [i, { plant }] of cases.entries()) {
      const path = join(dir, visitors[i]!.id);
      if (!cases[i]!.name.includes("readable") && !cases[i]!.name.includes("another user")) await rm(path);
      await plant(path);
    }

    // All at once, and an untouched visitor alongside: every one answers, none waits on a file.
    const replies = await Promise.all(
      [...visitors, good].map(async ({ browser }) => {
        const response = await browser.request("/state", { signal: AbortSignal.timeout(5_000) });
        return { status: response.status, count: ((await response.json()) as { count: number }).count };
      }),
    );
    expect(replies).toEqual([...cases.map(() => ({ status: 200, count: 0 })), { status: 200, count: 3 }]);
    for (const [i, { reason }] of cases.entries()) {
      expect(logger.warnings).toContain(
        `persist-session: record ${visitors[i]!.id} could not be restored (the record file is ${reason}; it was not read); it was set aside and the request got fresh state.`,
      );
    }
    // Set aside under their names, for a person to look at; the bait itself is untouched.
    const names = await readdir(dir);
    for (const { id } of visitors) expect(names.some((name) => name.startsWith(`${id}.corrupt-`)), id).toBe(true);
    expect(await readFile(bait)).toEqual(await readFile(join(dir, good.id)));
  });
});

describe("a journal entry changes a record only if a holder of the store's secret wrote it", () => {
  let dir: string;
  let logger: CapturingLogger;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "persist-session-journal-forged-"));
    logger = capturingLogger();
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** A victim's record, written by a durable store and checkpointed. */
  async function victim(): Promise<void> {
    const store = new FileStore({ dir, durable: true });
    const now = Date.now();
    await store.set(ID, { key: "std-app", version: 1, updatedAt: now, expires: now + 3_600_000, data: stringify({ count: 1 }) });
    await store.close();
  }

  async function countAfterRestart(): Promise<number | undefined> {
    const store = new FileStore({ dir });
    store.useLogger(logger);
    try {
      const record = await store.get(ID);
      return record === undefined ? undefined : (parse(record.data) as { count: number }).count;
    } finally {
      await store.close();
    }
  }

  /** An entry as the journal wrote them before it was keyed: a checksum anyone can compute. */
  function unkeyedEntry(id: string, text: string): Buffer {
    const payload = Buffer.from(text);
    const sum = createHash("sha256").update(`${id} ${payload.length}\n`).update(payload).digest("base64url").slice(0, 16);
    return Buffer.concat([Buffer.from(`${id} ${payload.length} ${sum}\n`), payload]);
  }

  const forged = () => {
    const now = Date.now();
    return unkeyedEntry(ID, `${JSON.stringify({ v: 1, key: "std-app", version: 9, updatedAt: now, expires: now + 3_600_000 })}\n${stringify({ count: 666 })}`);
  };

  it("does not replay a planted segment whose entries carry a checksum anyone can compute", async () => {
    await victim();
    await mkdir(join(dir, "journal"), { recursive: true, mode: 0o700 });
    await writeFile(join(dir, "journal", "journal-99.log"), forged(), { mode: 0o600 });
    expect(await countAfterRestart()).toBe(1);
    expect(logger.warnings).toEqual([expect.stringMatching(/^persist-session: journal segment journal-99\.log ends in \d+ bytes that are not an entry written with this store's key/)]);
  });

  const unsafeSegments: ReadonlyArray<readonly [string, (path: string) => Promise<void>, string]> = [
    ["a symlink", async (path) => {
      await writeFile(`${dir}/planted`, forged(), { mode: 0o600 });
      await symlink(`${dir}/planted`, path);
    }, "a symbolic link"],
    ["a FIFO", async (path) => mkfifo(path), "a FIFO"],
    ["open to others", async (path) => writeFile(path, forged(), { mode: 0o644 }), "mode 644, open to other users (the store writes 0600)"],
  ];
  it.each(unsafeSegments)("leaves a segment that is %s unread, with a warning", async (_name, plant, reason) => {
    await victim();
    await mkdir(join(dir, "journal"), { recursive: true, mode: 0o700 });
    const path = join(dir, "journal", "journal-99.log");
    await plant(path);
    try {
      expect(await countAfterRestart()).toBe(1);
    } finally {
      unblockFifo(path);
    }
    expect(logger.warnings).toEqual([`persist-session: journal segment ${path} is ${reason}, so this store did not write it; it was not read or replayed. Remove it.`]);
  });
});
