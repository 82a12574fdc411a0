import { Worker } from "node:worker_threads";

/**
 * Record-file changes run on one worker thread, in batches, with synchronous
 * system calls. Through libuv's thread pool a new record file costs three round
 * trips (open, write, close), each a hand-off between threads and a wake-up of
 * the event loop; here a whole batch (every change queued meanwhile) costs one.
 * It also keeps the shared pool (DNS lookups, crypto, zlib) free of record files.
 *
 * The sweep's listing runs here too ({@link ScanRequest}): reading each record's
 * header through the pool cost the event loop three wake-ups per record file, a
 * hundred thousand of them per sweep, beside the requests it serves (#17).
 */

/**
 * One change of a record file. `syncDir`, where each write must be durable on its own
 * (a durable FileStore without syncfs): the file's data is fdatasynced before it counts,
 * and this directory fsynced after its name changed.
 */
export type FileChange =
  /** Creates `path` with `text` (never over an existing file: EEXIST). */
  | { readonly kind: "create"; readonly path: string; readonly text: string; readonly syncDir: string | undefined }
  /** Writes `text` to the new file `temp`, then renames it over `path`: a crash leaves the old file or the new one. */
  | { readonly kind: "replace"; readonly temp: string; readonly path: string; readonly text: string; readonly syncDir: string | undefined }
  /** Removes `path`; one already gone counts as removed. */
  | { readonly kind: "remove"; readonly path: string };

/**
 * The next entries of a directory listing, for the sweep: which record files have
 * expired (their header's `expires` is at most `expiredBy`) or are empty and older
 * than `orphanedBefore` (what an interrupted first write leaves), and the names of
 * temporary and set-aside files. Files are opened as the store opens them (no symlink
 * followed, no FIFO waited on); one that cannot be read as a record is not listed
 * (a request sets it aside). At most `max` entries per request, so that a write
 * queued behind it waits little.
 */
export interface ScanRequest {
  readonly kind: "scan";
  readonly dir: string;
  /** Names the listing across requests; the `first` request opens it, the last (`done`) closes it. */
  readonly scan: number;
  readonly first: boolean;
  readonly max: number;
  /** `undefined`: record files are not read, only temporary and set-aside files listed. */
  readonly expiredBy: number | undefined;
  readonly orphanedBefore: number;
}

/** What a {@link ScanRequest} finds: names of entries in the directory. */
export interface ScanResult {
  readonly candidates: string[];
  readonly temps: string[];
  readonly quarantined: string[];
  /** The listing reached its end and was closed. */
  readonly done: boolean;
}

/** Closes a listing its reader stopped early. */
interface EndScan {
  readonly kind: "endScan";
  readonly scan: number;
}

type Task = FileChange | ScanRequest | EndScan;

/** What the thread answers for one task: `undefined` when it was done (with nothing to say), else its result or error. */
type Outcome = { readonly failed: true; readonly code: string | undefined; readonly message: string } | { readonly failed: false; readonly result: unknown } | undefined;

interface Pending {
  readonly task: Task;
  readonly resolve: (result: unknown) => void;
  readonly reject: (error: Error) => void;
}

/**
 * The worker's code, given to it as source text (`toString`), so that the thread starts from
 * the built package and from the TypeScript sources alike, with no file to locate. It may use
 * nothing from outside its own body. `load` is `import()`, passed in from the worker's own text
 * so that no compiler rewrites it: an eval'd worker runs as CommonJS, or as an ES module when the
 * process was started with `--input-type=module`, and `import()` works in both (`require` does not).
 */
