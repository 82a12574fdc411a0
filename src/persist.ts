import { getRequestState } from "./context.js";
import { register, type Registration } from "./registry.js";
import { StateCodec, type PersistTypes } from "./serialization.js";
import { Versioning, type Migrations, type RepairFunction, type StandardSchemaV1 } from "./versioning.js";

/** Options of {@link persist}; `Shape` is what the schema's output must be, and the class's instances are checked against it. */
export interface PersistOptions<Shape extends object = object> {
  /**
   * Your own classes that may appear inside the state, by a stable name:
   * `{ Money: { reduce: (v) => v instanceof Money && [v.cents], revive: ([cents]) => new Money(cents) } }`.
   */
  types?: PersistTypes;
  /**
   * `"browser"`: one record per browser, carried by a signed cookie named by the key.
   * `"user"`: one record per signed-in user, chosen by the `user` option of
   * `persistSession()`, so every device of the user shares it; no cookie.
   * @default "browser"
   */
  scope?: "browser" | "user";
  /**
   * The shape of the state this code writes, a positive integer. Every record
   * carries the version that wrote it; an older one is migrated at restore, a
   * newer one (after a rollback) is left untouched. Adding a field needs no new version.
   * @default 1
   */
  version?: number;
  /**
   * `migrate[n]` turns the fields of version n−1 into those of version n; a
   * record of version k runs k+1 … `version` in order at restore, and is
   * written back at that request's commit. A migration that throws sets the
   * record aside (its bytes kept) and the request gets fresh state.
   * @example
   * ```ts
   * migrate: { 2: (v1) => ({ ...v1, items: v1.lines }), 3: (v2) => ({ ...v2, currency: "EUR" }) }
   * ```
   */
  migrate?: Migrations;
  /**
   * Any Standard Schema V1 (zod, valibot, arktype, …): a restored (and
   * migrated) record is validated before the handler sees it, and the schema's
   * output is what the instance gets. A record that fails is set aside (its
   * bytes kept) and the request gets fresh state, unless `repair` returns fields to use.
   */
  schema?: StandardSchemaV1<unknown, Shape>;
  /** For a record the schema refused: the fields to use instead, or `undefined` to set it aside. */
  repair?: RepairFunction;
  /**
   * When `schema` checks the state. `"restore"`: a record read from the store,
   * before the handler sees it. `"always"`: that, and also the state a
   * request's commit is about to store; a state that fails fails the request
   * (a 500, logged with the key and the first issue's path), nothing of it is
   * stored and the stored record stays as it was. The check only checks: the
   * instance is stored as the handler left it, not the schema's output.
   * It costs one validation per commit that changed the state; see README, "Changing a state class".
   * @default "restore"
   */
  validate?: "restore" | "always";
  /**
   * For `scope: "user"` with `anonymous: "browser"`: at the first request in
   * which the user is signed in while the browser still carries its anonymous
   * record of this key, `merge(userState, browserState)` folds the browser's
   * state into the user's (change `userState` in place), under both records'
   * locks; the browser record is then deleted and its cookie expired. Without
   * it, the browser's record is ignored once a user is signed in.
   * @example
   * ```ts
   * merge: (user, visitor) => void user.items.push(...visitor.items)
   * ```
   */
  merge?: (userState: Shape, browserState: Shape) => void;
}

/** A class `@persist` can decorate. */
export type PersistableClass = abstract new (...args: never[]) => object;

/** RFC 6265 `cookie-name` is an RFC 7230 `token`: the key becomes the cookie's name. */
const COOKIE_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const MAX_KEY_LENGTH = 64;

/**
 * Makes a class's instances per-browser persistent state: inside a request
 * handled by `persistSession()`, `new AppState()` returns this browser's
 * instance, restored or fresh, and every change to it is stored before the
 * response is sent. Works as a standard (TC39) and as a legacy
 * (`experimentalDecorators`) class decorator.
 *
 * @param key - the cookie's name and the record's key; unique per class.
 * @example
 * ```ts
 * @persist("app-state")
 * class AppState { count = 0; todos: string[] = []; }
 * ```
 */
