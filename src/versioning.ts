/**
 * Versioned state: the version of the code that wrote a record, kept in the
 * record's own data so stores stay opaque, and the migrations and schema that
 * bring an older record up to the running code's shape at restore.
 */

/**
 * The interface of Standard Schema V1 (standardschema.dev), which zod,
 * valibot, arktype and others implement: inlined, so persist-session depends
 * on no validation library.
 */
export interface StandardSchemaV1<Input = unknown, Output = Input> {
  readonly "~standard": {
    readonly version: 1;
    readonly vendor: string;
    readonly validate: (value: unknown) => StandardSchemaResult<Output> | Promise<StandardSchemaResult<Output>>;
    readonly types?: { readonly input: Input; readonly output: Output } | undefined;
  };
}

/** What a Standard Schema's `validate` returns. */
export type StandardSchemaResult<Output> =
  | { readonly value: Output; readonly issues?: undefined }
  | { readonly issues: readonly StandardSchemaIssue[] };

/** One problem a schema found. */
export interface StandardSchemaIssue {
  readonly message: string;
  readonly path?: ReadonlyArray<PropertyKey | { readonly key: PropertyKey }> | undefined;
}

/** A record's fields as a migration receives them: read them, return the next version's fields. */
export type StoredFields = { readonly [field: string]: unknown };

/**
 * Migrations by the version they produce: `migrate[n]` turns the fields of
 * version n−1 into those of version n. A record of version k runs k+1 … version, in order.
 */
export type Migrations = { readonly [version: number]: (fields: StoredFields) => object | Promise<object> };

/** What the app does with a record its schema refused: the fields to use instead, or `undefined` to set it aside. */
export type RepairFunction = (fields: StoredFields, issues: readonly StandardSchemaIssue[]) => object | undefined | Promise<object | undefined>;

/** The outcome of {@link Versioning.restore}. */
export type Restored =
  | { readonly kind: "current"; readonly fields: Record<string, unknown>; readonly migrated: boolean }
  | { readonly kind: "newer"; readonly version: number }
  | { readonly kind: "unusable"; readonly reason: string };

/**
 * The envelope line before the devalue text of a record that needs one: `v<N>`
 * (the version that wrote it), then ` c<ms>` when the record's creation time is
 * kept (for `maxLifetime`). Devalue text itself starts with `[`, so a record
 * without the line is version 1 and has no known creation time.
 */
const ENVELOPE = /^v([1-9]\d{0,8})(?: c(\d{1,15}))?\n/;

/** What a record's data says of itself, and where its devalue text starts. */
export interface Envelope {
  readonly version: number;
  /** Milliseconds since the epoch of the record's first write, when kept. */
  readonly createdAt: number | undefined;
  readonly text: string;
}

/** Reads a record's envelope line, if it has one. */
export function splitVersion(data: string): Envelope {
  // The common case, version 1 with no creation time (and every record from before envelopes), costs one comparison.
  if (data.charCodeAt(0) !== 0x76 /* v */) return { version: 1, createdAt: undefined, text: data };
  const match = ENVELOPE.exec(data);
  if (match === null) return { version: 1, createdAt: undefined, text: data };
  return { version: Number(match[1]), createdAt: match[2] === undefined ? undefined : Number(match[2]), text: data.slice(match[0].length) };
}

/** The version of a record's data, without splitting it. */
export function storedVersion(data: string): number {
  return data.charCodeAt(0) === 0x76 ? splitVersion(data).version : 1;
}

/** The versioning of one class: its version, migrations and schema. */
export class Versioning {
  readonly #prefix: string;

  constructor(
    readonly className: string,
    readonly version: number,
    readonly migrations: Migrations | undefined,
    readonly schema: StandardSchemaV1 | undefined,
    readonly repair: RepairFunction | undefined,
    /** `validate: "always"`: the state about to be stored at a commit is checked with {@link schema} too. */
    readonly checksCommits = false,
  ) {
    this.#prefix = version === 1 ? "" : `v${version}\n`;
  }

  /** Whether restoring a record may need more than devalue: a migration, a schema (both asynchronous). */
  get upgrades(): boolean {
    return this.version > 1 || this.schema !== undefined;
  }

  /** The stored data of devalue `text`, marked with this code's version (and the record's creation time, when kept). */
  encode(text: string, createdAt?: number): string {
    if (createdAt !== undefined) return `v${this.version} c${createdAt}\n${text}`;
    return this.#prefix === "" ? text : this.#prefix + text;
  }

