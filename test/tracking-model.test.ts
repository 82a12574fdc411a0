/**
 * Every mutation is tracked or refused (#17, point 5), as a model-based test:
 * random sequences of requests, each applying random operations through the
 * API of every supported type (array methods, Map, Set, Date, typed arrays and
 * their views, DataView, property descriptors, Object.assign, spread,
 * structuredClone, delete) to a persisted instance over real HTTP requests.
 * The same operations run on a plain model object. After every request:
 *
 * - the stored record deserializes to exactly the model, and so does the
 *   instance in memory (cached between requests, so a change that landed in
 *   memory without being written shows at once);
 * - an operation that cannot be tracked threw, changed nothing, and the
 *   model skips it: never a silent change.
 *
 * Now and then the server restarts on the same directory, so the model must
 * also hold for what a restore brings back (shared buffers, shared objects).
 * `SEED=<n>` repeats a run.
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import type http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse as parseDevalue } from "devalue";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FileStore, persist, persistSession, type Sessions } from "../src/index.js";
import { parseRecordText } from "../src/stores/record-text.js";
import { unwrap } from "../src/tracking.js";
import { Browser, listen, type TestServer } from "./helpers/http.js";
import { capturingLogger, findDifference, testSeed } from "./helpers/robustness.js";
import { SECRET } from "./suites/behaviour.js";

type Item = number | string | { n: number } | number[];

/** The state's shape; the model is an instance of it, the persisted class a subclass. */
class Shape {
  list: unknown[] = [1, "two", { n: 3 }, [4]];
  obj: Record<string, unknown> = { a: 1, nested: { b: [2] } };
  map = new Map<string, unknown>([
    ["k", { n: 1 }],
    ["m", 2],
  ]);
  set = new Set<unknown>(["s", 1, { n: 5 }]);
  date = new Date(0);
  bytes = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]);
  /** A view sharing `bytes`' buffer: writes through either show in both, before and after a restore. */
  view = this.bytes.subarray(2, 6);
  floats = new Float64Array([0.5, -1, 2, 8]);
  dv = new DataView(new ArrayBuffer(8));
}

const Persisted = persist("tracking-model")(class ModelState extends Shape {});

interface Operation {
  readonly name: string;
  /** Applied to the persisted instance and to the model alike; `fresh` makes a new copy of the operation's value each call. */
  readonly run: (state: Shape) => void;
  /** Set for operations that cannot be tracked: they must throw, with a message matching this, and change nothing. */
  readonly refused?: RegExp;
}

const item: fc.Arbitrary<Item> = fc.oneof(
  fc.integer({ min: -5, max: 99 }),
  fc.constantFrom("x", "y", "zz"),
  fc.integer({ min: 0, max: 9 }).map((n) => ({ n })),
  fc.array(fc.integer({ min: 0, max: 9 }), { maxLength: 3 }),
);
/** A new copy per application, so the model and the state never share an object. */
const copy = (value: Item): Item => structuredClone(value);
const index = fc.integer({ min: 0, max: 7 });
const key = fc.constantFrom("a", "b", "c", "nested");
const byte = fc.integer({ min: 0, max: 255 });

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value) && !(value instanceof Map) && !(value instanceof Set);
}

const op = (name: string, run: (state: Shape) => void): Operation => ({ name, run });
const refused = (name: string, run: (state: Shape) => void, message = /^persist-session: /): Operation => ({ name, run, refused: message });

