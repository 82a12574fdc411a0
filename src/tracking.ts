/**
 * Deep change tracking. Django, Flask and the seed package only see top-level
 * assignments, so `s.items.push(x)` is silently lost there; here every nested
 * object is reached through a proxy that reports the change before it lands.
 */

/** What a proxy reports to; one per persisted instance per request. */
export interface ChangeSink {
  /** Throws when the value cannot be stored, naming `path`. */
  assertPersistable(value: unknown, path: string): void;
  /** Called after a change landed. Throws (before the change) when the request has committed. */
  assertWritable(path: string): void;
  markChanged(): void;
}

const rawByProxy = new WeakMap<object, object>();

/** The object behind a tracking proxy, or the value itself. */
export function unwrap<T>(value: T): T {
  if (typeof value === "object" && value !== null) {
    const raw = rawByProxy.get(value);
    if (raw !== undefined) return raw as T;
  }
  return value;
}

const MAP_MUTATORS = new Set(["set", "delete", "clear"]);
const SET_MUTATORS = new Set(["add", "delete", "clear"]);
const TYPED_ARRAY_MUTATORS = new Set(["set", "fill", "copyWithin", "reverse", "sort"]);
/** Reads that hand out stored objects, which must come back tracked. */
const COLLECTION_READERS = new Set(["get", "values", "entries", "keys", "forEach", Symbol.iterator]);

function isTypedArray(value: object): boolean {
  return ArrayBuffer.isView(value) && !(value instanceof DataView);
}

/** Hands out tracking proxies over one instance's object graph, one proxy per object. */
export class Tracker {
  readonly #proxies = new WeakMap<object, object>();

  constructor(readonly sink: ChangeSink) {}

  track<T extends object>(raw: T, path: string): T {
    const existing = this.#proxies.get(raw);
    if (existing !== undefined) return existing as T;
    const proxy = new Proxy(raw, this.#handler(path) as ProxyHandler<T>);
    this.#proxies.set(raw, proxy);
    rawByProxy.set(proxy, raw);
    return proxy;
  }

  #wrapValue(value: unknown, path: string): unknown {
    if (typeof value === "object" && value !== null) return this.track(value, path);
    return value;
  }

  /** `#wrapValue` for a property read: the path (a regex and a concatenation) is built only for objects. */
  #wrapProperty(value: unknown, childPath: (prop: string | symbol) => string, prop: string | symbol): unknown {
    if (typeof value === "object" && value !== null) return this.track(value, childPath(prop));
    return value;
  }

  #handler(path: string): ProxyHandler<object> {
    const { sink } = this;
    const childPath = (prop: string | symbol) =>
      typeof prop === "string" && /^\d+$/.test(prop) ? `${path}[${prop}]` : `${path}.${String(prop)}`;
    const assertKey = (prop: string | symbol) => {
      if (typeof prop === "symbol") {
        throw new TypeError(`persist-session: cannot persist ${path}[${String(prop)}] (a symbol-keyed property). Use a string key.`);
      }
    };
    return {
      get: (target, prop, receiver) => {
        if (target instanceof Map || target instanceof Set || target instanceof Date || isTypedArray(target)) {
          // Their methods and getters (`size`) need the real object as `this`.
          const value: unknown = Reflect.get(target, prop, target);
          if (typeof value === "function") return this.#method(target, prop, value as (...a: unknown[]) => unknown, path);
          return this.#wrapProperty(value, childPath, prop);
        }
        const value: unknown = Reflect.get(target, prop, receiver);
        if (typeof value === "function") return value; // methods run with `this` = the proxy, so their writes are tracked
        return this.#wrapProperty(value, childPath, prop);
      },
      set: (target, prop, value) => {
        assertKey(prop);
        const where = childPath(prop);
        sink.assertWritable(where);
        const raw = unwrap(value);
        const own = Object.prototype.hasOwnProperty.call(target, prop);
        if (own && Object.is((target as Record<string, unknown>)[prop as string], raw)) return true;
        sink.assertPersistable(raw, where);
        const ok = Reflect.set(target, prop, raw);
        if (ok) sink.markChanged();
        return ok;
      },
      deleteProperty: (target, prop) => {
        if (!Object.prototype.hasOwnProperty.call(target, prop)) return true;
        sink.assertWritable(childPath(prop));
        const ok = Reflect.deleteProperty(target, prop);
        if (ok) sink.markChanged();
        return ok;
      },
      defineProperty: (target, prop, descriptor) => {
        assertKey(prop);
        const where = childPath(prop);
        sink.assertWritable(where);
        if ("get" in descriptor || "set" in descriptor) {
          throw new TypeError(`persist-session: cannot persist ${where} (an accessor property). Assign a plain value.`);
        }
        const raw = unwrap(descriptor.value);
        sink.assertPersistable(raw, where);
        const ok = Reflect.defineProperty(target, prop, { ...descriptor, value: raw });
        if (ok) sink.markChanged();
        return ok;
      },
      setPrototypeOf: () => {
        throw new TypeError(`persist-session: cannot change the prototype of ${path}. Persisted state keeps its class.`);
      },
    };
  }

  /** A method of a Map, Set, Date or typed array, called on the real object. */
  #method(target: object, prop: string | symbol, fn: (...a: unknown[]) => unknown, path: string) {
    const { sink } = this;
    const name = typeof prop === "string" ? prop : "";
    const mutates =
      target instanceof Map ? MAP_MUTATORS.has(name)
      : target instanceof Set ? SET_MUTATORS.has(name)
      : target instanceof Date ? name.startsWith("set")
      : TYPED_ARRAY_MUTATORS.has(name);
    if (mutates) {
      return (...args: unknown[]) => {
        const where = `${path}.${name}()`;
        sink.assertWritable(where);
        const raws = args.map(unwrap);
        if (!(target instanceof Date) && !isTypedArray(target)) {
          raws.forEach((arg) => sink.assertPersistable(arg, where));
        }
        const result = fn.apply(target, raws);
        sink.markChanged();
        // Map.set and Set.add return the collection: keep handing out the proxy.
        return result === target ? this.track(target, path) : result;
      };
    }
    if ((target instanceof Map || target instanceof Set) && COLLECTION_READERS.has(prop)) {
      return (...args: unknown[]) => {
        const itemPath = `${path}[…]`;
        if (name === "forEach") {
          const [callback, thisArg] = args as [(v: unknown, k: unknown, c: unknown) => void, unknown];
          const proxy = this.track(target, path);
          return fn.call(target, (v: unknown, k: unknown) => callback.call(thisArg, this.#wrapValue(v, itemPath), this.#wrapValue(k, itemPath), proxy));
        }
        const result = fn.apply(target, args.map(unwrap));
        if (name === "get") return this.#wrapValue(result, itemPath);
        return this.#trackIterator(result as Iterator<unknown>, itemPath);
      };
    }
    return (...args: unknown[]) => fn.apply(target, args.map(unwrap));
  }

  *#trackIterator(iterator: Iterator<unknown>, path: string): Generator<unknown> {
    for (let step = iterator.next(); !step.done; step = iterator.next()) {
      const value = step.value;
      yield Array.isArray(value) ? value.map((item) => this.#wrapValue(item, path)) : this.#wrapValue(value, path);
    }
  }
}
