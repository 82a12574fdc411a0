// Measuring one HTTP variant: a fresh server child, warm-up, autocannon, lost-update check.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { DEFAULT_DELAY_MS, startDelayProxy } from "./delay-proxy.mjs";
import { BENCH_DIR, DATA_DIR, cookieFrom, get, percentile, sleep, startChild } from "./lib.mjs";

export const DURATION = Number(process.env.BENCH_DURATION ?? 10);
export const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 10);
export const WARMUP = Number(process.env.BENCH_WARMUP ?? 1);
export const REDIS_URL = process.env.BENCH_REDIS_URL ?? "redis://127.0.0.1:6379";
export const POSTGRES_URL = process.env.BENCH_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/test";
/** ms that delay-proxy.mjs holds each chunk in each direction, for the `-delay` variants. */
export const REDIS_DELAY_MS = Number(process.env.BENCH_REDIS_DELAY_MS ?? DEFAULT_DELAY_MS);
if (!(REDIS_DELAY_MS >= 0)) throw new TypeError(`bench: BENCH_REDIS_DELAY_MS is invalid: ${process.env.BENCH_REDIS_DELAY_MS}. Give milliseconds, 0 or more.`);

/** Whether a variant id reaches Redis through delay-proxy.mjs (`ps-redis-http-delay`, `es-redis-delay`). */
export const throughProxy = (id) => id.endsWith("-delay");

/** Runs autocannon and collects every response time itself: autocannon's histograms keep whole milliseconds. */
export async function load(port, { duration, cookie, path = "/" }) {
  const { default: autocannon } = await import("autocannon");
  const latencies = [];
  const result = await new Promise((resolve, reject) => {
    const instance = autocannon(
      {
        url: `http://127.0.0.1:${port}${path}`,
        connections: CONNECTIONS,
        duration,
        headers: cookie ? { cookie } : {},
      },
      (error, value) => (error ? reject(error) : resolve(value)),
    );
    instance.on("response", (client, statusCode, bytes, responseTime) => latencies.push(responseTime));
  });
  const sorted = Float64Array.from(latencies).sort();
  return {
    rps: result.requests.average,
    total: result.requests.total,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    failed: result.non2xx + result.errors + result.timeouts,
  };
}

/** Removes a finished server's records, so no run leaves keys in Redis for the next one to carry; reports a failure, never throws. */
export async function deleteRedisKeys(prefix) {
  await deleteKeys(prefix).catch((error) => console.error(`bench: could not clean ${prefix}*: ${error.message}`));
}

async function deleteKeys(prefix) {
  const { createClient } = await import("redis");
  const client = createClient({ url: REDIS_URL });
  client.on("error", () => undefined);
  await client.connect();
  try {
    let keys = [];
    for await (const batch of client.scanIterator({ MATCH: `${prefix}*`, COUNT: 1000 })) {
      keys = keys.concat(batch);
      if (keys.length >= 1000) {
        await client.unlink(keys);
        keys = [];
      }
    }
    if (keys.length > 0) await client.unlink(keys);
  } finally {
    await client.quit();
  }
}

