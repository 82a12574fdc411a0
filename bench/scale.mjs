// Scale checks of the FileStore with 100,000 records on disk:
//  1. restoring one session costs the same with 100,000 records as with 10 (no directory scan
//     on the request path);
//  2. a sweep over 100,000 records (half expired) never blocks the event loop for long
//     (monitorEventLoopDelay in the server, while requests keep arriving): paced restores, and
//     the HTTP benchmark's hot load (its FileStore server, autocannon, 10 connections, one cookie);
//  3. the server's memory does not grow with the number of records on disk.
// Records are written directly in the FileStore format (header line + devalue text) into a
// 0700 directory under bench/.data/, and removed afterwards.
//
//   node bench/scale.mjs         (npm run bench -- scale builds first)
//   BENCH_SCALE_RECORDS=20000    fewer records for a smoke run
//   BENCH_SCALE_PARTS=hot        only the sweep under the hot load (restore,hot: the default both)
import { randomUUID } from "node:crypto";
import { mkdirSync, readdirSync, rmSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import http from "node:http";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { BENCH_DIR, DATA_DIR, SECRET, cookieFrom, formatNumber, get, markdownTable, median, percentile, sleep, startChild, watchEventLoop, writeResultsSection } from "./lib.mjs";
import { CONNECTIONS } from "./measure.mjs";

const KEY = "app-state";
const RECORDS = Number(process.env.BENCH_SCALE_RECORDS ?? 100_000);
const SMALL = 10;
const RESTORE_REQUESTS = Number(process.env.BENCH_SCALE_REQUESTS ?? 3_000);
const DAY = 86_400_000;
const PARTS = new Set((process.env.BENCH_SCALE_PARTS ?? "restore,hot").split(","));

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


/** A control process watching its own event loop over `run`: stalls it sees too are the machine's. */
async function withControl(run) {
  const watcher = startChild(fileURLToPath(import.meta.url), ["--control"]);
  await watcher.ready;
  const report = new Promise((resolve) => watcher.child.on("message", (m) => m?.control && resolve(m.control)));
  try {
    const result = await run();
    watcher.child.send("stop");
    return { result, control: await report };
  } finally {
    await watcher.stop();
  }
}

/**
 * The sweep of `RECORDS` records (half expired) inside the HTTP benchmark's own FileStore server
 * (server.mjs ps-file-http, default options), while autocannon runs its hot load against it: 10
 * connections sending one browser's cookie, each request an increment. The server watches its event
 * loop over the sweep, and for 5 s of the same load without a sweep before it (the load's own delays).
 */
async function sweepUnderHotLoad(root, data) {
  const dir = join(root, "hot");
  await writeRecords(dir, RECORDS, RECORDS / 2, data);
  const server = startChild(join(BENCH_DIR, "server.mjs"), ["ps-file-http", dir], { env: { BENCH_SWEEP_INTERVAL: "0" } });
  try {
    const port = await server.ready;
    const cookie = cookieFrom((await get(port, "/")).headers);
    const { default: autocannon } = await import("autocannon");
    let responses = 0;
    let failed = 0;
    const instance = autocannon({ url: `http://127.0.0.1:${port}/`, connections: CONNECTIONS, duration: 3600, headers: { cookie } });
    instance.on("response", (client, status) => {
      responses++;
      if (status !== 200) failed++;
    });
    const finished = new Promise((resolve) => instance.on("done", resolve));
    try {
      await sleep(2000); // warm-up
      let mark = responses;
      const alone = JSON.parse((await request(port, "/__watch?ms=5000", undefined, sweepAgent)).body);
      alone.rps = (responses - mark) / (alone.ms / 1000);
      mark = responses;
      const { result: sweep, control } = await withControl(async () => JSON.parse((await request(port, "/__sweep", undefined, sweepAgent)).body));
      sweep.rps = (responses - mark) / (sweep.ms / 1000);
      sweep.control = control;
      sweep.remaining = readdirSync(dir).filter((name) => name.length === 36).length;
      return { alone, sweep, failed };
    } finally {
      instance.stop();
      await finished;
    }
  } finally {
    await server.stop();
  }
}

/** The markdown of {@link sweepUnderHotLoad}'s figures, and whether the 50 ms bound held. */
function hotSweepReport({ alone, sweep, failed }) {
  const shared = (stall) => sweep.control.stalls.some((c) => c.at < stall.at + stall.ms && stall.at < c.at + c.ms);
  const own = sweep.stalls.filter((stall) => !shared(stall));
  const complete = sweep.removed === RECORDS / 2 && sweep.remaining === RECORDS / 2 + 1;
  const longest = sweep.stalls.reduce((a, b) => (b.ms > (a?.ms ?? 0) ? b : a), undefined);
  const verdict = !complete
    ? "**missed** (wrong number of records removed)"
    : failed > 0
      ? `**missed** (${failed} failed responses)`
      : sweep.maxDelayMs <= 50
        ? "met"
        : own.length === 0
          ? `met for the sweep: every stall over 50 ms (longest ${sweep.maxDelayMs.toFixed(0)} ms) was shared by the idle control process, i.e. the machine's`
          : sweep.maxStallOnCpuMs <= 50
            ? `met for the process, not on the clock: stalls up to ${sweep.maxDelayMs.toFixed(0)} ms, but in none was the server's main thread on a CPU for more than ${sweep.maxStallOnCpuMs.toFixed(0)} ms (the rest it waited for one, or for GC helper threads)`
            : `**missed**: ${own.length} stall(s) over 50 ms not shared by the control process, longest ${Math.max(...own.map((stall) => stall.ms)).toFixed(0)} ms; the main thread was on a CPU for up to ${sweep.maxStallOnCpuMs.toFixed(0)} ms of one`;
  const breakdown = (stall) =>
    stall === undefined ? "none" : stall.onCpuMs === undefined ? `${stall.ms.toFixed(0)} ms` : `${stall.ms.toFixed(0)} ms (${stall.onCpuMs.toFixed(0)} ms on a CPU, ${stall.runQueueMs.toFixed(0)} ms waiting for one)`;
  const text =
    `Sweep of ${formatNumber(RECORDS)} records (half expired) in the HTTP benchmark's FileStore server (\`server.mjs ps-file-http\`, default options) ` +
    `while autocannon ran its hot load (${CONNECTIONS} connections, one cookie, an increment per request): removed ${formatNumber(sweep.removed)} in ${(sweep.ms / 1000).toFixed(1)} s ` +
    `at ${formatNumber(sweep.rps)} req/s; server event-loop delay (monitorEventLoopDelay, 10 ms resolution) max ${sweep.maxDelayMs.toFixed(1)} ms, p99 ${sweep.p99DelayMs.toFixed(1)} ms, ` +
    `${sweep.stalls.length} stall(s) over 50 ms (${own.length} not shared by the control process; the longest ${breakdown(longest)}; the most time on a CPU within one stall ${sweep.maxStallOnCpuMs.toFixed(1)} ms), ${sweep.gcs.length} GC pause(s) over 20 ms; ` +
    `the same load for 5 s just before, without a sweep: ${formatNumber(alone.rps)} req/s, max ${alone.maxDelayMs.toFixed(1)} ms, p99 ${alone.p99DelayMs.toFixed(1)} ms; ` +
    `an idle control process during the sweep: max ${sweep.control.maxDelayMs.toFixed(1)} ms; ${failed} failed responses.`;
  return { text, verdict };
}

async function main() {
  const { CookieSigner } = await import("../dist/cookie-signing.js");
  const { StateCodec } = await import("../dist/serialization.js");
  const signer = new CookieSigner([SECRET]);
  const data = new StateCodec().serialize({ count: 7 }, "AppState");
  const root = join(DATA_DIR, `scale-${process.pid}`);
  const rows = [];
  try {
    if (!PARTS.has("restore")) {
      // A development run of the hot-load sweep alone: printed, not written to RESULTS.md.
      console.log(`scale: writing ${formatNumber(RECORDS)} records (half expired) for the sweep under the hot load …`);
      const figures = await sweepUnderHotLoad(root, data);
      const { text, verdict } = hotSweepReport(figures);
      console.log(`${text}\n${verdict}`);
      return undefined;
    }
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

    console.log(`scale: writing ${formatNumber(RECORDS)} records (half expired) for the sweep under the hot load …`);
    const hot = hotSweepReport(await sweepUnderHotLoad(root, data));
    console.log(`scale: ${hot.text}`);

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
      hot.text,
      "",
      markdownTable(
        ["check", "result"],
        [
          ["restore latency independent of the number of records", restoreOk ? "met" : "**missed**"],
          ["sweep removes exactly the expired half and never blocks the event loop > 50 ms", sweepVerdict],
          ["the same under the HTTP benchmark's hot load, in its server", hot.verdict],
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
  if (markdown !== undefined) {
    console.log(`\n${markdown}\n`);
    writeResultsSection("scale", markdown);
  }
}
