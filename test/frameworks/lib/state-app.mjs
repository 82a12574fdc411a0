// The checks of the server-framework apps (Hono, Fastify, Koa, h3, Express, NestJS): each
// app serves the same small contract, so one function checks them all over HTTP.
//
//   state routes, mounted the way the README's section mounts them:
//     GET  /app/count   { count }                 reads the state
//     POST /app/inc     { count }                 count += 1
//     POST /app/reset   { count }                 clearCookieState
//     POST /app/fail    500                       count += 100, then throws
//     GET  /app/hold    { count }                 uses the state, answers once /release is called
//   routes that never use state:
//     GET  /plain       "plain"                   also the readiness probe
//     GET  /holding     "yes" | "no"              whether /app/hold's handler is waiting
//     POST /release     "released"                lets /app/hold answer
//     GET  /streams     { open }                  sessions.openStreams
//     GET  /events      the events stream
//
// Apps read PERSIST_DIR (the FileStore's directory), SESSION_SECRET and LOCK_TIMEOUT.
import { execFileSync } from "node:child_process";
import { renameSync } from "node:fs";
import { join } from "node:path";
import { assert, assertCookieAttributes, assertEqual, check, finish, freePort, Jar, SECRET, setCookieOf, sleep, startServer, storeDir } from "./check.mjs";

/** The state's cookie: the apps' `@persist("app-state")`. */
export const COOKIE = "app-state";
/** Short, so the check that a request behind a held lock gets its 503 is quick; long enough for 20 queued increments. */
const LOCK_TIMEOUT_MS = 1500;

/** Type-checks and builds the app with its own TypeScript: `tsc` over the app, against the framework's own types. */
export function tsc(...args) {
  execFileSync(process.execPath, [join("node_modules", "typescript", "bin", "tsc"), ...args], { stdio: "inherit" });
}

/**
 * Type-checks the app against a second version's types, installed as `@types/<alias>`
 * (npm alias): they take `@types/<name>`'s place for the run, for every file that
 * imports `name` (the app's, persist-session's, the framework's helpers').
 */
export function tscAgainst(name, alias) {
  const swap = (from, to) => renameSync(join("node_modules", "@types", from), join("node_modules", "@types", to));
  swap(name, `${name}.set-aside`);
  swap(alias, name);
  try {
    tsc("-p", ".", "--noEmit", "--skipLibCheck", "false");
  } finally {
    swap(name, alias);
    swap(`${name}.set-aside`, name);
  }
}

/** The node arguments that run `entry` with the import of `name` resolved to the package `alias` (a second version, npm alias). */
export function withAlias(name, alias, entry) {
  return { args: ["--import", "../lib/alias.mjs", entry], env: { PACKAGE_ALIAS: `${name}=${alias}` } };
}

/** Starts `node <args>` on a fresh store directory; `stop()` also removes the directory. */
export async function startStateApp(args, env = {}) {
  const store = storeDir();
  const port = await freePort();
  const server = await startServer({
    command: process.execPath,
    args,
    env: { PERSIST_DIR: store.dir, SESSION_SECRET: SECRET, LOCK_TIMEOUT: String(LOCK_TIMEOUT_MS), ...env },
    port,
    readyPath: "/plain",
  });
  return {
    server,
    store,
    stop: async () => {
      await server.stop();
      store.remove();
    },
  };
}

const POST = { method: "POST", headers: { "content-type": "application/json" }, body: "{}" };

async function countOf(jar, path = "/app/count", init = {}) {
  const response = await jar.request(path, init);
  const text = await response.text();
  assert(response.status === 200, `${init.method ?? "GET"} ${path} answered ${response.status}: ${text}`);
  return JSON.parse(text).count;
}

/** Reads an events stream until an event of `type` arrives (or `deadlineMs` passes: then it fails instead of hanging). */
async function nextEvent(type, reader, decoder, state, deadlineMs = 10_000) {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    const end = state.buffer.indexOf("\n\n");
    if (end >= 0) {
      const block = state.buffer.slice(0, end);
      state.buffer = state.buffer.slice(end + 2);
      if (new RegExp(`^event: ${type}$`, "m").test(block)) return JSON.parse(/^data: (.*)$/m.exec(block)[1]);
      continue;
    }
    const remaining = deadline - Date.now();
    assert(remaining > 0, `no ${type} event arrived on the stream`);
    let timer;
    const chunk = await Promise.race([reader.read(), new Promise((resolve) => (timer = setTimeout(() => resolve("late"), remaining)))]);
    clearTimeout(timer);
    assert(chunk !== "late", `no ${type} event arrived on the stream`);
    assert(!chunk.done, "the events stream ended");
    state.buffer += decoder.decode(chunk.value, { stream: true });
  }
}

/**
 * Every check of issue #16 against one running app; names start with `label`.
 * `app` is what {@link startStateApp} returned; `restart` false skips the restart
 * check; `failureBody`, when given, is what the body of a failed request (500,
 * and the 503 behind a held lock) must match: the framework's own error handling answered it.
 */
