import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from "node:http";
import type { TLSSocket } from "node:tls";
import { runInRequest } from "../context.js";
import type { CommitResult, RequestSession } from "../request-session.js";
import type { SessionCore } from "../session-core.js";
import { failureStatus, logFailure } from "./failure.js";

/** Connect-style `next`: Express, Connect and a plain `() => handler(req, res)` all fit. */
export type NextFunction = (error?: unknown) => unknown;

const GATED = ["writeHead", "write", "end", "flushHeaders"] as const;
type Gated = (typeof GATED)[number];

/**
 * Runs `next` inside the request's session and holds the response at its
 * commit point: the first of writeHead/write/end/flushHeaders commits the
 * state, adds Set-Cookie, and the response leaves only once the state is stored.
 */
export function handleNodeRequest(core: SessionCore, req: IncomingMessage, res: ServerResponse, next?: NextFunction): void {
  let opened: RequestSession | Promise<RequestSession>;
  try {
    opened = core.begin(headerValue(req.headers.cookie), isHttps(req, core.trustProxy), req);
  } catch (error) {
    fail(core, res, error);
    return;
  }
  if (opened instanceof Promise) {
    opened.then((session) => run(core, session, res, next), (error: unknown) => fail(core, res, error));
  } else {
    run(core, opened, res, next);
  }
}

function run(core: SessionCore, session: RequestSession, res: ServerResponse, next: NextFunction | undefined): void {
  gateResponse(core, session, res);
  if (next === undefined) return;
  runInRequest(session, () => {
    try {
      const result = next();
      if (isPromise(result)) result.catch((error: unknown) => fail(core, res, error));
    } catch (error) {
      fail(core, res, error);
    }
  });
}

function gateResponse(core: SessionCore, session: RequestSession, res: ServerResponse): void {
  const originals = Object.fromEntries(GATED.map((name) => [name, res[name]])) as Pick<ServerResponse, Gated>;
  const queued: Array<[Gated, unknown[]]> = [];
  let phase: "open" | "waiting" | "done" = "open";
  const restore = () => {
    phase = "done";
    for (const name of GATED) (res as unknown as Record<Gated, unknown>)[name] = originals[name];
  };
  /**
   * Answers with the failure's status, then drops what the handler still
   * writes: passed on, a write after the 500's end is an 'error' event on the
   * response that nobody listens to, and it would crash the process.
   */
  const failResponse = (error: unknown) => {
    restore();
    queued.length = 0;
    fail(core, res, error);
    const dropped: Record<Gated, (...args: unknown[]) => unknown> = {
      writeHead: () => res,
      flushHeaders: () => undefined,
      write: () => false,
      // Ending again is harmless without data, and runs the handler's callback.
      end: (...args) => (originals.end as (...a: unknown[]) => unknown).apply(res, args.filter((arg) => typeof arg === "function")),
    };
    for (const name of GATED) (res as unknown as Record<Gated, unknown>)[name] = dropped[name];
  };
  const commit = (): CommitResult | undefined => {
    try {
      return session.commit();
    } catch (error) {
      failResponse(error);
      return undefined;
    }
  };

  for (const name of GATED) {
    (res as unknown as Record<Gated, (...args: unknown[]) => unknown>)[name] = function gated(this: ServerResponse, ...args: unknown[]) {
      if (phase === "open") {
        const result = commit();
        if (result === undefined) return name === "write" ? false : res;
        addSetCookies(res, result.setCookies, name === "writeHead" ? args : undefined);
        if (result.durable === undefined) {
          restore();
          return (originals[name] as (...a: unknown[]) => unknown).apply(res, args);
        }
        phase = "waiting";
        result.durable.then(
          () => {
            restore();
            for (const [queuedName, queuedArgs] of queued.splice(0)) {
              (originals[queuedName] as (...a: unknown[]) => unknown).apply(res, queuedArgs);
            }
          },
          (error: unknown) => failResponse(error),
        );
      }
      queued.push([name, args]);
      return name === "write" ? true : name === "flushHeaders" ? undefined : res;
    };
  }
  // A client that leaves before the response must not keep the browser's records locked.
  res.once("close", () => {
    if (phase !== "open") return;
    restore();
    try {
      void session.commit().durable?.catch((error: unknown) => logFailure(core, error));
    } catch (error) {
      logFailure(core, error);
    }
  });
}

function addSetCookies(res: ServerResponse, cookies: readonly string[], writeHeadArgs: unknown[] | undefined): void {
  if (cookies.length === 0) return;
  const existing = res.getHeader("set-cookie");
  const merged = existing === undefined ? [...cookies] : [...(Array.isArray(existing) ? existing : [String(existing)]), ...cookies];
  res.setHeader("set-cookie", merged);
  // writeHead(status, headers) lets its own headers replace setHeader's: merge ours into them too.
  const headers = writeHeadArgs?.find((arg, i) => i > 0 && typeof arg === "object" && arg !== null);
  if (headers === undefined) return;
  if (Array.isArray(headers)) {
    for (const cookie of cookies) headers.push("set-cookie", cookie);
    return;
  }
  const record = headers as OutgoingHttpHeaders;
  const name = Object.keys(record).find((header) => header.toLowerCase() === "set-cookie");
  if (name === undefined) return;
  const own = record[name];
  record[name] = [...(Array.isArray(own) ? own : [String(own)]), ...cookies];
}

/** Ends the response with the error's status (500, or 503 when the store or a lock is unavailable) and logs why. */
function fail(core: SessionCore, res: ServerResponse, error: unknown): void {
  logFailure(core, error);
  if (res.headersSent || res.writableEnded) {
    res.destroy();
    return;
  }
  const status = failureStatus(error);
  for (const name of res.getHeaderNames()) res.removeHeader(name);
  res.writeHead(status, { "content-type": "text/plain; charset=utf-8", ...(status === 503 ? { "retry-after": "1" } : {}) });
  res.end(status === 503 ? "Service Unavailable\n" : "Internal Server Error\n");
}

function isHttps(req: IncomingMessage, trustProxy: boolean): boolean {
  if ((req.socket as TLSSocket).encrypted === true) return true;
  if (!trustProxy) return false;
  const proto = headerValue(req.headers["x-forwarded-proto"]);
  return proto?.split(",")[0]?.trim().toLowerCase() === "https";
}

function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value.join("; ") : value;
}

function isPromise(value: unknown): value is Promise<unknown> {
  return typeof value === "object" && value !== null && typeof (value as { catch?: unknown }).catch === "function";
}
