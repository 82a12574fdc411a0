/**
 * A small app for the persist-session/client browser suite, in the test's own
 * process so the suite can read `sessions.openStreams`: a counter per browser,
 * one per signed-in user (the demo's sign-in, demo/login.js), a reset, and a
 * page that runs the built client and records what it is told.
 */
import { readFile } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { FileStore, clearCookieState, persist, persistSession, type Sessions } from "persist-session";

export const APP_KEY = "client-app";
export const NOTES_KEY = "client-notes";
const SECRET = "client-suite-secret-0123456789abcdef";

const AppState = persist(APP_KEY)(
  class AppState {
    count = 0;
  },
);
const Notes = persist(NOTES_KEY, { scope: "user" })(
  class Notes {
    count = 0;
  },
);

interface Login {
  userOf(request: http.IncomingMessage): string | undefined;
  signInCookie(name: string): string;
  signOutCookie(): string;
}
// The demo's own sign-in (plain JavaScript, hence the untyped import).
const { createLogin } = (await import(/* @vite-ignore */ new URL("../../demo/login.js", import.meta.url).href)) as { createLogin(secret: string): Login };

/** The page: the client in two lines, and what it reports kept in window for the test. */
const PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>client suite</title><link rel="icon" href="data:,"></head>
<body>
<script type="module">
import { watchState } from "/client.js";
const sync = watchState({ url: "/events" });
const changes = [];
window.sync = sync;
window.changes = changes;
sync.on("change", (change) => changes.push({ ...change, at: Date.now() }));
// When this tab became the one holding the stream, with it open.
sync.on("status", (status) => status === "live" && sync.holdsStream && (window.heldAt = Date.now()));
window.post = (path) => fetch(path, { method: "POST" }).then((response) => response.json());
</script>
</body></html>`;

/** A change made through the app: the count it left, the streams open then, and when it was made (Date.now()). */
export interface Made {
  count: number;
  openStreams: number;
  at: number;
}

export class ClientApp {
  /** Delays each new events stream (not the probe) by this many ms, to hold a handover open. */
  holdStreams = 0;
  /** The user each events stream request was made for, in order. */
  readonly streams: Array<string | undefined> = [];
  #server: http.Server | undefined;
  #sessions: Sessions | undefined;
  readonly #login: Login = createLogin(SECRET);

  private constructor(
    readonly dir: string,
    private port: number,
  ) {}

  static async start(dir: string): Promise<ClientApp> {
    const app = new ClientApp(dir, 0);
    await app.listen();
    return app;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get running(): boolean {
    return this.#server !== undefined;
  }

  get openStreams(): number {
    return this.#sessions?.openStreams ?? 0;
  }

  /** Starts serving (again, on the same port and store directory after {@link stop}). */
  async listen(): Promise<void> {
    const client = await readFile(fileURLToPath(import.meta.resolve("persist-session/client")));
    const login = this.#login;
    const sessions = persistSession({ secret: SECRET, store: new FileStore({ dir: this.dir }), user: (request) => login.userOf(request as http.IncomingMessage), anonymous: "reject", heartbeat: 2, sweepInterval: 0 });
    const server = http.createServer((req, res) => {
      const path = req.url ?? "/";
      if (path === "/events") {
        const stream = req.headers.accept?.includes("text/event-stream") === true;
        if (stream) this.streams.push(login.userOf(req));
        const serve = () => sessions.events(req, res);
        if (stream && this.holdStreams > 0) setTimeout(serve, this.holdStreams);
        else serve();
        return;
      }
      if (path === "/") return void res.writeHead(200, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" }).end(PAGE);
      if (path === "/client.js") return void res.writeHead(200, { "content-type": "text/javascript; charset=utf-8" }).end(client);
      if (req.method !== "POST") return void res.writeHead(404).end();
      if (path === "/login") return void res.writeHead(200, { "set-cookie": login.signInCookie("alice"), "content-type": "application/json" }).end("{}");
      if (path === "/logout") return void res.writeHead(200, { "set-cookie": login.signOutCookie(), "content-type": "application/json" }).end("{}");
      sessions(req, res, async () => {
        const made: Made = { count: 0, openStreams: sessions.openStreams, at: Date.now() };
        if (path === "/inc") made.count = ++new AppState().count;
        else if (path === "/notes") made.count = ++new Notes().count;
        else if (path === "/reset") await clearCookieState(new AppState());
        else return void res.writeHead(404).end();
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(made));
      });
    });
    await new Promise<void>((resolve, reject) => server.once("error", reject).listen(this.port, "127.0.0.1", resolve));
    this.port = (server.address() as AddressInfo).port;
    this.#server = server;
    this.#sessions = sessions;
  }

  /** Stops as a crash would for the browser: every connection is cut, nothing is ended politely. */
  async stop(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    if (server !== undefined) {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
    await this.#sessions?.close();
    this.#sessions = undefined;
  }
}
