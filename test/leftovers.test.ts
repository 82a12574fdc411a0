/**
 * Bounded leftovers (#17, point 7, the FileStore's part): set-aside records
 * (`<uuid>.corrupt-<time>`) were never swept, so a directory that saw corrupt
 * records grew forever; now the sweep removes them once they are older than
 * `quarantineTtl` (default 30 days; RedisStore's quarantine keys expire after
 * the same, see redis-store.test.ts). And `.secret` was linked into place
 * without an fsync of its directory, so a power cut could lose its name and
 * the next start would sign with a new secret.
 */
import { existsSync } from "node:fs";
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { FileStore, persistSession, type Sessions } from "../src/index.js";
import * as standard from "./fixtures/standard.js";
import { capturingLogger } from "./helpers/robustness.js";
import { SECRET } from "./suites/behaviour.js";

/** Every fsync of a directory or file the FileStore asks for, and whether `.secret` was in that directory then. */
const synced = vi.hoisted(() => [] as Array<{ path: string; secretThere: boolean }>);
vi.mock("../src/stores/file-system.js", async (importOriginal) => {
  const original = await importOriginal<typeof import("../src/stores/file-system.js")>();
  const { existsSync: exists } = await import("node:fs");
  return {
    ...original,
    syncPath: async (path: string) => {
      synced.push({ path, secretThere: exists(`${path}/.secret`) });
      return original.syncPath(path);
    },
  };
});

const DAY_MS = 86_400_000;
const ID = "0b7f1a52-8a0e-4a0e-9a3c-1c2d3e4f5a6b";

describe("leftovers of the FileStore", () => {
  let dir: string;
  const open: Sessions[] = [];

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "persist-session-leftovers-"));
    synced.length = 0;
  });
  afterEach(async () => {
    for (const sessions of open.splice(0)) await sessions.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("fsyncs the store directory once a generated secret is linked into it", async () => {
    const store = new FileStore({ dir });
    const { created } = await store.secret();
    await store.close();
    expect(created).toBe(true);
    expect(synced).toContainEqual({ path: dir, secretThere: true });
  });

  /** Set-aside records named as the FileStore names them, `days` ago. */
  async function quarantined(...days: number[]): Promise<string[]> {
    const names = days.map((age, i) => `${ID.slice(0, 35)}${i}.corrupt-${Date.now() - age * DAY_MS}`);
    for (const name of names) await writeFile(join(dir, name), "unreadable", { mode: 0o600 });
    return names;
  }

  it("sweeps set-aside records older than 30 days by default, and keeps younger ones", async () => {
    const [old, oldest, young, fresh] = await quarantined(31, 400, 29, 0);
    const sessions = persistSession({ secret: SECRET, store: new FileStore({ dir }), sweepInterval: 0, logger: capturingLogger() });
    open.push(sessions);
    expect(await sessions.sweep()).toBe(2);
    const names = await readdir(dir);
    expect(names).not.toContain(old);
    expect(names).not.toContain(oldest);
    expect(names).toContain(young);
    expect(names).toContain(fresh);
  });

  it("keeps a set-aside record for quarantineTtl seconds, counted from when it was set aside", async () => {
    const logger = capturingLogger();
    const sessions = persistSession({ secret: SECRET, store: new FileStore({ dir, quarantineTtl: 3600 }), sweepInterval: 0, logger, cacheSize: 0 });
    open.push(sessions);
    // A record set aside through the request path: garbage where a browser's record was.
    const created = await sessions.fetch(async () => {
      new standard.AppState().count = 1;
      return new Response("ok");
    })(new Request("http://localhost/"));
    const cookie = created.headers.getSetCookie()[0]!.split(";")[0]!;
    const id = cookie.slice(cookie.indexOf("=") + 1, cookie.indexOf("=") + 37);
    await writeFile(join(dir, id), "garbage", { mode: 0o600 });
    await sessions.fetch(async () => new Response(String(new standard.AppState().count)))(new Request("http://localhost/", { headers: { cookie } }));
    const [setAside] = (await readdir(dir)).filter((name) => name.startsWith(`${id}.corrupt-`));
    expect(setAside).toBeDefined();
    const [stale, recent] = await quarantined(2 / 24, 0.5 / 24);

    expect(await sessions.sweep()).toBe(1);
    expect(existsSync(join(dir, stale!))).toBe(false);
    expect(existsSync(join(dir, recent!))).toBe(true);
    expect(existsSync(join(dir, setAside!))).toBe(true);
    expect(logger.warnings).toEqual([expect.stringContaining(`record ${id} could not be restored`)]);
  });

  it("refuses a quarantineTtl that is not a positive number of seconds", () => {
    expect(() => new FileStore({ dir, quarantineTtl: 0 })).toThrow("persist-session: option quarantineTtl is invalid: 0. Use a positive number.");
  });
});
