// Astro 5 with @astrojs/node (standalone) and persist-session/astro: builds the
// app, runs its server on loopback, and checks it over HTTP.
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Jar, SECRET, assert, assertCookieAttributes, assertEqual, check, finish, freePort, setCookieOf, startServer, storeDir } from "../lib/check.mjs";
import { checkDevServer, checkPageApp, counterCookieOf, parseCounts, printed, requestOverTls, selfSignedCertificate, startTlsServer } from "../lib/page-apps.mjs";

process.env.ASTRO_TELEMETRY_DISABLED = "1";
const store = storeDir();
const env = { SESSION_SECRET: SECRET, PERSIST_DIR: store.dir };

/**
 * An Astro Action (its RPC endpoint), an endpoint's POST and a form posted to
 * the page, in turn. Astro refuses a form POST whose Origin is not the URL's
 * own, which without `security.allowedDomains` is http://localhost.
 */
const ORIGIN = "http://localhost";
const act = (jar, i) =>
  [
    () => jar.request("/_actions/inc", { method: "POST", headers: { "content-type": "application/json" }, body: "{}" }),
    () => jar.request("/api/inc", { method: "POST", headers: { origin: ORIGIN } }),
    () => jar.request("/", { method: "POST", headers: { origin: ORIGIN }, body: new URLSearchParams({ intent: "inc" }) }),
  ][i % 3]();
const read = async (jar) => ({
  count: parseCounts(await (await jar.request("/")).text()).count,
  later: parseCounts(await (await jar.request("/late")).text()).later,
});
const reset = (jar) => jar.request("/", { method: "POST", headers: { origin: ORIGIN }, body: new URLSearchParams({ intent: "reset" }) });

const certDir = mkdtempSync(join(tmpdir(), "persist-session-astro-tls-"));
try {
  execFileSync("node_modules/.bin/astro", ["build"], { stdio: "inherit" });
  const port = await freePort();
  const server = await startServer({ command: process.execPath, args: ["dist/server/entry.mjs"], env, port });
  try {
    await checkPageApp({ server, store, act, read, reset, renderWrite: (jar) => jar.request("/render-write") });

    await check("a component rendered while a GET page streams reads state, and its change gets the read-only error", async () => {
      const jar = new Jar(server.url);
      await act(jar, 0);
      assertEqual(await read(jar), { count: 1, later: 1 }, "page");
      const before = server.output().length;
      // Late.astro changes the count after the headers went out: Astro cuts the page short (the status was sent already).
      const html = await (await jar.request("/late?bump")).text().catch(() => "");
      assert(!html.includes('id="later"'), "the component that changed state rendered");
      assert(await printed(server, before, "cannot be changed here: this request only reads state"), `no read-only error logged:\n${server.output().slice(before)}`);
      assertEqual((await read(jar)).count, 1, "count after the GET");
    });

    await check("on a POST, the page renders in full before the commit: a late component's change is stored", async () => {
      const jar = new Jar(server.url);
      const response = await jar.request("/late?bump", { method: "POST", headers: { origin: ORIGIN }, body: new URLSearchParams() });
      assertEqual(parseCounts(await response.text()).later, 1, "the POST page");
      assertCookieAttributes(setCookieOf(response, "counter"), { secure: false });
      assertEqual((await read(jar)).count, 1, "count after the POST");
    });
  } finally {
    await server.stop();
  }

  // Astro says https for a TLS connection: the Node adapter serves one with SERVER_CERT_PATH and SERVER_KEY_PATH.
  const { key, cert, ca } = selfSignedCertificate(certDir);
  const tlsPort = await freePort();
  const tls = await startTlsServer({ command: process.execPath, args: ["dist/server/entry.mjs"], env: { ...env, SERVER_CERT_PATH: cert, SERVER_KEY_PATH: key }, port: tlsPort, ca });
  try {
    await check("over TLS the cookie is Secure", async () => {
      const answer = await requestOverTls(`https://127.0.0.1:${tlsPort}/_actions/inc`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}", ca });
      assertCookieAttributes(counterCookieOf(answer), { secure: true });
    });
  } finally {
    await tls.stop();
  }

  await checkDevServer({ command: "node_modules/.bin/astro", args: (port) => ["dev", "--host", "127.0.0.1", "--port", String(port)], env, act, read });
} finally {
  rmSync(certDir, { recursive: true, force: true });
  store.remove();
  finish();
}
