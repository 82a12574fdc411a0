/**
 * Hostile input, by property: no Cookie header a client can send restores
 * anyone's state unless it carries that state's exact signed value, makes the
 * adapter fail, or reaches a path outside the store directory
 * (GHSA-9583-h5hc-x8cw). And no state value is silently changed on its way
 * through the store: it comes back exactly, or its assignment is refused with
 * a `persist-session:` error and nothing is written.
 */
import { createHash } from "node:crypto";
import http from "node:http";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stringify } from "devalue";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CookieSigner } from "../src/cookie-signing.js";
import { FileStore, persistSession, type Sessions } from "../src/index.js";
import { unwrap } from "../src/tracking.js";
import * as standard from "./fixtures/standard.js";
import { Browser } from "./helpers/http.js";
import { capturingLogger, findDifference, type CapturingLogger } from "./helpers/robustness.js";
import { SECRET } from "./suites/behaviour.js";

const APP = "std-app";
const OTHER = "std-other";
const BROWSERS = 3;
/** What a bait file holds: if it ever shows up in a response, a path outside the records was read. */
const BAIT_OWNER = "PWNED";

/** Every file under `root`, with a hash of its bytes: a fingerprint of the tree. */
async function fingerprint(root: string): Promise<Record<string, string>> {
  const result: Record<string, string> = {};
  const walk = async (dir: string, prefix: string) => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      const name = `${prefix}${entry.name}`;
      if (entry.isDirectory()) {
        result[`${name}/`] = "dir";
        await walk(path, `${name}/`);
      } else {
        const info = await stat(path);
        result[name] = `${info.size}:${info.mtimeMs}:${createHash("sha256").update(await readFile(path)).digest("hex")}`;
      }
    }
  };
  await walk(root, "");
  return result;
}

/** Bytes a Node server accepts in a header value: HTAB, SP…~, and obs-text. */
const httpSafe = (header: string) => /^[\t\x20-\x7e\x80-\xff]*$/.test(header);

interface Reply {
  readonly status: number;
  readonly body: { owner: string | undefined; count: number; label: string } | undefined;
  readonly setCookie: boolean;
}

