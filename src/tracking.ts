/**
 * Deep change tracking. Django, Flask and the seed package only see top-level
 * assignments, so `s.items.push(x)` is silently lost there; here every nested
 * object is reached through a proxy that reports the change before it lands.
 *
 * Every route from a persisted instance to a stored object's insides either
 * goes through such a proxy or is refused with an error naming the path, so a
 * change can never land in memory without the record being written (#17):
 * property writes, deletions and definitions; property descriptors (their
 * `value` comes back tracked); the methods of Map, Set, Date, typed arrays,
 * DataView, ArrayBuffer, URL and URLSearchParams, which run on the real object
 * and report the ones that change it; callbacks those methods call (they get
 * the proxy, never the real object); typed-array views (`subarray()` is
 * tracked; a new view over a stored ArrayBuffer is refused). What the store
 * would not keep is refused at the assignment: `__proto__` keys (prototype
 * pollution through `Object.assign(state, JSON.parse(body))`), frozen objects,
 * accessors, non-enumerable or read-only properties, named properties on
 * arrays, Maps or Dates, resizable buffers.
 */
import { types } from "node:util";
import { UnpersistableValueError } from "./serialization.js";

/** What a proxy reports to; one per persisted instance per request. */
export interface ChangeSink {
  /** Throws when the value cannot be stored, naming `path`. */
  assertPersistable(value: unknown, path: string): void;
  /** Called after a change landed. Throws (before the change) when the request has committed. */
  assertWritable(path: string): void;
  markChanged(): void;
}

/** Which traps and methods an object gets: decided once, when its proxy is made. */
type Kind = "object" | "array" | "map" | "set" | "date" | "typed" | "view" | "buffer" | "regexp" | "url" | "params" | "boxed";

interface Proxied {
  readonly raw: object;
  readonly tracker: Tracker;
}

/**
 * What a tracking proxy answers when asked for this symbol: the object behind it and its
 * tracker. A trap, not a module-wide WeakMap from proxy to object: every request makes a proxy,
 * and the WeakMap's entries kept each request's whole state alive past the young generation's
 * collections (2 MB promoted per scavenge, a third of the hot path's time in GC; bench/README.md).
 */
const kProxied = Symbol("persist-session.proxied");

/** The tracker and object behind `value` when it is a tracking proxy. */
function proxiedOf(value: object): Proxied | undefined {
  return (value as { [kProxied]?: Proxied })[kProxied];
}

/** The object behind a tracking proxy, or the value itself. */
export function unwrap<T>(value: T): T {
  if (typeof value === "object" && value !== null) {
    const proxied = proxiedOf(value);
    if (proxied !== undefined) return proxied.raw as T;
  }
  return value;
}

/** Methods that change the object they are called on, by kind; Date and DataView: every `set…`. */
const MUTATORS: Partial<Record<Kind, ReadonlySet<string>>> = {
  map: new Set(["set", "delete", "clear"]),
  set: new Set(["add", "delete", "clear"]),
  typed: new Set(["set", "fill", "copyWithin", "reverse", "sort"]),
  buffer: new Set(["resize"]),
  regexp: new Set(["compile"]),
  params: new Set(["append", "delete", "set", "sort"]),
};
/** Reads of a Map or Set that hand out stored objects, which must come back tracked. */
const COLLECTION_READERS = new Set<string | symbol>(["get", "values", "entries", "keys", "forEach", Symbol.iterator]);
/** They detach the stored buffer, leaving the state an empty one. */
const DETACHING = new Set(["transfer", "transferToFixedLength"]);
const ATTRIBUTES = ["writable", "enumerable", "configurable"] as const;

/** Each kind as a message names it, with its article. */
const NAMES: Record<Kind, string> = {
  object: "an object",
  array: "an array",
  map: "a Map",
  set: "a Set",
  date: "a Date",
  typed: "a typed array",
  view: "a DataView",
  buffer: "an ArrayBuffer",
  regexp: "a RegExp",
  url: "a URL",
  params: "a URLSearchParams",
  boxed: "a boxed primitive",
};

