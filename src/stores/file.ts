import { randomBytes } from "node:crypto";
import { constants, lstatSync } from "node:fs";
import { link, lstat, mkdir, open, rename, rm, unlink } from "node:fs/promises";
import { join, resolve } from "node:path";
import { isUuidV4 } from "../cookie-signing.js";
import type { Logger } from "../logger.js";
import { positive } from "../option-checks.js";
import { claimDirectory, releaseDirectory } from "./file-claim.js";
import { FileJournal, JOURNAL_DIR, journalKey, replayJournal } from "./file-journal.js";
import { fileThread, type ScanResult } from "./file-thread.js";
import { checkOwnDirectory, isCode, readOwnFile, syncFileSystem, syncPath, UnsafeFileError, unsafeFileReason } from "./file-system.js";
import { formatRecordText, parseRecordText } from "./record-text.js";
import { CorruptRecordError, DEFAULT_QUARANTINE_TTL_SECONDS, StoreStartError, type SessionStore, type StoredRecord, type StoreSecret } from "./store.js";

/** Options of {@link FileStore}. */
export interface FileStoreOptions {
  /**
   * Directory of the records, created with mode 0700.
   * @default ".persist-session"
   */
  dir?: string;
  /**
   * A write counts as stored only once it is on disk, so a power cut cannot lose
   * an acknowledged write. Off by default: a process crash never loses one either
   * way. Writes go to a write-ahead journal that one fdatasync covers for all
   * requests in flight, and the record files are made durable together every
   * couple of seconds (syncfs through `sync -f`, Linux). Where that command is
   * missing, each write and its directory are fsynced instead.
   * @default false
   */
  durable?: boolean;
  /**
   * Seconds a set-aside (unreadable) record, `<uuid>.corrupt-<time>`, is kept for a person to
   * inspect before the sweep removes it.
   * @default 2592000 (30 days)
   */
  quarantineTtl?: number;
}

const DEFAULT_DIR = ".persist-session";
const TEMP_SUFFIX = ".tmp";
/** A set-aside record: the record's id and when it was set aside (ms). */
const QUARANTINED = /^[0-9a-f-]{36}\.corrupt-(\d{1,15})$/;
const SECRET_FILE = ".secret";
/** A temporary file this old is an orphan even if another process made it. */
const ORPHAN_AGE_MS = 60_000;
/** Directory entries the file thread lists per message in a sweep: a few milliseconds of its work at most. */
const SCAN_BATCH = 128;
/** Names the sweep's listings on the file thread, which every FileStore of the process shares. */
let nextScan = 0;

/** What a sweep's listing passed on its way: left for {@link FileStore.removeOrphans}. */
interface Leftovers {
  readonly temps: string[];
  readonly quarantined: string[];
}

/**
 * One file per record in one directory, named only from the validated UUID.
 * A file is `<json header>\n<devalue data>`, replaced by writing a temporary
 * file beside it and renaming it over: a crash leaves the old file or the new
 * one, never a torn one (remix-run/remix#4353 truncated in place).
 * One process per directory: records are cached in memory between requests, so the
 * directory is claimed for this process (file-claim.ts), after checking that it is ours
 * (#17): a directory another user prepared is refused. Both happen at the store's first
 * use ({@link FileStore.ready}), never in the constructor: `next build` imports the app's
 * modules, constructing the store, and must leave no directory or claim behind (#15).
 * A durable store also keeps a write-ahead journal beside the records (file-journal.ts).
 *
 * @example
 * ```ts
 * const store = new FileStore({ dir: "/var/lib/my-app/state" });
 * const sessions = persistSession({ secret: process.env.SESSION_SECRET, store });
 * await sessions.ready(); // optional: fail at start-up if the directory is not ours or in use
 * ```
 */
