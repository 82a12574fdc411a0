// File-system calls the FileStore, its journal and its claim share.
import { execFile } from "node:child_process";
import { constants, lstatSync, type Stats } from "node:fs";
import { open, unlink, type FileHandle } from "node:fs/promises";

/**
 * How the store opens what it reads (#17): never following a symlink planted at the name
 * (O_NOFOLLOW), and never blocking on a FIFO planted there (O_NONBLOCK: an open of a FIFO
 * without a writer would hold one of libuv's four threads, and four of them every browser).
 * Neither flag exists on Windows, where the checks after opening still apply.
 */
export const OPEN_NO_FOLLOW = constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0) | (constants.O_NONBLOCK ?? 0);

/** A file of the store that is not a regular file of this user closed to others: it was not read. */
export class UnsafeFileError extends Error {
  override readonly name = "UnsafeFileError";
  constructor(
    readonly path: string,
    /** What it is instead: "a symbolic link", "a FIFO", "owned by uid 65534…", "mode 644…". */
    readonly reason: string,
  ) {
    super(`persist-session: ${path} is ${reason}; it was not read.`);
  }
}

let uid: number | undefined;
/** This process's user, where there is one (not on Windows); asked once, not once per file the sweep checks. */
const ownUid = (): number | undefined => (uid ??= process.getuid?.());

function fileType(stats: Stats): string {
  if (stats.isSymbolicLink()) return "a symbolic link";
  if (stats.isDirectory()) return "a directory";
  if (stats.isFIFO()) return "a FIFO";
  if (stats.isSocket()) return "a socket";
  if (stats.isCharacterDevice() || stats.isBlockDevice()) return "a device";
  return "not a regular file";
}

/**
 * Why a file must not be read as one of the store's, or `undefined` when it is a regular file
 * of this user with no permission for others: what the store itself creates (0600).
 */
export function unsafeFileReason(stats: Stats): string | undefined {
  if (!stats.isFile()) return fileType(stats);
  const uid = ownUid();
  if (uid !== undefined && stats.uid !== uid) return `owned by uid ${stats.uid}, not by this process (uid ${uid})`;
  if ((stats.mode & 0o077) !== 0) return `mode ${(stats.mode & 0o777).toString(8)}, open to other users (the store writes 0600)`;
  return undefined;
}

/**
 * Opens one of the store's files for reading with {@link OPEN_NO_FOLLOW}, then checks it is
 * a regular file of ours closed to others; `undefined` when it does not exist. Anything else
 * is an {@link UnsafeFileError}, and not a byte of it was read. The handle is the caller's to close.
 */
export async function openOwnFile(path: string): Promise<{ readonly handle: FileHandle; readonly size: number } | undefined> {
  let handle: FileHandle;
  try {
    handle = await open(path, OPEN_NO_FOLLOW);
  } catch (error) {
    if (isCode(error, "ENOENT")) return undefined;
    // Linux says ELOOP for a symlink under O_NOFOLLOW, FreeBSD EMLINK; a socket cannot be opened (ENXIO).
    if (isCode(error, "ELOOP") || isCode(error, "EMLINK")) throw new UnsafeFileError(path, "a symbolic link");
    if (isCode(error, "ENXIO")) throw new UnsafeFileError(path, "a socket");
    throw error;
  }
  try {
    const stats = await handle.stat();
    const reason = unsafeFileReason(stats);
    if (reason !== undefined) throw new UnsafeFileError(path, reason);
    return { handle, size: stats.size };
  } catch (error) {
    await handle.close();
    throw error;
  }
}

/**
 * The bytes of one of the store's files, read as {@link openOwnFile} opens it; `undefined` when it
 * does not exist. One read of the size fstat gave (readFile would fstat again and read twice):
 * a restore pays four trips through libuv's pool (open, fstat, read, close), not six.
 */
export async function readOwnFile(path: string): Promise<Buffer | undefined> {
  const opened = await openOwnFile(path);
  if (opened === undefined) return undefined;
  const { handle, size } = opened;
  try {
    const buffer = Buffer.allocUnsafe(size + 1);
    const { bytesRead } = await handle.read(buffer, 0, size + 1, 0);
    // Grown since the fstat (a first write landing in place): read all of it.
    return bytesRead <= size ? buffer.subarray(0, bytesRead) : await handle.readFile();
  } finally {
    await handle.close();
  }
}

/**
 * Throws, saying how to fix it, unless `dir` is a directory of this process's user that
 * nobody else can write: not a symlink (which another user could repoint), not owned by
 * someone else (who could read and forge every session), not writable by group or others
 * (who could plant records, a secret or journal entries). Readable by others is only
 * warned about, by the caller. `name` says which directory it is in the messages.
 */
export function checkOwnDirectory(dir: string, name: string): Stats {
  const stats = lstatSync(dir);
  if (stats.isSymbolicLink()) {
    throw new Error(
      `persist-session: ${name} ${dir} is a symbolic link, which whoever can change it could point at a directory of theirs. ` +
        "Give the store the real directory, or remove the link and let persist-session create the directory.",
    );
  }
  if (!stats.isDirectory()) throw new Error(`persist-session: ${name} ${dir} is ${fileType(stats)}, not a directory. Remove it, or give the store another directory.`);
  const uid = ownUid();
  if (uid !== undefined && stats.uid !== uid) {
    throw new Error(
      `persist-session: ${name} ${dir} belongs to uid ${stats.uid}, not to this process (uid ${uid}): whoever owns it can read and forge every session. ` +
        "Remove it and let persist-session create it, or give the store a directory of this user (mode 0700).",
    );
  }
  if ((stats.mode & 0o022) !== 0) {
    throw new Error(
      `persist-session: ${name} ${dir} is writable by other users (mode ${(stats.mode & 0o777).toString(8)}): they could plant records, a secret or journal entries. ` +
        `Run \`chmod 700 ${dir}\` (and check what is in it), or give the store a directory of its own.`,
    );
  }
  return stats;
}

/**
 * syncfs(2) on the file system holding `dir`: one call makes every record file
 * written so far durable, where fsyncing each would cost a disk flush apiece.
 * Node has no binding for it; coreutils' and busybox's `sync -f` is that call.
 */
export function syncFileSystem(dir: string): Promise<void> {
  // Elsewhere a `sync` may take `-f` for something else, or ignore it and return before the data is on disk.
  if (process.platform !== "linux") return Promise.reject(new Error("persist-session: syncfs is Linux-only."));
  return new Promise((resolve, reject) => {
    execFile("sync", ["-f", dir], { timeout: 120_000 }, (error) => (error === null ? resolve() : reject(error)));
  });
}

/** fsync of a file, or of a directory: that makes the names created, renamed or removed in it durable. */
export async function syncPath(path: string): Promise<void> {
  const handle = await open(path, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** unlink that counts a file already gone as removed. */
export async function unlinkIfPresent(path: string): Promise<void> {
  await unlink(path).catch((error: unknown) => {
    if (!isCode(error, "ENOENT")) throw error;
  });
}

/** Whether `error` is a Node system error with this `code` (ENOENT, EEXIST, …). */
export function isCode(error: unknown, code: string): boolean {
  return typeof error === "object" && error !== null && (error as { code?: unknown }).code === code;
}