/** Drops a finished server's schema (its records, connect-pg-simple's sessions); reports a failure, never throws. */
export async function dropPostgresSchema(schema) {
  const { default: pg } = await import("pg");
  const client = new pg.Client({ connectionString: POSTGRES_URL });
  client.on("error", () => undefined);
  try {
    await client.connect();
    await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  } catch (error) {
    console.error(`bench: could not drop schema ${schema}: ${error.message}`);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/**
 * Writes out the record files earlier measurements left dirty in the page cache, so that they
 * are not flushed during the next one: an fsync on ext4 commits the file system's whole pending
 * journal, and the variant that happened to follow a file-backed one would pay for it.
 */
function settleDisk() {
  try {
    execFileSync("sync", { stdio: "ignore", timeout: 60_000 });
  } catch {
    // No sync(1) here (not Linux): measure anyway.
  }
}

/**
 * The folder of this run's measurements, made once. It carries ext4's TOPDIR flag (`chattr +T`),
 * so that each measurement's folder is placed in a block group of its own. This machine's ext4
 * has no journal, and there every file creation steps, one by one, over each free inode of its
 * group that was deleted in the last minute (six while the inode's table block is not written
 * back: the kernel's RECENTCY_MIN and RECENTCY_DIRTY, against reuse before a crash). In one group,
 * the files replaced during a hot session made the next measurement's creations cost 300–1,300 µs
 * of kernel time instead of 25–50 µs, and the faster a store, the larger that share of its time.
 */
function runFolder() {
  const folder = join(DATA_DIR, `run-${process.pid}`);
  if (!existsSync(folder)) {
    mkdirSync(folder, { recursive: true, mode: 0o700 });
    try {
      execFileSync("chattr", ["+T", folder], { stdio: "ignore" });
    } catch {
      // Not ext4, or no chattr: nothing to spread.
    }
  }
  return folder;
}

/** One variant × scenario × round, in a fresh child process with fresh data. */
export async function measure(variant, scenario, round, { library } = {}) {
  settleDisk();
  const tag = `${variant.id}-${scenario.id}-r${round}${library ? `-${library.split("/").pop()}` : ""}`;
  const dataDir = join(runFolder(), tag);
  const redisPrefix = `persist-session-bench:${process.pid}:${tag}:`;
  const postgresSchema = `bench_${process.pid}_${tag}`.toLowerCase().replace(/[^a-z0-9_]/g, "_").slice(0, 63);
  // A fresh proxy per measurement, in a process of its own; the server reaches Redis through it.
  const proxy = variant.delay ? await startDelayProxy({ target: REDIS_URL, delayMs: REDIS_DELAY_MS }) : undefined;
  const server = startChild(join(BENCH_DIR, "server.mjs"), [variant.id, dataDir], {
    env: {
      BENCH_REDIS_PREFIX: redisPrefix,
      BENCH_POSTGRES_SCHEMA: postgresSchema,
      ...(proxy ? { BENCH_REDIS_URL: proxy.url } : {}),
      ...(library ? { BENCH_LIBRARY: library } : {}),
    },
  });
  try {
    const port = await server.ready;
    let cookie;
    if (scenario.id === "hot") {
      const first = await get(port, "/");
      if (first.status !== 200) throw new Error(`${tag}: the first request answered ${first.status}`);
      cookie = cookieFrom(first.headers);
    }
    if (WARMUP > 0) await load(port, { duration: WARMUP, cookie });
    await sleep(100);
    const before = cookie !== undefined ? Number((await get(port, "/read", { cookie })).body) : undefined;
    await get(port, "/__calls?reset");
    const cpuBefore = await server.cpu();
    const proxyBefore = await proxy?.stats();
    const result = await load(port, { duration: DURATION, cookie });
    const cpuAfter = await server.cpu();
    const proxyAfter = await proxy?.stats();
    // The server's own CPU time per response: unlike req/s, barely moved by other work on the machine.
    result.cpuPerRequest = (cpuAfter.user + cpuAfter.system - cpuBefore.user - cpuBefore.system) / result.total;
    // Let responses that autocannon stopped waiting for finish their writes before reading back.
    await sleep(250);
    const calls = Number((await get(port, "/__calls")).body);
    if (cookie !== undefined) {
      const after = Number((await get(port, "/read", { cookie })).body);
      result.lost = calls - (after - before);
    }
    result.calls = calls;
    // Other work on this machine skews a run: keep the load average beside it.
    result.loadavg = loadavg()[0];
    // What the proxy really added to a PING's round trip at its start (ms), beside the figures it shaped.
    if (proxy) {
      result.proxyAddedMs = proxy.ping.addedMs;
      // The proxy's CPU is not the server's, but it shares the machine's cores with it.
      result.proxyCpuPerRequest = (proxyAfter.cpuMicros - proxyBefore.cpuMicros) / result.total;
    }
    return result;
  } finally {
    await server.stop();
    await proxy?.stop();
    // The data stays until the run ends (run.mjs and ab.mjs remove the run's folder): deleted
    // files slow the next measurement's file creations (see runFolder).
    if (variant.redis) await deleteRedisKeys(redisPrefix);
    if (variant.postgres) await dropPostgresSchema(postgresSchema);
  }
}