export class FileStore implements SessionStore {
  readonly dir: string;
  readonly #durable: boolean;
  readonly #quarantineTtlMs: number;
  /** Said in the messages: the default directory is named as such, so a user who never chose it finds it. */
  readonly #dirName: string;
  /** The directory's device and inode while this store holds its claim (two paths to one directory are one claim). */
  #claimKey: string | undefined;
  #logger: Logger | undefined;
  readonly #startedAt = Date.now();
  readonly #ownTemps = new Set<string>();
  /** The directory checked, claimed and its journal replayed: the first use's work, done once (see {@link ready}). */
  #ready: Promise<void> | undefined;
  /** Temporary and set-aside files the last sweep's listing found, until removeOrphans() takes them. */
  #leftovers: Leftovers | undefined;
  /** The store's secret once read or made: it signs cookies when the app passes none, and keys the journal. */
  #secret: Promise<StoreSecret> | undefined;
  /** Durable through the journal: set once the directory is ready, where syncfs works. */
  #journal: FileJournal | undefined;
  /** Durable without the journal (no syncfs here): each write and its directory are fsynced. */
  #fsyncEach = false;

  constructor(options: FileStoreOptions = {}) {
    const { dir = DEFAULT_DIR, durable = false } = options;
    if (typeof dir !== "string" || dir === "") {
      throw new TypeError(`persist-session: option dir is invalid: ${String(dir)}. Give a directory path.`);
    }
    this.dir = resolve(dir);
    this.#durable = durable;
    this.#quarantineTtlMs = positive("quarantineTtl", options.quarantineTtl, DEFAULT_QUARANTINE_TTL_SECONDS) * 1000;
    // Options only: the file system is first touched by ready(), at the first use.
    this.#dirName = options.dir === undefined ? `the default store directory (${DEFAULT_DIR} in ${process.cwd()})` : "the store directory";
  }

