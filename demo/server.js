// The persist-session demo: a counter and a todo list that survive reloads,
// new tabs and server restarts. Plain node:http, no framework.
//
//   npm run demo                      # http://localhost:8501
//   PORT=3000 npm run demo            # another port
//   PERSIST_SESSION_DIR=/tmp/s npm run demo
//   SESSION_SECRET=$(openssl rand -base64 48) npm run demo
//
// Every change is a POST answered with 303 See Other to "/" (post/redirect/get),
// so the page works without JavaScript; page.js adds a fetch() layer on top.
import { randomBytes } from "node:crypto";
import http from "node:http";
import { FileStore, clearCookieState, inspectState, persistSession } from "persist-session";
import { renderMessage, renderPage } from "./page.js";
import { AppState, Refusal, addTodo, bump, removeTodo, toggleTodo } from "./state.js";

/** A form post is a few hundred bytes; anything far bigger is not from our page. */
const MAX_BODY_BYTES = 8 * 1024;
/** How long a shutdown waits for requests in flight before it drops their connections. */
const SHUTDOWN_GRACE_MS = 2000;

/** POST routes: path → change to make. Each answers 303 to "/" (or "/?error=<code>"). */
const ACTIONS = new Map([
  ["/count/increment", (state) => bump(state, 1)],
  ["/count/decrement", (state) => bump(state, -1)],
  ["/todos", (state, form) => addTodo(state, form.get("text"))],
  ["/todos/toggle", (state, form) => toggleTodo(state, form.get("id"))],
  ["/todos/remove", (state, form) => removeTodo(state, form.get("id"))],
  ["/clear", (state) => clearCookieState(state)],
]);

class HttpError extends Error {
  constructor(status, title, text) {
    super(text);
    this.status = status;
    this.title = title;
  }
}

const port = parsePort(process.env.PORT);
const host = process.env.HOST || "127.0.0.1";
const store = new FileStore({ dir: process.env.PERSIST_SESSION_DIR || ".persist-session" });
let sessions;
try {
  // Without SESSION_SECRET the store generates one in <dir>/.secret and logs a warning.
  sessions = persistSession({ store, secret: process.env.SESSION_SECRET || undefined });
} catch (error) {
  console.error(`demo: ${error.message}`);
  process.exit(1);
}

const server = http.createServer((req, res) => {
  sessions(req, res, () =>
    handle(req, res).catch((error) => {
      if (error instanceof HttpError) {
        // A refused body may be half-read: do not reuse the connection.
        const headers = error.status === 413 || error.status === 415 ? { connection: "close" } : {};
        sendPage(res, error.status, (nonce) => renderMessage({ title: error.title, text: error.message, nonce }), headers);
        return;
      }
      console.error("demo: the request failed:", error);
      if (res.headersSent) res.destroy();
      else sendPage(res, 500, (nonce) => renderMessage({ title: "Something broke", text: "The server could not handle that. Try again.", nonce }));
    }),
  );
});

async function handle(req, res) {
  const { pathname, searchParams } = new URL(req.url ?? "/", "http://demo.invalid");

  if (pathname === "/") {
    if (req.method !== "GET" && req.method !== "HEAD") throw methodNotAllowed("GET, HEAD", res);
    const state = new AppState();
    sendPage(res, 200, (nonce) => renderPage({ state, info: inspectState(state), error: searchParams.get("error"), nonce }));
    return;
  }

  const action = ACTIONS.get(pathname);
  if (action === undefined) throw new HttpError(404, "Not found", "There is no page here.");
  if (req.method !== "POST") throw methodNotAllowed("POST", res);
  const form = await readForm(req);
  const state = new AppState();
  let location = "/";
  try {
    await action(state, form);
  } catch (error) {
    if (!(error instanceof Refusal)) throw error;
    location = `/?error=${error.code}`;
  }
  // The library stores the change before these headers leave.
  res.writeHead(303, { location, "cache-control": "no-store", "content-length": 0 });
  res.end();
}

/** The url-encoded body of a form post, at most MAX_BODY_BYTES. */
function readForm(req) {
  const type = (req.headers["content-type"] ?? "").split(";")[0].trim().toLowerCase();
  if (type !== "application/x-www-form-urlencoded") {
    req.resume();
    return Promise.reject(new HttpError(415, "Unsupported form", "Send the form as application/x-www-form-urlencoded."));
  }
  return new Promise((resolve, reject) => {
    const tooLarge = () => new HttpError(413, "Too large", `A form may carry ${MAX_BODY_BYTES} bytes at most.`);
    if (Number(req.headers["content-length"]) > MAX_BODY_BYTES) {
      req.resume();
      reject(tooLarge());
      return;
    }
    const chunks = [];
    let size = 0;
    req.on("data", (chunk) => {
      size += chunk.length;
      if (size <= MAX_BODY_BYTES) chunks.push(chunk);
    });
    req.on("end", () => (size > MAX_BODY_BYTES ? reject(tooLarge()) : resolve(new URLSearchParams(Buffer.concat(chunks).toString("utf8")))));
    // The client went away mid-body; nobody is left to read an answer.
    req.on("error", () => reject(new HttpError(400, "Bad request", "The request was cut off.")));
  });
}

function methodNotAllowed(allow, res) {
  res.setHeader("allow", allow);
  return new HttpError(405, "Method not allowed", `This address answers ${allow} only.`);
}

/** Sends the HTML of `render(nonce)`; only the inline <style> and <script> carrying the nonce may run. */
function sendPage(res, status, render, headers = {}) {
  const nonce = randomBytes(16).toString("base64");
  const html = render(nonce);
  res.writeHead(status, {
    "content-type": "text/html; charset=utf-8",
    "content-length": Buffer.byteLength(html),
    // The page shows one browser's private state: never cache it, never frame it.
    "cache-control": "no-store",
    "content-security-policy": `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'nonce-${nonce}'; img-src data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'`,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    ...headers,
  });
  res.end(html);
}

function parsePort(value) {
  if (value === undefined || value === "") return 8501;
  const number = Number(value);
  if (!Number.isInteger(number) || number < 0 || number > 65535) {
    console.error(`demo: PORT is invalid: ${JSON.stringify(value)}. Use a number from 0 to 65535.`);
    process.exit(1);
  }
  return number;
}

server.on("error", (error) => {
  console.error(`demo: cannot listen on ${host}:${port}: ${error.message}`);
  process.exit(1);
});

server.listen(port, host, () => {
  const { port: actual } = server.address();
  const shown = ["127.0.0.1", "::1", "localhost", "0.0.0.0", "::"].includes(host) ? "localhost" : host.includes(":") ? `[${host}]` : host;
  console.log(`persist-session demo on http://${shown}:${actual} (records in ${store.dir})`);
});

let stopping = false;
async function stop() {
  if (stopping) process.exit(1); // a second Ctrl-C: do not wait any longer
  stopping = true;
  const closed = new Promise((resolve) => server.close(resolve));
  server.closeIdleConnections();
  const dropStragglers = setTimeout(() => server.closeAllConnections(), SHUTDOWN_GRACE_MS).unref();
  await closed;
  clearTimeout(dropStragglers);
  try {
    await sessions.close();
  } catch (error) {
    console.error("demo: could not close the session store:", error);
    process.exit(1);
  }
  process.exit(0);
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
