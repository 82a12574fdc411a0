// Scale checks of the FileStore with 100,000 records on disk:
//  1. restoring one session costs the same with 100,000 records as with 10 (no directory scan
//     on the request path);
//  2. a sweep over 100,000 records (half expired) never blocks the event loop for long
//     (monitorEventLoopDelay in the server, while requests keep arriving);
//  3. the server's memory does not grow with the number of records on disk.
// Records are written directly in the FileStore format (header line + devalue text) into a
// 0700 directory under bench/.data/, and removed afterwards.
//
//   node bench/scale.mjs         (npm run bench -- scale builds first)
//   BENCH_SCALE_RECORDS=20000    fewer records for a smoke run
import { randomUUID } from "node:crypto";
import { mkdirSync, readdirSync, rmSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import http from "node:http";
import { join } from "node:path";
import { PerformanceObserver, monitorEventLoopDelay } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { DATA_DIR, SECRET, formatNumber, markdownTable, median, percentile, startChild, writeResultsSection } from "./lib.mjs";

const KEY = "app-state";
const RECORDS = Number(process.env.BENCH_SCALE_RECORDS ?? 100_000);
const SMALL = 10;
const RESTORE_REQUESTS = Number(process.env.BENCH_SCALE_REQUESTS ?? 3_000);
const DAY = 86_400_000;

// ---------------------------------------------------------------- the server (child) side
async function serve(dir) {
  const { persist, persistSession, FileStore } = await import("persist-session");
  const State = persist(KEY)(
    class AppState {
      count = 0;
    },
  );
  // cacheSize 0: every request reads its record from disk, which is what this measures;
  // sweepInterval 0: the sweep runs when the parent asks, not on a timer.
  const sessions = persistSession({ secret: SECRET, store: new FileStore({ dir }), cacheSize: 0, sweepInterval: 0 });
  const server = http.createServer(async (req, res) => {
    if (req.url === "/__sweep") {
      const watch = watchEventLoop();
      const start = performance.now();
      const removed = await sessions.sweep();
      const ms = performance.now() - start;
      res.end(JSON.stringify({ removed, ms, ...watch.stop() }));
      return;
    }
    sessions(req, res, () => res.end(String(new State().count)));
  });
  server.keepAliveTimeout = 60_000;
  server.listen(0, "127.0.0.1", () => process.send({ port: server.address().port }));
  process.on("message", (message) => {
    if (message === "stop") {
      server.closeAllConnections();
      server.close();
      void sessions.close().then(() => process.exit(0));
    }
    if (message === "memory") {
      globalThis.gc?.();
      const { rss, heapUsed } = process.memoryUsage();
      process.send({ memory: { rss, heapUsed } });
    }
  });
  process.on("disconnect", () => process.exit(0));
}

/**
 * Watches this process's event loop: monitorEventLoopDelay for the distribution, plus a 5 ms
 * interval that notes each stall over 50 ms with its wall-clock time (to line it up with the
 * control process) and the GC pauses seen around then.
 */
function watchEventLoop() {
  const delay = monitorEventLoopDelay({ resolution: 10 });
  delay.enable();
  const stalls = [];
  const gcs = [];
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) if (entry.duration > 20) gcs.push({ at: performance.timeOrigin + entry.startTime, ms: entry.duration });
  });
  observer.observe({ entryTypes: ["gc"] });
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    if (now - last > 50) stalls.push({ at: performance.timeOrigin + last, ms: now - last });
    last = now;
  }, 5);
  return {
    stop() {
      clearInterval(timer);
      delay.disable();
      observer.disconnect();
      return { maxDelayMs: delay.max / 1e6, p99DelayMs: delay.percentile(99) / 1e6, meanDelayMs: delay.mean / 1e6, stalls, gcs };
    },
  };
}

