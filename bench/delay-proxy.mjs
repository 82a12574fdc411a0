// A TCP proxy that puts a network between the app and Redis: every chunk is held for D ms in
// each direction (default 0.5, BENCH_REDIS_DELAY_MS), in order, then forwarded. Issue #22: on
// loopback a Redis round trip costs tens of microseconds, in a deployment 0.2–1 ms, and the
// number of round trips per request, not the work, then sets a request's latency.
//
//   node bench/delay-proxy.mjs [redis://host:port] [delayMs]   standalone, until Ctrl-C
//   startDelayProxy({ target, delayMs })                         a child of its own (measure.mjs)
//
// It runs in a process of its own, so its CPU time is not counted as the app server's. As a
// child it reports its port and the measured added latency over IPC, answers "stats", and
// exits on "stop" or as soon as its parent goes.
//
// Why not setTimeout: Node's timers have a resolution of 1 ms (libuv keeps its clock in
// milliseconds), so setTimeout(fn, 0.5) waits 1–2 ms. Spinning on setImmediate until a chunk
// is due would hold a whole core busy under load, on a machine where the app, Redis and
// autocannon share two. Instead a worker thread sleeps in Atomics.wait, whose timeout has
// sub-millisecond precision, until the earliest chunk is due, and wakes the main thread with
// a message; the main thread forwards every chunk that is due. The wake-up itself is late by
// some tens of microseconds (the kernel's timer slack, the message hop), so the proxy learns
// from the holds it measured how much earlier to aim: on average a chunk is held D ms.
import net from "node:net";
import { fileURLToPath, pathToFileURL } from "node:url";
import { Worker } from "node:worker_threads";
import { startChild } from "./lib.mjs";

export const DEFAULT_DELAY_MS = 0.5;
/** Bytes a direction may hold before its source is paused: the proxy's memory stays bounded. */
const QUEUE_LIMIT = 4 * 1024 * 1024;
/** PINGs timed each way (direct, through the proxy) at start. */
const PING_COUNT = 200;

const TIMER_SOURCE = `
const { workerData, parentPort } = require("node:worker_threads");
const generation = new Int32Array(workerData, 0, 1);
const deadline = new BigInt64Array(workerData, 8, 1);
for (;;) {
  const seen = Atomics.load(generation, 0);
  const due = Atomics.load(deadline, 0);
  if (due === 0n) {
    Atomics.wait(generation, 0, seen);
    continue;
  }
  const left = due - process.hrtime.bigint();
  if (left <= 0n) {
    Atomics.store(deadline, 0, 0n);
    parentPort.postMessage(0);
    continue;
  }
  Atomics.wait(generation, 0, seen, Number(left) / 1e6);
}
`;

/**
 * A sub-millisecond one-shot timer: `arm(dueNs)` calls `onFire` once, at about dueNs
 * (process.hrtime.bigint() time). Armed again only after it fired.
 */
function createPreciseTimer(onFire) {
  const shared = new SharedArrayBuffer(16);
  const generation = new Int32Array(shared, 0, 1);
  const deadline = new BigInt64Array(shared, 8, 1);
  const worker = new Worker(TIMER_SOURCE, { eval: true, workerData: shared });
  worker.unref();
  let armed = false;
  worker.on("message", () => {
    armed = false;
    onFire();
  });
  return {
    get armed() {
      return armed;
    },
    arm(dueNs) {
      armed = true;
      Atomics.store(deadline, 0, dueNs > 0n ? dueNs : 1n);
      Atomics.add(generation, 0, 1);
      Atomics.notify(generation, 0);
    },
    stop: () => worker.terminate(),
  };
}

/** One direction of one connection: chunks from `source`, held, then written to `dest`. */
class Direction {
  queue = [];
  bytes = 0;
  constructor(source, dest, stats) {
    this.source = source;
    this.dest = dest;
    this.stats = stats;
  }

  /** Keeps the source paused while this direction holds too much or its destination is full. */
  updateFlow() {
    const hold = this.bytes > QUEUE_LIMIT || this.dest.writableNeedDrain;
    if (hold && !this.source.isPaused()) this.source.pause();
    else if (!hold && this.source.isPaused()) this.source.resume();
  }
}

