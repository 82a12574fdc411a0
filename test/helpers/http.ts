import http from "node:http";
import type { AddressInfo } from "node:net";

/** A real HTTP server on a random loopback port. */
export interface TestServer {
  readonly url: string;
  close(): Promise<void>;
}

/** A server a test started, and the persistSession it serves. */
export interface RunningServer {
  readonly server: TestServer;
  readonly sessions: { close(): Promise<void> };
}

/** Stops every server, then its sessions (their pending writes stored), and empties the list. */
export async function stopAll(running: RunningServer[]): Promise<void> {
  for (const { server, sessions } of running.splice(0)) {
    await server.close();
    await sessions.close();
  }
}

export async function listen(listener: http.RequestListener): Promise<TestServer> {
  const server = http.createServer(listener);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Serves a Fetch API handler over node:http, as Hono's or Next's node adapters do. */
export function fromFetch(handler: (request: Request) => Promise<Response>): http.RequestListener {
  return (req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", async () => {
      const headers = new Headers();
      for (const [name, value] of Object.entries(req.headers)) {
        if (typeof value === "string") headers.set(name, value);
        else if (Array.isArray(value)) for (const item of value) headers.append(name, item);
      }
      const body = chunks.length > 0 && req.method !== "GET" && req.method !== "HEAD" ? Buffer.concat(chunks) : undefined;
      // Like real adapters, abort the Request when the client goes away.
      const aborted = new AbortController();
      res.once("close", () => aborted.abort());
      const response = await handler(
        new Request(`http://${req.headers.host ?? "localhost"}${req.url}`, { method: req.method, headers, body, signal: aborted.signal }),
      );
      const out: Record<string, string | string[]> = {};
      response.headers.forEach((value, name) => {
        if (name !== "set-cookie") out[name] = value;
      });
      const cookies = response.headers.getSetCookie();
      if (cookies.length > 0) out["set-cookie"] = cookies;
      res.writeHead(response.status, out);
      if (response.body === null) return void res.end();
      // Stream chunk by chunk, so event streams flow.
      const reader = response.body.getReader();
      res.once("close", () => void reader.cancel().catch(() => undefined));
      try {
        for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) res.write(chunk.value);
      } catch {
        // the client went away
      }
      res.end();
    });
  };
}

/** A browser's cookie jar, enough for tests: name → value, honouring Max-Age=0. */
export class Browser {
  readonly cookies = new Map<string, string>();
  /** Every Set-Cookie header received, newest last. */
  readonly setCookies: string[] = [];

  constructor(readonly baseUrl: string) {}

  cookieHeader(): string {
    return [...this.cookies].map(([name, value]) => `${name}=${value}`).join("; ");
  }

  async request(path: string, init: RequestInit & { cookie?: string } = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    const cookie = init.cookie ?? this.cookieHeader();
    if (cookie !== "") headers.set("cookie", cookie);
    const response = await fetch(this.baseUrl + path, { ...init, headers });
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

  async json<T = Record<string, unknown>>(path: string, init: RequestInit & { cookie?: string } = {}): Promise<T> {
    const response = await this.request(path, init);
    if (!response.ok) throw new Error(`${init.method ?? "GET"} ${path} answered ${response.status}: ${await response.text()}`);
    return (await response.json()) as T;
  }
}