  /**
   * Brings stored data to this code's version: parse, migrate k+1 … version,
   * validate. A record newer than the code is left alone; one that cannot be
   * migrated or validated is unusable, and the reason names the key, the
   * record's version and the first issue's path.
   */
  async restore(key: string, data: string, parse: (text: string) => Record<string, unknown>): Promise<Restored> {
    const { version, text } = splitVersion(data);
    if (version > this.version) return { kind: "newer", version };
    const where = `record of "${key}", version ${version}`;
    let fields: Record<string, unknown>;
    try {
      fields = parse(text);
    } catch (error) {
      return { kind: "unusable", reason: `unreadable data: ${messageOf(error)}` };
    }
    for (let next = version + 1; next <= this.version; next++) {
      const migration = this.migrations?.[next];
      if (migration === undefined) continue; // a version that only added fields: the class's defaults fill them
      try {
        const migrated: unknown = await migration(fields);
        if (typeof migrated !== "object" || migrated === null) throw new TypeError(`it returned ${migrated === null ? "null" : typeof migrated}, not the fields of version ${next}`);
        fields = migrated as Record<string, unknown>;
      } catch (error) {
        return { kind: "unusable", reason: `the migration to version ${next} of the ${where} threw: ${messageOf(error)}` };
      }
    }
    if (this.schema !== undefined) {
      let result: StandardSchemaResult<unknown>;
      try {
        result = await this.schema["~standard"].validate(fields);
      } catch (error) {
        return { kind: "unusable", reason: `the schema of ${this.className} threw on the ${where}: ${messageOf(error)}` };
      }
      if (result.issues !== undefined) {
        const repaired = this.repair === undefined ? undefined : await this.repair(fields, result.issues);
        if (repaired === undefined) {
          const issue = result.issues[0];
          return { kind: "unusable", reason: `the ${where} failed ${this.className}'s schema at ${formatPath(issue?.path)}: ${issue?.message ?? "invalid"}` };
        }
        fields = repaired as Record<string, unknown>;
      } else {
        if (typeof result.value !== "object" || result.value === null) {
          return { kind: "unusable", reason: `${this.className}'s schema gave ${typeof result.value} for the ${where}, not an object of fields` };
        }
        // The schema's output (coerced, defaulted, stripped) is what the instance gets.
        fields = result.value as Record<string, unknown>;
      }
    }
    return { kind: "current", fields, migrated: version !== this.version };
  }
}

/**
 * Checks the state a commit is about to store against the class's schema
 * (`validate: "always"`): `undefined` when a synchronous schema accepts it, a
 * promise for an asynchronous one; a refusal throws (or rejects) with the
 * key and the first issue's path. Only a check: what is stored is the
 * instance as the handler left it, never the schema's output, because that
 * instance stays this process's copy of the record for the next request.
 */
export function checkAtCommit(versioning: Versioning, key: string, state: object): Promise<void> | undefined {
  const schema = versioning.schema!;
  let result: StandardSchemaResult<unknown> | Promise<StandardSchemaResult<unknown>>;
  try {
    result = schema["~standard"].validate(state);
  } catch (error) {
    throw schemaThrew(versioning, key, error);
  }
  if (typeof (result as { then?: unknown }).then !== "function") return refuseIfInvalid(versioning, key, result as StandardSchemaResult<unknown>);
  return Promise.resolve(result).then(
    (settled) => refuseIfInvalid(versioning, key, settled),
    (error: unknown) => {
      throw schemaThrew(versioning, key, error);
    },
  );
}

function refuseIfInvalid(versioning: Versioning, key: string, result: StandardSchemaResult<unknown>): undefined {
  if (result.issues === undefined) return undefined;
  const issue = result.issues[0];
  throw new Error(
    `persist-session: the state of "${key}" failed ${versioning.className}'s schema at commit, at ${formatPath(issue?.path)}: ${issue?.message ?? "invalid"}. ` +
      'Nothing of the request was stored and the stored record is unchanged. Fix the change the handler made, or the schema (validate: "always" checks every change).',
  );
}

function schemaThrew(versioning: Versioning, key: string, error: unknown): Error {
  return new Error(`persist-session: the schema of ${versioning.className} threw while checking the state of "${key}" at commit: ${messageOf(error)}. Nothing of the request was stored.`, {
    cause: error,
  });
}

/** `items[0].sku`, like devalue's paths; the whole record when the issue has no path. */
function formatPath(path: StandardSchemaIssue["path"]): string {
  if (path === undefined || path.length === 0) return "the top level";
  let text = "";
  for (const segment of path) {
    const key = typeof segment === "object" ? segment.key : segment;
    text += typeof key === "number" ? `[${key}]` : text === "" ? String(key) : `.${String(key)}`;
  }
  return text;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
