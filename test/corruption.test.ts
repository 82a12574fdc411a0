/**
 * A record that cannot be read is set aside, never deleted (the seed package
 * deleted on any load error, so a read racing a write destroyed state), and
 * the browser gets fresh state with a warning in the log.
 */
import { existsSync } from "node:fs";
import { readdir, readFile, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { stringify } from "devalue";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { FileStore } from "../src/index.js";
import * as standard from "./fixtures/standard.js";
import { Browser } from "./helpers/http.js";
import { capturingLogger, eventually, seededRandom, type CapturingLogger } from "./helpers/robustness.js";
import { fileStoreKind, type StoreBacking } from "./helpers/stores.js";
import { startApp, type AdapterName, type RunningApp } from "./suites/behaviour.js";

/** What a good record of AppState looks like on disk, to corrupt from. */
interface GoodRecord {
  readonly text: string;
  readonly header: Record<string, unknown>;
  readonly data: string;
}

const header = (good: GoodRecord, changes: Record<string, unknown>) => JSON.stringify({ ...good.header, ...changes });
const withData = (good: GoodRecord, data: string) => `${JSON.stringify(good.header)}\n${data}`;

/** Each bad file, built from a good one. */
const CORRUPTIONS: ReadonlyArray<readonly [string, (good: GoodRecord) => string | Buffer]> = [
  ["a file truncated inside its header", (good) => good.text.slice(0, 25)],
  ["a file truncated inside its data", (good) => good.text.slice(0, good.text.length - Math.ceil(good.data.length / 2))],
  ["a file truncated right after its header", (good) => `${JSON.stringify(good.header)}\n`],
  ["random bytes", () => Buffer.from(Array.from({ length: 300 }, seededBytes(7)))],
  ["random bytes after a newline", () => Buffer.concat([Buffer.from("\n"), Buffer.from(Array.from({ length: 300 }, seededBytes(8)))])],
  ["a header that is not JSON", (good) => `{v:1,key:std-app}\n${good.data}`],
  ["a header of a future format version", (good) => `${header(good, { v: 2 })}\n${good.data}`],
  ["a header without the key", (good) => `${JSON.stringify({ ...good.header, key: undefined })}\n${good.data}`],
  ["a header whose version is a string", (good) => `${header(good, { version: "1" })}\n${good.data}`],
  ["a JSON header that is an array", (good) => `[1]\n${good.data}`],
  ["data that is valid JSON but not devalue", (good) => withData(good, '{"count":5}')],
  ["data that is devalue of an array", (good) => withData(good, stringify([1]))],
  ["data that is devalue of a number", (good) => withData(good, stringify(42))],
  ["data that is devalue of a string", (good) => withData(good, stringify("count"))],
  ["data that is devalue of null", (good) => withData(good, stringify(null))],
  ["data that is devalue of a Map", (good) => withData(good, stringify(new Map([["count", 5]])))],
  ["data that is devalue of a Date", (good) => withData(good, stringify(new Date(5)))],
  ["data that is devalue of a Set", (good) => withData(good, stringify(new Set(["count"])))],
  ["data that is devalue of a boxed number", (good) => withData(good, stringify(Object(5)))],
  ["data that is devalue of a typed array", (good) => withData(good, stringify(new Uint8Array([1, 2])))],
  ["data of a type no class registered", (good) => withData(good, '[{"count":1},["Money",2],5]')],
  ["data that sets __proto__", (good) => withData(good, '[{"__proto__":1,"count":2},{"polluted":2},5]')],
  ["a record of another key", (good) => `${header(good, { key: "std-other" })}\n${good.data}`],
];

function seededBytes(seed: number): () => number {
  const random = seededRandom(seed);
  return () => Math.floor(random() * 256);
}

describe.each(["node:http", "fetch"] as const satisfies readonly AdapterName[])("corrupted records · FileStore · %s", (adapter) => {
  let backing: StoreBacking;
  let dir: string;
  let logger: CapturingLogger;
  const apps: RunningApp[] = [];
  const start = async () => {
    const app = await startApp(standard, adapter, backing.open(), { logger });
    apps.push(app);
    return app;
  };

  beforeEach(async () => {
    backing = await fileStoreKind.create();
    dir = (backing.open() as FileStore).dir;
    logger = capturingLogger();
  });
  afterEach(async () => {
    for (const app of apps.splice(0)) await app.close();
    await backing.cleanup();
  });

  /** A browser whose record (count 2, one todo) was stored by a server that is now stopped. */
  async function storedBrowser(): Promise<{ cookies: Map<string, string>; id: string; good: GoodRecord }> {
    const app = await start();
    const browser = app.browser();
    await browser.json("/inc", { method: "POST" });
    await browser.json("/todo?text=kept", { method: "POST" });
    await browser.json("/inc", { method: "POST" });
    await app.close();
    apps.splice(apps.indexOf(app), 1);
    const [id] = await backing.ids();
    const text = await readFile(join(dir, id!), "utf8");
    const newline = text.indexOf("\n");
    return {
      cookies: browser.cookies,
      id: id!,
      good: { text, header: JSON.parse(text.slice(0, newline)) as Record<string, unknown>, data: text.slice(newline + 1) },
    };
  }

  it.each(CORRUPTIONS)("gives fresh state for %s, warns, and sets the file aside", async (_name, corrupt) => {
    const { cookies, id, good } = await storedBrowser();
    const bad = corrupt(good);
    const badBytes = Buffer.from(bad);
    await writeFile(join(dir, id), badBytes);

    // A new process, so nothing cached stands in for the file.
    const app = await start();
    // The sweep leaves an unreadable record alone: it is neither expired nor deletable.
    await app.sessions.sweep();
    expect(await readFile(join(dir, id))).toEqual(badBytes);

    const browser = new Browser(app.server.url);
    for (const [name, value] of cookies) browser.cookies.set(name, value);
    const response = await browser.request("/state");
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ count: 0, todos: [] });
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();

    // Renamed aside with its bytes intact, never deleted.
    const aside = await eventually(async () => (await readdir(dir)).find((name) => name.startsWith(`${id}.corrupt-`)), "the quarantined file");
    expect(aside).toMatch(new RegExp(`^${id}\\.corrupt-\\d+$`));
    expect(await readFile(join(dir, aside))).toEqual(badBytes);
    expect(existsSync(join(dir, id))).toBe(false);
    expect(logger.warnings).toEqual([expect.stringMatching(new RegExp(`^persist-session: record ${id} could not be restored \\(.+\\); it was set aside and the request got fresh state\\.$`))]);
    expect(logger.errors).toEqual([]);

    // The server keeps serving: the old cookie now opens nothing (and warns no more), a change starts a new record.
    expect(await browser.json("/state")).toMatchObject({ count: 0, todos: [] });
    expect((await browser.request("/hello")).status).toBe(200);
    expect(await browser.json("/inc", { method: "POST" })).toMatchObject({ count: 1, todos: [] });
    expect(await browser.json("/state")).toMatchObject({ count: 1 });
    const ids = await backing.ids();
    expect(ids).toHaveLength(1);
    expect(ids[0]).not.toBe(id);
    expect(logger.warnings).toHaveLength(1);
    expect(logger.errors).toEqual([]);
    // Restored by a later process too.
    const later = await start();
    const laterBrowser = new Browser(later.server.url);
    for (const [name, value] of browser.cookies) laterBrowser.cookies.set(name, value);
    expect(await laterBrowser.json("/state")).toMatchObject({ count: 1 });
    expect(await readFile(join(dir, aside))).toEqual(badBytes);
  });

  it("counts an empty file as no record, warns, and lets the sweep remove it", async () => {
    // What a crash between creating a first write's file and writing it leaves: no bytes to set aside.
    const { cookies, id } = await storedBrowser();
    await writeFile(join(dir, id), "");
    const beforeThisStore = new Date(Date.now() - 1000);
    await utimes(join(dir, id), beforeThisStore, beforeThisStore);
    const app = await start();
    const browser = new Browser(app.server.url);
    for (const [name, value] of cookies) browser.cookies.set(name, value);
    expect(await browser.json("/state")).toMatchObject({ count: 0, todos: [] });
    expect(logger.warnings).toEqual([`persist-session: record ${id} is an empty file, left by a write that a crash interrupted; it counts as no record.`]);
    expect((await readdir(dir)).filter((name) => name.includes(".corrupt-"))).toEqual([]);

    // Made before this store started, so no writer of this process is on it.
    await app.sessions.sweep();
    expect(existsSync(join(dir, id))).toBe(false);

    // The browser's next change starts a new record, as after any record that is gone.
    expect(await browser.json("/inc", { method: "POST" })).toMatchObject({ count: 1 });
    const ids = await backing.ids();
    expect(ids).toHaveLength(1);
    expect(ids[0]).not.toBe(id);
    expect(logger.errors).toEqual([]);
  });

  it("reads the unmodified record back, as the control for the cases above", async () => {
    const { cookies } = await storedBrowser();
    const app = await start();
    const browser = new Browser(app.server.url);
    for (const [name, value] of cookies) browser.cookies.set(name, value);
    expect(await browser.json("/state")).toMatchObject({ count: 2, todos: ["kept"] });
    expect(logger.warnings).toEqual([]);
    expect((await readdir(dir)).filter((name) => name.includes(".corrupt-"))).toEqual([]);
  });
});