async function threadMain(load: (name: string) => Promise<unknown>): Promise<void> {
  const fs = (await load("node:fs")) as typeof import("node:fs");
  const { join } = (await load("node:path")) as typeof import("node:path");
  const { parentPort } = (await load("node:worker_threads")) as typeof import("node:worker_threads");
  const removeQuietly = (path: string): void => {
    try {
      fs.unlinkSync(path);
    } catch {
      // Never created, or gone already.
    }
  };
  const syncPath = (path: string): void => {
    const fd = fs.openSync(path, "r");
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  };
  // O_EXCL: never follows a planted symlink or reuses a file; 0600 before any byte is written.
  const writeNew = (path: string, text: string, sync: boolean): void => {
    const { O_WRONLY, O_CREAT, O_EXCL } = fs.constants;
    const fd = fs.openSync(path, O_WRONLY | O_CREAT | O_EXCL, 0o600);
    try {
      fs.writeFileSync(fd, text);
      if (sync) fs.fdatasyncSync(fd);
    } catch (error) {
      removeQuietly(path);
      throw error;
    } finally {
      fs.closeSync(fd);
    }
  };
  const apply = (change: FileChange): void => {
    if (change.kind === "remove") {
      try {
        fs.unlinkSync(change.path);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
      }
      return;
    }
    const sync = change.syncDir !== undefined;
    if (change.kind === "create") writeNew(change.path, change.text, sync);
    else {
      writeNew(change.temp, change.text, sync);
      try {
        fs.renameSync(change.temp, change.path);
      } catch (error) {
        removeQuietly(change.temp);
        throw error;
      }
    }
    if (sync) syncPath(change.syncDir);
  };
  const listings = new Map<number, import("node:fs").Dir>();
  // The same patterns as isUuidV4 (cookie-signing.ts) and the FileStore's set-aside names: this code can import nothing.
  const RECORD_NAME = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
  const QUARANTINED_NAME = /^[0-9a-f-]{36}\.corrupt-\d{1,15}$/;
  const { O_RDONLY, O_NOFOLLOW = 0, O_NONBLOCK = 0 } = fs.constants;
  /** The header line never comes near this. */
  const header = Buffer.alloc(512);
  const isCandidate = (path: string, request: ScanRequest): boolean => {
    let fd: number;
    try {
      fd = fs.openSync(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
    } catch {
      return false; // gone since the listing, or a symlink
    }
    try {
      const bytes = fs.readSync(fd, header, 0, header.length, 0);
      if (bytes === 0) return fs.fstatSync(fd).mtimeMs < request.orphanedBefore;
      const text = header.toString("utf8", 0, bytes);
      const newline = text.indexOf("\n");
      if (newline === -1) return false;
      const expires: unknown = (JSON.parse(text.slice(0, newline)) as { expires?: unknown } | null)?.expires;
      return typeof expires === "number" && expires <= request.expiredBy!;
    } catch {
      return false; // unreadable (a FIFO: EAGAIN): the request path sets it aside
    } finally {
      fs.closeSync(fd);
    }
  };
  const scan = (request: ScanRequest): ScanResult => {
    let listing = listings.get(request.scan);
    if (listing === undefined) {
      if (!request.first) throw Object.assign(new Error("persist-session: the sweep's directory listing was lost (the file thread restarted)."), { code: "ESCANLOST" });
      listing = fs.opendirSync(request.dir, { bufferSize: 256 });
      listings.set(request.scan, listing);
    }
    const result: ScanResult = { candidates: [], temps: [], quarantined: [], done: false };
    for (let i = 0; i < request.max; i++) {
      const dirent = listing.readSync();
      if (dirent === null) {
        listing.closeSync();
        listings.delete(request.scan);
        return { ...result, done: true };
      }
      const { name } = dirent;
      if (QUARANTINED_NAME.test(name)) result.quarantined.push(name);
      else if (!dirent.isFile()) continue;
      else if (name.endsWith(".tmp")) result.temps.push(name);
      else if (request.expiredBy !== undefined && RECORD_NAME.test(name) && isCandidate(join(request.dir, name), request)) result.candidates.push(name);
    }
    return result;
  };
  const perform = (task: Task): unknown => {
    if (task.kind === "scan") return scan(task);
    if (task.kind === "endScan") {
      listings.get(task.scan)?.closeSync();
      listings.delete(task.scan);
      return undefined;
    }
    apply(task);
    return undefined;
  };
  parentPort!.on("message", (batch: Task[]) => {
    const outcomes = batch.map((task): Outcome => {
      try {
        const result = perform(task);
        return result === undefined ? undefined : { failed: false, result };
      } catch (error) {
        const { code, message } = error as NodeJS.ErrnoException;
        return { failed: true, code, message };
      }
    });
    parentPort!.postMessage(outcomes);
  });
}

class FileThread {
  #worker: Worker | undefined;
  #queue: Pending[] = [];
  #inFlight: Pending[] | undefined;

  run(change: FileChange | EndScan): Promise<void> {
    return this.#submit(change).then(() => undefined);
  }

  scan(request: ScanRequest): Promise<ScanResult> {
    return this.#submit(request) as Promise<ScanResult>;
  }

  #submit(task: Task): Promise<unknown> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ task, resolve, reject });
      if (this.#inFlight === undefined) this.#send();
    });
  }

  #send(): void {
    const batch = this.#queue.splice(0);
    if (batch.length === 0) {
      this.#inFlight = undefined;
      // Idle: never the reason the process stays alive.
      this.#worker?.unref();
      return;
    }
    this.#inFlight = batch;
    const worker = (this.#worker ??= this.#start());
    worker.ref();
    worker.postMessage(batch.map((pending) => pending.task));
  }

  #start(): Worker {
    const worker = new Worker(`(${threadMain.toString()})((name) => import(name))`, { eval: true });
    worker.on("message", (outcomes: Outcome[]) => {
      const batch = this.#inFlight ?? [];
      batch.forEach((pending, index) => {
        const outcome = outcomes[index];
        if (outcome === undefined) pending.resolve(undefined);
        else if (!outcome.failed) pending.resolve(outcome.result);
        else pending.reject(Object.assign(new Error(outcome.message), { code: outcome.code }));
      });
      this.#send();
    });
    const fail = (error: Error): void => {
      if (this.#worker !== worker) return;
      this.#worker = undefined;
      const batch = this.#inFlight ?? [];
      this.#inFlight = undefined;
      // Whether those changes happened is unknown: their requests fail, as with a failed write.
      for (const pending of batch) pending.reject(error);
      if (this.#queue.length > 0) this.#send();
    };
    worker.on("error", fail);
    worker.on("exit", (code) => fail(new Error(`persist-session: the file thread stopped (exit code ${code}).`)));
    return worker;
  }
}

/** One thread for every FileStore of the process: started on first use. */
export const fileThread = new FileThread();