/**
 * Listens on 127.0.0.1 (a free port unless `port` is given) and forwards to `target`
 * ({ host, port }). Resolves once it listens, with its port, `stats()` and `close()`.
 */
export async function listenDelayProxy({ target, delayMs = DEFAULT_DELAY_MS, port = 0 }) {
  const delayNs = BigInt(Math.round(delayMs * 1e6));
  // Per direction: chunks forwarded and the sum of the time each was held, to report the real mean.
  const stats = { up: { chunks: 0, bytes: 0, heldNs: 0n }, down: { chunks: 0, bytes: 0, heldNs: 0n }, connections: 0 };
  /** Directions holding chunks. Every chunk's due time is its arrival + D, so each queue is sorted. */
  const pending = new Set();
  // How much earlier than a chunk's due time the timer is aimed, in ns: an integral controller
  // on the hold of every batch's first chunk, so that the mean hold converges on D.
  let ahead = 0;

  const release = () => {
    const now = process.hrtime.bigint();
    const early = BigInt(Math.round(ahead));
    let first = true;
    for (const direction of pending) {
      const { queue } = direction;
      if (first && queue.length > 0 && queue[0].due - early <= now) {
        // Clamped, so that one stall of the event loop cannot make the proxy forward early for long.
        ahead = Math.min(Number(delayNs), Math.max(0, ahead + Number(now - queue[0].due) / 16));
        first = false;
      }
      let i = 0;
      for (; i < queue.length && queue[i].due - early <= now; i++) {
        const { chunk, arrived } = queue[i];
        const counts = direction.stats;
        counts.chunks++;
        counts.heldNs += now - arrived;
        if (chunk === null) {
          direction.dest.end();
          continue;
        }
        counts.bytes += chunk.length;
        direction.bytes -= chunk.length;
        direction.dest.write(chunk);
      }
      if (i > 0) queue.splice(0, i);
      if (queue.length === 0) pending.delete(direction);
      direction.updateFlow();
    }
    schedule();
  };
  const timer = delayNs > 0n ? createPreciseTimer(release) : undefined;

  function schedule() {
    if (timer === undefined || timer.armed || pending.size === 0) return;
    let earliest;
    for (const { queue } of pending) if (earliest === undefined || queue[0].due < earliest) earliest = queue[0].due;
    timer.arm(earliest - BigInt(Math.round(ahead)));
  }

  function pipe(source, dest, counts) {
    const direction = new Direction(source, dest, counts);
    const hold = (chunk) => {
      if (timer === undefined) {
        // No delay: a plain proxy, as the control for what the hop alone costs.
        counts.chunks++;
        if (chunk === null) return dest.end();
        counts.bytes += chunk.length;
        dest.write(chunk);
        return direction.updateFlow();
      }
      const arrived = process.hrtime.bigint();
      direction.queue.push({ chunk, arrived, due: arrived + delayNs });
      if (chunk !== null) direction.bytes += chunk.length;
      pending.add(direction);
      direction.updateFlow();
      schedule();
    };
    source.on("data", hold);
    // The end of a stream travels behind its last chunk, delayed like it.
    source.on("end", () => hold(null));
    dest.on("drain", () => direction.updateFlow());
    return direction;
  }

  const sockets = new Set();
  // Half-open, so that each direction's end is forwarded on its own, after its last chunk.
  const server = net.createServer({ allowHalfOpen: true }, (client) => {
    stats.connections++;
    const upstream = net.connect({ host: target.host, port: target.port, allowHalfOpen: true });
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    const directions = [pipe(client, upstream, stats.up), pipe(upstream, client, stats.down)];
    const close = () => {
      for (const direction of directions) pending.delete(direction);
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on("error", close);
      socket.on("close", close);
    }
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen({ host: "127.0.0.1", port }, resolve);
  });
  const snapshot = () => {
    const side = ({ chunks, bytes, heldNs }) => ({ chunks, bytes, meanHeldMs: chunks === 0 ? 0 : Number(heldNs / BigInt(chunks)) / 1e6 });
    const { user, system } = process.cpuUsage();
    return { connections: stats.connections, up: side(stats.up), down: side(stats.down), aheadMs: ahead / 1e6, cpuMicros: user + system };
  };
  return {
    port: server.address().port,
    stats: snapshot,
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
      await timer?.stop();
    },
  };
}