/** A process doing nothing but watching its own event loop: stalls it sees come from the machine. */
function control() {
  const watch = watchEventLoop();
  process.on("message", (message) => {
    if (message === "stop") process.send({ control: watch.stop() }, () => process.exit(0));
  });
  process.send({ port: 0 });
}

// ---------------------------------------------------------------- the measuring (parent) side

/** Writes `count` records (the first `expired` of them already expired); resolves with their ids. */
async function writeRecords(dir, count, expired, data) {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const now = Date.now();
  const ids = Array.from({ length: count }, () => randomUUID());
  let next = 0;
  const worker = async () => {
    while (next < ids.length) {
      const i = next++;
      const header = { v: 1, key: KEY, version: 1, updatedAt: now, expires: i < expired ? now - DAY : now + 14 * DAY };
      await writeFile(join(dir, ids[i]), `${JSON.stringify(header)}\n${data}`, { mode: 0o600 });
    }
  };
  await Promise.all(Array.from({ length: 32 }, worker));
  return { ids, live: ids.slice(expired) };
}

const keepAlive = new http.Agent({ keepAlive: true, maxSockets: 1 });
/** The sweep's request gets a connection of its own, so restores are not queued behind it. */
const sweepAgent = new http.Agent({ keepAlive: false });
function request(port, path, cookie, agent = keepAlive) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, path, agent, headers: cookie ? { cookie } : {} }, (res) => {
      let body = "";
      res.on("data", (chunk) => (body += chunk));
      res.on("end", () => resolve({ status: res.statusCode, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

/** Sequential requests, each restoring one record (cacheSize 0); per-request latency in ms. */
async function restoreLatencies(port, cookies, count) {
  const times = [];
  for (let i = 0; i < count; i++) {
    const start = process.hrtime.bigint();
    const { status, body } = await request(port, "/", cookies[i % cookies.length]);
    times.push(Number(process.hrtime.bigint() - start) / 1e6);
    if (status !== 200 || body !== "7") throw new Error(`restore answered ${status} ${body}`);
  }
  return times;
}

async function main() {
  const { CookieSigner } = await import("../dist/cookie-signing.js");
  const { StateCodec } = await import("../dist/serialization.js");
  const signer = new CookieSigner([SECRET]);
  const data = new StateCodec().serialize({ count: 7 }, "AppState");
  const root = join(DATA_DIR, `scale-${process.pid}`);
  const rows = [];
  try {
    console.log(`scale: writing ${formatNumber(RECORDS)} records (half expired) and ${SMALL} records …`);
    let start = performance.now();
    const big = await writeRecords(join(root, "big"), RECORDS, RECORDS / 2, data);
    const writeSeconds = (performance.now() - start) / 1000;
    const small = await writeRecords(join(root, "small"), SMALL, 0, data);
    console.log(`scale: wrote them in ${writeSeconds.toFixed(1)} s`);

    const cookiesOf = (ids) => ids.map((id) => `${KEY}=${signer.sign(KEY, id)}`);
    // Both runs restore 10 distinct records in turn; the big directory's are picked at random among the live half.
    const bigSample = [];
    for (let i = 0; i < SMALL; i++) bigSample.push(big.live[Math.floor(Math.random() * big.live.length)]);
    const sets = { small: { dir: join(root, "small"), cookies: cookiesOf(small.live) }, big: { dir: join(root, "big"), cookies: cookiesOf(bigSample) } };

    const latency = { small: [], big: [] };
    const memory = { small: [], big: [] };
    let sweep;
    let duringSweep;
    // Interleaved: small, big, small, big; a fresh server process each time.
    for (const which of ["small", "big", "small", "big"]) {
      const server = startChild(fileURLToPath(import.meta.url), ["--serve", sets[which].dir], { execArgv: ["--expose-gc"] });
      try {
        const port = await server.ready;
        const startup = await server.memory();
        await restoreLatencies(port, sets[which].cookies, 300); // warm-up
        const times = await restoreLatencies(port, sets[which].cookies, RESTORE_REQUESTS);
        latency[which].push(...times);
        const after = await server.memory();
        memory[which].push({ startup, after });
        console.log(
          `scale: ${which.padEnd(5)} restore p50 ${percentile(times.sort((a, b) => a - b), 50).toFixed(3)} ms  ` +
            `rss ${(after.rss / 2 ** 20).toFixed(1)} MiB  heapUsed ${(after.heapUsed / 2 ** 20).toFixed(1)} MiB`,
        );
        if (which === "big" && sweep === undefined) {
          // The sweep, while restores keep arriving (about 100 a second) and a control process
          // watches its own event loop: stalls both see at once are the machine's, not the sweep's.
          const watcher = startChild(fileURLToPath(import.meta.url), ["--control"]);
          await watcher.ready;
          const controlReport = new Promise((resolve) => watcher.child.on("message", (m) => m?.control && resolve(m.control)));
          let sweeping = true;
          const alongside = (async () => {
            const t = [];
            while (sweeping) {
              t.push(...(await restoreLatencies(port, sets.big.cookies, 1)));
              await new Promise((resolve) => setTimeout(resolve, 10));
            }
            return t;
          })();
          sweep = JSON.parse((await request(port, "/__sweep", undefined, sweepAgent)).body);
          sweeping = false;
          watcher.child.send("stop");
          sweep.control = await controlReport;
          await watcher.stop();
          duringSweep = (await alongside).sort((a, b) => a - b);
          sweep.remaining = readdirSync(sets.big.dir).filter((name) => name.length === 36).length;
          sweep.memory = await server.memory();
          console.log(
            `scale: sweep removed ${sweep.removed} in ${(sweep.ms / 1000).toFixed(1)} s, max event-loop delay ${sweep.maxDelayMs.toFixed(1)} ms ` +
              `(control process: ${sweep.control.maxDelayMs.toFixed(1)} ms)`,
          );
        }
      } finally {
        await server.stop();
      }
    }

    const mib = (bytes) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;
    const sorted = { small: latency.small.sort((a, b) => a - b), big: latency.big.sort((a, b) => a - b) };
    const p50 = { small: percentile(sorted.small, 50), big: percentile(sorted.big, 50) };
    const p99 = { small: percentile(sorted.small, 99), big: percentile(sorted.big, 99) };
    const restoreRatio = p50.big / p50.small;
    const memoryAfter = (which, field) => median(memory[which].map((m) => m.after[field]));
    const heapGrowth = memoryAfter("big", "heapUsed") - memoryAfter("small", "heapUsed");
    const rssGrowth = memoryAfter("big", "rss") - memoryAfter("small", "rss");
    const restoreOk = restoreRatio <= 1.25 || p50.big - p50.small < 0.1;
    const sweepComplete = sweep.removed === RECORDS / 2 && sweep.remaining === RECORDS / 2;
    // A stall of the server that the idle control process shared (overlapping in time) is the machine's.
    const shared = (stall) => sweep.control.stalls.some((c) => c.at < stall.at + stall.ms && stall.at < c.at + c.ms);
    const ownStalls = sweep.stalls.filter((stall) => !shared(stall));
    const longestOwn = Math.max(0, ...ownStalls.map((stall) => stall.ms));
    const sweepVerdict = !sweepComplete
      ? "**missed** (wrong number of records removed)"
      : sweep.maxDelayMs <= 50
        ? "met"
        : ownStalls.length === 0
          ? `met for the sweep: every stall over 50 ms (longest ${sweep.maxDelayMs.toFixed(0)} ms) was shared by the idle control process, i.e. the machine's`
          : `**missed**: ${ownStalls.length} stall(s) over 50 ms not shared by the control process, longest ${longestOwn.toFixed(0)} ms`;
    const memoryOk = Math.abs(heapGrowth) < 4 * 2 ** 20 && Math.abs(rssGrowth) < 16 * 2 ** 20;

    rows.push(
      [`restore one session, p50 (${formatNumber(RESTORE_REQUESTS * 2)} requests each, cacheSize 0)`, `${p50.small.toFixed(3)} ms`, `${p50.big.toFixed(3)} ms`, `${restoreRatio.toFixed(2)}× ${restoreOk ? "(same)" : "(**grows**)"}`],
      ["restore one session, p99", `${p99.small.toFixed(3)} ms`, `${p99.big.toFixed(3)} ms`, `${(p99.big / p99.small).toFixed(2)}×`],
      ["server heapUsed after the restores (after GC)", mib(memoryAfter("small", "heapUsed")), mib(memoryAfter("big", "heapUsed")), `${heapGrowth >= 0 ? "+" : ""}${mib(heapGrowth)} ${memoryOk ? "(flat)" : "(**grows**)"}`],
      ["server RSS after the restores", mib(memoryAfter("small", "rss")), mib(memoryAfter("big", "rss")), `${rssGrowth >= 0 ? "+" : ""}${mib(rssGrowth)}`],
    );
    const markdown = [
      "## Scale: FileStore with many records on disk",
      "",
      `${formatNumber(RECORDS)} records written directly in the FileStore format (${writeSeconds.toFixed(1)} s), half of them expired, against a directory of ${SMALL}. ` +
        "Each server is a fresh child process with `cacheSize: 0`, so every request reads its record from disk; both restore 10 different records in turn " +
        "(for the big directory picked at random among its live records), sequentially over one keep-alive connection, after 300 warm-up requests; two runs each, interleaved.",
      "",
      markdownTable(["measure", `${SMALL} records`, `${formatNumber(RECORDS)} records`, "big / small"], rows),
      "",
      `Sweep of ${formatNumber(RECORDS)} records (\`sessions.sweep()\`, half expired) while sequential restores kept arriving: ` +
        `removed ${formatNumber(sweep.removed)} in ${(sweep.ms / 1000).toFixed(1)} s, ${formatNumber(sweep.remaining)} left; ` +
        `server event-loop delay (monitorEventLoopDelay, 10 ms resolution) max ${sweep.maxDelayMs.toFixed(1)} ms, p99 ${sweep.p99DelayMs.toFixed(1)} ms, mean ${sweep.meanDelayMs.toFixed(1)} ms, ` +
        `${sweep.stalls.length} stall(s) over 50 ms (${ownStalls.length} not shared by the control process), ${sweep.gcs.length} GC pause(s) over 20 ms; ` +
        `an idle control process at the same time: max ${sweep.control.maxDelayMs.toFixed(1)} ms, ${sweep.control.stalls.length} stall(s) over 50 ms; ` +
        `${formatNumber(duringSweep.length)} restores during the sweep (paced, about 100/s): p50 ${percentile(duringSweep, 50).toFixed(2)} ms, p99 ${percentile(duringSweep, 99).toFixed(2)} ms, max ${duringSweep.at(-1).toFixed(1)} ms; ` +
        `server after the sweep: heapUsed ${mib(sweep.memory.heapUsed)}, RSS ${mib(sweep.memory.rss)}.`,
      "",
      markdownTable(
        ["check", "result"],
        [
          ["restore latency independent of the number of records", restoreOk ? "met" : "**missed**"],
          ["sweep removes exactly the expired half and never blocks the event loop > 50 ms", sweepVerdict],
          ["server memory independent of the number of records on disk", memoryOk ? "met" : "**missed**"],
        ],
      ),
    ].join("\n");
    return markdown;
  } finally {
    rmSync(root, { recursive: true, force: true });
    console.log(`scale: removed ${root}`);
  }
}

if (process.argv[2] === "--serve") {
  await serve(process.argv[3]);
} else if (process.argv[2] === "--control") {
  control();
} else {
  const markdown = await main();
  console.log(`\n${markdown}\n`);
  writeResultsSection("scale", markdown);
}
