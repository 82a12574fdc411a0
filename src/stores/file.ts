import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { link, mkdir, open, opendir, readFile, rename, stat, unlink } from "node:fs/promises";
import { join, resolve } from "node:path";
import { isUuidV4 } from "../cookie-signing.js";
import type { Logger } from "../logger.js";
import { formatRecordText, parseRecordHeader, parseRecordText } from "./record-text.js";
import type { SessionStore, StoredRecord } from "./store.js";

/** Options of {@link FileStore}. */
export interface FileStoreOptions {
  /**
   * Directory of the records, created with mode 0700.
   * @default ".persist-session"
   */
  dir?: string;
  /**
   * fsync each record and its directory before a write counts as stored, so a
   * power cut cannot lose an acknowledged write. Off by default: a process crash
   * never loses one either way, and fsync costs milliseconds per write.
   * @default false
   */
  durable?: boolean;
}

const TEMP_SUFFIX = ".tmp";
const SECRET_FILE = ".secret";
/** A temporary file this old is an orphan even if another process made it. */
const ORPHAN_AGE_MS = 60_000;
/** The header line never comes near this; reading a prefix keeps the sweep cheap. */
const HEADER_READ_BYTES = 512;

/**
 * One file per record in one directory, named only from the validated UUID.
 * A file is `<json header>\n<devalue data>`, replaced by writing a temporary
 * file beside it and renaming it over: a crash leaves the old file or the new
 * one, never a torn one (remix-run/remix#4353 truncated in place).
 * One process per directory: records are cached in memory between requests.
 */
export class FileStore implements SessionStore {
  readonly dir: string;
  readonly #durable: boolean;
  #logger: Logger | undefined;
  readonly #startedAt = Date.now();
  readonly #ownTemps = new Set<string>();
  #ready: Promise<void> | undefined;

  constructor(options: FileStoreOptions = {}) {
    const { dir = ".persist-session", durable = false } = options;
    if (typeof dir !== "string" || dir === "") {
      throw new TypeError(`persist-session: option dir is invalid: ${String(dir)}. Give a directory path.`);
    }
    this.dir = resolve(dir);
    this.#durable = durable;
  }

