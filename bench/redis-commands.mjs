// Redis commands per request of a variant, counted with MONITOR (issue #22): on a network every
// command the app waits for is a round trip, and the lease protocol, not the work, then sets a
// request's latency.
//
//   node bench/redis-commands.mjs [variant …]      default: ps-redis-http
//   BENCH_COMMAND_REQUESTS (default 200), BENCH_COMMAND_CONCURRENCY (default 1: one request at a
//   time, so each request's commands are its own), BENCH_COMMAND_SCENARIO (hot or new, default hot)
//
// A fresh server per variant (server.mjs, as in the HTTP table), a key prefix of its own, then
// MONITOR on a separate connection while the requests run. Counted: every command from the
// connections that sent a command naming the variant's prefix (so MULTI, EXEC and PING on them
// count too), by command name; commands a Lua script runs inside Redis (MONITOR's "lua" source)
// are listed apart, since they cost Redis CPU but no round trip. A -delay variant also reports
// the chunks the proxy carried from the app to Redis per request: commands sent together in one
// write (a pipeline) share one round trip, so that is closer to the round trips themselves.
import http from "node:http";
import net from "node:net";
import { join } from "node:path";
import { startDelayProxy, targetOf } from "./delay-proxy.mjs";
import { BENCH_DIR, cookieFrom, formatNumber, get, sleep, startChild } from "./lib.mjs";
import { REDIS_DELAY_MS, REDIS_URL, deleteRedisKeys, throughProxy } from "./measure.mjs";

const REQUESTS = Number(process.env.BENCH_COMMAND_REQUESTS ?? 200);
const CONCURRENCY = Math.max(1, Number(process.env.BENCH_COMMAND_CONCURRENCY ?? 1));
const SCENARIO = process.env.BENCH_COMMAND_SCENARIO ?? "hot";
/** Requests before counting, so a hot session is in its steady state (cache filled, scripts loaded). */
const WARMUP_REQUESTS = 20;

if (!["hot", "new"].includes(SCENARIO)) {
  console.error(`redis-commands: BENCH_COMMAND_SCENARIO is invalid: ${SCENARIO}. Use hot or new.`);
  process.exit(2);
}

/** A MONITOR connection; `lines` collects what Redis reports, `stop()` ends it. */
async function monitor() {
  const socket = net.connect(targetOf(REDIS_URL));
  const lines = [];
  let buffered = "";
  let confirmed;
  const ready = new Promise((resolve, reject) => {
    confirmed = resolve;
    socket.once("error", reject);
  });
  socket.on("data", (data) => {
    buffered += data.toString("utf8");
    const parts = buffered.split("\r\n");
    buffered = parts.pop();
    for (const line of parts) {
      if (line === "+OK") confirmed();
      else lines.push(line);
    }
  });
  socket.write("MONITOR\r\n");
  await ready;
  return { lines, stop: () => socket.destroy() };
}

/** `n` GETs of / with at most `concurrency` in flight; resolves with the number of non-200 answers. */
async function requests(port, n, concurrency, cookie) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  let started = 0;
  let failed = 0;
  const one = () =>
    new Promise((resolve, reject) => {
      const req = http.request({ host: "127.0.0.1", port, path: "/", agent, headers: cookie ? { cookie } : {} }, (res) => {
        if (res.statusCode !== 200) failed++;
        res.resume();
        res.on("end", resolve);
      });
      req.on("error", reject);
      req.end();
    });
  const worker = async () => {
    while (started < n) {
      started++;
      await one();
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  agent.destroy();
  return failed;
}

const MONITOR_LINE = /^\+\d+\.\d+ \[\d+ ([^\]]+)\] "((?:[^"\\]|\\.)*)"(.*)$/;

