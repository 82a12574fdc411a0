// Next.js 15 App Router with persist-session/next, as the README's section writes it: `next build`,
// then `next start` on loopback, checked over HTTP. Server Actions are posted as the browser posts
// them (a Next-Action header with the id from the build's manifest); the ones imported by a Client
// Component run in another module graph than the page and the Route Handler, each with its own copy
// of app/state.ts and of persist-session, on one store directory.
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { assert, assertCookieAttributes, assertEqual, check, finish, freePort, Jar, SECRET, setCookieOf, startServer, storeDir } from "../lib/check.mjs";

const HERE = dirname(fileURLToPath(import.meta.url));
const NEXT = join(dirname(createRequire(import.meta.url).resolve("next/package.json")), "dist", "bin", "next");
const KEY = "counter";
// `Counter` as the production build's minifier names it.
const READ_ONLY_ERROR =
  /persist-session: [\w$]+\.count cannot be changed here: this request only reads state\. Server Components only read state: change it in a Server Action or a Route Handler\./;

const store = storeDir();
const env = { PERSIST_DIR: store.dir, SESSION_SECRET: SECRET, NEXT_TELEMETRY_DISABLED: "1" };

// From scratch, as CI builds it: no webpack cache of an earlier run.
rmSync(join(HERE, ".next"), { recursive: true, force: true });
const started = Date.now();
const build = spawnSync(process.execPath, [NEXT, "build"], { cwd: HERE, env: { ...process.env, ...env }, stdio: "inherit" });
console.log(`  next build: ${((Date.now() - started) / 1000).toFixed(0)} s`);
if (build.status !== 0) {
  console.log("  ✗ next build failed");
  process.exit(1);
}

await check("next build creates no store directory", () => {
  assert(!existsSync(store.dir), `the build created ${store.dir}`);
  assert(!existsSync(join(HERE, ".persist-session")), "the build created .persist-session in the app");
});

/** The id of the Server Action exported as `name`, from the build's manifest. */
function actionId(name) {
  const manifest = JSON.parse(readFileSync(join(HERE, ".next", "server", "server-reference-manifest.json"), "utf8"));
  const found = Object.entries(manifest.node).find(([, entry]) => entry.exportedName === name);
  assert(found !== undefined, `no Server Action ${name} in the manifest`);
  return found[0];
}
const INCREMENT = actionId("increment");
const RESET = actionId("reset");

const port = await freePort();
const server = await startServer({ command: process.execPath, args: [NEXT, "start", "-H", "127.0.0.1", "-p", String(port)], env, port });

/** Posts Server Action `id` as Next's client does; resolves with the response and its RSC body. */
async function action(jar, id, headers = {}) {
  const response = await jar.request("/", {
    method: "POST",
    headers: { "next-action": id, accept: "text/x-component", "content-type": "text/plain;charset=UTF-8", origin: server.url, ...headers },
    body: "[]",
  });
  const body = await response.text();
  assertEqual(response.status, 200, `Server Action ${id}: ${body.slice(0, 300)}`);
  return { response, body };
}

/** The count the Route Handler returns after its increment. */
async function increment(jar, headers = {}) {
  const response = await jar.request("/api/count", { method: "POST", headers });
  assertEqual(response.status, 200, "POST /api/count");
  return { response, count: (await response.json()).count };
}

/** The count the page renders for `jar`. */
async function rendered(jar, path = "/") {
  const response = await jar.request(path);
  assertEqual(response.status, 200, `GET ${path}`);
  assert(setCookieOf(response, KEY) === undefined, `GET ${path} set a cookie`);
  const match = /count: (?:<!-- -->)?(\d+)/.exec(await response.text());
  assert(match !== null, `GET ${path} shows no count`);
  return Number(match[1]);
}