/** Round-trip times (ms) of `count` sequential inline PINGs on one connection, after 20 unmeasured. */
export async function pingTimes(host, port, count = PING_COUNT) {
  const socket = net.connect({ host, port });
  socket.setNoDelay(true);
  await new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  const times = [];
  let received = "";
  let answered;
  socket.on("data", (data) => {
    received += data.toString("latin1");
    if (received.endsWith("+PONG\r\n")) {
      received = "";
      answered();
    }
  });
  for (let i = 0; i < count + 20; i++) {
    const start = process.hrtime.bigint();
    await new Promise((resolve) => {
      answered = resolve;
      socket.write("PING\r\n");
    });
    if (i >= 20) times.push(Number(process.hrtime.bigint() - start) / 1e6);
  }
  socket.destroy();
  return times;
}

const mean = (values) => values.reduce((sum, value) => sum + value, 0) / values.length;
const middle = (values) => [...values].sort((a, b) => a - b)[values.length >> 1];

/**
 * What the proxy adds to a round trip, measured with PINGs to the target directly and through
 * the proxy, one after the other: the means and medians in ms, and the added mean.
 */
export async function measureAddedLatency(proxyPort, target, count = PING_COUNT) {
  const direct = await pingTimes(target.host, target.port, count);
  const proxied = await pingTimes("127.0.0.1", proxyPort, count);
  return {
    direct: { mean: mean(direct), median: middle(direct) },
    proxied: { mean: mean(proxied), median: middle(proxied) },
    addedMs: mean(proxied) - mean(direct),
  };
}

export function describeAddedLatency(delayMs, ping) {
  return (
    `PING round trip ${ping.direct.mean.toFixed(3)} ms direct, ${ping.proxied.mean.toFixed(3)} ms through the proxy ` +
    `(means; medians ${ping.direct.median.toFixed(3)} and ${ping.proxied.median.toFixed(3)}): ` +
    `+${ping.addedMs.toFixed(3)} ms per round trip, ${(ping.addedMs / 2).toFixed(3)} ms each way for a set delay of ${delayMs} ms`
  );
}

/** host and port of a redis:// URL. */
export function targetOf(url) {
  const { hostname, port } = new URL(url);
  return { host: hostname, port: Number(port || 6379) };
}

/**
 * Starts the proxy in a child process of its own, in front of `target` (a redis:// URL).
 * Resolves with its `url` (redis://127.0.0.1:<port>), the PING figures it measured at start,
 * `stats()` and `stop()`.
 */
export async function startDelayProxy({ target, delayMs = DEFAULT_DELAY_MS }) {
  const child = startChild(fileURLToPath(import.meta.url), [target, String(delayMs)]);
  const ping = new Promise((resolve) => child.child.on("message", (message) => message?.ping && resolve(message.ping)));
  const port = await child.ready;
  return {
    url: `redis://127.0.0.1:${port}`,
    ping: await ping,
    stats: () => child.ask("stats"),
    stop: () => child.stop(),
  };
}

async function main() {
  const url = process.argv[2] ?? process.env.BENCH_REDIS_URL ?? "redis://127.0.0.1:6379";
  const delayMs = Number(process.argv[3] ?? process.env.BENCH_REDIS_DELAY_MS ?? DEFAULT_DELAY_MS);
  if (!(delayMs >= 0)) throw new TypeError(`delay-proxy: the delay is invalid: ${process.argv[3]}. Give milliseconds, 0 or more.`);
  const target = targetOf(url);
  const proxy = await listenDelayProxy({ target, delayMs });
  const ping = await measureAddedLatency(proxy.port, target);
  console.log(`delay-proxy: 127.0.0.1:${proxy.port} → ${target.host}:${target.port}, ${delayMs} ms each way; ${describeAddedLatency(delayMs, ping)}`);
  if (process.send === undefined) {
    process.on("SIGINT", () => proxy.close().then(() => process.exit(0)));
    return;
  }
  // The ping first: startDelayProxy listens for it before it waits for the port.
  process.send({ ping });
  process.send({ port: proxy.port });
  process.on("message", (message) => {
    if (message === "stats") process.send({ stats: proxy.stats() });
    if (message === "stop") void proxy.close().then(() => process.exit(0));
  });
  // Never outlive the benchmark that started it.
  process.on("disconnect", () => process.exit(0));
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
