import { createHash, randomBytes } from "node:crypto";
import { closeSync, fstatSync, linkSync, openSync, readFileSync, readSync, unlinkSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { threadId } from "node:worker_threads";
import { isCode, OPEN_NO_FOLLOW, unsafeFileReason } from "./file-system.js";
import { jsonFields } from "./json-fields.js";

/**
 * One process per FileStore directory (#17). A FileStore caches records and locks them
 * in its own process, so two processes on one directory lose each other's updates; a
 * claim file in the directory names the process using it, and another process is
 * refused at start with an error naming both.
 *
 * The claim is `.claim`: one JSON line with the pid, the process's start time (Linux
 * `/proc/<pid>/stat`, so a reused pid is not taken for the old process), host name,
 * boot id, thread and a random nonce. It is written in full to a temporary file and
 * hard-linked into place, which fails if a claim exists: a reader sees a whole claim
 * or none. A claim whose process is gone (killed, or a reboot) is taken over; so that
 * two processes doing that at once cannot both win, a takeover first takes a guard
 * claim named after the stale claim's bytes, the same way (so a guard its taker left
 * by dying is taken over in turn), re-reads the claim, and removes it only if it is
 * still the same bytes. A claim from another host (a shared volume) cannot be checked
 * and counts as live.
 *
 * Within a process, every FileStore on a directory shares the claim (counted), also
 * across copies of this module (Next.js loads modules more than once), through
 * `globalThis`; the last `close()` removes it, as does the process's exit.
 * Everything here is synchronous: it runs once, when a store is made.
 */

const CLAIM_FILE = ".claim";
const TAKEOVER_PREFIX = ".claim-takeover-";
/** Guards of guards: a chain this deep means something other than crashes is going on. */
const MAX_TAKEOVER_DEPTH = 4;
const MAX_CLAIM_BYTES = 4096;
/**
 * How long a process waits, looking again every TAKEOVER_POLL_MS, while another live process
 * holds the guard of the stale claim they both found: its takeover takes a few file operations,
 * after which the claim names whoever won, and a refusal names that process (not the guard's
 * holder, which may have lost to a third).
 */
const TAKEOVER_WAIT_MS = 2000;
const TAKEOVER_POLL_MS = 5;
/** For a synchronous pause: claiming runs once, when a store starts, and is synchronous throughout. */
const SLEEP = new Int32Array(new SharedArrayBuffer(4));

/** A live process holds a takeover guard: the claim it guards is about to change hands. */
class TakeoverUnderWay extends Error {
  /** What to refuse with if the takeover does not finish in time: the guard and its holder, named. */
  constructor(readonly refusal: Error) {
    super(refusal.message);
  }
}

interface ClaimContent {
  readonly pid: number;
  /** Field 22 of /proc/<pid>/stat (clock ticks since boot); absent where there is no /proc. */
  readonly start: string | undefined;
  readonly host: string;
  readonly boot: string | undefined;
  readonly thread: number;
  readonly nonce: string;
  /** When the claim was taken, for the message another process shows. */
  readonly since: string;
}

interface HeldClaim {
  count: number;
  readonly path: string;
  readonly nonce: string;
}

interface Registry {
  /** Claims this realm holds, by the directory's device and inode (two paths to one directory are one claim). */
  readonly claims: Map<string, HeldClaim>;
  exitHooked: boolean;
}

const REGISTRY_KEY = Symbol.for("persist-session.file-claims");

/** Shared by every copy of this module in the realm, so two copies of FileStore on one directory share one claim. */
function registry(): Registry {
  const global = globalThis as Record<symbol, Registry | undefined>;
  return (global[REGISTRY_KEY] ??= { claims: new Map(), exitHooked: false });
}

function readProcStart(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "latin1");
    // The command name (field 2) is in parentheses and may hold spaces: count from the last ")".
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
  } catch {
    return undefined;
  }
}