/** A GET over a raw socket, so any header byte reaches the server as sent (fetch refuses some). */
function rawGet(port: number, path: string, cookie: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1");
    const chunks: Buffer[] = [];
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.on("error", reject);
    socket.on("end", () => {
      const text = Buffer.concat(chunks).toString("latin1");
      const split = text.indexOf("\r\n\r\n");
      const head = text.slice(0, split);
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0);
      const body = text.slice(split + 4);
      resolve({ status, body: status === 200 ? (JSON.parse(body) as Reply["body"]) : undefined, setCookie: /\r\nset-cookie:/i.test(head) });
    });
    socket.end(Buffer.concat([Buffer.from(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nCookie: `, "latin1"), Buffer.from(cookie, "latin1"), Buffer.from("\r\n\r\n")]));
  });
}

/** Calls the node middleware directly, with a header no HTTP parser would let through. */
async function callNodeAdapter(sessions: Sessions, cookie: string): Promise<Reply> {
  const req = new http.IncomingMessage(new net.Socket());
  req.method = "GET";
  req.url = "/state";
  req.headers = { cookie };
  const res = new http.ServerResponse(req);
  let body: string | undefined;
  const originalEnd = res.end.bind(res);
  res.end = ((chunk?: unknown) => {
    if (typeof chunk === "string") body = chunk;
    return originalEnd();
  }) as typeof res.end;
  sessions(req, res, () => handleState(req, res));
  const deadline = Date.now() + 5_000;
  while (!res.writableEnded) {
    if (Date.now() > deadline) throw new Error("the node adapter never answered");
    await new Promise((resolve) => setImmediate(resolve));
  }
  return { status: res.statusCode, body: res.statusCode === 200 && body !== undefined ? JSON.parse(body) : undefined, setCookie: res.hasHeader("set-cookie") };
}

function stateBody() {
  const state = new standard.AppState();
  const other = new standard.OtherState();
  return { owner: state.todos[0], count: state.count, label: other.label };
}

function handleState(req: http.IncomingMessage, res: http.ServerResponse) {
  const url = new URL(req.url ?? "/", "http://localhost");
  if (url.pathname === "/setup") {
    const state = new standard.AppState();
    state.todos.push(url.searchParams.get("owner") ?? "");
    state.count = Number(url.searchParams.get("count"));
    new standard.OtherState().label = `other-${url.searchParams.get("owner")}`;
  }
  const body = JSON.stringify(stateBody());
  res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
  res.end(body);
}

describe("hostile Cookie headers", () => {
  let parent: string;
  let storeDir: string;
  let sessions: Sessions;
  let fetchHandler: (request: Request) => Promise<Response>;
  let server: http.Server;
  let port: number;
  let logger: CapturingLogger;
  let before: Record<string, string>;
  /** The exact signed values: [key][browser]. */
  const valid: Record<string, string[]> = { [APP]: [], [OTHER]: [] };
  const ids: string[] = [];
  /** Ids that pass no check but are signed with the real secret, and the bait files they would open. */
  const signedBadIds: string[] = [];
  const signer = new CookieSigner([SECRET]);

  beforeAll(async () => {
    parent = await mkdtemp(join(tmpdir(), "persist-session-hostile-"));
    storeDir = join(parent, "store");
    await mkdir(join(parent, "sentinel"), { recursive: true });
    await writeFile(join(parent, "sentinel", "untouchable.txt"), "the store must never reach here\n");
    logger = capturingLogger();
    sessions = persistSession({ secret: SECRET, store: new FileStore({ dir: storeDir }), logger, sweepInterval: 0 });
    fetchHandler = sessions.fetch(async () => Response.json(stateBody()));
    server = http.createServer({ maxHeaderSize: 8 * 1024 * 1024 }, (req, res) => sessions(req, res, () => handleState(req, res)));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    port = (server.address() as net.AddressInfo).port;

    for (let i = 0; i < BROWSERS; i++) {
      const browser = new Browser(`http://127.0.0.1:${port}`);
      expect(await browser.json(`/setup?owner=owner-${i}&count=${i + 1}`, { method: "POST" })).toEqual({ owner: `owner-${i}`, count: i + 1, label: `other-owner-${i}` });
      valid[APP]!.push(browser.cookies.get(APP)!);
      valid[OTHER]!.push(browser.cookies.get(OTHER)!);
      ids.push(browser.cookies.get(APP)!.slice(0, 36));
    }

    // Ids a forger would try, each signed properly: only the UUIDv4 gate stands in the way.
    const id = ids[0]!;
    const traversals = [
      "../sentinel/untouchable.txt".padEnd(36, "\0"),
      "../sentinel/bait-0123456789abcdef012",
      "../../../../../../../../../etc/passw",
      "/etc/passwd/../../../../../../../../",
      "..\\sentinel\\bait-0123456789abcdef012",
      `${id.slice(0, 33)}/..`,
    ];
    const lookalikes = [
      `${id.slice(0, 14)}1${id.slice(15)}`, // version 1
      `${id.slice(0, 14)}3${id.slice(15)}`, // version 3
      `${id.slice(0, 14)}5${id.slice(15)}`, // version 5
      `${id.slice(0, 19)}c${id.slice(20)}`, // wrong variant
      id.toUpperCase(),
      "00000000-0000-0000-0000-000000000000",
      `${id.slice(0, 35)}\n`,
      ` ${id.slice(1)}`,
    ];
    signedBadIds.push(...traversals, ...lookalikes);
    // Bait at every path those ids could name, holding a valid record that must never be served.
    const bait = `${JSON.stringify({ v: 1, key: APP, version: 1, updatedAt: Date.now(), expires: Date.now() + 86_400_000 })}\n${stringify({
      count: 666,
      todos: [BAIT_OWNER],
      prefs: {},
      tags: new Map(),
      seen: new Set(),
      when: new Date(0),
    })}`;
    await writeFile(join(parent, "sentinel", "bait-0123456789abcdef012"), bait);
    for (const lookalike of lookalikes) if (!/[\n/\\]/.test(lookalike)) await writeFile(join(storeDir, lookalike.trim()), bait, { mode: 0o600 });
    before = await fingerprint(parent);
  });

  afterAll(async () => {
    await new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
    await sessions.close();
    await rm(parent, { recursive: true, force: true });
  });

  /**
   * Which browser's state the header may open for `key`: only its exact value,
   * as `;`-separated pairs with spaces and tabs trimmed, and only when the name
   * appears once (a second cookie of the name could be planted: #17).
   */
  function expectedOwner(header: string, key: string): number | undefined {
    const values: string[] = [];
    for (const pair of header.split(";")) {
      const eq = pair.indexOf("=");
      if (eq > 0 && pair.slice(0, eq).replace(/^[ \t]+|[ \t]+$/g, "") === key) values.push(pair.slice(eq + 1).replace(/^[ \t]+|[ \t]+$/g, ""));
    }
    if (values.length !== 1) return undefined;
    const index = valid[key]!.indexOf(values[0]!);
    return index === -1 ? undefined : index;
  }

  function check(reply: Reply, seen: string): void {
    expect(reply.status, `status for ${JSON.stringify(seen.slice(0, 300))}`).toBe(200);
    const app = expectedOwner(seen, APP);
    const other = expectedOwner(seen, OTHER);
    expect(reply.body).toEqual({
      owner: app === undefined ? undefined : `owner-${app}`,
      count: app === undefined ? 0 : app + 1,
      label: other === undefined ? "fresh" : `other-owner-${other}`,
    });
    expect(reply.setCookie).toBe(false);
  }

  /** Sends `header` every way that can carry it, and checks each answer. */
  async function send(header: string): Promise<void> {
    if (httpSafe(header)) {
      // The server sees the bytes as latin1, without surrounding whitespace.
      check(await rawGet(port, "/state", header), header.replace(/^[\t ]+|[\t ]+$/g, ""));
    }
    check(await callNodeAdapter(sessions, header), header);
    let request: Request | undefined;
    try {
      request = new Request("http://127.0.0.1/state", { headers: { cookie: header } });
    } catch {
      // Not a ByteString header value: no Fetch runtime would hand it to the wrapper.
    }
    if (request !== undefined) {
      const response = await fetchHandler(request);
      const body = response.status === 200 ? ((await response.json()) as Reply["body"]) : undefined;
      check({ status: response.status, body, setCookie: response.headers.getSetCookie().length > 0 }, request.headers.get("cookie") ?? "");
    }
  }

  async function assertUntouched(): Promise<void> {
    expect(await fingerprint(parent)).toEqual(before);
    // A name sent twice is refused with a warning (cookie tossing, #17); nothing else is worth one.
    expect(logger.warnings.filter((warning) => !/^persist-session: a request carried the cookie [\w-]+(, [\w-]+)? more than once/.test(warning))).toEqual([]);
    expect(logger.errors).toEqual([]);
  }

  /** Mutations of a valid value that a forger or a broken proxy would produce. */
  function nearMiss(): fc.Arbitrary<string> {
    const value = fc.constantFrom(...valid[APP]!, ...valid[OTHER]!);
    const key = fc.constantFrom(APP, OTHER);
    const base64url = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    return fc.oneof(
      // One bit flipped anywhere.
      fc.tuple(value, fc.nat(79), fc.nat(6)).map(([v, i, bit]) => v.slice(0, i) + String.fromCharCode(v.charCodeAt(i) ^ (1 << bit)) + v.slice(i + 1)),
      // Truncated, or padded before or after.
      fc.tuple(value, fc.nat(79)).map(([v, n]) => v.slice(0, n)),
      fc.tuple(value, fc.string({ minLength: 1, maxLength: 8 })).map(([v, pad]) => v + pad),
      fc.tuple(value, fc.string({ minLength: 1, maxLength: 8 })).map(([v, pad]) => pad + v),
      fc.tuple(value, fc.string({ minLength: 1, maxLength: 4 }), fc.nat(80)).map(([v, pad, i]) => v.slice(0, i) + pad + v.slice(i)),
      // Case changed: one character, or all of it.
      fc.tuple(value, fc.nat(79)).map(([v, i]) => {
        const c = v[i]!;
        return v.slice(0, i) + (c === c.toUpperCase() ? c.toLowerCase() : c.toUpperCase()) + v.slice(i + 1);
      }),
      value.map((v) => v.toUpperCase()),
      // Quoted, percent-encoded (which the parser decodes back: the oracle knows).
      value.map((v) => `"${v}"`),
      fc.tuple(value, fc.nat(79)).map(([v, i]) => `${v.slice(0, i)}%${v.charCodeAt(i).toString(16).padStart(2, "0")}${v.slice(i + 1)}`),
      // This id with another browser's or another key's signature.
      fc.tuple(value, value).map(([a, b]) => a.slice(0, 37) + b.slice(37)),
      // The other spellings of the signature's last base64url character (the same bytes, not our encoding).
      fc.tuple(value, fc.integer({ min: 1, max: 3 })).map(([v, low]) => v.slice(0, 79) + base64url[base64url.indexOf(v[79]!) ^ low]!),
      // Properly signed, for either key, over an id that is not a lowercase UUIDv4.
      fc.tuple(key, fc.constantFrom(...signedBadIds)).map(([k, id]) => signer.sign(k, id)),
      fc.tuple(key, fc.constantFrom(...signedBadIds)).map(([k, id]) => encodeURIComponent(signer.sign(k, id))),
      // A value minted under our secret for a key no class has.
      fc.constantFrom(...ids).map((id) => signer.sign("admin-prefs", id)),
    );
  }

  function cookieName(): fc.Arbitrary<string> {
    return fc.oneof({ weight: 4, arbitrary: fc.constantFrom(APP, OTHER) }, { weight: 1, arbitrary: fc.string({ maxLength: 10 }) });
  }

  /** Pairs of a header: mostly near misses under our names, sometimes the exact value, sometimes noise. */
  function pairs(): fc.Arbitrary<Array<[string, string]>> {
    const exact = fc.tuple(fc.constantFrom(APP, OTHER), fc.nat(BROWSERS - 1)).map(([k, i]): [string, string] => [k, valid[k]![i]!]);
    const pair = fc.oneof(
      { weight: 6, arbitrary: fc.tuple(cookieName(), nearMiss()) },
      { weight: 1, arbitrary: exact },
      // The exact value under the other key's name.
      { weight: 1, arbitrary: fc.tuple(fc.nat(BROWSERS - 1), fc.boolean()).map(([i, flip]): [string, string] => (flip ? [APP, valid[OTHER]![i]!] : [OTHER, valid[APP]![i]!])) },
      { weight: 2, arbitrary: fc.tuple(fc.string({ maxLength: 12 }), fc.string({ maxLength: 40 })) },
    );
    return fc.array(pair, { minLength: 1, maxLength: 6 });
  }

  const joinPairs = (list: Array<[string, string]>, separator: string) => list.map(([name, value]) => `${name}=${value}`).join(separator);

  it("restores no state from any near miss of a valid signed value, and never fails", async () => {
    await fc.assert(
      fc.asyncProperty(pairs(), fc.constantFrom("; ", ";", " ;  ", ", ", ";;"), async (list, separator) => {
        await send(joinPairs(list, separator));
      }),
      { numRuns: 300 },
    );
    await assertUntouched();
  });

  it("handles huge headers, thousands of pairs and duplicated names", async () => {
    await fc.assert(
      fc.asyncProperty(
        pairs(),
        fc.integer({ min: 0, max: 4000 }),
        fc.integer({ min: 0, max: 512 * 1024 }),
        fc.nat(),
        async (list, fillers, hugeBytes, position) => {
          const filler: Array<[string, string]> = Array.from({ length: fillers }, (_, i) => [i % 7 === 0 ? APP : `c${i}`, `v${i}`.repeat(1 + (i % 5))]);
          if (hugeBytes > 0) filler.push(["huge", "x".repeat(hugeBytes)]);
          const at = fillers === 0 ? 0 : position % (filler.length + 1);
          await send(joinPairs([...filler.slice(0, at), ...list, ...filler.slice(at)], "; "));
        },
      ),
      { numRuns: 25 },
    );
    // The exact value among many duplicates of its name: a duplicated name opens nothing.
    await send(`${APP}=${valid[APP]![1]}; ${Array.from({ length: 3000 }, (_, i) => `${APP}=${valid[APP]![i % BROWSERS]}`).join("; ")}`);
    await send(`${Array.from({ length: 3000 }, () => `${APP}=junk`).join("; ")}; ${APP}=${valid[APP]![2]}`);
    await assertUntouched();
  }, 60_000);

  it("survives arbitrary bytes and strings in the Cookie header", async () => {
    const header = fc.oneof(
      fc.string({ unit: "binary", maxLength: 200 }),
      fc.string({ unit: "grapheme", maxLength: 200 }),
      fc.uint8Array({ maxLength: 300 }).map((bytes) => Buffer.from(bytes).toString("latin1")),
      fc.tuple(pairs(), fc.string({ unit: "binary", maxLength: 20 })).map(([list, separator]) => joinPairs(list, separator)),
      nearMiss().map((value) => `${APP}=${value}`),
    );
    await fc.assert(
      fc.asyncProperty(header, async (value) => {
        await send(value);
      }),
      { numRuns: 300 },
    );
    await assertUntouched();
  });

  it("serves the exact values, as the control for the properties above", async () => {
    for (let i = 0; i < BROWSERS; i++) {
      const reply = await rawGet(port, "/state", `${APP}=${valid[APP]![i]}; ${OTHER}=${valid[OTHER]![(i + 1) % BROWSERS]}`);
      expect(reply.body).toEqual({ owner: `owner-${i}`, count: i + 1, label: `other-owner-${(i + 1) % BROWSERS}` });
    }
    await assertUntouched();
  });
});