function kindOf(value: object): Kind {
  if (Array.isArray(value)) return "array";
  const proto: unknown = Object.getPrototypeOf(value);
  if (proto === Object.prototype || proto === null) return "object";
  // Brand checks, not instanceof: an object that merely inherits from Map.prototype is no Map.
  if (types.isMap(value)) return "map";
  if (types.isSet(value)) return "set";
  if (types.isDate(value)) return "date";
  if (types.isTypedArray(value)) return "typed";
  if (types.isDataView(value)) return "view";
  if (types.isAnyArrayBuffer(value)) return "buffer";
  if (types.isRegExp(value)) return "regexp";
  if (types.isBoxedPrimitive(value)) return "boxed";
  if (value instanceof URL) return "url";
  if (value instanceof URLSearchParams) return "params";
  return "object";
}

const ARRAY_INDEX = /^(?:0|[1-9]\d*)$/;

function isArrayIndex(prop: string): boolean {
  return ARRAY_INDEX.test(prop) && Number(prop) < 2 ** 32 - 1;
}

/** What a typed array treats as an element (ECMA-262 CanonicalNumericIndexString), in range or not. */
function isCanonicalNumeric(prop: string): boolean {
  return prop === "-0" || String(Number(prop)) === prop;
}

function hasSetter(proto: object, prop: string): boolean {
  return Object.getOwnPropertyDescriptor(proto, prop)?.set !== undefined;
}

/** Whether a property of this kind of object is stored (devalue keeps array elements, not named properties on arrays, Maps…). */
function keepsKey(kind: Kind, prop: string): boolean {
  switch (kind) {
    case "object":
      return true;
    case "array":
      return prop === "length" || isArrayIndex(prop);
    case "typed":
      return isCanonicalNumeric(prop);
    case "url":
      // href, pathname, search…: the URL's own setters, so the change is in what is stored (its href).
      return hasSetter(URL.prototype, prop);
    case "regexp":
      // Not stored (devalue keeps source and flags), but exec() and test() move it anyway: it is not state.
      return prop === "lastIndex";
    default:
      return false;
  }
}

/** Whether an own property an assigned object already has is stored: what {@link keepsKey} allows to be written, but for URLs and boxed primitives. */
function storesOwnKey(kind: Kind, key: string): boolean {
  // A URL keeps its state in internal slots, so an own property is no setter's; a String object's own keys are its characters.
  if (kind === "url") return false;
  if (kind === "boxed") return key === "length" || isArrayIndex(key);
  return keepsKey(kind, key);
}

/** A path, built when a message needs it. */
type PathOf = () => string;

function pathOfKey(where: PathOf, key: string | symbol): PathOf {
  return () => (typeof key === "string" && ARRAY_INDEX.test(key) ? `${where()}[${key}]` : `${where()}.${String(key)}`);
}

function refuseProto(path: string): never {
  throw new UnpersistableValueError(
    `${path}.__proto__`,
    "a __proto__ key, which would reach or replace a prototype",
    "Drop __proto__ keys from input before assigning it (Object.assign(state, JSON.parse(body)) copies them); use Object.getPrototypeOf() to read a prototype.",
  );
}

function refuseKey(where: string, kind: Kind): never {
  throw new UnpersistableValueError(
    where,
    `a named property of ${NAMES[kind]}, which the store does not keep`,
    `Keep such data in a plain object beside it.`,
  );
}

function refuseView(path: string): never {
  throw new TypeError(
    `persist-session: cannot make a view of the ArrayBuffer ${path}: changes through it would not be stored. ` +
      "Change the typed array that holds it (its elements, set(), fill() and subarray() views are tracked), or copy it with slice().",
  );
}