function readBootId(): string | undefined {
  try {
    return readFileSync("/proc/sys/kernel/random/boot_id", "latin1").trim();
  } catch {
    return undefined;
  }
}

const self = { pid: process.pid, start: readProcStart(process.pid), host: hostname(), boot: readBootId(), thread: threadId };

interface ReadClaim {
  readonly content: ClaimContent | undefined;
  /** Names the exact bytes read, for a takeover's guard. */
  readonly digest: string;
}

/** The claim at `path`, or `undefined` when there is none. A claim that is not a file of ours refuses the start. */
function readClaim(path: string): ReadClaim | undefined {
  let fd: number;
  try {
    fd = openSync(path, OPEN_NO_FOLLOW);
  } catch (error) {
    if (isCode(error, "ENOENT")) return undefined;
    if (isCode(error, "ELOOP") || isCode(error, "EMLINK")) throw unsafeClaim(path, "a symbolic link");
    throw error;
  }
  try {
    const reason = unsafeFileReason(fstatSync(fd));
    if (reason !== undefined) throw unsafeClaim(path, reason);
    const buffer = Buffer.alloc(MAX_CLAIM_BYTES);
    const bytes = buffer.subarray(0, readSync(fd, buffer, 0, MAX_CLAIM_BYTES, 0));
    return { content: parseClaim(bytes.toString("utf8")), digest: createHash("sha256").update(bytes).digest("hex").slice(0, 32) };
  } finally {
    closeSync(fd);
  }
}

function unsafeClaim(path: string, reason: string): Error {
  return new Error(`persist-session: the claim file ${path} is ${reason}, so it was not written by a FileStore of this user. Remove it, and check who else can write the directory.`);
}

/** A claim's fields; `undefined` for bytes no FileStore wrote (only a power cut mid-write can leave those, and it killed the writer). */
function parseClaim(text: string): ClaimContent | undefined {
  const fields = jsonFields(text);
  if (fields === undefined) return undefined;
  const { pid, start, host, boot, thread, nonce, since } = fields;
  if (!Number.isSafeInteger(pid) || typeof host !== "string" || typeof nonce !== "string" || !Number.isSafeInteger(thread) || typeof since !== "string") return undefined;
  return {
    pid: pid as number,
    start: typeof start === "string" ? start : undefined,
    host,
    boot: typeof boot === "string" ? boot : undefined,
    thread: thread as number,
    nonce,
    since,
  };
}

/** Whether the claim's process may still be running: only a claim shown to be dead may be taken over. */
function mayBeAlive(claim: ClaimContent): boolean {
  if (claim.host !== self.host) return true; // another machine or container: nothing here can tell
  if (claim.boot !== undefined && self.boot !== undefined && claim.boot !== self.boot) return false; // written before a reboot
  try {
    process.kill(claim.pid, 0);
  } catch (error) {
    if (isCode(error, "ESRCH")) return false;
    // EPERM: a process of another user has that pid now; its start time below tells whether it is the claimant.
  }
  const start = readProcStart(claim.pid);
  if (claim.start !== undefined && start !== undefined && start !== claim.start) return false; // the pid was reused
  return true;
}

function inUseError(dir: string, path: string, claim: ClaimContent): Error {
  const who =
    claim.pid === self.pid && claim.host === self.host
      ? `another thread or module realm of this process (pid ${claim.pid}, thread ${claim.thread})`
      : `another process (pid ${claim.pid}${claim.host === self.host ? "" : ` on host ${claim.host}`}, since ${claim.since})`;
  return new Error(
    `persist-session: the store directory ${dir} is in use by ${who}. A FileStore serves one process per directory: two would lose each other's updates. ` +
      `Stop that process, give this one a directory of its own, or use RedisStore to serve from several processes. If that process is gone, delete ${path}.`,
  );
}

/**
 * Links `mine` (a file holding this process's claim) at `path`, taking over a dead claimant's.
 * Throws when a live process (or one that cannot be checked) holds it.
 */
