import type { SessionStore } from "../../src/index.js";

/**
 * A store that forwards to `store` except for `overrides`: for counting or
 * failing calls through the public interface. Stores keep #private fields, so
 * every method is bound to the real store rather than inherited.
 */
export function wrapStore<T extends object = object>(store: SessionStore, overrides: Partial<Record<keyof SessionStore, unknown>> & T): SessionStore & T {
  const wrapper: Record<string, unknown> = {};
  let proto: object | null = store;
  while (proto !== null && proto !== Object.prototype) {
    for (const name of Object.getOwnPropertyNames(proto)) {
      if (name === "constructor" || name in wrapper) continue;
      const value = (store as unknown as Record<string, unknown>)[name];
      wrapper[name] = typeof value === "function" ? (value as (...a: unknown[]) => unknown).bind(store) : value;
    }
    proto = Object.getPrototypeOf(proto) as object | null;
  }
  return Object.assign(wrapper, overrides) as unknown as SessionStore & T;
}
