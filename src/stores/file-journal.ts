import { createHmac } from "node:crypto";
import { constants } from "node:fs";
import { mkdir, open, readdir, type FileHandle } from "node:fs/promises";
import { join } from "node:path";
import { isUuidV4 } from "../cookie-signing.js";
import type { Logger } from "../logger.js";
import { checkOwnDirectory, isCode, readOwnFile, syncFileSystem, syncPath, UnsafeFileError, unlinkIfPresent } from "./file-system.js";

/**
 * The write-ahead journal of a durable FileStore: how a write survives a
 * power cut without an fsync of its own record file and directory.
 *
 * Each write or deletion changes its record file as usual, without fsync, and is
 * at the same time appended to the current journal segment. Appends that arrive
 * while a segment is being synced wait and go together, so one write and one
 * fdatasync cover every request in flight. A checkpoint, a couple of seconds later
 * or once a segment is large, makes the record files durable with a single
 * syncfs(2) and removes the segment. After a crash or power cut, the segments left
 * are replayed in order: each record's last entry wins.
 *
 * Segments live in `<store dir>/journal/`, so that finding them never lists the
 * records. A segment is `<id> <bytes> <mac>\n<record text>` per write and
 * `<id> - <mac>\n` per deletion. A crash can cut the last entry short; its
 * MAC then fails and replay stops there. That entry was never acknowledged.
 *
 * The MAC is an HMAC-SHA256 keyed by {@link journalKey}, so a journal entry can
 * change a record only if a holder of the store's secret wrote it: a segment
 * planted in the directory (#17) is ignored with a warning, not replayed. The
 * key comes from the store's own secret (its `.secret` file), also when the app
 * passes `secret` to persistSession(): the store never sees the app's secrets,
 * and a journal must replay after a restart whose app secrets were rotated.
 */

/** How long a segment collects entries before its checkpoint: this bounds what a restart replays. */
const CHECKPOINT_MS = 2_000;
/** A segment this large is checkpointed at once, whatever its age. */
const SEGMENT_BYTES = 16 * 1024 * 1024;
const SEGMENT_NAME = /^journal-(\d{1,15})\.log$/;
/** The journal's directory inside the store directory. */
export const JOURNAL_DIR = "journal";
/** An entry's header line is a UUID, a length and a MAC: far shorter than this. */
const MAX_HEADER_BYTES = 128;

/** Writes each record's last replayed state to its file (its bytes; `undefined`: deleted); no fsync needed. */
export type ApplyChanges = (changes: ReadonlyMap<string, Buffer | undefined>) => Promise<void>;

interface Segment {
  readonly path: string;
  readonly handle: FileHandle;
  bytes: number;
  readonly timer: NodeJS.Timeout;
  /** The record-file changes of its entries, which may still run: syncfs must come after them. */
  readonly applying: Array<Promise<unknown>>;
}

interface Pending {
  readonly entry: Buffer;
  readonly applied: Promise<unknown>;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

/** The key of a store's journal MACs, derived from the store's secret so it is never the secret itself. */
export function journalKey(storeSecret: string): Buffer {
  return createHmac("sha256", storeSecret).update("persist-session journal v1").digest();
}

export class FileJournal {
  #nextSeq: number;
  readonly #journalDir: string;
  #journalDirMade = false;
  #segment: Segment | undefined;
  #queue: Pending[] = [];
  #flushing: Promise<void> | undefined;
  #checkpointDue = false;
  #checkpoints: Promise<void> = Promise.resolve();
  /** Segments whose checkpoint failed: the next one that succeeds covers them too. */
  readonly #uncheckpointed: string[] = [];

  /** `firstSeq` follows the last segment {@link replayJournal} found; `key` is {@link journalKey}'s. Needs syncfs: see {@link syncFileSystem}. */
  constructor(
    readonly dir: string,
    firstSeq: number,
    readonly logger: () => Logger | undefined,
    readonly key: Buffer,
  ) {
    this.#nextSeq = firstSeq;
    this.#journalDir = join(dir, JOURNAL_DIR);
  }