/** Counts of MONITOR lines by command: the app's connections' and those run inside scripts. */
function countCommands(lines, prefix) {
  const parsed = [];
  for (const line of lines) {
    const match = MONITOR_LINE.exec(line);
    if (match) parsed.push({ source: match[1], command: match[2].toUpperCase(), rest: match[3] });
  }
  const own = new Set(parsed.filter((entry) => entry.source !== "lua" && entry.rest.includes(prefix)).map((entry) => entry.source));
  const byCommand = new Map();
  const inScripts = new Map();
  for (const entry of parsed) {
    const map = entry.source === "lua" ? (entry.rest.includes(prefix) ? inScripts : undefined) : own.has(entry.source) ? byCommand : undefined;
    if (map !== undefined) map.set(entry.command, (map.get(entry.command) ?? 0) + 1);
  }
  return { byCommand, inScripts, connections: own.size };
}

function perRequest(map) {
  const total = [...map.values()].reduce((sum, count) => sum + count, 0);
  const parts = [...map].sort((a, b) => b[1] - a[1]).map(([command, count]) => `${command} ${formatNumber(count / REQUESTS, 2)}`);
  return { total: total / REQUESTS, text: parts.join(" · ") || "none" };
}

async function count(id) {
  if (!id.includes("redis")) throw new Error(`redis-commands: ${id} does not use Redis. Give a Redis variant, e.g. ps-redis-http or es-redis.`);
  const prefix = `persist-session-bench:${process.pid}:${id}-commands:`;
  const proxy = throughProxy(id) ? await startDelayProxy({ target: REDIS_URL, delayMs: REDIS_DELAY_MS }) : undefined;
  const server = startChild(join(BENCH_DIR, "server.mjs"), [id, ""], {
    env: { BENCH_REDIS_PREFIX: prefix, ...(proxy ? { BENCH_REDIS_URL: proxy.url } : {}) },
  });
  try {
    const port = await server.ready;
    let cookie;
    if (SCENARIO === "hot") {
      const first = await get(port, "/");
      if (first.status !== 200) throw new Error(`${id}: the first request answered ${first.status}`);
      cookie = cookieFrom(first.headers);
    }
    await requests(port, WARMUP_REQUESTS, CONCURRENCY, cookie);
    await sleep(200);
    const watch = await monitor();
    const before = await proxy?.stats();
    const failed = await requests(port, REQUESTS, CONCURRENCY, cookie);
    // Writes and releases that finish after the response still belong to the request.
    await sleep(300);
    const after = await proxy?.stats();
    watch.stop();
    const { byCommand, inScripts, connections } = countCommands(watch.lines, prefix);
    const sent = perRequest(byCommand);
    const scripted = perRequest(inScripts);
    const how = CONCURRENCY === 1 ? "one at a time" : `${CONCURRENCY} at a time`;
    console.log(`${id} ${SCENARIO}, ${REQUESTS} requests ${how}${failed > 0 ? ` (${failed} not 200)` : ""}:`);
    console.log(`  ${formatNumber(sent.total, 2)} commands/request from the app (${connections} connection${connections === 1 ? "" : "s"}): ${sent.text}`);
    console.log(`  ${formatNumber(scripted.total, 2)} commands/request inside Lua scripts: ${scripted.text}`);
    if (proxy) {
      const writes = (after.up.chunks - before.up.chunks) / REQUESTS;
      const cpu = (after.cpuMicros - before.cpuMicros) / REQUESTS;
      console.log(`  ${formatNumber(writes, 2)} chunks/request from the app to Redis through the proxy (${REDIS_DELAY_MS} ms each way; ${proxy.ping.addedMs.toFixed(2)} ms added per PING)`);
      console.log(`  proxy: ${formatNumber(cpu, 1)} µs CPU/request; mean hold ${after.up.meanHeldMs.toFixed(3)} ms app → Redis, ${after.down.meanHeldMs.toFixed(3)} ms back`);
    }
  } finally {
    await server.stop();
    await proxy?.stop();
    await deleteRedisKeys(prefix);
  }
}

const ids = process.argv.slice(2);
for (const id of ids.length > 0 ? ids : ["ps-redis-http"]) await count(id);
