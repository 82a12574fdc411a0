// One benchmark server per child process: `node server.mjs <variant> <dataDir>`.
// Every variant serves the same endpoint, "read a counter, add one, save":
//   GET /        increments the session's counter and answers with it
//   GET /read    answers with the counter without changing it
//   GET /__calls how many times the incrementing handler ran (outside any session);
//                `?reset` zeroes it. The runner compares it with the counter to count lost updates.
//   GET /__sweep runs persist-session's sweep now, watching the event loop meanwhile (scale.mjs
//                measures it under the hot load); GET /__watch?ms=N watches it for N ms alone.
// The child tells its parent the port over IPC, and stops on "stop" (or when the parent goes).
// BENCH_SWEEP_INTERVAL sets persist-session's sweepInterval (seconds; its default otherwise).
import http from "node:http";
import { mkdirSync } from "node:fs";
import { watchEventLoop } from "./lib.mjs";

const [variant, dataDir] = process.argv.slice(2);
const SECRET = process.env.BENCH_SECRET ?? "bench-secret-0123456789abcdefghijklmnopqrstuvwxyz";
const REDIS_URL = process.env.BENCH_REDIS_URL ?? "redis://127.0.0.1:6379";
const REDIS_PREFIX = process.env.BENCH_REDIS_PREFIX ?? `bench:${process.pid}:`;
const POSTGRES_URL = process.env.BENCH_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/test";
// Each measurement's tables live in a schema of its own, dropped by the runner afterwards.
const POSTGRES_SCHEMA = process.env.BENCH_POSTGRES_SCHEMA ?? `bench_${process.pid}`;

// Another build of the library (an A/B comparison, see ab.mjs); by default the working tree's.
const LIBRARY = process.env.BENCH_LIBRARY;
const importLibrary = (entry) => (LIBRARY ? import(`${LIBRARY}/dist/${entry}.js`) : import(entry === "index" ? "persist-session" : `persist-session/${entry}`));

let calls = 0;
const closers = [];

