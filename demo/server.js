// The persist-session demo: a counter and a todo list that survive reloads,
// new tabs and server restarts, and update live in every open tab; sign in with
// a name for notes shared by every device signed in with it (a count made
// before signing in is added to the name's). Plain node:http, no framework.
//
//   npm run demo                      # http://localhost:8501
//   PORT=3000 npm run demo            # another port
//   PERSIST_SESSION_DIR=/tmp/s npm run demo
//   SESSION_SECRET=$(openssl rand -base64 48) npm run demo
//
// Every change is a POST answered with 303 See Other to "/" (post/redirect/get),
// so the page works without JavaScript; page.js adds a fetch() layer on top,
// and persist-session/client on /events, which refreshes the page when another
// tab or device changes this browser's (or this user's) state.
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import http from "node:http";
import { fileURLToPath } from "node:url";
import { FileStore, clearCookieState, inspectState, persistSession, rotateStateIds } from "persist-session";
import { createLogin, isValidName } from "./login.js";
import { CLIENT_PATH, renderMessage, renderPage } from "./page.js";
import { AppState, Refusal, SharedNotes, addNote, addTodo, bump, removeNote, removeTodo, toggleTodo } from "./state.js";

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

/**
 * POST routes on the shared counter and notes: the signed-in user's, or, signed out, this
 * browser's until it signs in. The note routes need a name: signed out, they answer 303 to
 * "/?error=signed-out".
 */
const SHARED_ACTIONS = new Map([
  ["/shared/increment", (shared) => bump(shared, 1)],
  ["/shared/decrement", (shared) => bump(shared, -1)],
  ["/shared/notes", (shared, form) => addNote(shared, form.get("text"))],
  ["/shared/notes/remove", (shared, form) => removeNote(shared, form.get("id"))],
]);
const SIGNED_IN_ONLY = new Set(["/shared/notes", "/shared/notes/remove"]);

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
let login;
try {
  // Without SESSION_SECRET the store generates one in <dir>/.secret (persist-session logs a
  // warning on the first request). The sign-in cookie's key is derived from the same secret;
  // it is read here, before any request, so the two never race to create the file.
  const secret = process.env.SESSION_SECRET || (await store.secret()).secret;
  sessions = persistSession({
    store,
    secret: process.env.SESSION_SECRET || undefined,
    // The user is whoever the verified demo-user cookie names; nothing else the client sends.
    user: (request) => login.userOf(request),
    // Signed out, the shared counter is kept per browser, and added to the user's at sign-in (SharedNotes's merge).
    anonymous: "browser",
  });
  login = createLogin(secret);
  // The store claims its directory at its first use; ready() does that now, so a directory that is
  // not ours, or one another process serves, stops the demo here instead of failing each request.
  await sessions.ready();
} catch (error) {
  console.error(`demo: ${error.message}`);
  process.exit(1);
}

/** The browser module of persist-session/client, built (dist/client.js), served as it is: no bundler in the demo. */
const CLIENT_SCRIPT = readFileSync(fileURLToPath(import.meta.resolve("persist-session/client")));

/** Open /events responses, ended at shutdown so it does not wait for them. */
const eventStreams = new Set();

const server = http.createServer((req, res) => {
  // The events stream holds no lock and commits nothing: it stays outside the session middleware.
  if (req.url === "/events" || req.url?.startsWith("/events?")) {
    if (req.method !== "GET") {
      res.writeHead(405, { allow: "GET", "content-type": "text/plain; charset=utf-8" }).end("GET only\n");
      return;
    }
    eventStreams.add(res);
    res.once("close", () => eventStreams.delete(res));
    sessions.events(req, res);
    return;
  }
  if (req.url === CLIENT_PATH && (req.method === "GET" || req.method === "HEAD")) {
    res.writeHead(200, {
      "content-type": "text/javascript; charset=utf-8",
      "content-length": CLIENT_SCRIPT.length,
      "cache-control": "no-cache",
      "x-content-type-options": "nosniff",
    });
    res.end(req.method === "HEAD" ? undefined : CLIENT_SCRIPT);
    return;
  }
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

  const user = login.userOf(req);

  if (pathname === "/") {
    if (req.method !== "GET" && req.method !== "HEAD") throw methodNotAllowed("GET, HEAD", res);
    const state = new AppState();
    // Signed out, this is the browser's own count (no record until it first changes).
    const shared = new SharedNotes();
    const view = { state, info: inspectState(state), user, shared, sharedInfo: inspectState(shared), error: searchParams.get("error") };
    sendPage(res, 200, (nonce) => renderPage({ ...view, nonce }));
    return;
  }

  if (pathname === "/login" || pathname === "/logout") {
    if (req.method !== "POST") throw methodNotAllowed("POST", res);
    refuseCrossSite(req);
    const form = await readForm(req);
    // New record ids at sign-in and sign-out: a cookie planted before (session fixation) or kept after opens nothing.
    // A visitor's shared count moves to a new id too; the next request, signed in, merges it into the user's.
    rotateStateIds();
    let cookie = login.signOutCookie();
    if (pathname === "/login") {
      const name = form.get("name");
      if (!isValidName(name)) throw new HttpError(400, "Not a name we take", "A name is 1 to 32 characters: lowercase letters a-z, digits, _ and -.");
      cookie = login.signInCookie(name);
    }
    res.writeHead(303, { location: "/", "cache-control": "no-store", "content-length": 0, "set-cookie": [cookie] });
    res.end();
    return;
  }

  const action = ACTIONS.get(pathname);
  const sharedAction = SHARED_ACTIONS.get(pathname);
  if (action === undefined && sharedAction === undefined) throw new HttpError(404, "Not found", "There is no page here.");
  if (req.method !== "POST") throw methodNotAllowed("POST", res);
  refuseCrossSite(req);
  const form = await readForm(req);
  let location = "/";
  try {
    if (action !== undefined) await action(new AppState(), form);
    else if (user === undefined && SIGNED_IN_ONLY.has(pathname)) throw new Refusal("signed-out");
    else await sharedAction(new SharedNotes(), form);
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

/**
 * Browsers say where a form post comes from (Sec-Fetch-Site, sent to https and
 * localhost origins). A post from another site is refused: it would sign this
 * browser in as someone else, or change its state behind its back.
 */
function refuseCrossSite(req) {
  const site = req.headers["sec-fetch-site"];
  if (site !== undefined && site !== "same-origin" && site !== "none") {
    req.resume();
    throw new HttpError(403, "Forbidden", "This form only works from the demo's own page.");
  }
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
  // Open events streams would keep their connections busy until the grace period ends.
  for (const res of eventStreams) res.end(() => server.closeIdleConnections());
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
