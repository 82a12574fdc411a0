import { Worker } from "node:worker_threads";

/**
 * Record-file changes run on one worker thread, in batches, with synchronous
 * system calls. Through libuv's thread pool a new record file costs three round
 * trips (open, write, close), each a hand-off between threads and a wake-up of
 * the event loop; here a whole batch (every change queued meanwhile) costs one.
 * It also keeps the shared pool (DNS lookups, crypto, zlib) free of record files.
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

/** What the thread answers for one change: `undefined` when it was done. */
type Outcome = { readonly code: string | undefined; readonly message: string } | undefined;

interface Pending {
  readonly change: FileChange;
  readonly resolve: () => void;
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
  parentPort!.on("message", (batch: FileChange[]) => {
    const outcomes = batch.map((change): Outcome => {
      try {
        apply(change);
        return undefined;
      } catch (error) {
        const { code, message } = error as NodeJS.ErrnoException;
        return { code, message };
      }
    });
    parentPort!.postMessage(outcomes);
  });
}

class FileThread {
  #worker: Worker | undefined;
  #queue: Pending[] = [];
  #inFlight: Pending[] | undefined;

  run(change: FileChange): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ change, resolve, reject });
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
    worker.postMessage(batch.map((pending) => pending.change));
  }

  #start(): Worker {
    const worker = new Worker(`(${threadMain.toString()})((name) => import(name))`, { eval: true });
    worker.on("message", (outcomes: Outcome[]) => {
      const batch = this.#inFlight ?? [];
      batch.forEach((pending, index) => {
        const outcome = outcomes[index];
        if (outcome === undefined) pending.resolve();
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