const jar = new Jar(server.url);
try {
  await check("50 anonymous page views create no record and no cookie", async () => {
    const visitor = new Jar(server.url);
    for (let i = 0; i < 5; i++) {
      const counts = await Promise.all(Array.from({ length: 10 }, () => rendered(visitor)));
      assertEqual(counts, Array(10).fill(0), "anonymous counts");
    }
    assertEqual(store.records(), 0, "record files after 50 page views");
  });

  await check("a new visitor's first Server Action sets the cookie (HttpOnly, SameSite=Lax, not Secure on http)", async () => {
    const { response, body } = await action(jar, INCREMENT);
    assertCookieAttributes(setCookieOf(response, KEY), { secure: false });
    // Next renders the page again in the action's response, with the cookie the action just set.
    assert(/"count: ",1\]/.test(body), `the action's render does not show count 1: ${body.slice(0, 600)}`);
    assertEqual(store.records(), 1, "record files");
  });

  await check("the page render shows the state", async () => {
    assertEqual(await rendered(jar), 1, "count");
  });

  await check("20 concurrent Server Actions with one cookie end at exactly +20", async () => {
    await Promise.all(Array.from({ length: 20 }, () => action(jar, INCREMENT)));
    assertEqual(await rendered(jar), 21, "count");
  });

  for (let round = 1; round <= 3; round++) {
    await check(`round ${round}: 20 concurrent increments mixing Server Actions and a Route Handler end at exactly +20`, async () => {
      const before = await rendered(jar);
      const results = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? action(jar, INCREMENT) : increment(jar))));
      const handlerCounts = results.filter((result) => typeof result.count === "number").map((result) => result.count);
      assertEqual(new Set(handlerCounts).size, 10, "the Route Handler's counts are distinct");
      assertEqual(await rendered(jar), before + 20, "count");
    });
  }

  await check("Secure when Next sees the request as https (X-Forwarded-Proto: https), from a Server Action and a Route Handler", async () => {
    const overHttps = new Jar(server.url);
    const { response: fromAction } = await action(overHttps, INCREMENT, { "x-forwarded-proto": "https" });
    assertCookieAttributes(setCookieOf(fromAction, KEY), { secure: true });
    const { response: fromHandler, count } = await increment(new Jar(server.url), { "x-forwarded-proto": "https" });
    assertCookieAttributes(setCookieOf(fromHandler, KEY), { secure: true });
    assertEqual(count, 1, "count over https");
    // The action's record changed again at once: stored, and its cookie, set a moment ago, is not set again.
    const { response: again, count: second } = await increment(overHttps, { "x-forwarded-proto": "https" });
    assertEqual(second, 2, "count of the action's browser over https");
    assert(setCookieOf(again, KEY) === undefined, "the cookie set a moment ago was set again");
    const { response: plain } = await increment(new Jar(server.url));
    assertCookieAttributes(setCookieOf(plain, KEY), { secure: false });
  });

  await check("a change in a Server Component render gets the documented error and stores nothing", async () => {
    const records = store.records();
    const before = await rendered(jar);
    for (const visitor of [jar, new Jar(server.url)]) {
      const response = await visitor.request("/render-change");
      const html = await response.text();
      assertEqual(response.status, 200, "GET /render-change");
      assert(READ_ONLY_ERROR.test(html), `no documented error in: ${html.slice(0, 600)}`);
      assert(setCookieOf(response, KEY) === undefined, "the render set a cookie");
    }
    assertEqual(await rendered(jar), before, "count");
    assertEqual(store.records(), records, "record files");
  });

  await check("a restart on the same store directory keeps the state", async () => {
    const before = await rendered(jar);
    await server.restart();
    assertEqual(await rendered(jar), before, "count after the restart");
    assertEqual((await increment(jar)).count, before + 1, "count of the next increment");
  });

  await check("the reset clears the state: the record is deleted and the cookie expired", async () => {
    const records = store.records();
    const cookie = jar.header();
    const { response } = await action(jar, RESET);
    const line = setCookieOf(response, KEY);
    assert(line !== undefined && /;\s*max-age=0/i.test(line), `no expiring Set-Cookie: ${line}`);
    assertEqual(store.records(), records - 1, "record files");
    assertEqual(await rendered(jar), 0, "count without the cookie");
    const stale = new Jar(server.url);
    stale.cookies.set(KEY, cookie.slice(KEY.length + 1));
    assertEqual(await rendered(stale), 0, "count with the old cookie");
  });
} finally {
  await server.stop();
  store.remove();
}
finish();
// What the server logged, to see why a check failed.
if (process.exitCode !== 0) console.log(`next start printed:\n${server.output()}`);