/** Operations through each type's API that the tracker must see. */
const tracked: fc.Arbitrary<Operation> = fc.oneof(
  // Arrays
  item.map((v) => op(`list.push(${JSON.stringify(v)})`, (s) => void s.list.push(copy(v)))),
  fc.constant(op("list.pop()", (s) => void s.list.pop())),
  fc.constant(op("list.shift()", (s) => void s.list.shift())),
  item.map((v) => op(`list.unshift(${JSON.stringify(v)})`, (s) => void s.list.unshift(copy(v)))),
  fc.tuple(index, fc.integer({ min: 0, max: 3 }), item).map(([i, n, v]) => op(`list.splice(${i}, ${n}, ${JSON.stringify(v)})`, (s) => void s.list.splice(i, n, copy(v)))),
  fc.constant(op("list.sort()", (s) => void s.list.sort())),
  fc.constant(op("list.reverse()", (s) => void s.list.reverse())),
  fc.tuple(item, index, index).map(([v, i, j]) => op(`list.fill(${JSON.stringify(v)}, ${i}, ${j})`, (s) => void s.list.fill(copy(v), i, j))),
  fc.tuple(index, index, index).map(([t, a, b]) => op(`list.copyWithin(${t}, ${a}, ${b})`, (s) => void s.list.copyWithin(t, a, b))),
  fc.tuple(index, item).map(([i, v]) => op(`list[${i}] = ${JSON.stringify(v)}`, (s) => void (s.list[i] = copy(v)))),
  fc.integer({ min: 0, max: 6 }).map((n) => op(`list.length = ${n}`, (s) => void (s.list.length = n))),
  index.map((i) => op(`delete list[${i}]`, (s) => void delete s.list[i])),
  fc.integer({ min: 0, max: 9 }).map((n) => op(`list.find(object).n = ${n}`, (s) => {
    const found = s.list.find(isObject);
    if (found !== undefined) found.n = n;
  })),
  fc.tuple(item, item).map(([a, b]) => op(`Object.assign(list, [${JSON.stringify(a)}, ${JSON.stringify(b)}])`, (s) => void Object.assign(s.list, [copy(a), copy(b)]))),
  fc.constant(op("list.forEach(array => array.push(0))", (s) => s.list.forEach((value) => Array.isArray(value) && value.push(0)))),
  fc.constant(op("obj.shared = list", (s) => void (s.obj.shared = s.list))),
  // Objects
  fc.tuple(key, item).map(([k, v]) => op(`obj.${k} = ${JSON.stringify(v)}`, (s) => void (s.obj[k] = copy(v)))),
  key.map((k) => op(`delete obj.${k}`, (s) => void delete s.obj[k])),
  fc.tuple(key, item).map(([k, v]) => op(`Object.assign(obj, { ${k} })`, (s) => void Object.assign(s.obj, { [k]: copy(v) }))),
  fc.tuple(key, item).map(([k, v]) => op(`obj = { ...obj, ${k} }`, (s) => void (s.obj = { ...s.obj, [k]: copy(v) }))),
  fc.integer({ min: 0, max: 9 }).map((n) => op(`obj.nested.b.push(${n})`, (s) => {
    const nested = s.obj.nested;
    if (isObject(nested) && Array.isArray(nested.b)) nested.b.push(n);
  })),
  fc.tuple(key, item).map(([k, v]) => op(`obj.${k} = structuredClone(${JSON.stringify(v)})`, (s) => void (s.obj[k] = structuredClone(v)))),
  fc.constant(op("Object.assign(state, { obj: { ...obj } })", (s) => void Object.assign(s, { obj: { ...s.obj } }))),
  // Property descriptors
  item.map((v) => op(`getOwnPropertyDescriptor(state, "list").value.push(${JSON.stringify(v)})`, (s) => void (Object.getOwnPropertyDescriptor(s, "list")!.value as unknown[]).push(copy(v)))),
  fc.integer({ min: 0, max: 9 }).map((n) => op(`getOwnPropertyDescriptors(obj).nested.value.b = [${n}]`, (s) => {
    const nested = Object.getOwnPropertyDescriptors(s.obj).nested?.value as unknown;
    if (isObject(nested)) nested.b = [n];
  })),
  fc.integer({ min: 0, max: 255 }).map((n) => op(`getOwnPropertyDescriptor(state, "bytes").value[1] = ${n}`, (s) => void ((Object.getOwnPropertyDescriptor(s, "bytes")!.value as Uint8Array)[1] = n))),
  fc.tuple(key, item).map(([k, v]) => op(`defineProperty(obj, ${k}, a plain data property)`, (s) => void Object.defineProperty(s.obj, k, { value: copy(v), writable: true, enumerable: true, configurable: true }))),
  // Map
  fc.tuple(fc.constantFrom("k", "m", "q"), item).map(([k, v]) => op(`map.set(${k}, ${JSON.stringify(v)})`, (s) => void s.map.set(k, copy(v)))),
  fc.constantFrom("k", "m", "q").map((k) => op(`map.delete(${k})`, (s) => void s.map.delete(k))),
  fc.constant(op("map.clear()", (s) => s.map.clear())),
  fc.integer({ min: 0, max: 9 }).map((n) => op(`map.get(k).n = ${n}`, (s) => {
    const value = s.map.get("k");
    if (isObject(value)) value.n = n;
  })),
  fc.integer({ min: 0, max: 9 }).map((n) => op(`map.forEach(v => v.n = ${n})`, (s) => s.map.forEach((value) => isObject(value) && (value.n = n)))),
  fc.integer({ min: 0, max: 9 }).map((n) => op(`for (const [, v] of map.entries()) v.n = ${n}`, (s) => {
    for (const [, value] of s.map.entries()) if (isObject(value)) value.n = n;
  })),
  // Set
  fc.constantFrom<unknown>("s", 1, 7, "t").map((v) => op(`set.add(${String(v)})`, (s) => void s.set.add(v))),
  fc.constantFrom<unknown>("s", 1, 7, "t").map((v) => op(`set.delete(${String(v)})`, (s) => void s.set.delete(v))),
  fc.integer({ min: 0, max: 9 }).map((n) => op(`set.add({ n: ${n} })`, (s) => void s.set.add({ n }))),
  fc.integer({ min: 0, max: 9 }).map((n) => op(`for (const v of set) v.n = ${n}`, (s) => {
    for (const value of s.set) if (isObject(value)) value.n = n;
  })),
  fc.constant(op("set.clear()", (s) => s.set.clear())),
  // Date
  fc.integer({ min: -1e12, max: 1e12 }).map((t) => op(`date.setTime(${t})`, (s) => void s.date.setTime(t))),
  fc.integer({ min: 1970, max: 2100 }).map((y) => op(`date.setUTCFullYear(${y})`, (s) => void s.date.setUTCFullYear(y))),
  fc.integer({ min: 0, max: 11 }).map((m) => op(`date.setUTCMonth(${m})`, (s) => void s.date.setUTCMonth(m))),
  // Typed arrays, their views, DataView
  fc.tuple(index, byte).map(([i, b]) => op(`bytes[${i}] = ${b}`, (s) => void (s.bytes[i] = b))),
  fc.tuple(byte, byte, fc.integer({ min: 0, max: 6 })).map(([a, b, at]) => op(`bytes.set([${a}, ${b}], ${at})`, (s) => s.bytes.set([a, b], at))),
  fc.tuple(byte, index, index).map(([b, i, j]) => op(`bytes.fill(${b}, ${i}, ${j})`, (s) => void s.bytes.fill(b, i, j))),
  fc.tuple(index, index, index).map(([t, a, b]) => op(`bytes.copyWithin(${t}, ${a}, ${b})`, (s) => void s.bytes.copyWithin(t, a, b))),
  fc.constant(op("bytes.reverse()", (s) => void s.bytes.reverse())),
  fc.constant(op("bytes.sort()", (s) => void s.bytes.sort())),
  fc.tuple(index, index, fc.integer({ min: 0, max: 3 }), byte).map(([a, b, i, v]) => op(`bytes.subarray(${a}, ${b})[${i}] = ${v}`, (s) => void (s.bytes.subarray(a, b)[i] = v))),
  fc.tuple(index, byte).map(([a, v]) => op(`bytes.subarray(${a}).fill(${v})`, (s) => void s.bytes.subarray(a).fill(v))),
  fc.tuple(fc.integer({ min: 0, max: 3 }), byte).map(([i, v]) => op(`view[${i}] = ${v}`, (s) => void (s.view[i] = v))),
  byte.map((v) => op(`bytes.forEach((_, i, array) => array[i] ^= ${v})`, (s) => s.bytes.forEach((_, i, array) => void (array[i]! ^= v)))),
  fc.tuple(fc.integer({ min: 0, max: 3 }), fc.double({ min: -1e6, max: 1e6, noNaN: true })).map(([i, f]) => op(`floats[${i}] = ${f}`, (s) => void (s.floats[i] = f))),
  fc.tuple(fc.integer({ min: 0, max: 7 }), byte).map(([i, b]) => op(`dv.setUint8(${i}, ${b})`, (s) => s.dv.setUint8(i, b))),
  fc.double({ min: -1e6, max: 1e6, noNaN: true }).map((f) => op(`dv.setFloat64(0, ${f})`, (s) => s.dv.setFloat64(0, f))),
);

