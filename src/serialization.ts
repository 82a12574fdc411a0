import { DevalueError, parse, stringify } from "devalue";

/**
 * How to store a value of your own class: `reduce` returns `false`/`undefined`
 * for values that are not of the type, or any persistable value standing in for it;
 * `revive` rebuilds the instance from that value.
 */
export interface PersistType<T = unknown, R = unknown> {
  reduce(value: unknown): R | false | undefined;
  revive(value: R): T;
}

/** Registered types by name; the name is stored in the record, so keep it stable. */
export type PersistTypes = Readonly<Record<string, PersistType>>;

const STORE_PLAIN_DATA =
  "Store plain data (objects, arrays, Map, Set, Date, BigInt, typed arrays) or register the class with @persist(key, { types }).";

/** Thrown when a value cannot be stored; `path` says where, like `AppState.items[2]`. */
export class UnpersistableValueError extends TypeError {
  override readonly name = "UnpersistableValueError";
  /** `advice` replaces the general one when the fix is specific (a frozen object, a `__proto__` key). */
  constructor(
    readonly path: string,
    reason: string,
    advice: string = STORE_PLAIN_DATA,
  ) {
    super(`persist-session: cannot persist ${path} (${reason}). ${advice}`);
  }
}

/** Thrown at commit when a record's serialized size is over `maxRecordBytes`; nothing is written. */
export class RecordTooLargeError extends Error {
  override readonly name = "RecordTooLargeError";
  constructor(
    readonly className: string,
    readonly bytes: number,
    readonly limit: number,
  ) {
    super(
      `persist-session: ${className}'s state is ${bytes} bytes, over the ${limit}-byte limit. ` +
        "Keep less in it, or raise the maxRecordBytes option of persistSession().",
    );
  }
}

/** The codec of one persisted class: devalue plus the class's registered types. */
export class StateCodec {
  readonly #reducers: Record<string, (value: unknown) => unknown>;
  readonly #revivers: Record<string, (value: unknown) => unknown>;

  constructor(types: PersistTypes = {}) {
    this.#reducers = {};
    this.#revivers = {};
    for (const [name, type] of Object.entries(types)) {
      if (typeof type?.reduce !== "function" || typeof type.revive !== "function") {
        throw new TypeError(`persist-session: option types.${name} is invalid. Give an object with reduce(value) and revive(value) functions.`);
      }
      // devalue treats a falsy reduction as "not this type"; boxing lets 0, "" and null through.
      this.#reducers[name] = (value) => {
        const reduced = type.reduce(value);
        return reduced === false || reduced === undefined ? false : [reduced];
      };
      this.#revivers[name] = (boxed) => type.revive((boxed as [unknown])[0]);
    }
  }

  /** Throws {@link UnpersistableValueError} naming `path` when `value` cannot be stored. */
  assertPersistable(value: unknown, path: string): void {
    if (value === null || (typeof value !== "object" && typeof value !== "function" && typeof value !== "symbol")) return;
    this.#stringify(value, path);
  }

  /** The stored text of an instance's own enumerable fields. */
  serialize(instance: object, className: string): string {
    return this.#stringify({ ...instance }, className);
  }

  /** The fields stored by {@link serialize}; throws when the text is not such a record. */
  deserialize(text: string): Record<string, unknown> {
    const value: unknown = parse(text, this.#revivers);
    // serialize() always stores an object of fields; a Map, Date, array, boxed or bare primitive here is not a record of ours.
    if (value === null || typeof value !== "object" || Object.prototype.toString.call(value) !== "[object Object]") {
      throw new TypeError("the stored value is not a plain object");
    }
    return value as Record<string, unknown>;
  }

  #stringify(value: unknown, path: string): string {
    try {
      return stringify(value, this.#reducers);
    } catch (error) {
      if (error instanceof DevalueError) {
        const reason = error.message.replace(/^Cannot stringify /, "").replace(/^arbitrary non-POJOs$/, "an instance of an unregistered class");
        throw new UnpersistableValueError(`${path}${error.path}`, reason);
      }
      throw error;
    }
  }
}
