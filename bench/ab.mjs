// A/B comparison of two builds of the library, interleaved round by round so that other
// work on the machine hits both alike. Used to judge a change that the profile suggested.
//
//   node bench/ab.mjs snapshot NAME          copies the current package.json + dist to bench/.data/ab/NAME
//   node bench/ab.mjs compare A B [variant …]  default variants: ps-memory-http ps-file-http
//   BENCH_ROUNDS (default 4), BENCH_DURATION (default 10), BENCH_SCENARIOS (default hot,new)
// A variant id ending in -delay (ps-redis-http-delay, es-redis-delay) reaches Redis through
// delay-proxy.mjs, BENCH_REDIS_DELAY_MS each way (default 0.5), as in run.mjs.
// Variants that do not use the library (es-*, bare-http, iron-http) run once per round, between
// the two builds, and each build's req/s is also given as a ratio to them (same round, same
// machine load): that is how the targets of bench/RESULTS.md ("≥ 2× express-session") are judged.
import { cpSync, existsSync, mkdirSync, rmSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import { DATA_DIR, ROOT_DIR, formatNumber, markdownTable, median } from "./lib.mjs";
import { measure, throughProxy } from "./measure.mjs";

const AB_DIR = join(DATA_DIR, "ab");
const [command, ...rest] = process.argv.slice(2);

if (command === "snapshot") {
  const target = join(AB_DIR, rest[0]);
  rmSync(target, { recursive: true, force: true });
  mkdirSync(target, { recursive: true });
  cpSync(join(ROOT_DIR, "dist"), join(target, "dist"), { recursive: true });
  cpSync(join(ROOT_DIR, "package.json"), join(target, "package.json"));
  // The library's own dependencies (cookie, devalue, uuid), not the bench's copies.
  symlinkSync(join(ROOT_DIR, "node_modules"), join(target, "node_modules"));
  console.log(`snapshot of dist in ${target}`);
} else if (command === "compare") {
  const [a, b, ...variantIds] = rest;
  if (a === b) throw new Error("compare two different snapshots (copy one under a second name to compare a build with itself)");
  const libraries = [a, b].map((name) => join(AB_DIR, name));
  for (const library of libraries) if (!existsSync(library)) throw new Error(`no snapshot ${library}; run "snapshot" first`);
  const ids = variantIds.length > 0 ? variantIds : ["ps-memory-http", "ps-file-http"];
  const withRedis = (id) => ({ id, redis: id.includes("redis"), postgres: id.includes("postgres"), delay: throughProxy(id) });
  const variants = ids.filter((id) => id.startsWith("ps-")).map(withRedis);
  const references = ids.filter((id) => !id.startsWith("ps-")).map(withRedis);
  const scenarios = (process.env.BENCH_SCENARIOS ?? "hot,new").split(",").map((id) => ({ id }));
  const rounds = Number(process.env.BENCH_ROUNDS ?? 4);
  const report = (round, key, result) =>
    console.log(`round ${round} ${key.padEnd(60)} ${formatNumber(result.rps).padStart(7)} req/s  p50 ${result.p50.toFixed(2)} ms  p99 ${result.p99.toFixed(2)} ms  ${result.cpuPerRequest.toFixed(1)} µs CPU/req${result.proxyCpuPerRequest === undefined ? "" : ` (proxy ${result.proxyCpuPerRequest.toFixed(1)})`}  lost ${result.lost ?? "–"}  (load ${result.loadavg.toFixed(1)})`);
  const results = new Map();
  for (let round = 1; round <= rounds; round++) {
    for (const scenario of scenarios) {
      for (const variant of references) {
        const result = await measure(variant, scenario, round);
        const key = `${variant.id} ${scenario.id}`;
        results.set(key, [...(results.get(key) ?? []), result]);
        report(round, key, result);
      }
      for (const variant of variants) {
        const order = round % 2 === 1 ? libraries : [...libraries].reverse();
        for (const library of order) {
          const result = await measure(variant, scenario, round, { library });
          const key = `${variant.id} ${scenario.id} ${library}`;
          results.set(key, [...(results.get(key) ?? []), result]);
          report(round, key, result);
        }
      }
    }
  }
  const rows = [];
  for (const variant of variants) {
    for (const scenario of scenarios) {
      const [ra, rb] = libraries.map((library) => results.get(`${variant.id} ${scenario.id} ${library}`));
      const ma = median(ra.map((r) => r.rps));
      const mb = median(rb.map((r) => r.rps));
      rows.push([
        `${variant.id} ${scenario.id}`,
        formatNumber(ma),
        formatNumber(mb),
        `${((mb / ma - 1) * 100).toFixed(1)}%`,
        `${median(ra.map((r) => r.p50)).toFixed(2)} → ${median(rb.map((r) => r.p50)).toFixed(2)}`,
        `${median(ra.map((r) => r.p99)).toFixed(2)} → ${median(rb.map((r) => r.p99)).toFixed(2)}`,
        `${median(ra.map((r) => r.cpuPerRequest)).toFixed(1)} → ${median(rb.map((r) => r.cpuPerRequest)).toFixed(1)}`,
        ra.map((r, i) => `${formatNumber(r.rps)}/${formatNumber(rb[i].rps)}`).join(" "),
      ]);
    }
  }
  rmSync(join(DATA_DIR, `run-${process.pid}`), { recursive: true, force: true });
  console.log(`\n${markdownTable(["variant scenario", `${a} req/s`, `${b} req/s`, "change", "p50 ms", "p99 ms", "server CPU µs/req", "per round (a/b)"], rows)}\n`);
  const ratioRows = [];
  for (const reference of references) {
    for (const variant of variants) {
      for (const scenario of scenarios) {
        const ref = results.get(`${reference.id} ${scenario.id}`);
        const ratios = libraries.map((library) => results.get(`${variant.id} ${scenario.id} ${library}`).map((r, i) => r.rps / ref[i].rps));
        // Server CPU per response of the reference over the variant's: the ratio the req/s would have on an otherwise idle CPU-bound machine.
        const cpuRatios = libraries.map((library) => median(results.get(`${variant.id} ${scenario.id} ${library}`).map((r) => r.cpuPerRequest)));
        const refCpu = median(ref.map((r) => r.cpuPerRequest));
        ratioRows.push([
          `${variant.id} ${scenario.id} ÷ ${reference.id}`,
          formatNumber(median(ref.map((r) => r.rps))),
          `${median(ratios[0]).toFixed(2)}×`,
          `${median(ratios[1]).toFixed(2)}×`,
          ratios[0].map((r, i) => `${r.toFixed(2)}/${ratios[1][i].toFixed(2)}`).join(" "),
          `${(refCpu / cpuRatios[0]).toFixed(2)}× / ${(refCpu / cpuRatios[1]).toFixed(2)}×`,
        ]);
      }
    }
  }
  if (ratioRows.length > 0) {
    console.log(`${markdownTable(["req/s ratio (same round)", "reference req/s", a, b, "per round (a/b)", "CPU/req ratio (a / b)"], ratioRows)}\n`);
  }
} else {
  console.error("usage: node bench/ab.mjs snapshot NAME | compare A B [variant …]");
  process.exit(2);
}