  async get(id: string): Promise<StoredRecord | undefined> {
    await this.#ensureDir();
    let text: string;
    try {
      text = await readFile(this.#path(id), "utf8");
    } catch (error) {
      if (isCode(error, "ENOENT")) return undefined;
      throw error;
    }
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
    const path = this.#path(id);
    // A first write has no old record to protect, so it creates the file in place and
    // skips the temporary file and the rename: half the directory updates of a new
    // session. A crash in between leaves an empty file, never acknowledged, which reads
    // as no record and goes with the sweep.
    if (record.version === 1 && (await this.#create(path, text))) return;
    const temp = join(this.dir, `${id}.${randomBytes(6).toString("hex")}${TEMP_SUFFIX}`);
    this.#ownTemps.add(temp);
    try {
      await this.#writeNew(temp, text);
      await rename(temp, path);
      if (this.#durable) await this.#syncDir();
    } catch (error) {
      await unlink(temp).catch(() => undefined);
      throw error;
    } finally {
      this.#ownTemps.delete(temp);
    }
  }

  /** Writes a record file that did not exist; `false` when it does exist after all. */
  async #create(path: string, text: string): Promise<boolean> {
    try {
      await this.#writeNew(path, text);
    } catch (error) {
      if (isCode(error, "EEXIST")) return false;
      throw error;
    }
    if (this.#durable) await this.#syncDir();
    return true;
  }

  /** Creates `path` (never an existing file), writes `text` and, when durable, syncs it; removes it on failure. */
  async #writeNew(path: string, text: string): Promise<void> {
    // O_EXCL refuses to follow a planted symlink or reuse a file; 0600 before any byte is written.
    const handle = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
    try {
      await handle.writeFile(text);
      // datasync: the data and the size needed to read it back, without flushing times.
      if (this.#durable) await handle.datasync();
    } catch (error) {
      await handle.close().catch(() => undefined);
      await unlink(path).catch(() => undefined);
      throw error;
    }
    await handle.close();
  }

  async delete(id: string): Promise<void> {
    await unlink(this.#path(id)).catch((error: unknown) => {
      if (!isCode(error, "ENOENT")) throw error;
    });
  }

  async quarantine(id: string): Promise<void> {
    await rename(this.#path(id), join(this.dir, `${id}.corrupt-${Date.now()}`)).catch((error: unknown) => {
      if (!isCode(error, "ENOENT")) throw error;
    });
  }

  async *expiredIds(now: number): AsyncIterable<string> {
    await this.#ensureDir();
    const buffer = Buffer.alloc(HEADER_READ_BYTES);
    for await (const dirent of await opendir(this.dir)) {
      if (!dirent.isFile() || !isUuidV4(dirent.name)) continue;
      let handle;
      try {
        handle = await open(join(this.dir, dirent.name), "r");
        const { bytesRead } = await handle.read(buffer, 0, HEADER_READ_BYTES, 0);
        if (bytesRead === 0) {
          // An interrupted create (see set): listed once no writer of this process can still be on it.
          if (this.#orphaned((await handle.stat()).mtimeMs)) yield dirent.name;
          continue;
        }
        const text = buffer.toString("utf8", 0, bytesRead);
        const newline = text.indexOf("\n");
        if (newline !== -1 && parseRecordHeader(text.slice(0, newline)).expires <= now) yield dirent.name;
      } catch {
        // Gone since the listing, or unreadable: the request path quarantines those.
      } finally {
        await handle?.close();
      }
    }
  }

  async removeOrphans(): Promise<number> {
    await this.#ensureDir();
    let removed = 0;
    for await (const dirent of await opendir(this.dir)) {
      if (!dirent.isFile() || !dirent.name.endsWith(TEMP_SUFFIX)) continue;
      const path = join(this.dir, dirent.name);
      if (this.#ownTemps.has(path)) continue;
      try {
        if (this.#orphaned((await stat(path)).mtimeMs)) {
          await unlink(path);
          removed++;
        }
      } catch (error) {
        if (!isCode(error, "ENOENT")) throw error;
      }
    }
    return removed;
  }

  async secret(): Promise<string> {
    await this.#ensureDir();
    const path = join(this.dir, SECRET_FILE);
    const existing = await this.#readSecret(path);
    if (existing !== undefined) return existing;
    // Written in full beside it, then linked into place: a reader (another process,
    // or this one after a crash) sees the whole secret or no file, never a part.
    const secret = randomBytes(48).toString("base64url");
    const temp = join(this.dir, `${SECRET_FILE}.${randomBytes(6).toString("hex")}${TEMP_SUFFIX}`);
    this.#ownTemps.add(temp);
    try {
      const handle = await open(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
      try {
        await handle.writeFile(`${secret}\n`);
        await handle.sync();
      } finally {
        await handle.close();
      }
      await link(temp, path);
      return secret;
    } catch (error) {
      // Another process made it first: use theirs.
      if (isCode(error, "EEXIST")) return (await this.#readSecret(path)) ?? secret;
      throw error;
    } finally {
      await unlink(temp).catch(() => undefined);
      this.#ownTemps.delete(temp);
    }
  }

  async #readSecret(path: string): Promise<string | undefined> {
    let text: string;
    try {
      text = (await readFile(path, "utf8")).trim();
    } catch (error) {
      if (isCode(error, "ENOENT")) return undefined;
      throw error;
    }
    if (text.length < 32) {
      throw new Error(
        `persist-session: the generated secret in ${path} is damaged (${text.length} characters, at least 32 needed). ` +
          "Delete the file to generate a new one (no cookie can have been signed with it), or pass `secret` to persistSession().",
      );
    }
    return text;
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

  #ensureDir(): Promise<void> {
    this.#ready ??= (async () => {
      await mkdir(this.dir, { recursive: true, mode: 0o700 });
      const { mode } = await stat(this.dir);
      if ((mode & 0o077) !== 0) {
        this.#warn(
          `persist-session: the store directory ${this.dir} is readable by other users (mode ${(mode & 0o777).toString(8)}). ` +
            "Run `chmod 700` on it; session records are private.",
        );
      }
    })().catch((error: unknown) => {
      this.#ready = undefined;
      throw error;
    });
    return this.#ready;
  }

  #warn(warning: string): void {
    if (this.#logger !== undefined) this.#logger.warn(warning);
    else process.emitWarning(warning);
  }

  async #syncDir(): Promise<void> {
    const handle = await open(this.dir, "r");
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  }
}

function isCode(error: unknown, code: string): boolean {
  return typeof error === "object" && error !== null && (error as { code?: unknown }).code === code;
}