  /**
   * Appends a write (the record file's `bytes`) or a deletion (`undefined`) of `id`;
   * resolves once it is on disk. `applied` is the change to the record file, running
   * meanwhile. If that change fails, its request fails, yet the entry may be on disk and
   * a restart replays it: like a write whose fsync failed, a failed write may still
   * become visible.
   */
  append(id: string, bytes: Buffer | undefined, applied: Promise<unknown>): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ entry: encodeEntry(this.key, id, bytes), applied, resolve, reject });
      this.#flushing ??= this.#flush();
    });
  }

  /** Checkpoints everything appended so far and stops the timer; later appends start a new segment. */
  async close(): Promise<void> {
    await this.#flushing;
    this.#retire();
    await this.#checkpoints;
  }

  async #flush(): Promise<void> {
    try {
      while (this.#queue.length > 0) {
        const batch = this.#queue.splice(0);
        const data = batch.length === 1 ? batch[0]!.entry : Buffer.concat(batch.map((pending) => pending.entry));
        try {
          const segment = (this.#segment ??= await this.#openSegment());
          for (const pending of batch) segment.applying.push(pending.applied);
          const { bytesWritten } = await segment.handle.write(data);
          if (bytesWritten !== data.length) throw new Error(`persist-session: the journal took ${bytesWritten} of ${data.length} bytes.`);
          await segment.handle.datasync();
          segment.bytes += data.length;
          for (const pending of batch) pending.resolve();
        } catch (error) {
          for (const pending of batch) pending.reject(error);
          // Part of an entry may be on disk, and replay stops at a torn entry: later ones go to a new segment.
          this.#checkpointDue = true;
        }
        if (this.#checkpointDue || (this.#segment?.bytes ?? 0) >= SEGMENT_BYTES) this.#retire();
      }
    } finally {
      this.#flushing = undefined;
    }
  }

  async #openSegment(): Promise<Segment> {
    if (!this.#journalDirMade) {
      await mkdir(this.#journalDir, { recursive: true, mode: 0o700 });
      checkOwnDirectory(this.#journalDir, "the journal directory");
      // Its name in the store directory must survive a power cut too.
      await syncPath(this.dir);
      this.#journalDirMade = true;
    }
    for (;;) {
      const path = join(this.#journalDir, `journal-${this.#nextSeq++}.log`);
      let handle: FileHandle;
      try {
        handle = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_APPEND, 0o600);
      } catch (error) {
        if (isCode(error, "EEXIST")) continue;
        throw error;
      }
      // The segment's name must survive a power cut as surely as the entries fdatasync puts in it.
      await syncPath(this.#journalDir);
      const timer = setTimeout(() => this.#onTimer(), CHECKPOINT_MS);
      timer.unref();
      return { path, handle, bytes: 0, timer, applying: [] };
    }
  }

  #onTimer(): void {
    // Never under a batch in flight: the flush loop retires the segment once that batch is on disk.
    if (this.#flushing !== undefined) this.#checkpointDue = true;
    else this.#retire();
  }

  /** Ends the current segment; its checkpoint runs after the earlier ones. */
  #retire(): void {
    this.#checkpointDue = false;
    const segment = this.#segment;
    if (segment === undefined) return;
    this.#segment = undefined;
    clearTimeout(segment.timer);
    this.#checkpoints = this.#checkpoints.then(() => this.#checkpoint(segment));
  }

  async #checkpoint(segment: Segment): Promise<void> {
    try {
      await segment.handle.close();
      this.#uncheckpointed.push(segment.path);
      // A failed file change failed its request; the others must be in what syncfs covers.
      await Promise.allSettled(segment.applying);
      await syncFileSystem(this.dir);
      for (const path of this.#uncheckpointed.splice(0)) await unlinkIfPresent(path);
    } catch (error) {
      this.logger()?.error(
        `persist-session: a journal checkpoint in ${this.dir} failed; its segments stay and are replayed at the next start.`,
        error,
      );
    }
  }
}

/**
 * Replays the segments a previous process left in the journal of store directory `dir` (each record's last entry
 * whose MAC holds under {@link journalKey}'s key, which `key` gives: `undefined` when the store has no secret, so
 * no entry can be trusted), makes the result durable, removes them, and returns the last sequence number (0 for none).
 * `key` is asked only when there are segments. A segment that is not a regular file of ours (a symlink, a FIFO,
 * another user's) is left unread, with a warning.
 */
export async function replayJournal(dir: string, apply: ApplyChanges, logger: () => Logger | undefined, key: () => Promise<Buffer | undefined>): Promise<number> {
  const journalDir = join(dir, JOURNAL_DIR);
  try {
    // Before listing it: a symlink here would have us replay someone else's directory.
    checkOwnDirectory(journalDir, "the journal directory");
  } catch (error) {
    if (isCode(error, "ENOENT")) return 0;
    throw error;
  }
  const names = await readdir(journalDir);
  const segments = names
    .map((name) => ({ name, seq: Number(SEGMENT_NAME.exec(name)?.[1]) }))
    .filter(({ seq }) => Number.isSafeInteger(seq))
    .sort((a, b) => a.seq - b.seq);
  if (segments.length === 0) return 0;
  const macKey = await key();
  const latest = new Map<string, Buffer | undefined>();
  const replayed: string[] = [];
  for (const { name } of segments) {
    let buffer: Buffer | undefined;
    try {
      buffer = await readOwnFile(join(journalDir, name));
    } catch (error) {
      if (!(error instanceof UnsafeFileError)) throw error;
      logger()?.warn(`persist-session: journal segment ${error.path} is ${error.reason}, so this store did not write it; it was not read or replayed. Remove it.`);
      continue;
    }
    if (buffer === undefined) continue;
    replayed.push(name);
    if (macKey === undefined) {
      logger()?.warn(`persist-session: journal segment ${name} cannot be checked (the store has no .secret, which every durable store writes before its journal), so it was not replayed.`);
      continue;
    }
    const end = decodeEntries(macKey, buffer, (id, bytes) => latest.set(id, bytes));
    if (end < buffer.length) {
      logger()?.warn(
        `persist-session: journal segment ${name} ends in ${buffer.length - end} bytes that are not an entry written with this store's key: ` +
          "a write a crash cut short (never acknowledged), or bytes someone else put there. They were not replayed.",
      );
    }
  }
  await apply(latest);
  await syncFileSystem(dir).catch(() => syncEach(dir, [...latest.keys()]));
  for (const name of replayed) await unlinkIfPresent(join(journalDir, name));
  return segments.at(-1)!.seq;
}

function encodeEntry(key: Buffer, id: string, payload: Buffer | undefined): Buffer {
  if (payload === undefined) return Buffer.from(`${id} - ${mac(key, id, "-")}\n`);
  return Buffer.concat([Buffer.from(`${id} ${payload.length} ${mac(key, id, String(payload.length), payload)}\n`), payload]);
}

/** Calls `entry` for each whole entry in order whose MAC holds; returns where they end (the first torn or foreign one, or the end). */
function decodeEntries(key: Buffer, buffer: Buffer, entry: (id: string, payload: Buffer | undefined) => void): number {
  let offset = 0;
  while (offset < buffer.length) {
    const newline = buffer.indexOf(0x0a, offset);
    if (newline === -1 || newline - offset > MAX_HEADER_BYTES) return offset;
    const [id, length, sum, extra] = buffer.toString("latin1", offset, newline).split(" ");
    if (id === undefined || !isUuidV4(id) || sum === undefined || extra !== undefined) return offset;
    if (length === "-") {
      if (sum !== mac(key, id, "-")) return offset;
      entry(id, undefined);
      offset = newline + 1;
      continue;
    }
    if (length === undefined || !/^\d{1,10}$/.test(length)) return offset;
    const end = newline + 1 + Number(length);
    if (end > buffer.length) return offset;
    const payload = buffer.subarray(newline + 1, end);
    if (sum !== mac(key, id, length, payload)) return offset;
    entry(id, payload);
    offset = end;
  }
  return offset;
}

/** 128 bits of HMAC-SHA256 over the entry's header fields and payload: enough that no one without the key forges one. */
function mac(key: Buffer, id: string, length: string, payload?: Buffer): string {
  const hmac = createHmac("sha256", key).update(`${id} ${length}\n`);
  if (payload !== undefined) hmac.update(payload);
  return hmac.digest("base64url").slice(0, 22);
}

/** Without syncfs: each replayed record file, then the directory. */
async function syncEach(dir: string, ids: readonly string[]): Promise<void> {
  for (const id of ids) {
    await syncPath(join(dir, id)).catch((error: unknown) => {
      if (!isCode(error, "ENOENT")) throw error;
    });
  }
  await syncPath(dir);
}
