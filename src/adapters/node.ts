import type { IncomingMessage, ServerResponse } from "node:http";
import type { TLSSocket } from "node:tls";
import { notePastNext, runInRequest } from "../context.js";
import { ClientGoneError, type CommitResult, type RequestState } from "../request-state.js";
import type { OpenInit, SessionCore } from "../session-core.js";
import { failureAnswer } from "./failure.js";
import { ResponseGate, type GateOwner } from "./response-gate.js";

/** Connect-style `next`: Express, Connect and a plain `() => handler(req, res)` all fit. */
export type NextFunction = (error?: unknown) => unknown;

/**
 * The node:http translation of the request lifecycle: opens the request from
 * `req`'s Cookie header, runs `next` in its context, and gates `res` so that
 * the first of writeHead/write/end/flushHeaders is the commit point (a 5xx
 * status aborts instead). A client that leaves while the request waits for a
 * lock never runs the handler; one that leaves later lets it run on.
 */
export function handleNodeRequest(core: SessionCore, req: IncomingMessage, res: ServerResponse, next?: NextFunction): void {
  let request: RequestState;
  try {
    request = core.open(nodeRequestInit(core, req));
  } catch (error) {
    fail(core, res, error);
    return;
  }
  const ready = request.ready;
  if (ready === undefined) {
    run(core, request, res, next, false);
    return;
  }
  // While it waits for a lock, a request whose client leaves gives its place up.
  res.once("close", () => request.disconnected());
  ready.then(
    () => run(core, request, res, next, true),
    (error: unknown) => {
      if (error instanceof ClientGoneError) return; // nobody to answer
      fail(core, res, error);
    },
  );
}

/** The request's side of the gate: commit (or abort on a 5xx), and answer failures. */
export class NodeRequest implements GateOwner {
  constructor(
    readonly core: SessionCore,
    readonly request: RequestState,
    readonly res: ServerResponse,
  ) {}

  commitPoint(status: number): CommitResult {
    return this.request.commit(status);
  }

  fail(error: unknown): void {
    this.request.abort();
    fail(this.core, this.res, error);
  }
}

function callNext(request: RequestState, gate: ResponseGate, next: NextFunction): void {
  try {
    const result = next();
    if (isPromise(result)) {
      result.then(
        () => returned(request, gate),
        (error: unknown) => gate.fail(error),
      );
    } else {
      returned(request, gate);
    }
  } catch (error) {
    gate.fail(error);
  }
}

/** `next` returned before the response committed: a later use of state outside any context may be the framework's doing. */
function returned(request: RequestState, gate: ResponseGate): void {
  if (gate.phase === "open" && request.phase === "open") request.onFinish = notePastNext();
}

function run(core: SessionCore, request: RequestState, res: ServerResponse, next: NextFunction | undefined, listening: boolean): void {
  if (request.gone) {
    request.abort();
    return;
  }
  const gate = new ResponseGate(res, new NodeRequest(core, request, res));
  if (next !== undefined) runInRequest(request, callNext, request, gate, next);
  // A handler that answered at once has committed already and needs no listener: 'close'
  // comes on a later tick, so none is missed.
  if (gate.phase !== "open" || listening) return;
  res.once("close", () => request.disconnected());
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

/** What the core opens a node:http request from: its Cookie header (as sent, duplicates and all) and whether it came over HTTPS. */
export function nodeRequestInit(core: SessionCore, req: IncomingMessage): OpenInit {
  return { cookieHeader: headerValue(req.headers.cookie), https: isHttps(req, core.trustProxy), request: req };
}

/** HTTPS as node sees it: a TLS socket, or (with `trustProxy`) the proxy's `X-Forwarded-Proto`. */
export function isHttps(req: IncomingMessage, trustProxy: boolean): boolean {
  if ((req.socket as TLSSocket).encrypted === true) return true;
  if (!trustProxy) return false;
  const proto = headerValue(req.headers["x-forwarded-proto"]);
  return proto?.split(",")[0]?.trim().toLowerCase() === "https";
}

export function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value.join("; ") : value;
}

function isPromise(value: unknown): value is Promise<unknown> {
  return typeof value === "object" && value !== null && typeof (value as { then?: unknown }).then === "function";
}
