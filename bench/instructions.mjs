// Instructions the server executes per request, counted by valgrind's callgrind: unlike req/s and
// CPU time, barely moved by other work on the machine (callgrind counts instructions, not time), so
// two builds can be told apart by less than the 3-5 % that the machine's noise hides (issue #18).
//
//   node bench/instructions.mjs A B [variant …]    snapshots of `node bench/ab.mjs snapshot NAME`
//   BENCH_REQUESTS (default 4000) counted per measurement, after BENCH_WARMUP_REQUESTS (default 6000)
//   BENCH_ROUNDS (default 2), BENCH_SCENARIOS (default hot,new); variants as in ab.mjs (ps-memory-http)
//   BENCH_KEEP_DUMPS=1 keeps each callgrind dump and prints its path, for `callgrind_annotate`
//   (functions of node and V8 by name; JavaScript compiled at run time shows as addresses)
//   BENCH_NODE_FLAGS extra flags for the server's node: "--perf-basic-prof --logfile=/dev/null"
//   writes /tmp/perf-<pid>.map, which names those addresses (start, size, name per line)
//
// The server runs under `valgrind --tool=callgrind` with node's --single-threaded (no compiler or GC
// threads, whose share would vary), instrumentation off until the warm-up is done; then counting is
// switched on (callgrind_control -i on), BENCH_REQUESTS requests are sent one after another on one
// keep-alive connection, and the count is dumped. Needs valgrind (Debian's package).
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BENCH_DIR, cookieFrom, get, median, startChild } from "./lib.mjs";

const [a, b, ...variantIds] = process.argv.slice(2);
if (a === undefined || b === undefined) throw new Error("usage: node bench/instructions.mjs SNAPSHOT_A SNAPSHOT_B [variant …]");
const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 4000);
const WARMUP = Number(process.env.BENCH_WARMUP_REQUESTS ?? 6000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
const KEEP_DUMPS = process.env.BENCH_KEEP_DUMPS === "1";
const NODE_FLAGS = (process.env.BENCH_NODE_FLAGS ?? "").split(" ").filter(Boolean);
const scenarios = (process.env.BENCH_SCENARIOS ?? "hot,new").split(",");
const variants = variantIds.length > 0 ? variantIds : ["ps-memory-http"];
const libraries = [a, b].map((name) => join(BENCH_DIR, ".data", "ab", name));

/** `count` requests one after another on one keep-alive connection, on `cookie` (hot) or none (each a new session). */
async function send(port, count, cookie) {
  for (let i = 0; i < count; i++) {
    const response = await get(port, "/", cookie ? { cookie } : {});
    if (response.status !== 200) throw new Error(`bench: a request answered ${response.status}`);
  }
}

async function count(variant, scenario, library) {
  const outDir = mkdtempSync(join(tmpdir(), "ps-instructions-"));
  const server = startChild(join(BENCH_DIR, "server.mjs"), [variant, join(outDir, "data")], {
    execPath: "valgrind",
    execArgv: ["-q", "--tool=callgrind", "--instr-atstart=no", `--callgrind-out-file=${join(outDir, "callgrind.out.%p")}`, process.execPath, "--single-threaded", ...NODE_FLAGS],
    env: { BENCH_LIBRARY: library },
    timeoutMs: 300_000,
  });
  try {
    const port = await server.ready;
    const cookie = scenario === "hot" ? cookieFrom((await get(port, "/")).headers) : undefined;
    await send(port, WARMUP, cookie);
    execFileSync("callgrind_control", ["-i", "on", String(server.child.pid)], { stdio: "ignore" });
    await send(port, REQUESTS, cookie);
    execFileSync("callgrind_control", ["-d", String(server.child.pid)], { stdio: "ignore" });
    // The dump callgrind_control asked for (`callgrind.out.<pid>.1`), not the one written at exit.
    const dumps = readdirSync(outDir).filter((name) => /^callgrind\.out\.\d+\.\d+$/.test(name));
    let total = 0;
    for (const name of dumps) {
      const summary = /^summary: (\d+)/m.exec(readFileSync(join(outDir, name), "utf8"));
      if (summary) total += Number(summary[1]);
    }
    if (total === 0) throw new Error(`bench: no callgrind dump in ${outDir}`);
    if (KEEP_DUMPS) console.log(`callgrind dump: ${dumps.map((name) => join(outDir, name)).join(" ")}`);
    return total / REQUESTS;
  } finally {
    await server.stop();
    if (!KEEP_DUMPS) rmSync(outDir, { recursive: true, force: true });
  }
}

const results = new Map();
for (let round = 1; round <= ROUNDS; round++) {
  for (const variant of variants) {
    for (const scenario of scenarios) {
      const order = round % 2 === 1 ? libraries : [...libraries].reverse();
      for (const library of order) {
        const perRequest = await count(variant, scenario, library);
        const key = `${variant} ${scenario} ${library.split("/").pop()}`;
        results.set(key, [...(results.get(key) ?? []), perRequest]);
        console.log(`round ${round} ${key.padEnd(40)} ${Math.round(perRequest).toLocaleString("en-US").padStart(10)} instructions/request`);
      }
    }
  }
}
for (const variant of variants) {
  for (const scenario of scenarios) {
    const [x, y] = [a, b].map((name) => median(results.get(`${variant} ${scenario} ${name}`)));
    console.log(`${variant} ${scenario}: ${Math.round(x).toLocaleString("en-US")} → ${Math.round(y).toLocaleString("en-US")} instructions/request (${((y / x - 1) * 100).toFixed(2)} %)`);
  }
}
