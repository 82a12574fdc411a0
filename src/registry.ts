import type { StateCodec } from "./serialization.js";
import type { Versioning } from "./versioning.js";

/** What the library knows of one decorated class. */
export interface Registration {
  readonly key: string;
  readonly className: string;
  readonly codec: StateCodec;
  readonly scope: "browser" | "user";
  /** The version this code writes, and how older records are brought to it. */
  readonly versioning: Versioning;
  /** Folds an anonymous browser's state into its signed-in user's (user scope only). */
  readonly merge: ((userState: object, browserState: object) => void) | undefined;
  /** A new instance with the constructor's defaults, outside any request. */
  construct(): object;
  /** Replaces every own property of `target` with the constructor's defaults (a reset or an unreadable record). */
  resetToDefaults(target: object): void;
}

interface Registry {
  readonly byKey: Map<string, Registration>;
  /** {@link userScopedKeys}, kept while no class is decorated: every request of a signed-in user asks. */
  userKeys: readonly string[] | undefined;
}

/**
 * One registry per process, on `globalThis`: a framework that loads this
 * package in several module graphs (Next.js's server layers) must still see
 * one set of keys, or a class registered in one copy is unknown to the other.
 */
const kRegistry = Symbol.for("persist-session.registry.v1");
const registry: Registry = ((globalThis as Record<symbol, unknown>)[kRegistry] as Registry | undefined) ??
  ((globalThis as Record<symbol, unknown>)[kRegistry] = { byKey: new Map(), userKeys: undefined } satisfies Registry) as Registry;

/**
 * Class names by key, as this copy of the module registered them. Another
 * copy (a second module graph: Next.js's server layers) registers the same
 * class again, and its minifier may name it otherwise (`i`, `j`), so a
 * taken key is checked only against the classes of this copy.
 */
const ownClassNames = new Map<string, string>();

/**
 * Registers a decorated class under its key. The same class name again is a
 * module reloaded in development, and a key registered by another copy of
 * this module is the same class loaded by a second module graph: the newest
 * class wins. Another class under a key this copy took is a mistake.
 */
export function register(registration: Registration): void {
  const existing = ownClassNames.get(registration.key);
  if (existing !== undefined && existing !== registration.className) {
    throw new Error(`persist-session: @persist("${registration.key}") is already used by class ${existing}. Give ${registration.className} a key of its own.`);
  }
  ownClassNames.set(registration.key, registration.className);
  registry.byKey.set(registration.key, registration);
  registry.userKeys = undefined;
}

/** The registration of `key`, if a class was decorated with it. */
export function registrationOf(key: string): Registration | undefined {
  return registry.byKey.get(key);
}

/** Keys of the user-scoped classes, in key order. */
export function userScopedKeys(): readonly string[] {
  registry.userKeys ??= [...registry.byKey.values()].filter((registration) => registration.scope === "user").map((registration) => registration.key).sort();
  return registry.userKeys;
}
