// `npm run bench` from the repository root: installs the bench's own dependencies when
// missing, builds the library, then runs the HTTP comparison, the micro-benchmarks and
// the scale checks, prints the results and writes them to bench/RESULTS.md.
//
//   npm run bench                 everything (http, micro, scale)
//   npm run bench -- http         only the HTTP table      (also: micro, scale, profile)
//   npm run bench -- postgres     the PostgreSQL rows and their references, in a section of their own
//   BENCH_DURATION=2 npm run bench -- http    a smoke run (seconds per variant and round)
//
// Environment: BENCH_DURATION (s, default 10), BENCH_ROUNDS (default 3), BENCH_CONNECTIONS
// (default 10), BENCH_WARMUP (s, default 1), BENCH_VARIANTS (comma-separated ids to keep),
// BENCH_REDIS_URL (default redis://127.0.0.1:6379), BENCH_REDIS_DELAY_MS (ms each way through
// delay-proxy.mjs for the -delay variants, default 0.5), BENCH_POSTGRES_URL (default
// postgres://postgres@127.0.0.1:5432/test). Traffic goes to 127.0.0.1 only.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { createConnection } from "node:net";
import { join } from "node:path";
import os from "node:os";
import { BENCH_DIR, DATA_DIR, ROOT_DIR, formatNumber, markdownTable, median, packageVersions, writeResultsSection } from "./lib.mjs";
import { CONNECTIONS, DURATION, POSTGRES_URL, REDIS_DELAY_MS, REDIS_URL, WARMUP, measure } from "./measure.mjs";

const parts = process.argv.slice(2).filter((arg) => !arg.startsWith("-"));
const wanted = new Set(parts.length === 0 ? ["http", "micro", "scale"] : parts);
for (const part of wanted) {
  if (!["http", "postgres", "micro", "scale", "profile"].includes(part)) {
    console.error(`bench: unknown part "${part}". Use http, postgres, micro, scale or profile.`);
    process.exit(2);
  }
}

const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 3));

/** Every variant of the HTTP comparison, in table order. */
const VARIANTS = [
  { id: "bare-http", label: "node:http, no session (ceiling)" },
  { id: "ps-memory-http", label: "persist-session MemoryStore · node:http" },
  { id: "ps-file-http", label: "persist-session FileStore · node:http" },
  { id: "ps-durable-http", label: "persist-session FileStore durable (journal + fdatasync) · node:http" },
  { id: "ps-redis-http", label: "persist-session RedisStore · node:http", redis: true, redisStore: true },
  { id: "ps-memory-express", label: "persist-session MemoryStore · Express" },
  { id: "ps-file-express", label: "persist-session FileStore · Express" },
  { id: "ps-redis-express", label: "persist-session RedisStore · Express", redis: true, redisStore: true },
  // Redis across a network (issue #22): the same servers, reaching Redis through delay-proxy.mjs.
  { id: "ps-redis-http-delay", label: `persist-session RedisStore · node:http, Redis ${REDIS_DELAY_MS} ms away each way`, redis: true, redisStore: true, delay: true },
  // The floor under that: no session, one INCR per request, answered after Redis answers.
  { id: "bare-redis-http-delay", label: `node:http, no session, one Redis INCR per request, Redis ${REDIS_DELAY_MS} ms away each way (one round trip's floor)`, redis: true, delay: true },
  { id: "ps-postgres-http", label: "persist-session PostgresStore · node:http", postgres: true, postgresStore: true },
  { id: "ps-postgres-express", label: "persist-session PostgresStore · Express", postgres: true, postgresStore: true },
  { id: "es-memory", label: "express-session MemoryStore · Express" },
  { id: "es-file", label: "express-session + session-file-store · Express" },
  { id: "es-redis", label: "express-session + connect-redis · Express", redis: true },
  { id: "es-redis-delay", label: `express-session + connect-redis · Express, Redis ${REDIS_DELAY_MS} ms away each way`, redis: true, delay: true },
  { id: "es-postgres", label: "express-session + connect-pg-simple · Express", postgres: true },
  { id: "iron-http", label: "iron-session (sealed cookie) · node:http" },
];
const SCENARIOS = [
  { id: "hot", label: "hot session" },
  { id: "new", label: "new session per request" },
];