/**
 * The traps of one tracking proxy. One object per proxy, its methods shared: a handler of
 * closures cost ten allocations for every object a request touched (a tracked todo list is a
 * proxy per todo read), and a sixth of a hot request's allocated bytes.
 */
class Traps implements ProxyHandler<object>, Proxied {
  readonly plain: boolean;

  constructor(
    readonly tracker: Tracker,
    readonly kind: Kind,
    readonly path: string,
    /** The object behind the proxy: the traps themselves answer {@link kProxied}. */
    readonly raw: object,
  ) {
    this.plain = kind === "object" || kind === "array";
  }

  childPath(prop: string | symbol): string {
    return typeof prop === "string" && ARRAY_INDEX.test(prop) ? `${this.path}[${prop}]` : `${this.path}.${String(prop)}`;
  }

  /** Checks a property about to be written or defined; returns its path. */
  writable(prop: string | symbol): string {
    if (typeof prop === "symbol") {
      throw new TypeError(`persist-session: cannot persist ${this.path}[${String(prop)}] (a symbol-keyed property). Use a string key.`);
    }
    if (prop === "__proto__") refuseProto(this.path);
    const where = this.childPath(prop);
    if (!keepsKey(this.kind, prop)) refuseKey(where, this.kind);
    this.tracker.sink.assertWritable(where);
    return where;
  }

  /** A property's value as read through the proxy: objects tracked (the path, a regex and a concatenation, is built only for them). */
  wrap(value: unknown, prop: string | symbol): unknown {
    if (typeof value === "object" && value !== null) return this.tracker.track(value, this.childPath(prop));
    return value;
  }

  get(target: object, prop: string | symbol, receiver: unknown): unknown {
    if (prop === kProxied) return this;
    const { kind, path } = this;
    if (prop === "__proto__") refuseProto(path);
    if (this.plain) {
      const value: unknown = Reflect.get(target, prop, receiver);
      if (typeof value === "function") return value; // methods run with `this` = the proxy, so their writes are tracked
      return this.wrap(value, prop);
    }
    // Their methods and getters (`size`, `pathname`) need the real object as `this`.
    const value: unknown = Reflect.get(target, prop, target);
    if (typeof value === "function") return this.tracker.method(kind, target, prop, value as (...a: unknown[]) => unknown, path);
    // A typed array's constructor reads these of a buffer to copy it as an array-like or iterable: the copy would
    // be a new view's start, so refuse; `new Uint8Array(buffer)` over the real one is not reachable from here.
    if (kind === "buffer" && (prop === Symbol.iterator || prop === "length" || (typeof prop === "string" && isCanonicalNumeric(prop)))) refuseView(path);
    return this.wrap(value, prop);
  }

  set(target: object, prop: string | symbol, value: unknown): boolean {
    const { sink } = this.tracker;
    const where = this.writable(prop);
    const raw = this.tracker.adopt(value, where);
    const own = Object.prototype.hasOwnProperty.call(target, prop);
    if (own && Object.is((target as Record<string, unknown>)[prop as string], raw)) return true;
    sink.assertPersistable(raw, where);
    const ok = Reflect.set(target, prop, raw, target);
    if (ok) sink.markChanged();
    return ok;
  }

  deleteProperty(target: object, prop: string | symbol): boolean {
    if (!Object.prototype.hasOwnProperty.call(target, prop)) return true;
    const { sink } = this.tracker;
    sink.assertWritable(this.childPath(prop));
    const ok = Reflect.deleteProperty(target, prop);
    if (ok) sink.markChanged();
    return ok;
  }

