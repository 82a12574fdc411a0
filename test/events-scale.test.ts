import { spawn, type ChildProcess } from "node:child_process";
import { connect, type Socket } from "node:net";
import { once } from "node:events";
import { afterAll, beforeAll, expect, it } from "vitest";
import { Browser } from "./helpers/http.js";

const STREAMS = 1000;
let child: ChildProcess;
let url: string;

interface Stats {
  heapUsed: number;
  rss: number;
  timers: number;
  handles: number;
  /** sessions.openStreams */
  streams: number;
}

beforeAll(async () => {
  child = spawn(process.execPath, ["--expose-gc", new URL("./fixtures/events-server.mjs", import.meta.url).pathname], { stdio: ["ignore", "pipe", "inherit"] });
  const [line] = (await once(child.stdout!, "data")) as [Buffer];
  url = `http://127.0.0.1:${(JSON.parse(line.toString()) as { port: number }).port}`;
});
afterAll(() => {
  child.kill("SIGKILL");
});

interface OpenStream {
  socket: Socket;
  received: () => string;
}

function openStream(port: number, cookie: string): Promise<OpenStream> {
  return new Promise((resolve, reject) => {
    let text = "";
    const socket = connect(port, "127.0.0.1", () => socket.write(`GET /events HTTP/1.1\r\nHost: x\r\nCookie: ${cookie}\r\n\r\n`));
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      text += chunk;
      if (text.includes("event: ready")) resolve({ socket, received: () => text });
    });
    socket.on("error", reject);
  });
}

it(`holds ${STREAMS} open streams in bounded memory, fans a change out to all, and leaks nothing when they close`, async () => {
  const browser = new Browser(url);
  await browser.json("/inc", { method: "POST" });
  const stats = async () => browser.json<Stats>("/stats");
  const before = await stats();
  const port = Number(new URL(url).port);
  const streams: OpenStream[] = [];
  for (let i = 0; i < STREAMS; i += 100) {
    streams.push(...(await Promise.all(Array.from({ length: 100 }, () => openStream(port, browser.cookieHeader())))));
  }
  const during = await stats();
  await browser.json("/inc", { method: "POST" });
  await expect.poll(() => streams.filter((stream) => stream.received().includes('"version":2')).length, { timeout: 10_000 }).toBe(STREAMS);

  const perStreamHeap = (during.heapUsed - before.heapUsed) / STREAMS;
  const perStreamRss = (during.rss - before.rss) / STREAMS;
  console.log(`[events-scale] ${STREAMS} streams: heap ${(perStreamHeap / 1024).toFixed(1)} KiB/stream, rss ${(perStreamRss / 1024).toFixed(1)} KiB/stream, timers ${before.timers} → ${during.timers}`);
  // One heartbeat interval per stream while open.
  expect(during.timers - before.timers).toBe(STREAMS);
  // One change-feed subscription per stream while open.
  expect(before.streams).toBe(0);
  expect(during.streams).toBe(STREAMS);
  expect(during.handles - before.handles).toBeGreaterThanOrEqual(STREAMS);
  expect(perStreamHeap).toBeLessThan(64 * 1024);

  for (const stream of streams) stream.socket.destroy();
  await expect.poll(async () => (await stats()).timers, { timeout: 10_000 }).toBe(before.timers);
  const after = await stats();
  expect(after.streams).toBe(0);
  expect(after.handles).toBeLessThanOrEqual(before.handles + 2);
  expect(after.heapUsed - before.heapUsed).toBeLessThan((during.heapUsed - before.heapUsed) / 2);
}, 60_000);
