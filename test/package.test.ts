import { execFileSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
// By name, as users import it: resolved through package.json "exports" to the built dist/.
import * as api from "persist-session";
import { persist, persistSession, MemoryStore } from "persist-session";

describe("the published package", () => {
  it("exports exactly the public API", () => {
    expect(Object.keys(api).sort()).toEqual(
      [
        "CorruptRecordError",
        "FileStore",
        "MemoryStore",
        "RecordTooLargeError",
        "StoreUnavailableError",
        "UnpersistableValueError",
        "clearCookieState",
        "commitState",
        "rotateStateIds",
        "inspectState",
        "persist",
        "persistSession",
      ].sort(),
    );
  });

  it("exports the PostgreSQL store on its own entry point", async () => {
    expect(Object.keys(await import("persist-session/postgres")).sort()).toEqual(["LeaseLostError", "PostgresStore", "StoreUnavailableError", "createTableSql"]);
  });

  it("loads persist-session/postgres in an app that has no pg installed: the app passes its pool", () => {
    // The package as an app installs it, with its own dependencies and nothing else.
    const app = mkdtempSync(join(tmpdir(), "persist-session-no-pg-"));
    try {
      const root = fileURLToPath(new URL("..", import.meta.url));
      const installed = join(app, "node_modules", "persist-session");
      mkdirSync(installed, { recursive: true });
      cpSync(join(root, "package.json"), join(installed, "package.json"));
      cpSync(join(root, "dist"), join(installed, "dist"), { recursive: true });
      for (const dependency of ["cookie", "devalue"]) symlinkSync(join(root, "node_modules", dependency), join(app, "node_modules", dependency));
      const script =
        'const { PostgresStore } = await import("persist-session/postgres");' +
        'let pg = "absent"; try { await import("pg"); pg = "present"; } catch {}' +
        "console.log(pg, new PostgresStore({ pool: { connect: async () => { throw new Error('no server'); } } }).describe());";
      const out = execFileSync(process.execPath, ["--input-type=module", "-e", script], { cwd: app, encoding: "utf8" });
      expect(out.trim()).toBe('absent postgres "public"."persist_session"');
    } finally {
      rmSync(app, { recursive: true, force: true });
    }
  });

  it("resolves to built JavaScript with type declarations", () => {
    const manifest = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as {
      exports: Record<string, { types: string; default: string }>;
    };
    const root = manifest.exports["."]!;
    expect(root.default).toMatch(/^\.\/dist\/.*\.js$/);
    expect(root.types).toMatch(/^\.\/dist\/.*\.d\.ts$/);
    expect(import.meta.resolve("persist-session")).toMatch(/\/dist\/index\.js$/);
  });

  it("serves state through the built code", async () => {
    const Counter = persist("package-counter")(
      class Counter {
        count = 0;
      },
    );
    const sessions = persistSession({ secret: "p".repeat(32), store: new MemoryStore(), sweepInterval: 0 });
    const handler = sessions.fetch(async () => {
      const counter = new Counter();
      counter.count += 1;
      return new Response(String(counter.count));
    });
    const first = await handler(new Request("http://localhost/"));
    const cookie = first.headers.getSetCookie()[0]!.split(";")[0]!;
    const second = await handler(new Request("http://localhost/", { headers: { cookie } }));
    expect(await second.text()).toBe("2");
    await sessions.close();
  });

  it("packs only what users need", () => {
    const [pack] = JSON.parse(execFileSync("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], { cwd: new URL("..", import.meta.url), encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] })) as Array<{
      files: Array<{ path: string }>;
    }>;
    const paths = pack!.files.map((file) => file.path);
    expect(paths).toContain("dist/index.js");
    expect(paths).toContain("dist/index.d.ts");
    expect(paths).toContain("README.md");
    expect(paths).toContain("LICENSE");
    expect(paths.filter((path) => !/^(dist\/.*\.(js|d\.ts)|package\.json|README\.md|LICENSE)$/.test(path))).toEqual([]);
  });

  it("exports one adapter per server framework, each persistState and serveEvents", async () => {
    for (const framework of ["hono", "fastify", "koa", "h3"]) {
      expect(import.meta.resolve(`persist-session/${framework}`)).toMatch(new RegExp(`/dist/adapters/${framework}\\.js$`));
      expect(Object.keys(await import(/* @vite-ignore */ `persist-session/${framework}`)).sort()).toEqual(["persistState", "serveEvents"]);
    }
  });

  it("loads no framework at run time but Hono's HTTPException and Next's cookies(), each from its own entry only", () => {
    const dist = new URL("../dist/", import.meta.url);
    const bare = new Set<string>();
    for (const file of readdirSync(dist, { recursive: true, encoding: "utf8" }).filter((name) => name.endsWith(".js"))) {
      for (const [, specifier] of readFileSync(new URL(file, dist), "utf8").matchAll(/^import\s[^"']*["']([^"']+)["']/gm)) {
        if (!specifier!.startsWith(".")) bare.add(specifier!);
      }
    }
    expect([...bare].filter((name) => !name.startsWith("node:")).sort()).toEqual(["cookie", "devalue", "hono/http-exception", "next/headers.js"]);
  });

  it("loads from a CommonJS module (require) on the Node versions engines names", () => {
    const manifest = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { engines: { node: string } };
    // require(esm) is unflagged from these on; the package is ESM-only and has no top-level await.
    expect(manifest.engines.node).toBe("^20.19.0 || >=22.12.0");
    const [major, minor] = process.versions.node.split(".").map(Number) as [number, number];
    expect((major === 20 && minor >= 19) || (major === 22 && minor >= 12) || major > 22).toBe(true);
    const script = `const { persistSession } = require("persist-session");
      const adapters = ["hono", "fastify", "koa", "h3", "redis"].map((name) => Object.keys(require("persist-session/" + name)).length);
      console.log(typeof persistSession, adapters.every((count) => count > 0));`;
    const out = execFileSync(process.execPath, ["--input-type=commonjs", "-e", script], { cwd: new URL("..", import.meta.url), encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    expect(out.trim()).toBe("function true");
  });
});
