// File-system calls the FileStore and its journal share.
import { execFile } from "node:child_process";
import { open, unlink } from "node:fs/promises";

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
