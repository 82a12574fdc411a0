import type { IncomingMessage, ServerResponse } from "node:http";
import type { CommitResult, RequestState } from "../request-state.js";
import { SessionCore } from "../session-core.js";
import type { SetCookie } from "../set-cookie.js";
import { kCore, type Sessions } from "../session.js";
import { NodeRequest, nodeRequestInit } from "./node.js";
import { ResponseGate, type GateOwner } from "./response-gate.js";

/** The engine behind `sessions`, for a framework adapter; a clear TypeError for anything else. */
export function coreOf(sessions: Sessions): SessionCore {
  const core = (sessions as unknown as Record<symbol, unknown> | undefined)?.[kCore];
  if (core instanceof SessionCore) return core;
  throw new TypeError(
    "persist-session: the adapter expects what persistSession() returns. Pass `sessions` from `const sessions = persistSession({ secret })`, from the same copy of persist-session.",
  );
}

/** Requests an adapter has opened, by the framework's request object. */
const opened = new WeakSet<object>();

/**
 * Whether `request` is not under an adapter yet, marking it: mounted twice on
 * one route's way (app.use("/app/*") and app.use("/app/admin/*")), the inner
 * mount runs in the outer one's state; a second open would wait for its own lock.
 */
export function firstMount(request: object): boolean {
  if (opened.has(request)) return false;
  opened.add(request);
  return true;
}

/**
 * Opens the request of a node:http `req` (Fastify, Koa and h3 all have one),
 * as the node adapter does, and follows `res` to its end: a client that leaves
 * while the request waits for a lock gives its place up, one that leaves later
 * lets the handler run on; a response that went out without the adapter's
 * commit (a Fastify reply hijacked) could not carry the cookies, and stores nothing.
 */
export function openNodeRequest(core: SessionCore, req: IncomingMessage, res: ServerResponse): RequestState {
  const state = core.open(nodeRequestInit(core, req));
  res.once("close", () => {
    if (state.phase !== "open" && state.phase !== "opening") return;
    if (res.writableFinished) state.abort();
    else state.disconnected();
  });
  return state;
}

/** Commits `state` with the response's `status` and waits until it is stored; resolves with the cookies to set. */
export async function commitAndStore(state: RequestState, status: number): Promise<readonly SetCookie[]> {
  const { cookies, stored } = state.commit(status);
  if (stored !== undefined) await stored;
  return cookies;
}

const NOTHING: CommitResult = Object.freeze({ cookies: Object.freeze([]) as readonly SetCookie[], stored: undefined });

/**
 * The node response of a framework that sends it after the route returned
 * (Koa, h3), gated for the routes that answer on it themselves instead
 * (Koa's `ctx.respond = false`, h3's `sendRedirect`): their first write is the
 * commit point, as on node:http. Otherwise the adapter commits with
 * {@link commitAhead} once the route returned, so that a failure to store
 * still reaches the framework's error handling; the gate then lets the
 * framework's writes through.
 */
export class WriteGate implements GateOwner {
  readonly #node: NodeRequest;
  readonly #gate: ResponseGate;
  #ahead = false;

  constructor(core: SessionCore, state: RequestState, res: ServerResponse) {
    this.#node = new NodeRequest(core, state, res);
    this.#gate = new ResponseGate(res, this);
  }

  /** Whether the route wrote to the response itself (it committed there). */
  get written(): boolean {
    return this.#gate.phase !== "open";
  }

  commitPoint(status: number): CommitResult {
    return this.#ahead ? NOTHING : this.#node.commitPoint(status);
  }

  fail(error: unknown): void {
    this.#node.fail(error);
  }

  /** Commits with `status` before the framework writes; resolves with the cookies to set once stored. */
  commitAhead(status: number): Promise<readonly SetCookie[]> {
    this.#ahead = true;
    return commitAndStore(this.#node.request, status);
  }
}
