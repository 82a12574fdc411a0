// React Router 7 (framework mode) with persist-session/react-router: builds the
// app, runs react-router-serve on loopback, and checks it over HTTP.
import { execFileSync } from "node:child_process";
import { Jar, SECRET, assertCookieAttributes, check, finish, freePort, setCookieOf, startServer, storeDir } from "../lib/check.mjs";
import { checkDevServer, checkPageApp, parseCounts } from "../lib/page-apps.mjs";

const store = storeDir();
const env = { SESSION_SECRET: SECRET, PERSIST_DIR: store.dir, NODE_ENV: "production" };
const bin = (name) => `node_modules/.bin/${name}`;

// A document POST (the action, then the page) and a resource route's action, in turn.
const act = (jar, i) =>
  i % 2 === 0 ? jar.request("/?index", { method: "POST", body: new URLSearchParams({ intent: "inc" }) }) : jar.request("/inc", { method: "POST" });
// A browser's User-Agent: React Router waits for all deferred data before answering a bot (isbot), and streams to browsers.
const BROWSER = { "user-agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36" };
const read = async (jar) => ({
  count: parseCounts(await (await jar.request("/", { headers: BROWSER })).text()).count,
  later: parseCounts(await (await jar.request("/late", { headers: BROWSER })).text()).later,
});
const reset = (jar) => jar.request("/?index", { method: "POST", body: new URLSearchParams({ intent: "reset" }) });

try {
  execFileSync(bin("react-router"), ["build"], { stdio: "inherit", env: { ...process.env, NODE_ENV: "production" } });
  const port = await freePort();
  const server = await startServer({ command: bin("react-router-serve"), args: ["./build/server/index.js"], env, port });
  try {
    await checkPageApp({ server, store, act, read, reset, renderWrite: (jar) => jar.request("/render-write") });

    await check("react-router-serve ignores a client's X-Forwarded-Proto: no Secure", async () => {
      const response = await new Jar(server.url).request("/inc", { method: "POST", headers: { "x-forwarded-proto": "https" } });
      assertCookieAttributes(setCookieOf(response, "counter"), { secure: false });
    });
  } finally {
    await server.stop();
  }

  // Behind a TLS proxy: Express trusts it (trust proxy), so React Router's URL is https.
  const proxied = await startServer({ command: process.execPath, args: ["server.mjs"], env, port: await freePort() });
  try {
    await check("behind a trusted proxy saying https, the cookie is Secure; saying http, it is not", async () => {
      const secure = await new Jar(proxied.url).request("/inc", { method: "POST", headers: { "x-forwarded-proto": "https" } });
      assertCookieAttributes(setCookieOf(secure, "counter"), { secure: true });
      const plain = await new Jar(proxied.url).request("/inc", { method: "POST", headers: { "x-forwarded-proto": "http" } });
      assertCookieAttributes(setCookieOf(plain, "counter"), { secure: false });
    });
  } finally {
    await proxied.stop();
  }

  await checkDevServer({ command: bin("react-router"), args: (port) => ["dev", "--host", "127.0.0.1", "--port", String(port), "--strictPort"], env: { ...env, NODE_ENV: "development" }, act, read });
} finally {
  store.remove();
  finish();
}