function sendText(res, status, text) {
  res.writeHead(status, { "content-type": "text/plain", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

/** Answers /__sweep and /__watch (persist-session variants): the event loop's delays over a sweep, or over a while without one. */
async function serveWatch(req, res, sessions) {
  const watch = watchEventLoop();
  const start = performance.now();
  let removed;
  if (req.url.startsWith("/__sweep")) removed = await sessions.sweep();
  else await new Promise((resolve) => setTimeout(resolve, Number(new URL(req.url, "http://x").searchParams.get("ms") ?? 1000)));
  sendText(res, 200, JSON.stringify({ removed, ms: performance.now() - start, ...watch.stop() }));
}

/** Answers /__calls; true when it did. */
function serveCalls(req, res) {
  if (!req.url.startsWith("/__calls")) return false;
  const value = calls;
  if (req.url.includes("reset")) calls = 0;
  sendText(res, 200, String(value));
  return true;
}

async function redisClient() {
  const { createClient } = await import("redis");
  const client = createClient({ url: REDIS_URL });
  client.on("error", (error) => console.error("redis:", error.message));
  await client.connect();
  closers.push(() => client.quit());
  return client;
}

/** A node-postgres pool (its defaults: up to 10 connections) and the measurement's schema, made if missing. */
async function postgresPool() {
  const { default: pg } = await import("pg");
  const pool = new pg.Pool({ connectionString: POSTGRES_URL });
  pool.on("error", (error) => console.error("postgres:", error.message));
  await pool.query(`CREATE SCHEMA IF NOT EXISTS "${POSTGRES_SCHEMA}"`);
  closers.push(() => pool.end());
  return pool;
}

async function persistSessions(storeKind) {
  const { persist, persistSession, MemoryStore, FileStore } = await importLibrary("index");
  class AppState {
    count = 0;
  }
  const State = persist("app-state")(AppState);
  let store;
  if (storeKind === "memory") store = new MemoryStore();
  else if (storeKind === "file") store = new FileStore({ dir: dataDir });
  // fsync before a write counts as stored, as session-file-store's write-file-atomic does.
  else if (storeKind === "durable") store = new FileStore({ dir: dataDir, durable: true });
  else if (storeKind === "postgres") {
    const { PostgresStore } = await importLibrary("postgres");
    store = new PostgresStore({ pool: await postgresPool(), schema: POSTGRES_SCHEMA });
  } else {
    const { RedisStore } = await importLibrary("redis");
    store = new RedisStore({ client: await redisClient(), prefix: REDIS_PREFIX });
  }
  const sweepInterval = process.env.BENCH_SWEEP_INTERVAL === undefined ? undefined : Number(process.env.BENCH_SWEEP_INTERVAL);
  const sessions = persistSession({ secret: SECRET, store, logger: quietLogger(), sweepInterval });
  closers.push(() => sessions.close());
  const increment = (req, res) => {
    const s = new State();
    s.count += 1;
    calls++;
    sendText(res, 200, String(s.count));
  };
  const read = (req, res) => sendText(res, 200, String(new State().count));
  return { sessions, increment, read };
}

/** Errors still reach stderr; the bench counts non-2xx answers anyway. */
function quietLogger() {
  return { warn: () => undefined, error: (...args) => console.error(...args), info: () => undefined, debug: () => undefined };
}

function route(increment, read) {
  return (req, res) => (req.url === "/read" ? read(req, res) : increment(req, res));
}

async function expressApp() {
  const { default: express } = await import("express");
  const app = express();
  app.get("/__calls", (req, res) => serveCalls(req, res));
  return app;
}

async function expressSession(storeKind) {
  const { default: session } = await import("express-session");
  let store;
  if (storeKind === "memory") store = new session.MemoryStore();
  else if (storeKind === "file") {
    const { default: fileStore } = await import("session-file-store");
    const FileStore = fileStore(session);
    // Defaults otherwise (retries, ttl 3600 s, hourly reaping); its log line per retry is silenced.
    store = new FileStore({ path: dataDir, logFn: () => undefined });
  } else if (storeKind === "postgres") {
    const { default: connectPgSimple } = await import("connect-pg-simple");
    const PgStore = connectPgSimple(session);
    // Defaults otherwise; without createTableIfMissing it expects the table made by hand (its #26).
    store = new PgStore({ pool: await postgresPool(), schemaName: POSTGRES_SCHEMA, createTableIfMissing: true });
  } else {
    const { RedisStore } = await import("connect-redis");
    store = new RedisStore({ client: await redisClient(), prefix: `${REDIS_PREFIX}sess:` });
  }
  const app = await expressApp();
  app.use(session({ secret: SECRET, store, resave: false, saveUninitialized: false }));
  app.get("/read", (req, res) => sendText(res, 200, String(req.session.count ?? 0)));
  app.get("/", (req, res) => {
    req.session.count = (req.session.count ?? 0) + 1;
    calls++;
    sendText(res, 200, String(req.session.count));
  });
  return app;
}

async function ironSession() {
  const { getIronSession } = await import("iron-session");
  const options = { password: SECRET, cookieName: "iron", cookieOptions: { secure: false } };
  return async (req, res) => {
    if (serveCalls(req, res)) return;
    const session = await getIronSession(req, res, options);
    if (req.url === "/read") return sendText(res, 200, String(session.count ?? 0));
    session.count = (session.count ?? 0) + 1;
    calls++;
    await session.save();
    sendText(res, 200, String(session.count));
  };
}

async function createHandler() {
  // A `-delay` variant is the same server; the runner points BENCH_REDIS_URL at delay-proxy.mjs.
  const [library, storeKind, framework] = variant.replace(/-delay$/, "").split("-");
  if (variant === "bare-http") {
    // The ceiling: no session at all, one counter in this process.
    let count = 0;
    return (req, res) => {
      if (serveCalls(req, res)) return;
      if (req.url === "/read") return sendText(res, 200, String(count));
      count += 1;
      calls++;
      sendText(res, 200, String(count));
    };
  }
  if (variant === "bare-redis-http-delay") {
    // The floor of a request whose change is stored before its response leaves: no session,
    // one Redis command (INCR) per request and the answer after Redis's. Through the proxy it
    // shows what one round trip per request allows on this machine, beside what we reach.
    const client = await redisClient();
    const key = `${REDIS_PREFIX}count`;
    return async (req, res) => {
      if (serveCalls(req, res)) return;
      if (req.url === "/read") return sendText(res, 200, String(Number(await client.get(key))));
      calls++;
      sendText(res, 200, String(await client.incr(key)));
    };
  }
  if (library === "ps") {
    const { sessions, increment, read } = await persistSessions(storeKind);
    if (framework === "http") {
      const handler = route(increment, read);
      return (req, res) => {
        if (serveCalls(req, res)) return;
        if (req.url.startsWith("/__sweep") || req.url.startsWith("/__watch")) return void serveWatch(req, res, sessions);
        sessions(req, res, () => handler(req, res));
      };
    }
    const app = await expressApp();
    app.use(sessions);
    app.get("/read", read);
    app.get("/", increment);
    return app;
  }
  if (library === "es") return expressSession(storeKind);
  if (variant === "iron-http") return ironSession();
  throw new Error(`unknown variant ${variant}`);
}

if (dataDir) mkdirSync(dataDir, { recursive: true, mode: 0o700 });
const server = http.createServer(await createHandler());
server.keepAliveTimeout = 60_000;
server.listen(0, "127.0.0.1", () => process.send?.({ port: server.address().port }));

async function stop() {
  server.closeAllConnections?.();
  server.close();
  for (const close of closers.reverse()) await Promise.resolve(close()).catch(() => undefined);
  process.exit(0);
}
process.on("message", (message) => {
  if (message === "stop") void stop();
  if (message === "cpu") process.send?.({ cpu: process.cpuUsage() });
  if (message === "memory") {
    globalThis.gc?.();
    const { rss, heapUsed } = process.memoryUsage();
    process.send?.({ memory: { rss, heapUsed } });
  }
});
process.on("disconnect", () => process.exit(0));