  async get(id: string): Promise<StoredRecord | undefined> {
    await this.#ensureDir();
    let bytes: Buffer | undefined;
    try {
      bytes = await readOwnFile(this.#path(id));
    } catch (error) {
      // A FIFO, symlink or another user's file at a record's name: never read, set aside by the caller.
      if (error instanceof UnsafeFileError) throw new CorruptRecordError(`the record file is ${error.reason}; it was not read`);
      throw error;
    }
    if (bytes === undefined) return undefined;
    const text = bytes.toString("utf8");
    if (text === "") {
      // What a crash between creating a new record's file and writing it leaves: that
      // write was never acknowledged, and there are no bytes to set aside.
      this.#warn(`persist-session: record ${id} is an empty file, left by a write that a crash interrupted; it counts as no record.`);
      return undefined;
    }
    return parseRecordText(text, "file");
  }

  async set(id: string, record: StoredRecord): Promise<void> {
    await this.#ensureDir();
    const text = formatRecordText(record);
    await this.#stored(id, text, this.#writeRecord(id, text, record.version === 1));
  }

  async delete(id: string): Promise<void> {
    await this.#ensureDir();
    await this.#stored(id, undefined, this.#removeRecord(id));
  }

  /** Waits for a change of a record file and, in the journal's care, for its entry (written meanwhile) to be on disk. */
  async #stored(id: string, text: string | undefined, change: Promise<void>): Promise<void> {
    if (this.#journal === undefined) return change;
    await Promise.all([change, this.#journal.append(id, text === undefined ? undefined : Buffer.from(text), change)]);
  }

  #removeRecord(id: string): Promise<void> {
    return fileThread.run({ kind: "remove", path: this.#path(id) });
  }

  async #writeRecord(id: string, text: string, first: boolean): Promise<void> {
    const path = this.#path(id);
    const syncDir = this.#fsyncEach ? this.dir : undefined;
    // A first write has no old record to protect, so it creates the file in place and
    // skips the temporary file and the rename: half the directory updates of a new
    // session. A crash in between leaves an empty file, never acknowledged, which reads
    // as no record and goes with the sweep.
    if (first) {
      try {
        return await fileThread.run({ kind: "create", path, text, syncDir });
      } catch (error) {
        // The file exists after all: replace it like any other.
        if (!isCode(error, "EEXIST")) throw error;
      }
    }
    const temp = join(this.dir, `${id}.${randomBytes(6).toString("hex")}${TEMP_SUFFIX}`);
    this.#ownTemps.add(temp);
    try {
      await fileThread.run({ kind: "replace", temp, path, text, syncDir });
    } finally {
      this.#ownTemps.delete(temp);
    }
  }

  /** Replays journal entries into the record files. */
  async #applyChanges(changes: ReadonlyMap<string, Buffer | undefined>): Promise<void> {
    for (const [id, bytes] of changes) {
      if (bytes === undefined) await this.#removeRecord(id);
      else await this.#writeRecord(id, bytes.toString("utf8"), false);
    }
  }

  async quarantine(id: string): Promise<void> {
    await rename(this.#path(id), join(this.dir, `${id}.corrupt-${Date.now()}`)).catch((error: unknown) => {
      if (!isCode(error, "ENOENT")) throw error;
    });
  }

  /**
   * Record files whose header says they expired by `now`, and empty ones an interrupted first write
   * left. The listing and the headers are read on the file thread, a batch of entries per message
   * ({@link ScanRequest}); the temporary and set-aside files it passes are kept for
   * {@link removeOrphans}, which the sweep calls next, so the directory is listed once per sweep.
   */
  async *expiredIds(now: number): AsyncIterable<string> {
    this.#leftovers = undefined;
    if (!(await this.#sweepable())) return;
    const leftovers: Leftovers = { temps: [], quarantined: [] };
    for await (const found of this.#scan(now)) {
      leftovers.temps.push(...found.temps);
      leftovers.quarantined.push(...found.quarantined);
      yield* found.candidates;
    }
    this.#leftovers = leftovers;
  }

  /** The directory, listed on the file thread a batch at a time; record headers are read when `expiredBy` is given. */
  async *#scan(expiredBy: number | undefined): AsyncGenerator<ScanResult> {
    const scan = nextScan++;
    let done = false;
    try {
      for (let first = true; !done; first = false) {
        const orphanedBefore = Math.max(this.#startedAt, Date.now() - ORPHAN_AGE_MS);
        const found = await fileThread.scan({ kind: "scan", dir: this.dir, scan, first, max: SCAN_BATCH, expiredBy, orphanedBefore });
        done = found.done;
        yield found;
      }
    } finally {
      // Left before the end (the sweep failed): the thread closes the listing.
      if (!done) fileThread.run({ kind: "endScan", scan }).catch(() => undefined);
    }
  }

  /** Removes what interrupted writes left (temporary files), and set-aside records older than `quarantineTtl`. */
  async removeOrphans(): Promise<number> {
    if (!(await this.#sweepable())) return 0;
    let leftovers = this.#leftovers;
    this.#leftovers = undefined;
    if (leftovers === undefined) {
      leftovers = { temps: [], quarantined: [] };
      for await (const found of this.#scan(undefined)) {
        leftovers.temps.push(...found.temps);
        leftovers.quarantined.push(...found.quarantined);
      }
    }
    let removed = 0;
    const now = Date.now();
    for (const name of leftovers.quarantined) {
      // The time in its name is when it was set aside: a rename keeps the record's own mtime.
      const setAside = QUARANTINED.exec(name);
      if (setAside === null || Number(setAside[1]) + this.#quarantineTtlMs > now) continue;
      // Whatever it is (a FIFO or a directory set aside under a record's name too): rm never follows a symlink.
      await rm(join(this.dir, name), { recursive: true, force: true });
      removed++;
    }
    for (const name of leftovers.temps) {
      const path = join(this.dir, name);
      if (this.#ownTemps.has(path)) continue;
      try {
        if (this.#orphaned((await lstat(path)).mtimeMs)) {
          await unlink(path);
          removed++;
        }
      } catch (error) {
        if (!isCode(error, "ENOENT")) throw error;
      }
    }
    return removed;
  }

  async secret(): Promise<StoreSecret> {
    await this.#ensureDir();
    return this.#storeSecret();
  }

  /** The secret in `.secret`, made on first use; cached, so a store reads it once. */
  #storeSecret(): Promise<StoreSecret> {
    this.#secret ??= this.#readOrMakeSecret().catch((error: unknown) => {
      this.#secret = undefined;
      throw error;
    });
    return this.#secret;
  }

  async #readOrMakeSecret(): Promise<StoreSecret> {
    const path = join(this.dir, SECRET_FILE);
    const existing = await this.#readSecret(path);
    if (existing !== undefined) return { secret: existing, created: false };
    // Written in full beside it, then linked into place: a reader (another process,
    // or this one after a crash) sees the whole secret or no file, never a part.
    const secret = randomBytes(48).toString("base64url");
    const temp = join(this.dir, `${SECRET_FILE}.${randomBytes(6).toString("hex")}${TEMP_SUFFIX}`);
    this.#ownTemps.add(temp);
    try {
      await writeSynced(temp, `${secret}\n`);
      await link(temp, path);
      // The link is a directory entry: without this fsync a power cut could lose the name,
      // and the next start would generate another secret, so every cookie signed meanwhile stops opening.
      await syncPath(this.dir);
      return { secret, created: true };
    } catch (error) {
      // Another process made it first: use theirs.
      if (isCode(error, "EEXIST")) {
        const theirs = await this.#readSecret(path);
        if (theirs !== undefined) return { secret: theirs, created: false };
      }
      throw error;
    } finally {
      await unlink(temp).catch(() => undefined);
      this.#ownTemps.delete(temp);
    }
  }

  /** The secret file's text, read without following a symlink or blocking; `undefined` when there is none. */
  async #readSecret(path: string): Promise<string | undefined> {
    let bytes: Buffer | undefined;
    try {
      bytes = await readOwnFile(path);
    } catch (error) {
      if (!(error instanceof UnsafeFileError)) throw error;
      throw unsafeSecretError(path, error.reason);
    }
    if (bytes === undefined) return undefined;
    const text = bytes.toString("utf8").trim();
    if (text.length < 32) {
      throw new Error(
        `persist-session: the generated secret in ${path} is damaged (${text.length} characters, at least 32 needed). ` +
          "Delete the file to generate a new one (no cookie can have been signed with it), or pass `secret` to persistSession().",
      );
    }
    return text;
  }

  /**
   * Makes everything written so far durable in the record files (a checkpoint), stops the journal's timer and
   * gives up this store's claim on the directory, so a new store (in this process or another) can start on it.
   * A closed store used again checks and claims the directory again. A store never used has nothing to give up.
   */
  async close(): Promise<void> {
    const ready = this.#ready;
    this.#ready = undefined;
    await ready?.catch(() => undefined);
    const journal = this.#journal;
    this.#journal = undefined;
    await journal?.close();
    const claimKey = this.#claimKey;
    this.#claimKey = undefined;
    if (claimKey !== undefined) releaseDirectory(claimKey);
  }

  describe(): string {
    return this.dir;
  }

  useLogger(logger: Logger): void {
    this.#logger = logger;
  }

  /** Older than this store means a crashed predecessor made it; otherwise a live writer gets time. */
  #orphaned(mtimeMs: number): boolean {
    return mtimeMs < this.#startedAt || Date.now() - mtimeMs > ORPHAN_AGE_MS;
  }

  #path(id: string): string {
    // Defence in depth: the session layer has checked already, but no other string may become a path.
    if (!isUuidV4(id)) throw new TypeError("persist-session: FileStore was given an id that is not a UUIDv4.");
    return join(this.dir, id);
  }