  defineProperty(target: object, prop: string | symbol, descriptor: PropertyDescriptor): boolean {
    const { sink } = this.tracker;
    const where = this.writable(prop);
    if ("get" in descriptor || "set" in descriptor) {
      throw new TypeError(`persist-session: cannot persist ${where} (an accessor property). Assign a plain value.`);
    }
    // devalue stores own enumerable data properties and brings them back writable and configurable:
    // anything else would come back different (a non-enumerable one not at all).
    const existing = Reflect.getOwnPropertyDescriptor(target, prop);
    for (const attribute of ATTRIBUTES) {
      const wanted = descriptor[attribute] ?? (existing === undefined ? false : existing[attribute]);
      if (wanted !== (existing === undefined ? true : existing[attribute])) {
        throw new TypeError(
          `persist-session: cannot persist ${where} (${existing === undefined ? "a new" : "a change to a"} ${attribute}: ${String(wanted)} property, which would come back as a plain one). ` +
            "Assign the value instead (state.x = value).",
        );
      }
    }
    if (!("value" in descriptor)) return Reflect.defineProperty(target, prop, descriptor);
    const raw = this.tracker.adopt(descriptor.value, where);
    sink.assertPersistable(raw, where);
    const ok = Reflect.defineProperty(target, prop, { ...descriptor, value: raw });
    if (ok) sink.markChanged();
    return ok;
  }

  getOwnPropertyDescriptor(target: object, prop: string | symbol): PropertyDescriptor | undefined {
    const descriptor = Reflect.getOwnPropertyDescriptor(target, prop);
    if (descriptor === undefined || typeof descriptor.value !== "object" || descriptor.value === null) return descriptor;
    // The proxy invariants make such a property report its real value: it must not exist in state.
    if (descriptor.configurable === false && descriptor.writable === false) {
      throw new TypeError(`persist-session: ${this.childPath(prop)} is a read-only, non-configurable property, so its value cannot be handed out tracked. Assign the value instead (state.x = value).`);
    }
    return { ...descriptor, value: this.tracker.track(descriptor.value as object, this.childPath(prop)) };
  }

  setPrototypeOf(): boolean {
    throw new TypeError(`persist-session: cannot change the prototype of ${this.path}. Persisted state keeps its class.`);
  }

  preventExtensions(): boolean {
    throw new TypeError(
      `persist-session: cannot freeze, seal or prevent extensions of ${this.path}: restored state is always changeable, so it would not come back so. ` +
        "Keep a frozen copy outside the state instead.",
    );
  }
}

/** Hands out tracking proxies over one instance's object graph, one proxy per object. */
export class Tracker {
  /**
   * The first object tracked (the instance) and its proxy, then a WeakMap for any others: a
   * request that touches only top-level fields makes one proxy, and a WeakMap per request cost
   * an allocation and the collector's ephemeron work on every hot request.
   */
  #firstRaw: object | undefined;
  #firstProxy: object | undefined;
  #proxies: WeakMap<object, object> | undefined;

  constructor(readonly sink: ChangeSink) {}