export function persist<Shape extends object = object>(key: string, options: PersistOptions<Shape> = {}) {
  if (typeof key !== "string" || key.length > MAX_KEY_LENGTH || !COOKIE_NAME.test(key)) {
    throw new TypeError(
      `persist-session: @persist key is invalid: ${JSON.stringify(key)}. Use 1 to ${MAX_KEY_LENGTH} letters, digits or -_.!#$%&'*+^\`|~ (it becomes a cookie name).`,
    );
  }
  const codec = new StateCodec(options.types);
  const scope = options.scope ?? "browser";
  if (scope !== "browser" && scope !== "user") {
    throw new TypeError(`persist-session: option scope is invalid: ${String(scope)}. Use "browser" or "user".`);
  }
  const { version = 1, migrate, schema, repair, merge, validate = "restore" } = options;
  checkVersioning(version, migrate, schema, repair, validate);
  if (merge !== undefined && (typeof merge !== "function" || scope !== "user")) {
    throw new TypeError('persist-session: option merge is invalid. Give a function (userState, browserState) => void, on a class with scope: "user".');
  }
  // The class's instances must fit the schema's output: it is assigned over them.
  return function decorate<C extends abstract new (...args: never[]) => Shape>(target: C, context?: ClassDecoratorContext<C>): C {
    if (typeof target !== "function" || (context !== undefined && context.kind !== "class")) {
      throw new TypeError("persist-session: @persist decorates classes only.");
    }
    const Base = target as unknown as new () => object;
    const className = target.name || "AnonymousState";
    const resetToDefaults = (instance: object): void => {
      for (const name of Object.keys(instance)) delete (instance as Record<string, unknown>)[name];
      // The undecorated class: its constructor does not look up the request.
      Object.assign(instance, new Base());
    };
    const versioning = new Versioning(className, version, migrate, schema, repair, validate === "always");
    const registration: Registration = {
      key,
      className,
      codec,
      scope,
      versioning,
      merge: merge as Registration["merge"],
      // The decorated class's prototype, without its constructor (which looks up the request): `instanceof` holds.
      construct: () => Reflect.construct(Base, [], Persisted) as object,
      resetToDefaults,
    };
    register(registration);

    const Persisted = class extends Base {
      constructor() {
        const request = getRequestState(`new ${className}()`);
        const existingInstance = request.instanceOf(registration);
        if (existingInstance !== undefined) return existingInstance;
        super();
        return request.adopt(registration, this);
      }
    };
    Object.defineProperty(Persisted, "name", { value: className });
    return Persisted as unknown as C;
  };
}

/** Throws a `TypeError` naming the option when the versioning options cannot work. */
function checkVersioning(version: unknown, migrate: unknown, schema: unknown, repair: unknown, validate: unknown): void {
  if (typeof version !== "number" || !Number.isSafeInteger(version) || version < 1) {
    throw new TypeError(`persist-session: option version is invalid: ${String(version)}. Use a positive integer (1 for a class that never changed shape).`);
  }
  if (migrate !== undefined) {
    if (typeof migrate !== "object" || migrate === null) throw new TypeError("persist-session: option migrate is invalid. Give an object of functions by the version they produce: { 2: (v1) => v2 }.");
    for (const [name, migration] of Object.entries(migrate)) {
      const target = Number(name);
      if (!Number.isSafeInteger(target) || target < 2 || target > version || typeof migration !== "function") {
        throw new TypeError(
          `persist-session: option migrate.${name} is invalid. Each key is the version a function produces, from 2 to the class's version (${version}), and each value a function.`,
        );
      }
    }
  }
  const standard = typeof schema === "object" && schema !== null ? (schema as { "~standard"?: { validate?: unknown } })["~standard"] : undefined;
  if (schema !== undefined && typeof standard?.validate !== "function") {
    throw new TypeError("persist-session: option schema is invalid. Give a Standard Schema V1 (zod 3.24+, valibot 1, arktype 2, …): an object with ~standard.validate.");
  }
  if (repair !== undefined && typeof repair !== "function") {
    throw new TypeError("persist-session: option repair is invalid. Give a function (fields, issues) => the fields to use, or undefined.");
  }
  if (validate !== "restore" && validate !== "always") {
    throw new TypeError(`persist-session: option validate is invalid: ${JSON.stringify(validate) ?? String(validate)}. Use "restore" (the default) or "always".`);
  }
  if (validate === "always" && schema === undefined) {
    throw new TypeError('persist-session: option validate is invalid: "always" needs a schema to check with. Give schema too, or leave validate out.');
  }
}
