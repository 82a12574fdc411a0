// CPU profile of persist-session servers under the hot-session load: runs the server of
// each variant with `node --cpu-prof`, drives it with autocannon (10 connections, one
// cookie), then prints where the server's CPU time went — self time by function, time
// including callees, and self time by module.
//
//   node bench/profile.mjs [variant …]      default: ps-file-http ps-memory-http
//   node bench/profile.mjs --analyze file.cpuprofile
//   BENCH_PROFILE_DURATION=10 (s), BENCH_PROFILE_SCENARIO=hot (or new: no cookie, a new session per request)
// Profiles are kept in bench/.data/profiles/ (ignored by git) for Chrome DevTools.
import { mkdirSync, readFileSync, readdirSync, renameSync, rmSync } from "node:fs";
import { basename, join } from "node:path";
import { BENCH_DIR, DATA_DIR, ROOT_DIR, cookieFrom, formatNumber, get, markdownTable, sleep, startChild } from "./lib.mjs";
import { deleteRedisKeys } from "./measure.mjs";

const DURATION = Number(process.env.BENCH_PROFILE_DURATION ?? 10);
const SCENARIO = process.env.BENCH_PROFILE_SCENARIO ?? "hot";
const PROFILE_DIR = join(DATA_DIR, "profiles");

/** Where a call frame comes from, short: `dist/records.js`, `node:internal/…`, `express`. */
function moduleOf(url) {
  if (url === "") return "(native / V8)";
  if (url.startsWith("node:")) return url.replace(/^node:internal\/(.*?)(\/.*)?$/, "node:internal/$1");
  const path = url.replace(/^file:\/\//, "");
  const nm = path.lastIndexOf("/node_modules/");
  if (nm !== -1) {
    const rest = path.slice(nm + 14).split("/");
    return rest[0].startsWith("@") ? `${rest[0]}/${rest[1]}` : rest[0];
  }
  if (path.startsWith(ROOT_DIR)) return path.slice(ROOT_DIR.length + 1);
  return basename(path);
}

export function analyze(file, top = 25) {
  const profile = JSON.parse(readFileSync(file, "utf8"));
  const nodes = new Map(profile.nodes.map((node) => [node.id, node]));
  const parent = new Map();
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
  const keyOf = (node) => {
    const { functionName, url, lineNumber } = node.callFrame;
    return `${functionName || "(anonymous)"} ${moduleOf(url)}${url ? `:${lineNumber + 1}` : ""}`;
  };
  const self = new Map();
  const inclusive = new Map();
  const byModule = new Map();
  let total = 0;
  let idle = 0;
  const bump = (map, key, dt) => map.set(key, (map.get(key) ?? 0) + dt);
  for (let i = 0; i < profile.samples.length; i++) {
    const dt = profile.timeDeltas[i] ?? 0;
    const node = nodes.get(profile.samples[i]);
    const name = node.callFrame.functionName;
    if (name === "(idle)") {
      idle += dt;
      continue;
    }
    total += dt;
    bump(self, keyOf(node), dt);
    bump(byModule, ["(garbage collector)", "(program)"].includes(name) ? name : moduleOf(node.callFrame.url), dt);
    const seen = new Set();
    for (let id = node.id; id !== undefined; id = parent.get(id)) {
      const key = keyOf(nodes.get(id));
      if (seen.has(key)) continue;
      seen.add(key);
      bump(inclusive, key, dt);
    }
  }
  const pct = (value) => `${((100 * value) / total).toFixed(1)}%`;
  const ms = (value) => formatNumber(value / 1000);
  const rank = (map, n) => [...map].sort((a, b) => b[1] - a[1]).slice(0, n);
  return [
    `Profile ${basename(file)}: ${ms(total)} ms busy, ${ms(idle)} ms idle.`,
    "",
    "Self time by function:",
    "",
    markdownTable(["function", "self ms", "share"], rank(self, top).map(([key, value]) => [key, ms(value), pct(value)])),
    "",
    "Time including callees (persist-session's own functions and the request path):",
    "",
    markdownTable(
      ["function", "total ms", "share"],
      rank(new Map([...inclusive].filter(([key]) => / dist\//.test(key) || /^(emit|parserOnIncoming|processTicksAndRejections)/.test(key))), top).map(([key, value]) => [key, ms(value), pct(value)]),
    ),
    "",
    "Self time by module:",
    "",
    markdownTable(["module", "self ms", "share"], rank(byModule, 20).map(([key, value]) => [key, ms(value), pct(value)])),
  ].join("\n");
}

async function profileVariant(variant) {
  const { default: autocannon } = await import("autocannon");
  const dataDir = join(DATA_DIR, `profile-${process.pid}`, variant);
  const name = `${variant}${SCENARIO === "hot" ? "" : `-${SCENARIO}`}.cpuprofile`;
  // Worker threads (the FileStore's) inherit --cpu-prof and write profiles of their own: each
  // thread's default name ends in `.<pid>.<thread id>.<seq>.cpuprofile`, the main thread's id is 0.
  const threadsDir = join(PROFILE_DIR, `threads-${process.pid}`);
  mkdirSync(threadsDir, { recursive: true });
  const redisPrefix = `persist-session-profile:${process.pid}:${variant}:`;
  const server = startChild(join(BENCH_DIR, "server.mjs"), [variant, dataDir], {
    execArgv: ["--cpu-prof", "--cpu-prof-dir", threadsDir],
    env: { BENCH_REDIS_PREFIX: redisPrefix },
  });
  try {
    const port = await server.ready;
    const cookie = SCENARIO === "hot" ? cookieFrom((await get(port, "/")).headers) : undefined;
    const result = await autocannon({ url: `http://127.0.0.1:${port}/`, connections: 10, duration: DURATION, headers: cookie ? { cookie } : {} });
    console.log(`${variant} (${SCENARIO}): ${formatNumber(result.requests.average)} req/s under the profiler (profiling slows it down)`);
    await sleep(200);
  } finally {
    await server.stop();
    rmSync(dataDir, { recursive: true, force: true });
    if (variant.includes("redis")) await deleteRedisKeys(redisPrefix);
  }
  const main = readdirSync(threadsDir).find((file) => /\.\d+\.0\.\d+\.cpuprofile$/.test(file));
  if (main === undefined) throw new Error(`no profile of the server's main thread in ${threadsDir}`);
  renameSync(join(threadsDir, main), join(PROFILE_DIR, name));
  rmSync(threadsDir, { recursive: true, force: true });
  return join(PROFILE_DIR, name);
}

if (process.argv[2] === "--analyze") {
  console.log(analyze(process.argv[3], Number(process.argv[4] ?? 25)));
} else {
  const variants = process.argv.slice(2).length > 0 ? process.argv.slice(2) : ["ps-file-http", "ps-memory-http"];
  for (const variant of variants) {
    const file = await profileVariant(variant);
    console.log(`\n## ${variant}\n\n${analyze(file)}\n`);
  }
  rmSync(join(DATA_DIR, `profile-${process.pid}`), { recursive: true, force: true });
}