  track<T extends object>(raw: T, path: string): T {
    if (raw === this.#firstRaw) return this.#firstProxy as T;
    const existing = this.#proxies?.get(raw);
    if (existing !== undefined) return existing as T;
    const proxy = new Proxy(raw, new Traps(this, kindOf(raw), path, raw) as ProxyHandler<T>);
    if (this.#firstRaw === undefined) {
      this.#firstRaw = raw;
      this.#firstProxy = proxy;
    } else {
      (this.#proxies ??= new WeakMap()).set(raw, proxy);
    }
    return proxy;
  }

  #wrapValue(value: unknown, path: string): unknown {
    if (typeof value === "object" && value !== null) return this.track(value, path);
    return value;
  }


  /**
   * Makes an assigned value fit to be state, in place: every tracking proxy of this
   * instance inside it becomes the object behind it (the stored graph never holds a
   * proxy, which devalue would copy or refuse), and what the store would not bring
   * back as it is refused with its path. devalue then checks the rest
   * ({@link ChangeSink.assertPersistable}).
   */
  adopt(value: unknown, path: string): unknown {
    if (typeof value !== "object" || value === null) return value;
    const seen = new Set<object>();
    // Paths are built only for a refusal: an assignment of a new object is on the hot path of pushes and sets.
    const visit = (node: object, where: PathOf): object => {
      const proxied = proxiedOf(node);
      if (proxied !== undefined) {
        if (proxied.tracker.sink !== this.sink) {
          throw new UnpersistableValueError(
            where(),
            "an object of another persisted state, or one handed out by an earlier request",
            "Two records cannot share an object: assign a copy ({ ...value }, [...value], new Map(value)).",
          );
        }
        return proxied.raw;
      }
      if (seen.has(node)) return node;
      seen.add(node);
      const kind = kindOf(node);
      const proto: unknown = Object.getPrototypeOf(node);
      // An instance of a registered class is its type's to reduce; devalue refuses unregistered ones.
      if (kind === "object" && proto !== Object.prototype && proto !== null) return node;
      if (!Object.isExtensible(node)) {
        throw new UnpersistableValueError(where(), "a frozen, sealed or non-extensible object", "Restored state is always changeable: assign a changeable copy.");
      }
      if (Buffer.isBuffer(node)) {
        throw new UnpersistableValueError(where(), "a Node.js Buffer, which would come back as a plain Uint8Array", "Assign new Uint8Array(buffer).");
      }
      const buffer = kind === "buffer" ? node : kind === "typed" || kind === "view" ? (node as ArrayBufferView).buffer : undefined;
      if (buffer !== undefined && (buffer as { resizable?: boolean }).resizable === true) {
        throw new UnpersistableValueError(where(), "a resizable ArrayBuffer, which would come back fixed-length", "Assign a fixed-length copy (buffer.slice(0)).");
      }
      // A typed array's own keys are its elements: listing a large one would cost a string per element, and
      // nothing but its elements is reachable through the proxy (named properties are refused there).
      if (kind === "typed") return node;
      for (const key of Reflect.ownKeys(node)) {
        if (typeof key === "symbol") throw new UnpersistableValueError(pathOfKey(where, key)(), "a symbol-keyed property", "Use a string key.");
        if (key === "__proto__") refuseProto(where());
        if (!storesOwnKey(kind, key)) refuseKey(pathOfKey(where, key)(), kind);
        // Built-in parts (an array's length, a String's characters, a RegExp's lastIndex) are what they are.
        if (kind !== "object" && kind !== "array") continue;
        if (kind === "array" && key === "length") continue;
        const descriptor = Reflect.getOwnPropertyDescriptor(node, key)!;
        if (!("value" in descriptor)) throw new UnpersistableValueError(pathOfKey(where, key)(), "an accessor property", "Assign a plain value.");
        if (descriptor.enumerable !== true || descriptor.writable !== true || descriptor.configurable !== true) {
          throw new UnpersistableValueError(pathOfKey(where, key)(), "a non-enumerable or read-only property, which would come back as a plain one", "Assign a plain value.");
        }
        const child: unknown = descriptor.value;
        if (typeof child === "object" && child !== null) {
          const adopted = visit(child, pathOfKey(where, key));
          if (adopted !== child) (node as Record<string, unknown>)[key] = adopted;
        }
      }
      if (kind === "map" || kind === "set") this.#adoptEntries(node as Map<unknown, unknown> | Set<unknown>, where, visit);
      return node;
    };
    return visit(value, () => path);
  }

  /** The entries of a Map or Set being adopted: rebuilt in order when one of them was a proxy. */
  #adoptEntries(node: Map<unknown, unknown> | Set<unknown>, where: PathOf, visit: (node: object, where: PathOf) => object): void {
    const itemPath = () => `${where()}[…]`;
    const adopt = (item: unknown) => (typeof item === "object" && item !== null ? visit(item, itemPath) : item);
    let changed = false;
    const entries: Array<[unknown, unknown]> = [];
    for (const [key, value] of node.entries()) {
      const entry: [unknown, unknown] = [adopt(key), node instanceof Map ? adopt(value) : undefined];
      changed ||= entry[0] !== key || (node instanceof Map && entry[1] !== value);
      entries.push(entry);
    }
    if (!changed) return;
    node.clear();
    for (const [key, value] of entries) {
      if (node instanceof Map) node.set(key, value);
      else node.add(key);
    }
  }