  /**
   * {@link #ensureDir} for the sweep, which has nothing to do before the first
   * write and must not create the directory: `next build` loads the app's
   * modules, and a build must leave no store directory behind (issue #15).
   */
  async #sweepable(): Promise<boolean> {
    if (this.#ready === undefined) {
      try {
        await lstat(this.dir);
      } catch (error) {
        if (isCode(error, "ENOENT")) return false;
        throw error;
      }
    }
    await this.#ensureDir();
    return true;
  }

  /**
   * Makes the store ready for use, once: creates the directory (0700) if need be, checks that it
   * is ours (not a symlink, owned by this user, not writable by others; `.secret` and `journal/`
   * likewise), claims it for this process, and replays what a durable run left in the journal.
   * Every other method does this first, so calling it is optional: it lets a start-up script fail
   * at once (`sessions.ready()` calls it). It rejects with a {@link StoreStartError} saying what is
   * wrong and how to fix it; a failed start is tried again at the next use, so every use fails
   * with that error until the cause is gone (another process stopped, the directory fixed).
   *
   * @example
   * ```ts
   * await new FileStore({ dir: "/var/lib/my-app/state" }).ready();
   * ```
   */
  ready(): Promise<void> {
    return this.#ensureDir();
  }

  #ensureDir(): Promise<void> {
    this.#ready ??= (async () => {
      await this.#checkAndClaim();
      // Segments a durable run left may hold writes its record files lack, whatever this store's mode. Their MACs are
      // keyed by the store's secret, which a durable run made before its first entry: without one there is nothing to trust.
      const logger = () => this.#logger;
      const existingKey = async () => {
        const secret = await this.#readSecret(join(this.dir, SECRET_FILE));
        return secret === undefined ? undefined : journalKey(secret);
      };
      const lastSegment = await replayJournal(this.dir, (changes) => this.#applyChanges(changes), logger, existingKey);
      if (this.#durable) {
        // The journal's key: from the store's own secret, made now if need be, even when the app passes `secret` (file-journal.ts says why).
        const key = journalKey((await this.#storeSecret()).secret);
        try {
          await syncFileSystem(this.dir);
          this.#journal = new FileJournal(this.dir, lastSegment + 1, logger, key);
        } catch {
          this.#fsyncEach = true;
          this.#warn(
            "persist-session: syncfs (`sync -f`) is not available here, so the durable FileStore fsyncs every write and its directory: " +
              "as safe, and slower on new sessions.",
          );
        }
      }
    })().catch((error: unknown) => {
      this.#ready = undefined;
      // Claimed, then failed (replaying the journal): the next use starts again from the checks.
      const claimKey = this.#claimKey;
      this.#claimKey = undefined;
      if (claimKey !== undefined) releaseDirectory(claimKey);
      throw error;
    });
    return this.#ready;
  }

  /** The start-up checks and the claim (#17, points 1 and 2); a refusal is a {@link StoreStartError}. */
  async #checkAndClaim(): Promise<void> {
    try {
      await mkdir(this.dir, { recursive: true, mode: 0o700 });
    } catch (error) {
      // Something that is not a directory has the name (a dangling symlink, a file): the check below says what.
      if (!isCode(error, "EEXIST")) {
        throw new StoreStartError(
          `persist-session: cannot create ${this.#dirName} ${this.dir} (${(error as Error).message}). Create it (mode 0700, owned by the user this app runs as), or give the store a directory it can create.`,
          { cause: error },
        );
      }
    }
    let claimKey: string;
    let mode: number;
    try {
      const stats = checkOwnDirectory(this.dir, this.#dirName);
      mode = stats.mode & 0o777;
      // What a start would trust from an earlier one: a planted secret or journal refuses the start, before any of it is read.
      checkSecretFile(join(this.dir, SECRET_FILE));
      checkJournalDirectory(this.dir);
      claimKey = `${stats.dev}:${stats.ino}`;
      claimDirectory(this.dir, claimKey);
    } catch (error) {
      throw error instanceof Error && error.message.startsWith("persist-session:") ? new StoreStartError(error.message, { cause: error }) : error;
    }
    this.#claimKey = claimKey;
    if ((mode & 0o077) !== 0) {
      this.#warn(
        `persist-session: the store directory ${this.dir} is readable by other users (mode ${mode.toString(8)}). ` +
          "Run `chmod 700` on it; session records are private.",
      );
    }
  }

  #warn(warning: string): void {
    if (this.#logger !== undefined) this.#logger.warn(warning);
    else process.emitWarning(warning);
  }
}