export async function checkStateApp(label, app, { restart = true, failureBody } = {}) {
  const { server, store } = app;
  const jar = new Jar(server.url);
  const name = (text) => `${label}: ${text}`;

  await check(name("a visitor who changes nothing gets no cookie and no record"), async () => {
    assertEqual(await countOf(jar), 0, "fresh count");
    assertEqual(jar.setCookies.length, 0, "Set-Cookie lines");
    assertEqual(store.records(), 0, "records");
  });

  await check(name("the first change sets an HttpOnly, SameSite=Lax cookie"), async () => {
    const response = await jar.request("/app/inc", POST);
    assertEqual(response.status, 200, "status");
    assertEqual((await response.json()).count, 1, "count");
    assertCookieAttributes(setCookieOf(response, COOKIE), { secure: false });
    assert(jar.cookies.has(COOKIE), "the jar holds the cookie");
  });

  await check(name("the state persists across requests"), async () => {
    await countOf(jar, "/app/inc", POST);
    assertEqual(await countOf(jar), 2, "count");
    assertEqual(store.records(), 1, "records");
  });

  if (restart) {
    await check(name("the state persists across a restart on the same store directory"), async () => {
      await server.restart();
      assertEqual(await countOf(jar), 2, "count after the restart");
    });
  }

  await check(name("20 concurrent increments of one browser end at exactly +20"), async () => {
    const before = await countOf(jar);
    const statuses = await Promise.all(Array.from({ length: 20 }, () => jar.request("/app/inc", POST).then(async (r) => (await r.arrayBuffer(), r.status))));
    assertEqual(statuses.filter((status) => status !== 200), [], "statuses other than 200");
    assertEqual(await countOf(jar), before + 20, "count");
  });

  await check(name("a failing handler stores nothing"), async () => {
    const before = await countOf(jar);
    const records = store.records();
    const failed = await jar.request("/app/fail", POST);
    const body = await failed.text();
    assertEqual(failed.status, 500, "status of the failing request");
    if (failureBody !== undefined) assert(failureBody.test(body), `the failure's body: ${body}`);
    assertEqual(await countOf(jar), before, "count after the failure");
    const stranger = new Jar(server.url);
    const strangerFailed = await stranger.request("/app/fail", POST);
    await strangerFailed.arrayBuffer();
    assertEqual(strangerFailed.status, 500, "status of a new visitor's failing request");
    assertEqual(stranger.setCookies.length, 0, "cookies set by a failed request");
    assertEqual(store.records(), records, "records");
  });

  await check(name("an events stream delivers a change made by another request"), async () => {
    const controller = new AbortController();
    const response = await fetch(`${server.url}/events`, { headers: { cookie: jar.header() }, signal: controller.signal });
    assertEqual(response.status, 200, "status");
    assert(response.headers.get("content-type")?.startsWith("text/event-stream"), `content-type ${response.headers.get("content-type")}`);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    const state = { buffer: "" };
    try {
      await nextEvent("ready", reader, decoder, state); // the stream follows the browser's record now
      const count = await countOf(jar, "/app/inc", POST);
      const change = await nextEvent("change", reader, decoder, state);
      assertEqual(change.key, COOKIE, "the change's key");
      assert(change.version >= count, `version ${change.version}`);
    } finally {
      controller.abort();
      await reader.cancel().catch(() => undefined);
    }
    // The stream is released once its client is gone.
    let open;
    for (const deadline = Date.now() + 10_000; Date.now() < deadline; await sleep(50)) {
      open = (await (await fetch(`${server.url}/streams`)).json()).open;
      if (open === 0) break;
    }
    assertEqual(open, 0, "open streams after the client left");
  });

  await check(name("a route that never uses state does not wait for a request holding the lock"), async () => {
    let held = "pending";
    const holding = jar.request("/app/hold").then(
      async (response) => (held = `${response.status} ${await response.text()}`),
      (error) => (held = `failed: ${error.message}`),
    );
    try {
      // The hold has the lock once its handler runs; /plain of the same browser answers meanwhile.
      for (let i = 0; i < 250 && (await (await fetch(`${server.url}/holding`)).text()) !== "yes"; i++) await sleep(20);
      const plain = await jar.request("/plain");
      assertEqual(await plain.text(), "plain", "/plain");
      assertEqual(held, "pending", "the held request");
      // A state route of the same browser waits lockTimeout, then gets a 503 whose log line names the holder.
      const blocked = await jar.request("/app/count");
      const body = await blocked.text();
      assertEqual(blocked.status, 503, "status of a request behind the held lock");
      if (failureBody !== undefined) assert(failureBody.test(body), `the 503's body: ${body}`);
      assertEqual(held, "pending", "the held request");
      await sleep(50); // let the log line reach the pipe
      assert(/GET \/app\/hold, still running/.test(server.output()), `the log does not name the holder:\n${server.output().slice(-2000)}`);
    } finally {
      await fetch(`${server.url}/release`, { method: "POST" });
      await holding;
    }
    assert(held.startsWith("200 "), `the held request answered ${held}`);
  });

  await check(name("reset (clearCookieState) clears the state and the cookie"), async () => {
    const records = store.records();
    const response = await jar.request("/app/reset", POST);
    assertEqual(response.status, 200, "status");
    assertEqual((await response.json()).count, 0, "count in the reset's answer");
    assert(/;\s*Max-Age=0/i.test(setCookieOf(response, COOKIE) ?? ""), "the cookie is expired");
    assert(!jar.cookies.has(COOKIE), "the jar dropped the cookie");
    assertEqual(await countOf(jar), 0, "count after the reset");
    assertEqual(store.records(), records - 1, "records");
  });
}

/**
 * Starts each run's server (`node <args>` with `env`) in turn, checks it with
 * {@link checkStateApp} (`options` as there), stops it, then prints the summary.
 */
export async function checkStateApps(runs, options = {}) {
  for (const { label, args, env = {} } of runs) {
    const app = await startStateApp(args, env);
    try {
      await checkStateApp(label, app, options);
    } finally {
      await app.stop();
    }
  }
  finish();
}
