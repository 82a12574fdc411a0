// SvelteKit 2 with adapter-node and persist-session/sveltekit: builds the app,
// runs `node build` on loopback, and checks it over HTTP.
import { execFileSync } from "node:child_process";
import { Jar, SECRET, assert, assertCookieAttributes, check, finish, freePort, setCookieOf, startServer, storeDir } from "../lib/check.mjs";
import { checkDevServer, checkPageApp, printed } from "../lib/page-apps.mjs";

const store = storeDir();
const env = { SESSION_SECRET: SECRET, PERSIST_DIR: store.dir };
// adapter-node's own settings, which each server below sets as it needs (none by default).
for (const name of ["ORIGIN", "PROTOCOL_HEADER", "HOST_HEADER"]) delete process.env[name];

/**
 * A form action and an endpoint's POST, in turn. SvelteKit refuses a form
 * POST whose Origin is not the URL's own origin: `origin` is what this server
 * computes (adapter-node with no ORIGIN: https://<host>).
 */
const actWith = (origin) => (jar, i) =>
  i % 2 === 0
    ? jar.request("/?/inc", { method: "POST", headers: { origin, accept: "text/html" }, body: new URLSearchParams() })
    : jar.request("/inc", { method: "POST" });
/** The count in the page, and the streamed promise's value of /late (SvelteKit resolves it in a script at the end of the body). */
async function read(jar) {
  const count = /id="count"[^>]*>count=(\d+)/.exec(await (await jar.request("/")).text());
  const later = /\.resolve\(1, \(\) => \[(\d+)\]\)/.exec(await (await jar.request("/late")).text());
  return { count: count ? Number(count[1]) : undefined, later: later ? Number(later[1]) : undefined };
}

try {
  execFileSync("node_modules/.bin/vite", ["build"], { stdio: "inherit" });
  const port = await freePort();
  const origin = `https://127.0.0.1:${port}`; // adapter-node's guess without ORIGIN
  const act = actWith(origin);
  const reset = (jar) => jar.request("/?/reset", { method: "POST", headers: { origin, accept: "text/html" }, body: new URLSearchParams() });
  const server = await startServer({ command: process.execPath, args: ["build"], env, port });
  try {
    await checkPageApp({ server, store, act, read, reset, renderWrite: (jar) => jar.request("/render-write") });

    await check("adapter-node without ORIGIN claims https on plain HTTP: no Secure, and one warning says so", async () => {
      const response = await new Jar(server.url).request("/inc", { method: "POST" });
      assertCookieAttributes(setCookieOf(response, "counter"), { secure: false });
      const warnings = server.output().split("adapter-node reports https").length - 1;
      assert(warnings === 1, `expected the warning once, got it ${warnings} times:\n${server.output()}`);
    });

    await check("a composed handle after createHandle() in sequence() runs inside the request", async () => {
      const jar = new Jar(server.url);
      await jar.request("/inc", { method: "POST" });
      const response = await jar.request("/");
      await response.text();
      assert(response.headers.get("x-count") === "1", `x-count: ${response.headers.get("x-count")}`);
    });

    await check("a streamed promise that changes state after the response gets the documented error", async () => {
      const jar = new Jar(server.url);
      await jar.request("/inc", { method: "POST" });
      for (const [init, error] of [
        [{}, "cannot be changed here: this request only reads state"], // a GET: it only reads
        [{ method: "POST", headers: { origin, accept: "text/html" }, body: new URLSearchParams() }, "was changed after the response was sent"], // after the action's commit
      ]) {
        const before = server.output().length;
        const html = await (await jar.request("/stream-write", init)).text();
        assert(html.includes('.resolve(1, () => [,{message:"Internal Error"}])'), `the streamed promise was not rejected:\n${html.slice(-400)}`);
        assert(await printed(server, before, error), `the server did not log "${error}":\n${server.output().slice(before)}`);
      }
      assert((await read(jar)).count === 2, "the form action's +1 is stored, the streamed change is not");
    });
  } finally {
    await server.stop();
  }

  // The framework says https: through ORIGIN, or through the proxy's header named by PROTOCOL_HEADER.
  const withOrigin = await startServer({ command: process.execPath, args: ["build"], env: { ...env, ORIGIN: "https://app.example" }, port: await freePort() });
  try {
    await check("with ORIGIN=https://…, the cookie is Secure", async () => {
      assertCookieAttributes(setCookieOf(await new Jar(withOrigin.url).request("/inc", { method: "POST" }), "counter"), { secure: true });
    });
  } finally {
    await withOrigin.stop();
  }
  const proxied = await startServer({ command: process.execPath, args: ["build"], env: { ...env, PROTOCOL_HEADER: "x-forwarded-proto" }, port: await freePort() });
  try {
    await check("with PROTOCOL_HEADER, the proxy's https gives Secure; its http, or no header, does not", async () => {
      for (const [proto, secure] of [["https", true], ["http", false], [undefined, false]]) {
        const headers = proto === undefined ? {} : { "x-forwarded-proto": proto };
        assertCookieAttributes(setCookieOf(await new Jar(proxied.url).request("/inc", { method: "POST", headers }), "counter"), { secure });
      }
    });
  } finally {
    await proxied.stop();
  }

  await checkDevServer({
    command: "node_modules/.bin/vite",
    args: (port) => ["dev", "--host", "127.0.0.1", "--port", String(port), "--strictPort"],
    env,
    act: (jar, i) => actWith(jar.baseUrl)(jar, i),
    read,
  });
} finally {
  store.remove();
  finish();
}