/** A class no type was registered for. */
class Point {
  constructor(
    readonly x = 1,
    readonly y = 2,
  ) {}
}

/** Values devalue has no encoding for, to hide anywhere in a state. */
const UNPERSISTABLE: ReadonlyArray<readonly [string, () => unknown]> = [
  ["a function", () => () => 1],
  ["a symbol", () => Symbol("s")],
  ["a class instance", () => new Point()],
  ["an Error", () => new Error("x")],
  ["a WeakMap", () => new WeakMap()],
  ["a Promise", () => Promise.resolve(1)],
  ["an object with a prototype", () => Object.create({ inherited: 1 }) as unknown],
  ["a symbol-keyed object", () => ({ [Symbol("k")]: 1 })],
  ["an object with a __proto__ key", () => JSON.parse('{"__proto__": {"polluted": 1}}') as unknown],
];

describe("arbitrary state values through save and restore", () => {
  let dir: string;
  let logger: CapturingLogger;
  let writer: Sessions;
  let write: (request: Request) => Promise<Response>;
  /** The value the next /assign request assigns, and what it reported. */
  let pending: { value: unknown; error: Error | undefined } = { value: undefined, error: undefined };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "persist-session-values-"));
    logger = capturingLogger();
    openWriter();
  });
  afterAll(async () => {
    await writer.close();
    await rm(dir, { recursive: true, force: true });
  });

  function openWriter(): void {
    writer = persistSession({ secret: SECRET, store: new FileStore({ dir }), logger, sweepInterval: 0 });
    write = writer.fetch(async (request: Request) => {
      const state = new standard.AppState();
      if (new URL(request.url).pathname === "/create") {
        state.count = 1;
        return new Response("created");
      }
      try {
        (state.prefs as Record<string, unknown>).value = pending.value;
      } catch (error) {
        pending.error = error as Error;
      }
      return new Response("assigned");
    });
  }

  /**
   * Reads `prefs.value` back through a new persistSession on the same directory: nothing cached.
   * The writer is closed meanwhile, as for a restart: a second one on the directory would share its engine (#17).
   */
  async function readBack(cookie: string): Promise<{ has: boolean; value: unknown }> {
    await writer.close();
    const reader = persistSession({ secret: SECRET, store: new FileStore({ dir }), logger, sweepInterval: 0 });
    let result = { has: false, value: undefined as unknown };
    try {
      const response = await reader.fetch(async () => {
        const prefs = unwrap(new standard.AppState().prefs);
        result = { has: Object.prototype.hasOwnProperty.call(prefs, "value"), value: prefs.value };
        return new Response("read");
      })(new Request("http://localhost/read", { headers: { cookie } }));
      expect(response.status).toBe(200);
    } finally {
      await reader.close();
      openWriter();
    }
    return result;
  }

  async function roundTrip(value: unknown): Promise<void> {
    const created = await write(new Request("http://localhost/create", { method: "POST" }));
    const cookie = created.headers.getSetCookie()[0]!.split(";")[0]!;
    const path = join(dir, cookie.slice(APP.length + 1, APP.length + 37));
    const stored = await readFile(path);

    pending = { value, error: undefined };
    const response = await write(new Request("http://localhost/assign", { method: "POST", headers: { cookie } }));
    expect(response.status).toBe(200);
    const { error } = pending;
    if (error === undefined) {
      const back = await readBack(cookie);
      expect(back.has).toBe(true);
      const difference = findDifference(value, back.value);
      expect(difference, "the value came back different").toBeUndefined();
    } else {
      expect(error.message).toMatch(/^persist-session: cannot persist AppState\.prefs\.value\S* \(.+\)\. /);
      expect(error).toBeInstanceOf(TypeError);
      // Refused at the assignment: the record is byte for byte what it was, in the store and after a restart.
      expect(await readFile(path)).toEqual(stored);
      expect((await readBack(cookie)).has).toBe(false);
    }
    expect(logger.warnings).toEqual([]);
    expect(logger.errors).toEqual([]);
  }

  const anything = fc.anything({
    maxDepth: 3,
    maxKeys: 5,
    withBigInt: true,
    withBoxedValues: true,
    withDate: true,
    withMap: true,
    withNullPrototype: true,
    withSet: true,
    withSparseArray: true,
    withTypedArray: true,
    stringUnit: "binary",
  });
  const special = fc.constantFrom<unknown>(
    -0,
    Number.NaN,
    Number.POSITIVE_INFINITY,
    -(2n ** 70n),
    new Date(Number.NaN),
    [1, , 3], // eslint-disable-line no-sparse-arrays
    new Float64Array([Number.NaN, -0]),
    new BigInt64Array([-(2n ** 63n)]),
    new Uint8Array(new ArrayBuffer(16), 4, 8),
    new ArrayBuffer(3),
    /ab+c/gi,
    new URL("https://example.com/a?b#c"),
    "\ud800 lone surrogate \udfff",
  );
  /** A shared and a cyclic reference, which JSON would lose. */
  const shared = fc.tuple(anything, anything).map(([a, b]) => {
    const node: Record<string, unknown> = { a, b };
    node.self = node;
    return { left: node, right: node, list: [node, b] };
  });
  const bad = fc.constantFrom(...UNPERSISTABLE).map(([, make]) => make());
  /** An unpersistable value hidden somewhere inside persistable ones. */
  const hidden = fc.tuple(anything, bad, fc.nat(4)).map(([value, badValue, where]) => {
    switch (where) {
      case 0:
        return { value, nested: { deeper: [value, badValue] } };
      case 1:
        return new Map<unknown, unknown>([["ok", value], ["bad", badValue]]);
      case 2:
        return new Set([value, badValue]);
      case 3:
        return [value, [badValue]];
      default:
        return badValue;
    }
  });

  it("restores every value exactly in a new process, or refuses it at the assignment and writes nothing", async () => {
    await fc.assert(
      fc.asyncProperty(fc.oneof({ weight: 4, arbitrary: anything }, special, shared, { weight: 2, arbitrary: hidden }), roundTrip),
      { numRuns: 250 },
    );
  }, 60_000);

  it.each(UNPERSISTABLE)("refuses %s with its path", async (_name, make) => {
    await roundTrip({ list: [1, make()] });
    expect(pending.error?.message).toMatch(/^persist-session: cannot persist AppState\.prefs\.value\.list\[1\]/);
  });
});