function prepare() {
  if (!existsSync(join(BENCH_DIR, "node_modules"))) {
    console.log("bench: installing the bench's dependencies (npm install --prefix bench) …");
    execFileSync("npm", ["install", "--prefix", BENCH_DIR, "--no-audit", "--no-fund"], { cwd: ROOT_DIR, stdio: "inherit" });
  }
  console.log("bench: building the library (npm run build) …");
  execFileSync("npm", ["run", "build", "--silent"], { cwd: ROOT_DIR, stdio: "inherit" });
}

/** The variants of `npm run bench -- postgres`: the PostgreSQL rows, the ceiling and express-session without a store to read them against. */
const POSTGRES_PART = ["bare-http", "ps-postgres-http", "ps-postgres-express", "es-memory", "es-postgres"];

function reachable(url, defaultPort) {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = createConnection({ host: hostname, port: Number(port || defaultPort) });
    socket.setTimeout(1000, () => {
      socket.destroy();
      resolve(false);
    });
    socket.once("connect", () => {
      socket.end();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/** Whether `persist-session/<entry>` is built and exported by this working tree. */
function entryBuilt(entry) {
  const pkg = JSON.parse(readFileSync(join(ROOT_DIR, "package.json"), "utf8"));
  return existsSync(join(ROOT_DIR, "dist", `${entry}.js`)) && pkg.exports?.[`./${entry}`] !== undefined;
}

/** The HTTP comparison over `ids` (all variants when undefined), written to RESULTS.md's `section`. */
async function runHttp(ids, section, heading) {
  const filter = process.env.BENCH_VARIANTS?.split(",").map((id) => id.trim()) ?? ids;
  const notes = [];
  let variants = VARIANTS.filter((variant) => filter === undefined || filter.includes(variant.id));
  for (const [backend, url, defaultPort, entry] of [
    ["redis", REDIS_URL, 6379, "redis"],
    ["postgres", POSTGRES_URL, 5432, "postgres"],
  ]) {
    const name = backend === "redis" ? "Redis" : "PostgreSQL";
    if (variants.some((variant) => variant[backend]) && !(await reachable(url, defaultPort))) {
      notes.push(`${name} at ${url} did not answer: the ${name} variants were skipped.`);
      variants = variants.filter((variant) => !variant[backend]);
    }
    if (variants.some((variant) => variant[`${backend}Store`]) && !entryBuilt(entry)) {
      notes.push(`persist-session/${entry} is not built or exported yet: its variants were skipped.`);
      variants = variants.filter((variant) => !variant[`${backend}Store`]);
    }
  }
  const runs = new Map(variants.map((variant) => [variant.id, { hot: [], new: [] }]));
  const proxyAdded = [];
  const total = ROUNDS * variants.length * SCENARIOS.length;
  let done = 0;
  for (let round = 1; round <= ROUNDS; round++) {
    // Alternate the order so no variant always runs first (or right after a heavy one).
    const order = round % 2 === 1 ? variants : [...variants].reverse();
    for (const variant of order) {
      for (const scenario of SCENARIOS) {
        done++;
        const result = await measure(variant, scenario, round);
        runs.get(variant.id)[scenario.id].push(result);
        if (result.proxyAddedMs !== undefined) proxyAdded.push(result.proxyAddedMs);
        console.log(
          `[${done}/${total}] round ${round} ${variant.id.padEnd(18)} ${scenario.id.padEnd(3)} ` +
            `${formatNumber(result.rps).padStart(7)} req/s  p50 ${result.p50.toFixed(2)} ms  p99 ${result.p99.toFixed(2)} ms` +
            (result.lost !== undefined ? `  lost ${result.lost}/${result.calls}` : "") +
            (result.failed > 0 ? `  failed ${result.failed}` : "") +
            (result.proxyAddedMs !== undefined ? `  proxy +${result.proxyAddedMs.toFixed(2)} ms/PING, ${result.proxyCpuPerRequest.toFixed(0)} µs CPU/req` : "") +
            `  (load avg ${result.loadavg.toFixed(1)})`,
        );
      }
    }
  }

  if (proxyAdded.length > 0) {
    notes.push(
      `the "ms away" rows reach Redis through bench/delay-proxy.mjs, which holds every chunk ${REDIS_DELAY_MS} ms in each direction ` +
        `(BENCH_REDIS_DELAY_MS); measured at each start with PINGs through it against PINGs direct, it added ` +
        `${formatNumber(median(proxyAdded), 2)} ms per round trip (median of ${proxyAdded.length}; ${formatNumber(Math.min(...proxyAdded), 2)}–${formatNumber(Math.max(...proxyAdded), 2)}).`,
    );
  }

  const summary = new Map();
  for (const variant of variants) {
    const entry = {};
    for (const scenario of SCENARIOS) {
      const results = runs.get(variant.id)[scenario.id];
      entry[scenario.id] = {
        rps: median(results.map((r) => r.rps)),
        p50: median(results.map((r) => r.p50)),
        p99: median(results.map((r) => r.p99)),
        lost: scenario.id === "hot" ? results.reduce((sum, r) => sum + r.lost, 0) : undefined,
        calls: results.reduce((sum, r) => sum + r.calls, 0),
        failed: results.reduce((sum, r) => sum + r.failed, 0),
        rounds: results.map((r) => r.rps),
        loadavg: results.map((r) => r.loadavg),
      };
    }
    summary.set(variant.id, entry);
  }

  const table = markdownTable(
    ["variant", "hot req/s", "hot p50 ms", "hot p99 ms", "hot lost / calls", "new req/s", "new p50 ms", "new p99 ms", "non-2xx/errors"],
    variants.map((variant) => {
      const { hot, new: fresh } = summary.get(variant.id);
      return [
        variant.label,
        formatNumber(hot.rps),
        formatNumber(hot.p50, 2),
        formatNumber(hot.p99, 2),
        `${formatNumber(hot.lost)} / ${formatNumber(hot.calls)}`,
        formatNumber(fresh.rps),
        formatNumber(fresh.p50, 2),
        formatNumber(fresh.p99, 2),
        formatNumber(hot.failed + fresh.failed),
      ];
    }),
  );
  const perRound = markdownTable(
    ["variant", ...SCENARIOS.map((s) => `${s.id} req/s per round`)],
    variants.map((variant) => [
      variant.label,
      ...SCENARIOS.map((s) => {
        const { rounds, loadavg } = summary.get(variant.id)[s.id];
        return rounds.map((v, i) => `${formatNumber(v)} (${loadavg[i].toFixed(1)})`).join(" · ");
      }),
    ]),
  );
  // A partial run lists only the targets it measured.
  const targets = evaluateTargets(summary).filter((target) => ids === undefined || target.met !== undefined);
  const markdown = [
    heading,
    "",
    ...(ids === undefined ? [] : [`Measured ${new Date().toISOString().slice(0, 10)} (Node ${process.version}), apart from the full table above.`, ""]),
    `${CONNECTIONS} connections, ${DURATION} s per variant and scenario after a ${WARMUP} s warm-up, ${ROUNDS} rounds interleaved ` +
      "(every variant once per round, order reversed every other round), each server in its own child process, autocannon on 127.0.0.1. " +
      "req/s, p50 and p99 are medians over the rounds; latencies are measured per response (not autocannon's whole-millisecond histogram). " +
      "\"lost\" is handler calls minus the counter's growth on the hot session, read back through the same session after the run, summed over rounds.",
    "",
    table,
    "",
    ...notes.map((note) => `Note: ${note}`),
    ...(notes.length > 0 ? [""] : []),
    "<details><summary>req/s of each round (1-minute load average of the machine at its end)</summary>",
    "",
    perRound,
    "",
    "</details>",
    "",
    "### Targets (ratios from this run)",
    "",
    markdownTable(["target", "measured", "met"], targets.map((t) => [t.name, t.measured, t.met === undefined ? "n/a" : t.met ? "yes" : "**no**"])),
  ].join("\n");
  console.log(`\n${markdown}\n`);
  writeResultsSection(section, markdown);
}

function evaluateTargets(summary) {
  const targets = [];
  const rps = (id, scenario) => summary.get(id)?.[scenario].rps;
  const lost = (id) => summary.get(id)?.hot.lost;
  const ratio = (a, b) => (a === undefined || b === undefined ? undefined : a / b);
  const show = (value) => (value === undefined ? "not run" : `${value.toFixed(2)}×`);
  const add = (name, measured, met) => targets.push({ name, measured, met });
  const ratioTarget = (name, a, b, scenario, minimum) => {
    const r = ratio(rps(a, scenario), rps(b, scenario));
    add(name, show(r), r === undefined ? undefined : r >= minimum);
  };
  const zeroLost = (name, id) => add(name, lost(id) === undefined ? "not run" : `${lost(id)} lost`, lost(id) === undefined ? undefined : lost(id) === 0);

  zeroLost("FileStore (node:http) hot session: 0 lost", "ps-file-http");
  ratioTarget("FileStore (node:http) hot ≥ 3× express-session + session-file-store", "ps-file-http", "es-file", "hot", 3);
  ratioTarget("FileStore (node:http) new ≥ 3× session-file-store", "ps-file-http", "es-file", "new", 3);
  zeroLost("FileStore durable (node:http) hot session: 0 lost", "ps-durable-http");
  ratioTarget("FileStore durable (node:http) hot ≥ 3× express-session + session-file-store", "ps-durable-http", "es-file", "hot", 3);
  ratioTarget("FileStore durable (node:http) new ≥ 3× session-file-store", "ps-durable-http", "es-file", "new", 3);
  zeroLost("MemoryStore (node:http) hot session: 0 lost", "ps-memory-http");
  ratioTarget("MemoryStore (node:http) hot ≥ 2× express-session MemoryStore", "ps-memory-http", "es-memory", "hot", 2);
  ratioTarget("MemoryStore (node:http) new ≥ 2× express-session MemoryStore", "ps-memory-http", "es-memory", "new", 2);
  zeroLost("RedisStore (node:http) hot session: 0 lost", "ps-redis-http");
  ratioTarget("RedisStore (node:http) new ≥ 1× connect-redis", "ps-redis-http", "es-redis", "new", 1);
  zeroLost(`RedisStore (node:http), Redis ${REDIS_DELAY_MS} ms away: hot session 0 lost`, "ps-redis-http-delay");
  ratioTarget(`RedisStore (node:http) hot ≥ 3× connect-redis, Redis ${REDIS_DELAY_MS} ms away for both`, "ps-redis-http-delay", "es-redis-delay", "hot", 3);
  // Not a target: what one round trip per request allows on this machine, to read the one above against.
  const floor = rps("bare-redis-http-delay", "hot");
  if (floor !== undefined) {
    add(`(for reference) one round trip's floor ÷ connect-redis, Redis ${REDIS_DELAY_MS} ms away for both`, show(ratio(floor, rps("es-redis-delay", "hot"))), undefined);
    add(`(for reference) RedisStore (node:http) hot ÷ one round trip's floor, Redis ${REDIS_DELAY_MS} ms away`, show(ratio(rps("ps-redis-http-delay", "hot"), floor)), undefined);
  }
  zeroLost("PostgresStore (node:http) hot session: 0 lost", "ps-postgres-http");
  ratioTarget("PostgresStore (node:http) new ≥ 2× connect-pg-simple", "ps-postgres-http", "es-postgres", "new", 2);
  for (const [store, es] of [
    ["memory", "es-memory"],
    ["file", "es-file"],
    ["redis", "es-redis"],
    ["postgres", "es-postgres"],
  ]) {
    for (const scenario of ["hot", "new"]) {
      ratioTarget(`Express: persist-session ${store} ${scenario} ≥ 1× ${es}`, `ps-${store}-express`, es, scenario, 1);
    }
    zeroLost(`Express: persist-session ${store} hot session: 0 lost`, `ps-${store}-express`);
  }
  return targets;
}

/** Runs a part that lives in its own script (a separate process keeps it clear of autocannon). */
function runScript(script, args = []) {
  const result = spawnSync(process.execPath, ["--expose-gc", join(BENCH_DIR, script), ...args], { stdio: "inherit", cwd: BENCH_DIR });
  if (result.status !== 0) throw new Error(`${script} failed with exit code ${result.status}`);
}

prepare();
writeResultsSection(
  "meta",
  [
    `Last run: ${new Date().toISOString()} · Node ${process.version} · ${os.platform()} ${os.arch()} · ${os.cpus().length}× ${os.cpus()[0]?.model ?? "CPU"}`,
    "",
    `Packages: ${packageVersions().join(", ")}`,
    "",
    `Parts of this run: ${[...wanted].join(", ")} (sections of earlier runs are kept; each says what it measured).`,
  ].join("\n"),
);
try {
  if (wanted.has("http")) await runHttp(undefined, "http", "## HTTP: read a counter, add one, save");
  if (wanted.has("postgres")) await runHttp(POSTGRES_PART, "postgres", "## HTTP on PostgreSQL: read a counter, add one, save");
  if (wanted.has("micro")) runScript("micro.mjs");
  if (wanted.has("scale")) runScript("scale.mjs");
  if (wanted.has("profile")) runScript("profile.mjs");
} finally {
  rmSync(join(DATA_DIR, `run-${process.pid}`), { recursive: true, force: true });
}
console.log(`bench: results written to ${join(BENCH_DIR, "RESULTS.md")}`);