/** A secret someone else could have written (or can read) would let them forge every cookie. */
function unsafeSecretError(path: string, reason: string): Error {
  return new Error(
    `persist-session: the secret file ${path} is ${reason}, so it was not used: someone else may know it and forge every visitor's cookie. ` +
      "Delete it (a new one is generated; cookies signed with the old one stop opening their state), or pass `secret` to persistSession().",
  );
}

/** The start-up check of an existing `.secret` (reading it checks again, on the open file). */
function checkSecretFile(path: string): void {
  let stats;
  try {
    stats = lstatSync(path);
  } catch (error) {
    if (isCode(error, "ENOENT")) return;
    throw error;
  }
  const reason = unsafeFileReason(stats);
  if (reason !== undefined) throw unsafeSecretError(path, reason);
}

/** The start-up check of an existing journal directory (replay checks it again before listing it). */
function checkJournalDirectory(dir: string): void {
  try {
    checkOwnDirectory(join(dir, JOURNAL_DIR), "the journal directory");
  } catch (error) {
    if (!isCode(error, "ENOENT")) throw error;
  }
}

/** Creates `path` (`O_EXCL`: never follows a planted symlink or reuses a file; 0600 before any byte is written), then fdatasync: the data and the size needed to read it back, without flushing times. */
async function writeSynced(path: string, data: string | Buffer): Promise<void> {
  const handle = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
  try {
    await handle.writeFile(data);
    await handle.datasync();
  } finally {
    await handle.close();
  }
}
