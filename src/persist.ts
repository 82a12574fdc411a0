import { getRequestState } from "./context.js";
import { register, type Registration } from "./registry.js";
import { StateCodec, type PersistTypes } from "./serialization.js";

/** Options of {@link persist}. */
export interface PersistOptions {
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
export function persist(key: string, options: PersistOptions = {}) {
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
  return function decorate<C extends PersistableClass>(target: C, context?: ClassDecoratorContext<C>): C {
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
    const registration: Registration = { key, className, codec, scope, resetToDefaults };
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
