// What every framework app's check.mjs uses: start its production server, a cookie
// jar, named checks with a summary, and the checks every adapter must pass.
// Plain JavaScript on purpose: it runs in each app's folder with no build step.
import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const SECRET = "framework-suite-secret-0123456789-abcdef";
const UUID_FILE = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** A fresh store directory (the apps read it from PERSIST_DIR) and its record count. */
export function storeDir() {
  const parent = mkdtempSync(join(tmpdir(), "persist-session-framework-"));
  const dir = join(parent, "store");
  return {
    dir,
    records: () => {
      try {
        return readdirSync(dir).filter((name) => UUID_FILE.test(name)).length;
      } catch {
        return 0;
      }
    },
    remove: () => rmSync(parent, { recursive: true, force: true }),
  };
}

/** A free TCP port on loopback. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/**
 * Starts `command args` (a framework's production server) with `env`, waits until
 * `url + readyPath` answers, and returns a handle to stop and restart it.
 */
export async function startServer({ command, args = [], cwd = process.cwd(), env = {}, port, readyPath = "/", timeoutMs = 60_000 }) {
  const url = `http://127.0.0.1:${port}`;
  let child;
  let output = "";
  const start = async () => {
    output = "";
    child = spawn(command, args, { cwd, env: { ...process.env, PORT: String(port), HOST: "127.0.0.1", ...env }, stdio: ["ignore", "pipe", "pipe"] });
    child.stdout.setEncoding("utf8").on("data", (chunk) => (output += chunk));
    child.stderr.setEncoding("utf8").on("data", (chunk) => (output += chunk));
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`${command} ${args.join(" ")} exited (${child.exitCode}) before answering:\n${output}`);
      try {
        const response = await fetch(url + readyPath, { signal: AbortSignal.timeout(2000) });
        await response.arrayBuffer();
        return;
      } catch {
        if (Date.now() > deadline) throw new Error(`${url}${readyPath} did not answer within ${timeoutMs} ms:\n${output}`);
        await sleep(200);
      }
    }
  };
  const stop = async () => {
    if (child === undefined || child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
    await exited;
    clearTimeout(timer);
  };
  await start();
  return {
    url,
    /** What the server printed so far. */
    output: () => output,
    stop,
    restart: async () => {
      await stop();
      await start();
    },
  };
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A browser's cookie jar: name → value, honouring Max-Age=0; keeps every Set-Cookie line. */
export class Jar {
  cookies = new Map();
  setCookies = [];

  constructor(baseUrl) {
    this.baseUrl = baseUrl;
  }

  header() {
    return [...this.cookies].map(([name, value]) => `${name}=${value}`).join("; ");
  }

  /** fetch with this jar's cookies; redirects are not followed, so a Set-Cookie on a redirect is seen. */
  async request(path, init = {}) {
    const headers = new Headers(init.headers);
    const cookie = this.header();
    if (cookie !== "" && !headers.has("cookie")) headers.set("cookie", cookie);
    const response = await fetch(this.baseUrl + path, { redirect: "manual", ...init, headers });
    for (const line of response.headers.getSetCookie()) {
      this.setCookies.push(line);
      const [pair = ""] = line.split(";");
      const eq = pair.indexOf("=");
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      if (/;\s*max-age=0/i.test(line) || value === "") this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
    return response;
  }
}

const results = [];

/** Runs one named check; a failure is recorded and printed, and the next check still runs. */
export async function check(name, fn) {
  const started = Date.now();
  try {
    await fn();
    results.push({ name, ok: true });
    console.log(`  ✓ ${name} (${Date.now() - started} ms)`);
  } catch (error) {
    results.push({ name, ok: false });
    console.log(`  ✗ ${name}\n    ${String(error?.stack ?? error).split("\n").join("\n    ")}`);
  }
}

/** Prints the summary line and exits non-zero when any check failed. */
export function finish() {
  const failed = results.filter((result) => !result.ok).length;
  console.log(`${results.length - failed} passed, ${failed} failed`);
  process.exitCode = failed === 0 && results.length > 0 ? 0 : 1;
}

export function assert(condition, message) {
  if (!condition) throw new Error(message);
}

export function assertEqual(actual, expected, message) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new Error(`${message}: expected ${e}, got ${a}`);
}

/** The Set-Cookie line of `name` in `response`, or undefined. */
export function setCookieOf(response, name) {
  return response.headers.getSetCookie().find((line) => line.startsWith(`${name}=`));
}

/** Checks a state cookie's attributes: HttpOnly, SameSite=Lax, and Secure exactly when `secure`. */
export function assertCookieAttributes(line, { secure }) {
  assert(line !== undefined, "no Set-Cookie for the state");
  assert(/;\s*HttpOnly/i.test(line), `not HttpOnly: ${line}`);
  assert(/;\s*SameSite=Lax/i.test(line), `not SameSite=Lax: ${line}`);
  assert(/;\s*Secure/i.test(line) === secure, `Secure should be ${secure}: ${line}`);
}