/** Routes the tracker cannot follow: each must be refused with an error, never a silent change. */
const untrackable: fc.Arbitrary<Operation> = fc.constantFrom(
  refused("new Uint8Array(bytes.buffer)[0] = 9", (s) => void (new Uint8Array(s.bytes.buffer)[0] = 9)),
  refused("Buffer.from(bytes.buffer).fill(9)", (s) => void Buffer.from(s.bytes.buffer).fill(9)),
  refused("new Uint8Array(dv.buffer)[0] = 9", (s) => void (new Uint8Array(s.dv.buffer)[0] = 9)),
  refused("new DataView(bytes.buffer).setUint8(0, 9)", (s) => new DataView(s.bytes.buffer).setUint8(0, 9), /./),
  refused("Object.freeze(obj)", (s) => void Object.freeze(s.obj)),
  refused("Object.seal(list)", (s) => void Object.seal(s.list)),
  refused("defineProperty(obj, hidden, non-enumerable)", (s) => void Object.defineProperty(s.obj, "hidden", { value: 1 })),
  refused("defineProperty(obj, a, an accessor)", (s) => void Object.defineProperty(s.obj, "a", { get: () => 1, configurable: true, enumerable: true })),
  refused("obj.x = { get y() {…} }", (s) => void (s.obj.x = { get y() { return 1; } })),
  refused("list.named = 1", (s) => void ((s.list as unknown as Record<string, unknown>).named = 1)),
  refused("map.named = 1", (s) => void ((s.map as unknown as Record<string, unknown>).named = 1)),
  refused("date.named = 1", (s) => void ((s.date as unknown as Record<string, unknown>).named = 1)),
  refused("bytes.named = 1", (s) => void ((s.bytes as unknown as Record<string, unknown>).named = 1)),
  refused("Object.setPrototypeOf(obj, null)", (s) => void Object.setPrototypeOf(s.obj, null)),
  refused("Object.assign(state, JSON.parse('{\"__proto__\":…}'))", (s) => void Object.assign(s, JSON.parse('{"__proto__": {"list": []}}'))),
  refused("obj.copy = Object.freeze({ n: 1 })", (s) => void (s.obj.copy = Object.freeze({ n: 1 }))),
  refused("obj.copy = Buffer.from('x')", (s) => void (s.obj.copy = Buffer.from("x"))),
  // A Proxy cannot be cloned: V8 refuses with a DataCloneError before anything changes.
  refused("obj.copy = structuredClone(list)", (s) => void (s.obj.copy = structuredClone(s.list)), /could not be cloned/),
);

