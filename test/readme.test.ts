import { randomUUID } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { persist, type Sessions } from "persist-session";
import { createTableSql } from "persist-session/postgres";
import { Browser } from "./helpers/http.js";
import { connectPostgres, postgresAvailable, postgresUrl, redisAvailable, redisUrl } from "./helpers/stores.js";

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

/** Writes a README example to two files under test/.generated and imports both: two app instances, as two processes would be. */
async function importTwice<T>(example: string, name: string, exported: string): Promise<T[]> {
  const generated = new URL("./.generated/", import.meta.url);
  await mkdir(generated, { recursive: true });
  const files = ["a", "b"].map((suffix) => new URL(`readme-${name}-${suffix}.ts`, generated));
  for (const file of files) await writeFile(file, `${example}\nexport { ${exported} };\n`);
  return Promise.all(files.map(async (file) => (await import(/* @vite-ignore */ file.href)) as T));
}

/** Four visits of one browser, alternating between the apps: each sees the one before. `visit.cookie` is the browser's cookie once set. */
async function visitAlternately(apps: Array<{ sessions: Sessions }>, key: string, visit: { cookie: string }): Promise<void> {
  const Visits = persist(key)(
    class {
      count = 0;
    },
  );
  const handlers = apps.map(({ sessions }) =>
    sessions.fetch(async () => {
      const visits = new Visits();
      visits.count += 1;
      return new Response(String(visits.count));
    }),
  );
  for (let i = 0; i < 4; i++) {
    const response = await handlers[i % 2]!(new Request("http://localhost/", { headers: { cookie: visit.cookie } }));
    expect(await response.text()).toBe(String(i + 1));
    visit.cookie ||= response.headers.getSetCookie()[0]!.split(";")[0]!;
  }
}

it("says in its promise that parallel first visits each start their own record (#17, point 9)", async () => {
  const readme = await readFile(new URL("../README.md", import.meta.url), "utf8");
  const promise = readme.slice(readme.indexOf("## What it promises"), readme.indexOf("## How it works"));
  const overlap = promise.split("\n").find((line) => line.startsWith("- **Nothing lost when requests overlap.**"));
  // The behaviour itself: test/concurrency.test.ts, on every store and adapter.
  expect(overlap).toContain("10 parallel first requests make 10 records");
});

describe.skipIf(!redisAvailable)("README: Running on several processes", () => {
  it("runs the Redis setup as written: two app instances over one Redis share one browser's state", async () => {
    const readme = await readFile(new URL("../README.md", import.meta.url), "utf8");
    const section = readme.slice(readme.indexOf("## Running on several processes"));
    const example = /```ts\n([\s\S]*?)```/.exec(section)?.[1];
    expect(example).toContain("new RedisStore({ client })");
    process.env.REDIS_URL = redisUrl;
    const apps = await importTwice<{ sessions: Sessions; client: { close(): Promise<void>; del(key: string): Promise<number> } }>(example!, "redis", "client");
    const visit = { cookie: "" };
    try {
      await visitAlternately(apps, "readme-redis-visits", visit);
    } finally {
      const id = /=([0-9a-f-]{36})\./.exec(visit.cookie)?.[1];
      if (id !== undefined) await apps[0]!.client.del(`persist-session:${id}`);
      for (const { sessions, client } of apps) {
        await sessions.close();
        await client.close();
      }
    }
  });
});

describe.skipIf(!postgresAvailable)("README: Running on several processes, PostgreSQL", () => {
  const section = async () => {
    const readme = await readFile(new URL("../README.md", import.meta.url), "utf8");
    const start = readme.indexOf("### PostgreSQL", readme.indexOf("## Running on several processes"));
    expect(start).toBeGreaterThan(0);
    return readme.slice(start, readme.indexOf("\n## ", start));
  };

  it("gives the table's SQL exactly as the store creates it", async () => {
    const sql = /```sql\n([\s\S]*?)```/.exec(await section())?.[1];
    expect(sql).toBe(createTableSql());
  });

  it("runs the PostgreSQL setup as written: two app instances over one database share one browser's state", async () => {
    const example = /```ts\n([\s\S]*?)```/.exec(await section())?.[1];
    expect(example).toContain("new PostgresStore({ pool })");
    expect(example!.trim().split("\n").length).toBeLessThanOrEqual(10);
    // A database of its own: the example uses the default schema and table, and other suites share the server.
    const admin = connectPostgres();
    const database = `persist_session_readme_${randomUUID().replaceAll("-", "").slice(0, 12)}`;
    await admin.query(`CREATE DATABASE "${database}"`);
    const url = new URL(postgresUrl);
    url.pathname = `/${database}`;
    process.env.DATABASE_URL = url.href;
    const apps: Array<{ sessions: Sessions; pool: { end(): Promise<void> } }> = [];
    try {
      apps.push(...(await importTwice<(typeof apps)[number]>(example!, "postgres", "pool")));
      await visitAlternately(apps, "readme-postgres-visits", { cookie: "" });
      // One record, in the table the store made on first use under its default name.
      const check = connectPostgres(url.href);
      try {
        expect((await check.query("SELECT count(*)::int AS n FROM public.persist_session WHERE data IS NOT NULL")).rows[0].n).toBe(1);
      } finally {
        await check.end();
      }
    } finally {
      for (const { sessions, pool } of apps) {
        await sessions.close();
        await pool.end();
      }
      await admin.query(`DROP DATABASE IF EXISTS "${database}" WITH (FORCE)`);
      await admin.end();
    }
  });
});
