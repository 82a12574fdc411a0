// The framework suites: each folder here is a real app of one framework, with its own
// package.json, which installs the packed persist-session (never a link), builds, starts
// its production server on loopback and checks it over HTTP (its check.mjs).
//
//   node test/frameworks/run.mjs            every app
//   node test/frameworks/run.mjs hono koa   only these
//
// Run by .ci/run after the main suite; `npm test` stays fast without them.
import { execFileSync, spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readdirSync, renameSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = join(HERE, "..", "..");
const GENERATED = join(ROOT, "test", ".generated");
/** Where every app's package.json points: "persist-session": "file:../../.generated/persist-session.tgz". */
const TARBALL = join(GENERATED, "persist-session.tgz");

/** The server-framework apps: their src/state.ts is lib/server-state.ts, copied in before each run. */
const SHARED_STATE = new Set(["express", "fastify", "h3", "hono", "koa", "nest"]);

const wanted = process.argv.slice(2);
const apps = readdirSync(HERE, { withFileTypes: true })
  .filter((entry) => entry.isDirectory() && entry.name !== "lib" && existsSync(join(HERE, entry.name, "package.json")))
  .map((entry) => entry.name)
  .filter((name) => wanted.length === 0 || wanted.includes(name))
  .sort();

function run(command, args, cwd, extraEnv = {}) {
  const started = Date.now();
  const result = spawnSync(command, args, { cwd, stdio: "inherit", env: { ...process.env, ...extraEnv } });
  return { ok: result.status === 0, seconds: (Date.now() - started) / 1000 };
}

// The package as users get it: built, packed, installed from the tarball.
mkdirSync(GENERATED, { recursive: true });
execFileSync("npm", ["run", "build"], { cwd: ROOT, stdio: "inherit" });
const packed = JSON.parse(execFileSync("npm", ["pack", "--json", "--ignore-scripts", "--pack-destination", GENERATED], { cwd: ROOT, encoding: "utf8" }))[0];
rmSync(TARBALL, { force: true });
renameSync(join(GENERATED, packed.filename), TARBALL);

const results = [];
for (const app of apps) {
  const cwd = join(HERE, app);
  console.log(`\n=== ${app}`);
  // From scratch every time: no node_modules or build output of an earlier run.
  for (const leftover of ["node_modules", "package-lock.json"]) rmSync(join(cwd, leftover), { recursive: true, force: true });
  if (SHARED_STATE.has(app)) copyFileSync(join(HERE, "lib", "server-state.ts"), join(cwd, "src", "state.ts"));
  const steps = [
    ["install", "npm", ["install", "--no-audit", "--no-fund", "--no-package-lock", "--loglevel=error"]],
    ["check", process.execPath, ["check.mjs"]],
  ];
  let ok = true;
  const times = [];
  for (const [name, command, args] of steps) {
    const step = run(command, args, cwd, { CI: "true" });
    times.push(`${name} ${step.seconds.toFixed(0)} s`);
    if (!step.ok) {
      ok = false;
      console.log(`--- ${app}: ${name} failed`);
      break;
    }
  }
  results.push({ app, ok, times: times.join(", ") });
}

console.log("\nframework suites:");
for (const { app, ok, times } of results) console.log(`  ${ok ? "passed" : "FAILED"}  ${app.padEnd(14)} ${times}`);
const failed = results.filter((result) => !result.ok).length;
console.log(`${results.length - failed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