  /** A method of a Map, Set, Date, typed array, DataView, ArrayBuffer, RegExp, URL or URLSearchParams, called on the real object. */
  method(kind: Kind, target: object, prop: string | symbol, fn: (...a: unknown[]) => unknown, path: string): (...args: unknown[]) => unknown {
    const { sink } = this;
    const name = typeof prop === "string" ? prop : "";
    const proxy = this.track(target, path);
    /** A method returning the object itself (`map.set`, `valueOf`) hands out the proxy, never the real object. */
    const tracked = (result: unknown) => (result === target ? proxy : result);
    if (kind === "buffer" && DETACHING.has(name)) {
      return () => {
        throw new TypeError(`persist-session: cannot ${name}() the ArrayBuffer ${path}: it would leave the state an empty, detached buffer. Copy it with slice().`);
      };
    }
    const collection = kind === "map" || kind === "set";
    const mutates = MUTATORS[kind]?.has(name) === true || ((kind === "date" || kind === "view") && name.startsWith("set"));
    if (mutates) {
      return (...args: unknown[]) => {
        const where = `${path}.${name}()`;
        sink.assertWritable(where);
        const raws = collection ? args.map((arg) => this.adopt(arg, where)) : args.map(unwrap);
        if (collection) raws.forEach((arg) => sink.assertPersistable(arg, where));
        const result = fn.apply(target, raws.map((arg) => (typeof arg === "function" ? this.#callback(arg as Callback, target, proxy) : arg)));
        sink.markChanged();
        return tracked(result);
      };
    }
    if (kind === "typed" && name === "subarray") {
      // A view sharing the stored buffer: its writes are changes of the state, so it is tracked like the array.
      return (...args: unknown[]) => this.track(fn.apply(target, args.map(unwrap)) as object, `${path}.subarray()`);
    }
    if (collection && COLLECTION_READERS.has(prop)) {
      return (...args: unknown[]) => {
        const itemPath = `${path}[…]`;
        if (name === "forEach") {
          const [callback, thisArg] = args as [(v: unknown, k: unknown, c: unknown) => void, unknown];
          return fn.call(target, (v: unknown, k: unknown) => callback.call(thisArg, this.#wrapValue(v, itemPath), this.#wrapValue(k, itemPath), proxy));
        }
        const result = fn.apply(target, args.map(unwrap));
        if (name === "get") return this.#wrapValue(result, itemPath);
        return this.#trackIterator(result as Iterator<unknown>, itemPath);
      };
    }
    // Readers. A callback (a typed array's forEach, map, find…) would get the real object as its
    // last argument, and writes through it would go untracked: it gets the proxy.
    return (...args: unknown[]) => tracked(fn.apply(target, args.map((arg) => (typeof arg === "function" ? this.#callback(arg as Callback, target, proxy) : unwrap(arg)))));
  }

  /** `callback`, seeing `proxy` wherever the engine passes the real object. */
  #callback(callback: Callback, target: object, proxy: object): Callback {
    return function (this: unknown, ...args: unknown[]) {
      return callback.apply(this, args.map((arg) => (arg === target ? proxy : arg)));
    };
  }

  *#trackIterator(iterator: Iterator<unknown>, path: string): Generator<unknown> {
    for (let step = iterator.next(); !step.done; step = iterator.next()) {
      const value = step.value;
      yield Array.isArray(value) ? value.map((item) => this.#wrapValue(item, path)) : this.#wrapValue(value, path);
    }
  }
}

type Callback = (this: unknown, ...args: unknown[]) => unknown;