/** One request's operations: mostly tracked ones, sometimes an untrackable one among them. */
const request = fc.array(fc.oneof({ weight: 5, arbitrary: tracked }, { weight: 1, arbitrary: untrackable }), { minLength: 1, maxLength: 4 });

describe("every mutation of persisted state is tracked or refused (model-based)", () => {
  let dir: string;
  const logger = capturingLogger();
  let sessions: Sessions;
  let server: TestServer;
  /** What the handler runs next, and what it saw. */
  let pending: readonly Operation[] = [];
  let outcome: { errors: Array<Error | undefined>; raw: Shape | undefined } = { errors: [], raw: undefined };

  const handler: http.RequestListener = (req, res) =>
    sessions(req, res, () => {
      const state = new Persisted();
      outcome = { errors: [], raw: unwrap(state) };
      for (const operation of pending) {
        try {
          operation.run(state);
          outcome.errors.push(undefined);
        } catch (error) {
          outcome.errors.push(error as Error);
        }
      }
      res.end("done");
    });

  const start = async () => {
    sessions = persistSession({ secret: SECRET, store: new FileStore({ dir }), logger, sweepInterval: 0 });
    server = await listen(handler);
  };
  const stop = async () => {
    await server.close();
    await sessions.close();
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "persist-session-model-"));
    await start();
  });
  afterAll(async () => {
    await stop();
    await rm(dir, { recursive: true, force: true });
  });

  /** The fields of the stored record, read from its file (not through this process's cache). */
  async function stored(cookie: string): Promise<Record<string, unknown>> {
    const id = cookie.slice(cookie.indexOf("=") + 1, cookie.indexOf("=") + 37);
    const record = parseRecordText(await readFile(join(dir, id), "utf8"), "file");
    return parseDevalue(record.data) as Record<string, unknown>;
  }

  it("keeps the stored record and the instance in memory equal to the model after every request", async () => {
    const seed = testSeed();
    console.log(`tracking-model.test.ts: seed ${seed} (SEED=${seed} to repeat)`);
    let requests = 0;
    let refusals = 0;
    await fc.assert(
      // A restart between requests now and then: the next request restores from disk.
      fc.asyncProperty(fc.array(fc.record({ operations: request, restartBefore: fc.boolean() }), { minLength: 1, maxLength: 8 }), async (steps) => {
        const model = new Shape();
        let browser = new Browser(server.url);
        // The first request creates the record, so every later one has something stored to compare.
        const first: Operation = op("list.push(0)", (s) => void s.list.push(0));
        const history: string[] = [];
        for (const [n, { operations, restartBefore }] of [{ operations: [first], restartBefore: false }, ...steps].entries()) {
          if (restartBefore) {
            await stop();
            await start();
            const moved = new Browser(server.url);
            for (const [name, value] of browser.cookies) moved.cookies.set(name, value);
            browser = moved;
            history.push("(restart)");
          }
          pending = operations;
          const response = await browser.request("/");
          requests++;
          expect(response.status).toBe(200);
          for (const [i, operation] of operations.entries()) {
            const error = outcome.errors[i];
            history.push(`${operation.name}${error === undefined ? "" : ` → ${error.message.slice(0, 90)}`}`);
            const where = `request ${n}, ${history.join("; ")}`;
            if (operation.refused !== undefined) {
              expect(error, `${where}: must be refused`).toBeInstanceOf(Error);
              expect(error!.message, where).toMatch(operation.refused);
              refusals++;
            } else {
              expect(error, `${where}: must be tracked`).toBeUndefined();
              operation.run(model);
            }
          }
          const where = `after request ${n}: ${history.join("; ")}`;
          const expected = { ...model };
          expect(findDifference(expected, { ...outcome.raw! }), `in memory ${where}`).toBeUndefined();
          expect(findDifference(expected, await stored(browser.cookies.get("tracking-model")!)), `stored ${where}`).toBeUndefined();
        }
      }),
      { seed, numRuns: 40 },
    );
    expect(logger.errors).toEqual([]);
    expect(logger.warnings).toEqual([]);
    console.log(`  ${requests} requests, ${refusals} refused operations`);
  }, 60_000);
});