function take(dir: string, path: string, mine: string, nonce: string, depth: number): void {
  const waitUntil = Date.now() + TAKEOVER_WAIT_MS;
  for (let attempt = 0; attempt < 16; attempt++) {
    try {
      linkSync(mine, path);
      return;
    } catch (error) {
      if (!isCode(error, "EEXIST")) throw error;
    }
    const other = readClaim(path);
    if (other === undefined) continue; // released meanwhile: try again
    if (other.content?.nonce === nonce) return;
    if (other.content !== undefined && mayBeAlive(other.content)) {
      // A live process holds this guard: it is taking the claim over now, and may still lose it to a third.
      const refusal = inUseError(dir, path, other.content);
      throw depth > 0 ? new TakeoverUnderWay(refusal) : refusal;
    }
    if (depth >= MAX_TAKEOVER_DEPTH) throw new Error(`persist-session: could not take over the stale claim ${path}: other processes keep taking it over too. Try again, or delete it.`);
    // The guard is named by the stale bytes: everyone taking over this claim competes for the same guard.
    const guard = join(dir, `${TAKEOVER_PREFIX}${other.digest}`);
    try {
      take(dir, guard, mine, nonce, depth + 1);
    } catch (error) {
      if (!(error instanceof TakeoverUnderWay)) throw error;
      if (Date.now() > waitUntil) throw error.refusal;
      // Look at the claim again once that takeover is done: refused then by whoever won it, by name.
      Atomics.wait(SLEEP, 0, 0, TAKEOVER_POLL_MS);
      attempt--;
      continue;
    }
    try {
      // Only the guard's holder removes a claim with those bytes, so it is still the stale one if it still reads so.
      if (readClaim(path)?.digest === other.digest) unlinkSync(path);
    } finally {
      removeIfOurs(guard, nonce);
    }
  }
  throw new Error(`persist-session: the claim ${path} kept changing while this process tried to take it. Try again.`);
}

function removeIfOurs(path: string, nonce: string): void {
  try {
    if (readClaim(path)?.content?.nonce === nonce) unlinkSync(path);
  } catch {
    // Gone already, or not ours to remove.
  }
}

/**
 * Claims `dir` for this process, or throws naming the process that has it.
 * `key` identifies the directory (its device and inode).
 */
export function claimDirectory(dir: string, key: string): void {
  const shared = registry();
  const existing = shared.claims.get(key);
  if (existing !== undefined) {
    existing.count++;
    return;
  }
  const nonce = randomBytes(12).toString("hex");
  const content: ClaimContent = { ...self, nonce, since: new Date().toISOString() };
  const mine = join(dir, `${CLAIM_FILE}.${nonce}.tmp`);
  try {
    // "wx": O_EXCL, so a planted file or symlink at this name is never written through.
    writeFileSync(mine, `${JSON.stringify(content)}\n`, { mode: 0o600, flag: "wx" });
  } catch (error) {
    throw new Error(
      `persist-session: cannot claim the store directory ${dir} for this process (${(error as Error).message}): a FileStore writes its records there. ` +
        "Give it a directory it can write.",
      { cause: error },
    );
  }
  try {
    take(dir, join(dir, CLAIM_FILE), mine, nonce, 0);
  } finally {
    unlinkSync(mine);
  }
  shared.claims.set(key, { count: 1, path: join(dir, CLAIM_FILE), nonce });
  if (!shared.exitHooked) {
    shared.exitHooked = true;
    // A process that ends without close() leaves no claim behind when it can help it.
    process.once("exit", () => {
      for (const claim of shared.claims.values()) removeIfOurs(claim.path, claim.nonce);
    });
  }
}

/** Gives up one FileStore's share of the claim; the last one removes the claim file. */
export function releaseDirectory(key: string): void {
  const { claims } = registry();
  const claim = claims.get(key);
  if (claim === undefined) return;
  if (--claim.count > 0) return;
  claims.delete(key);
  removeIfOurs(claim.path, claim.nonce);
}
