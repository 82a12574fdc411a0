// Checks shared by the apps of the page-rendering frameworks (React Router,
// SvelteKit, Astro): each app counts in a `Counter` and says how to act on it,
// read it and reset it over HTTP; these run the checks every adapter must pass.
import { execFileSync, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { request as httpsRequest } from "node:https";
import { join } from "node:path";
import { Jar, assert, assertCookieAttributes, assertEqual, check, freePort, setCookieOf, sleep, startServer } from "./check.mjs";

/** The record count of `store` once it stops changing: a commit's file may still be on its way. */
async function settledRecords(store) {
  let last = store.records();
  for (let i = 0; i < 20; i++) {
    await sleep(50);
    const now = store.records();
    if (now === last) return now;
    last = now;
  }
  return last;
}

/** Waits (up to a few seconds) until what `server` printed after offset `from` includes `text`; false if it never does. */
export async function printed(server, from, text) {
  for (let i = 0; i < 50; i++) {
    if (server.output().slice(from).includes(text)) return true;
    await sleep(100);
  }
  return false;
}

/**
 * The checks of issue #15 against a running production server:
 * - `act(jar, i)`: one state change through the app (i picks the kind: action, endpoint, …); resolves to its Response.
 * - `read(jar)`: the page render, parsed: `{ count, later }` (`later` is read by a part rendered after the headers).
 * - `reset(jar)`: the reset button; resolves to its Response.
 * - `renderWrite(jar)`: a page render that changes state; resolves to its Response.
 * - `renderWriteError`: what the server logs for it (persist-session's read-only error).
 */
export async function checkPageApp({ server, store, act, read, reset, renderWrite, renderWriteError = "cannot be changed here: this request only reads state" }) {
  const jar = new Jar(server.url);

  await check("a new visitor's first action sets the cookie: HttpOnly, SameSite=Lax, no Secure on plain HTTP", async () => {
    const response = await act(jar, 0);
    assertEqual(response.status < 400, true, `first action answered ${response.status}`);
    assertCookieAttributes(setCookieOf(response, "counter"), { secure: false });
    assertEqual(await settledRecords(store), 1, "records after the first action");
  });

  await check("the page render shows the state, in what streams after the headers too", async () => {
    assertEqual(await read(jar), { count: 1, later: 1 }, "page");
  });

  await check("20 concurrent actions with one cookie end at exactly +20", async () => {
    const responses = await Promise.all(Array.from({ length: 20 }, (_, i) => act(jar, i)));
    assertEqual(
      responses.map((response) => response.status < 400),
      responses.map(() => true),
      `statuses ${responses.map((response) => response.status).join(",")}`,
    );
    assertEqual((await read(jar)).count, 21, "count after 20 concurrent actions");
  });

  await check("a restart on the same store directory keeps the state", async () => {
    await server.restart();
    assertEqual((await read(jar)).count, 21, "count after the restart");
  });

  await check("a render-time change gets the documented error and changes nothing", async () => {
    const before = server.output().length;
    const response = await renderWrite(jar);
    await response.text();
    assertEqual(response.status, 500, "status of the render that changed state");
    assert(await printed(server, before, renderWriteError), `the server did not log "${renderWriteError}":\n${server.output().slice(before)}`);
    assertEqual((await read(jar)).count, 21, "count after the render");
  });

  await check("no page render creates a record file (50 anonymous page views)", async () => {
    const before = await settledRecords(store);
    for (let i = 0; i < 50; i++) {
      const visitor = new Jar(server.url);
      assertEqual((await read(visitor)).count, 0, "an anonymous visitor's count");
      assertEqual(visitor.setCookies, [], "Set-Cookie on an anonymous page view");
    }
    assertEqual(await settledRecords(store), before, "record files after 50 anonymous page views");
  });

  await check("the reset clears the state: cookie expired, record deleted", async () => {
    const before = await settledRecords(store);
    const response = await reset(jar);
    assert(response.status < 400, `reset answered ${response.status}`);
    assert(/max-age=0/i.test(setCookieOf(response, "counter") ?? ""), `no expiring Set-Cookie: ${response.headers.getSetCookie()}`);
    assertEqual(await settledRecords(store), before - 1, "record files after the reset");
    assertEqual((await read(jar)).count, 0, "count after the reset");
  });
}

/**
 * The dev server once, with the app's documented config (the esbuild target
 * that lowers @persist): a first change sets the cookie and the state comes
 * back. `args(port)` are the dev command's arguments to listen on loopback at `port`.
 */
export async function checkDevServer({ command, args, env, act, read }) {
  await check("dev server: a first change sets the cookie and the page reads it back", async () => {
    const port = await freePort();
    const server = await startServer({ command, args: args(port), env, port, timeoutMs: 180_000 });
    try {
      const jar = new Jar(server.url);
      const response = await act(jar, 0);
      assert(response.status < 400, `dev action answered ${response.status}:\n${server.output()}`);
      assertCookieAttributes(setCookieOf(response, "counter"), { secure: false });
      await act(jar, 1);
      assertEqual((await read(jar)).count, 2, "count on the dev server");
    } finally {
      await server.stop();
    }
  });
}

/** A self-signed certificate for 127.0.0.1 and localhost in `dir` (openssl), for a server that speaks TLS itself. */
export function selfSignedCertificate(dir) {
  const key = join(dir, "key.pem");
  const cert = join(dir, "cert.pem");
  execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], {
    stdio: "ignore",
  });
  return { key, cert, ca: readFileSync(cert) };
}

