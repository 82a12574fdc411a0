import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { Browser } from "./helpers/http.js";

/** The README's first TypeScript example, run as written (the port aside), against the built package. */
let server: Server;
let sessions: { close(): Promise<void> };
let workdir: string;
const cwd = process.cwd();

beforeAll(async () => {
  const readme = await readFile(new URL("../README.md", import.meta.url), "utf8");
  const example = /```ts\n([\s\S]*?)```/.exec(readme)?.[1];
  expect(example).toContain("persistSession(");
  const runnable = example!.replace("server.listen(3000);", "server.listen(0);\nexport { server, sessions };");
  expect(runnable).not.toBe(example);
  const generated = new URL("./.generated/", import.meta.url);
  await mkdir(generated, { recursive: true });
  const file = new URL("readme-example.ts", generated);
  await writeFile(file, runnable);
  // The example's default FileStore lives in the working directory: give it a fresh one.
  workdir = await mkdtemp(join(tmpdir(), "persist-session-readme-"));
  process.chdir(workdir);
  process.env.SESSION_SECRET = "readme-example-secret-0123456789abcdef";
  ({ server, sessions } = (await import(/* @vite-ignore */ file.href)) as { server: Server; sessions: { close(): Promise<void> } });
  await new Promise<void>((resolve) => (server.listening ? resolve() : server.once("listening", () => resolve())));
});

afterAll(async () => {
  server?.closeAllConnections();
  await new Promise<void>((resolve) => server?.close(() => resolve()));
  await sessions?.close();
  process.chdir(cwd);
  await rm(workdir, { recursive: true, force: true });
});

it("does what the README says: changes are stored, nested ones too, and the reset clears them", async () => {
  const browser = new Browser(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  await browser.request("/inc");
  await browser.request("/inc");
  await browser.request("/todo");
  expect(await (await browser.request("/")).text()).toBe("count=2 todos=buy milk");
  expect(await (await new Browser(browser.baseUrl).request("/")).text()).toBe("count=0 todos=");
  expect(await (await browser.request("/reset")).text()).toBe("count=0 todos=");
  expect(browser.cookies.size).toBe(0);
});
