import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from "node:http";
import type { TLSSocket } from "node:tls";
import { runInRequest } from "../context.js";
import type { CommitResult, RequestSession } from "../request-session.js";
import type { SessionCore } from "../session-core.js";
import { failureAnswer, logFailure } from "./failure.js";

/** Connect-style `next`: Express, Connect and a plain `() => handler(req, res)` all fit. */
export type NextFunction = (error?: unknown) => unknown;

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

// What the gates on `res` do (see run):
/** Nothing sent yet: the first gated call is the commit point. */
const OPEN = 0;
/** Committed; calls are queued until the state is stored. */
const WAITING = 1;
/** Stored (or nothing to store): calls go straight to the originals. */
const DONE = 2;
/** The commit or its write failed and the failure was answered: calls are dropped. */
const FAILED = 3;

function callNext(core: SessionCore, res: ServerResponse, next: NextFunction): void {
  try {
    const result = next();
    if (isPromise(result)) result.catch((error: unknown) => fail(core, res, error));
  } catch (error) {
    fail(core, res, error);
  }
}

/**
 * Puts a gate on writeHead/write/end/flushHeaders of `res`, then runs `next`
 * in the request's context. The gates stay for the whole response and pass
 * calls on once the state is stored: putting the originals back cost as much
 * as the gating (Express changes `res`'s prototype per request, after which
 * every property store on it is slow; bench/README.md), and four stores per
 * request are half of eight.
 */
function run(core: SessionCore, session: RequestSession, res: ServerResponse, next: NextFunction | undefined): void {
  type Method = (this: ServerResponse, ...args: unknown[]) => unknown;
  const writeHead = res.writeHead as Method;
  const write = res.write as Method;
  const end = res.end as Method;
  const flushHeaders = res.flushHeaders as Method;
  let phase = OPEN;
  /** Calls held while the write is in flight: method, arguments, method, arguments, … */
  let queued: unknown[] | undefined;

  const release = () => {
    if (phase !== WAITING) return;
    phase = DONE;
    const calls = queued!;
    queued = undefined;
    for (let i = 0; i < calls.length; i += 2) (calls[i] as Method).apply(res, calls[i + 1] as unknown[]);
  };
  /**
   * Answers with the failure's status, then drops what the handler still
   * writes: passed on, a write after the 500's end is an 'error' event on the
   * response that nobody listens to, and it would crash the process.
   */
  const failResponse = (error: unknown) => {
    queued = undefined;
    phase = DONE; // the failure answer goes through the gates to the originals
    try {
      fail(core, res, error);
    } finally {
      phase = FAILED;
    }
  };
  /** After a failure: what the handler still writes goes nowhere. */
  const drop = (original: Method, args: unknown[]): unknown => {
    if (original === write) return false;
    if (original === flushHeaders) return undefined;
    // Ending again is harmless without data, and runs the handler's callback.
    if (original === end) return end.apply(res, args.filter((arg) => typeof arg === "function"));
    return res;
  };
  /** `held` is what a queued call returns, as the original would have. */
  const gate = (original: Method, held: unknown): Method =>
    function gated(this: ServerResponse, ...args: unknown[]): unknown {
      if (phase === DONE) return original.apply(res, args);
      if (phase === OPEN) {
        let result: CommitResult;
        try {
          result = session.commit();
        } catch (error) {
          failResponse(error);
          return original === write ? false : res;
        }
        addSetCookies(res, result.setCookies, original === writeHead ? args : undefined);
        if (result.durable === undefined) {
          phase = DONE;
          return original.apply(res, args);
        }
        phase = WAITING;
        queued = [];
        result.durable.then(release, failResponse);
      }
      if (phase === FAILED) return drop(original, args);
      queued!.push(original, args);
      return held;
    };

  const mutable = res as unknown as Record<"writeHead" | "write" | "end" | "flushHeaders", Method>;
  mutable.writeHead = gate(writeHead, res);
  mutable.write = gate(write, true);
  mutable.end = gate(end, res);
  mutable.flushHeaders = gate(flushHeaders, undefined);

  if (next !== undefined) runInRequest(session, callNext, core, res, next);

  // A client that leaves before the response must not keep the browser's records locked.
  // A handler that answered at once has committed already and needs no listener: 'close'
  // comes on a later tick, so none is missed.
  if (phase !== OPEN) return;
  res.once("close", () => {
    if (phase !== OPEN) return;
    phase = DONE;
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
  const answer = failureAnswer(core, error);
  if (res.headersSent || res.writableEnded) {
    res.destroy();
    return;
  }
  for (const name of res.getHeaderNames()) res.removeHeader(name);
  res.writeHead(answer.status, answer.headers);
  res.end(answer.body);
}

function isHttps(req: IncomingMessage, trustProxy: boolean): boolean {
  if ((req.socket as TLSSocket).encrypted === true) return true;
  if (!trustProxy) return false;
  const proto = headerValue(req.headers["x-forwarded-proto"]);
  return proto?.split(",")[0]?.trim().toLowerCase() === "https";
}

export function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value.join("; ") : value;
}

function isPromise(value: unknown): value is Promise<unknown> {
  return typeof value === "object" && value !== null && typeof (value as { catch?: unknown }).catch === "function";
}
