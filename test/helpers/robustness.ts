import type http from "node:http";
import type { Logger } from "../../src/index.js";

/** Resolves after `ms` milliseconds. */
export const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** A logger that keeps what it was told, for asserting on warnings and errors. */
export interface CapturingLogger extends Logger {
  readonly warnings: string[];
  readonly errors: string[];
  clear(): void;
}

export function capturingLogger(): CapturingLogger {
  const warnings: string[] = [];
  const errors: string[] = [];
  return {
    warnings,
    errors,
    warn: (message) => void warnings.push(message),
    error: (message) => void errors.push(message),
    clear: () => {
      warnings.length = 0;
      errors.length = 0;
    },
  };
}

/** Polls `check` until it returns a value other than `undefined`/`false`, or throws after `timeoutMs`. */
export async function eventually<T>(check: () => T | Promise<T>, what: string, timeoutMs = 5_000): Promise<Exclude<T, false | undefined>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value as Exclude<T, false | undefined>;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await delay(10);
  }
}

/** A small seeded PRNG (mulberry32): the same seed gives the same sequence. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The seed of a randomized test: `SEED=<n>` reproduces a run. */
export function testSeed(): number {
  const given = process.env.SEED;
  if (given !== undefined && given !== "") return Number(given) >>> 0;
  return (Date.now() ^ (process.pid << 8)) >>> 0;
}

/**
 * Strict structural equality for what devalue stores: primitives by `Object.is`
 * (so -0 ≠ 0 and NaN = NaN), same prototype, same own enumerable keys (so a hole
 * ≠ `undefined`), Map and Set in insertion order, Date by time, typed arrays and
 * ArrayBuffers byte for byte, boxed primitives by value, and the same sharing
 * of repeated and cyclic references. Returns a path to the first difference, or
 * `undefined` when equal.
 */
export function findDifference(a: unknown, b: unknown): string | undefined {
  const pairs = new Map<object, object>();
  const reverse = new Map<object, object>();
  const walk = (x: unknown, y: unknown, path: string): string | undefined => {
    if (typeof x !== "object" || x === null || typeof y !== "object" || y === null) {
      return Object.is(x, y) ? undefined : `${path}: ${describe(x)} ≠ ${describe(y)}`;
    }
    const seen = pairs.get(x);
    if (seen !== undefined) return seen === y ? undefined : `${path}: shared reference not preserved`;
    if (reverse.has(y)) return `${path}: two objects became one`;
    pairs.set(x, y);
    reverse.set(y, x);
    if (Object.getPrototypeOf(x) !== Object.getPrototypeOf(y)) return `${path}: prototype differs`;
    const tag = Object.prototype.toString.call(x);
    if (tag !== Object.prototype.toString.call(y)) return `${path}: ${tag} ≠ ${Object.prototype.toString.call(y)}`;
    if (x instanceof Date) return Object.is(x.getTime(), (y as Date).getTime()) ? undefined : `${path}: date differs`;
    if (x instanceof ArrayBuffer) return Buffer.from(x).equals(Buffer.from(y as ArrayBuffer)) ? undefined : `${path}: bytes differ`;
    if (ArrayBuffer.isView(x)) {
      const other = y as ArrayBufferView;
      const bx = Buffer.from(x.buffer, x.byteOffset, x.byteLength);
      const by = Buffer.from(other.buffer, other.byteOffset, other.byteLength);
      return bx.equals(by) ? undefined : `${path}: bytes differ`;
    }
    if (x instanceof Number || x instanceof String || x instanceof Boolean || x instanceof BigInt || x instanceof Symbol) {
      return Object.is(x.valueOf(), (y as { valueOf(): unknown }).valueOf()) ? undefined : `${path}: boxed value differs`;
    }
    if (x instanceof Map) {
      const ex = [...x.entries()];
      const ey = [...(y as Map<unknown, unknown>).entries()];
      if (ex.length !== ey.length) return `${path}: Map size ${ex.length} ≠ ${ey.length}`;
      for (let i = 0; i < ex.length; i++) {
        const diff = walk(ex[i]![0], ey[i]![0], `${path}.key(${i})`) ?? walk(ex[i]![1], ey[i]![1], `${path}.get(${i})`);
        if (diff !== undefined) return diff;
      }
      return undefined;
    }
    if (x instanceof Set) {
      const vx = [...x];
      const vy = [...(y as Set<unknown>)];
      if (vx.length !== vy.length) return `${path}: Set size ${vx.length} ≠ ${vy.length}`;
      for (let i = 0; i < vx.length; i++) {
        const diff = walk(vx[i], vy[i], `${path}.item(${i})`);
        if (diff !== undefined) return diff;
      }
      return undefined;
    }
    if (Array.isArray(x) && x.length !== (y as unknown[]).length) return `${path}: length ${x.length} ≠ ${(y as unknown[]).length}`;
    const kx = Object.keys(x);
    const ky = Object.keys(y);
    if (kx.join("\0") !== ky.join("\0")) return `${path}: keys ${JSON.stringify(kx)} ≠ ${JSON.stringify(ky)}`;
    for (const key of kx) {
      const diff = walk((x as Record<string, unknown>)[key], (y as Record<string, unknown>)[key], `${path}.${key}`);
      if (diff !== undefined) return diff;
    }
    return undefined;
  };
  return walk(a, b, "value");
}

function describe(value: unknown): string {
  if (typeof value === "bigint") return `${value}n`;
  if (typeof value === "symbol") return value.toString();
  if (Object.is(value, -0)) return "-0";
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}
