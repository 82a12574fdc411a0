import { mkdir, mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { FileStore, persistSession } from "../src/index.js";
import { wrapStore } from "./helpers/wrap-store.js";
import * as standard from "./fixtures/standard.js";
import { nodeApp } from "./fixtures/app.js";
import { Browser, listen, type TestServer } from "./helpers/http.js";
import { SECRET } from "./suites/behaviour.js";

/** Sends a Cookie header byte for byte over a socket; fetch() and http.request refuse control characters. */
function rawRequest(url: string, path: string, cookie: string): Promise<{ status: number; body: string; setCookie: string[] }> {
  const { port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), "127.0.0.1");
    const chunks: Buffer[] = [];
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.on("error", reject);
    socket.on("end", () => {
      const text = Buffer.concat(chunks).toString("latin1");
      const [head = "", body = ""] = text.split("\r\n\r\n");
      const lines = head.split("\r\n");
      resolve({
        status: Number(lines[0]?.split(" ")[1]),
        body,
        setCookie: lines.filter((line) => /^set-cookie:/i.test(line)).map((line) => line.slice(11).trim()),
      });
    });
    socket.end(Buffer.from(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: ${cookie}\r\nConnection: close\r\n\r\n`, "latin1"));
  });
}

describe("cookies that must open nothing", () => {
  let root: string;
  let dir: string;
  let server: TestServer;
  let reads: string[];
  let closeSessions: () => Promise<void>;
  let valid: string;
  let validOther: string;

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), "persist-session-security-"));
    dir = join(root, "store");
    await mkdir(join(root, "sibling"));
    const files = new FileStore({ dir });
    reads = [];
    const store = wrapStore(files, {
      get: (id: string) => {
        reads.push(id);
        return files.get(id);
      },
    });
    const sessions = persistSession({ secret: SECRET, store, sweepInterval: 0, logger: { warn() {}, error() {} } });
    closeSessions = () => sessions.close();
    const app = nodeApp(standard);
    server = await listen((req, res) => sessions(req, res, () => app(req, res)));
    const browser = new Browser(server.url);
    await browser.json("/inc", { method: "POST" });
    await browser.json("/other?label=secret", { method: "POST" });
    valid = browser.cookies.get("std-app")!;
    validOther = browser.cookies.get("std-other")!;
    reads.length = 0;
  });
  afterEach(async () => {
    await server.close();
    await closeSessions();
    await rm(root, { recursive: true, force: true });
  });

  const cases: Array<[string, () => string]> = [
    ["a tampered signature", () => `std-app=${valid.slice(0, -2)}${valid.endsWith("AA") ? "BB" : "AA"}`],
    ["a value minted for another key", () => `std-app=${validOther}`],
    ["a non-v4 uuid", () => `std-app=${valid.slice(0, 14)}1${valid.slice(15)}`],
    ["../ in the id", () => `std-app=../../sibling/aaaaaaaaaaaaaaaaaaaaaaaaaaaaa${valid.slice(36)}`],
    ["an upper-case id", () => `std-app=${valid.slice(0, 36).toUpperCase()}${valid.slice(36)}`],
    ["an empty value", () => "std-app="],
    ["a 10 KB cookie", () => `std-app=${"a".repeat(10_240)}`],
    ["a malformed Cookie header", () => ";;;=;std-app;==;\u00ff\u00fe;std-app=%%%;=x; ; std-app"],
    ["the id without a signature", () => `std-app=${valid.slice(0, 36)}`],
  ];

  it.each(cases)("%s gets fresh state, a 2xx and no store read", async (_name, cookie) => {
    const before = await readdir(root, { recursive: true });
    const response = await rawRequest(server.url, "/state", cookie());
    expect(response.status).toBe(200);
    expect(JSON.parse(response.body)).toMatchObject({ count: 0, todos: [] });
    expect(reads).toEqual([]);
    expect(response.setCookie).toEqual([]);
    expect(await readdir(root, { recursive: true })).toEqual(before);
  });

  it("the genuine cookie, for contrast, is read from the store and restores", async () => {
    const response = await rawRequest(server.url, "/state", `std-app=${valid}`);
    expect(JSON.parse(response.body)).toMatchObject({ count: 1 });
  });

  it("a change made under a rejected cookie goes to a new record, never the cookie's id", async () => {
    const forged = `std-app=${valid.slice(0, -2)}${valid.endsWith("AA") ? "BB" : "AA"}`;
    const browser = new Browser(server.url);
    const changed = await browser.request("/inc", { method: "POST", cookie: forged });
    expect(changed.status).toBe(200);
    const minted = browser.cookies.get("std-app")!;
    expect(minted.slice(0, 36)).not.toBe(valid.slice(0, 36));
    const stored = await readdir(dir);
    expect(stored.filter((name) => name === valid.slice(0, 36))).toHaveLength(1);
    expect(JSON.parse((await rawRequest(server.url, "/state", `std-app=${valid}`)).body)).toMatchObject({ count: 1 });
  });

  it("keeps records private: the directory is 0700 and each record 0600", async () => {
    expect((await stat(dir)).mode & 0o777).toBe(0o700);
    for (const name of await readdir(dir)) {
      if (name === ".secret") continue;
      expect((await stat(join(dir, name))).mode & 0o777).toBe(0o600);
    }
  });
});
