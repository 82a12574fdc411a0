import { createHash } from "node:crypto";
import type { PersistSessionOptions } from "./session-core.js";
import type { SessionStore } from "./stores/store.js";

/**
 * One engine per store location per process, whichever copy of this package
 * asks. Next.js evaluates the module that calls `persistSession()` once per
 * module graph it builds (a Server Action imported by a Client Component runs
 * in another graph than the page), each graph with its own copy of this
 * package. Two engines on one FileStore directory keep two lock tables and two
 * caches, and concurrent changes are lost (issue #15: 20 concurrent increments
 * ended at +10). So the first engine of a location is kept on `globalThis`
 * under a `Symbol.for` key, like the registry and the request context, and a
 * `persistSession()` of that location is served by it, from another copy or
 * from the same one (#17: two engines of one copy on one directory lost
 * updates just the same; a module evaluated again, as a dev server's reload
 * does, is that case). A restart on the directory closes the first
 * `persistSession()` before it makes the next.
 */
interface SharedEngine {
  /** What the first `persistSession()` of the location built (its copy's code, so its errors are its own classes). */
  readonly engine: object;
  /** The copy of this module that built it. */
  readonly copy: object;
  /** The options that engine was built with, as {@link fingerprint} sees them. */
  readonly options: ReadonlyMap<string, string>;
  /** `persistSession()` calls served by it and not closed yet. */
  holders: number;
}

const kEngines = Symbol.for("persist-session.engines.v1");
const engines: Map<string, SharedEngine> = ((globalThis as Record<symbol, unknown>)[kEngines] as Map<string, SharedEngine> | undefined) ??
  ((globalThis as Record<symbol, unknown>)[kEngines] = new Map<string, SharedEngine>()) as Map<string, SharedEngine>;
/** This copy of the module: another module graph's copy has another. */
const thisCopy = {};

/**
 * Where a store keeps records that one engine of this process must serve
 * alone: a process-local store with a directory (the FileStore). `undefined`
 * for a store whose processes coordinate through it (Redis: engines are
 * leased like processes) and for one that lives in its own instance (MemoryStore).
 * Read from the instance, not by `instanceof`: another copy's FileStore is another class.
 *
 * @example
 * ```ts
 * storeLocation(new FileStore({ dir: "/srv/state" })); // "dir:/srv/state"
 * ```
 */
export function storeLocation(store: SessionStore): string | undefined {
  if (store.shared === true) return undefined;
  const dir = (store as { readonly dir?: unknown }).dir;
  return typeof dir === "string" ? `dir:${dir}` : undefined;
}

/**
 * The engine serving `location`: the one an earlier `persistSession()` of
 * this process built, from whichever copy of this package (its options must
 * be the same, or this throws: which would hold is a guess), else a new one
 * from `create`. Returns it with the function that
 * gives this holder back; that function says whether it was the last, so
 * that the caller closes the engine.
 *
 * @example
 * ```ts
 * const { engine, release } = shareEngine(location, options, () => buildSessions(options));
 * ```
 */
export function shareEngine<T extends object>(location: string, options: PersistSessionOptions, create: () => T): { engine: T; release: () => boolean } {
  const wanted = fingerprint(options);
  let shared = engines.get(location);
  if (shared === undefined) {
    shared = { engine: create(), copy: thisCopy, options: wanted, holders: 0 };
    engines.set(location, shared);
  } else {
    const served = shared.options;
    const differing = [...new Set([...served.keys(), ...wanted.keys()])].find((name) => wanted.get(name) !== served.get(name));
    if (differing !== undefined) {
      throw new TypeError(
        `persist-session: the store ${location.slice("dir:".length)} is served already by another persistSession() in this process${shared.copy === thisCopy ? "" : " (of another copy of persist-session)"}, with another option ${differing}. ` +
          "One engine serves a store directory per process (Next.js loads your module once per module graph): give every call the same options, " +
          "or create it in one module. In development, restart the server after changing them.",
      );
    }
  }
  const entry = shared;
  entry.holders++;
  let released = false;
  return {
    engine: entry.engine as T,
    release: () => {
      if (released) return false;
      released = true;
      if (--entry.holders > 0) return false;
      if (engines.get(location) === entry) engines.delete(location);
      return true;
    },
  };
}

/**
 * The options two `persistSession()` calls on one store must agree on, by
 * name. Functions (`user`, `logger`) cannot be compared: the first call's
 * serve both. The secret is kept as a hash only.
 */
function fingerprint(options: PersistSessionOptions): ReadonlyMap<string, string> {
  const { secret, store, user, logger: _logger, cookie, ...plain } = options;
  const seen = new Map<string, string>([
    ["secret", secret === undefined ? "" : createHash("sha256").update(JSON.stringify(secret)).digest("hex")],
    ["store", store?.constructor.name ?? "FileStore"],
    ["user", typeof user],
    ["cookie", JSON.stringify(cookie ?? {})],
  ]);
  for (const [name, value] of Object.entries(plain)) if (value !== undefined) seen.set(name, JSON.stringify(value));
  return seen;
}