/** One HTTPS request trusting `ca`; resolves to `{ status, setCookies, body }`. */
export function requestOverTls(url, { method = "GET", headers = {}, body, ca } = {}) {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(url, { method, headers, ca }, (res) => {
      let text = "";
      res.setEncoding("utf8").on("data", (chunk) => (text += chunk));
      res.on("end", () => resolve({ status: res.statusCode, setCookies: [res.headers["set-cookie"] ?? []].flat(), body: text }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

/** Starts a server that speaks TLS on `port` with `env`, and waits until `readyPath` answers over TLS; resolves to `{ stop }`. */
export async function startTlsServer({ command, args, env, port, ca, readyPath = "/", timeoutMs = 60_000 }) {
  let output = "";
  const child = spawn(command, args, { env: { ...process.env, PORT: String(port), HOST: "127.0.0.1", ...env }, stdio: ["ignore", "pipe", "pipe"] });
  child.stdout.setEncoding("utf8").on("data", (chunk) => (output += chunk));
  child.stderr.setEncoding("utf8").on("data", (chunk) => (output += chunk));
  const stop = async () => {
    if (child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGTERM");
    await exited;
  };
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${command} ${args.join(" ")} exited (${child.exitCode}) before answering:\n${output}`);
    try {
      await requestOverTls(`https://127.0.0.1:${port}${readyPath}`, { ca });
      return { stop, output: () => output };
    } catch {
      if (Date.now() > deadline) {
        await stop();
        throw new Error(`https://127.0.0.1:${port}${readyPath} did not answer within ${timeoutMs} ms:\n${output}`);
      }
      await sleep(200);
    }
  }
}

/** The `counter` Set-Cookie line of a `requestOverTls` answer. */
export function counterCookieOf(answer) {
  return answer.setCookies.find((line) => line.startsWith("counter="));
}

/** `count=N` and `later=N` of a page's HTML (React's `<!-- -->` text separators aside); `undefined` where missing. */
export function parseCounts(html) {
  const text = html.replace(/<!-- -->/g, "");
  // Dev servers may add attributes (Astro's data-astro-source-file).
  const count = /id="count"[^>]*>count=(\d+)/.exec(text);
  const later = /id="later"[^>]*>later=(\d+)/.exec(text);
  return { count: count ? Number(count[1]) : undefined, later: later ? Number(later[1]) : undefined };
}
