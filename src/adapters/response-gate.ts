import { ServerResponse, type OutgoingHttpHeaders } from "node:http";
import type { CommitResult } from "../request-state.js";

type Method = (this: ServerResponse, ...args: unknown[]) => unknown;

/** Where a response gated by the shared methods finds its gate. */
const GATE = Symbol("persist-session.gate");
type GatedResponse = ServerResponse & { [GATE]?: ResponseGate };

/** A call on the response held while the state is being stored. */
interface HeldCall {
  readonly method: Method;
  readonly args: unknown[];
}

/**
 * Where a gated response is:
 * - `open`: nothing sent yet; the first gated call is the commit point.
 * - `waiting`: committed; calls are held until the state is stored.
 * - `passing`: stored, nothing to store, or the request aborted: calls go straight to the originals.
 * - `failed`: the commit or its write failed and the failure was answered: what the handler still writes is dropped.
 */
export type GatePhase = "open" | "waiting" | "passing" | "failed";

/** What the gate asks of the request it guards. */
export interface GateOwner {
  /** At the commit point, with the response's status: commit (or abort, for a 5xx). Throws when the state cannot be stored. */
  commitPoint(status: number): CommitResult;
  /** Answers a failed commit or write; the gate lets that answer through. */
  fail(error: unknown): void;
}

/**
 * Holds a node:http response at its commit point: the first of
 * writeHead/write/end/flushHeaders commits the state and adds its cookies,
 * and the calls wait until the state is stored. The gates stay for the whole
 * response and pass calls on once stored: putting the originals back cost as
 * much as the gating (Express changes `res`'s prototype per request, after
 * which every property store on it is slow; bench/README.md).
 *
 * On node's own responses the gates are closures over the gate. On a response
 * whose prototype was replaced (Express's, every request), four new function
 * objects per request made V8 build new hidden classes for it each time: 7.5 %
 * of an Express request's instructions (bench/instructions.mjs). There the
 * gates are the same four functions for every response, finding the gate
 * under a symbol of the response they are called on (on node's own responses
 * they cost 1.6–3 % more instructions than closures). A second gate on a
 * response that has shared gates takes closures over itself: the shared gates
 * would find the newer gate again from the older one's originals, and never
 * reach node's methods.
 */
export class ResponseGate {
  phase: GatePhase = "open";
  #held: HeldCall[] | undefined;
  readonly #writeHead: Method;
  readonly #write: Method;
  readonly #end: Method;
  readonly #flushHeaders: Method;

  constructor(
    readonly res: ServerResponse,
    readonly owner: GateOwner,
  ) {
    const mutable = res as unknown as Record<"writeHead" | "write" | "end" | "flushHeaders", Method>;
    this.#writeHead = mutable.writeHead;
    this.#write = mutable.write;
    this.#end = mutable.end;
    this.#flushHeaders = mutable.flushHeaders;
    // Never for a second gate on one response (two persistSession() middlewares): see the class's comment.
    if (Reflect.getPrototypeOf(res) !== ServerResponse.prototype && (res as GatedResponse)[GATE] === undefined) {
      (res as GatedResponse)[GATE] = this;
      Object.assign(mutable, ResponseGate.#shared);
      return;
    }
    const gate = this;
    mutable.writeHead = function writeHead(...args) {
      return gate.#call(gate.#writeHead, args, res);
    };
    mutable.write = function write(...args) {
      return gate.#call(gate.#write, args, true);
    };
    mutable.end = function end(...args) {
      return gate.#call(gate.#end, args, res);
    };
    mutable.flushHeaders = function flushHeaders(...args) {
      return gate.#call(gate.#flushHeaders, args, undefined);
    };
  }

  /** The gates of a response whose prototype is not node's own, for its first gate (see the class's comment). */
  static readonly #shared: Record<"writeHead" | "write" | "end" | "flushHeaders", Method> = {
    writeHead: ResponseGate.#sharedGate((gate) => gate.#writeHead, (res) => res),
    write: ResponseGate.#sharedGate((gate) => gate.#write, () => true),
    end: ResponseGate.#sharedGate((gate) => gate.#end, (res) => res),
    flushHeaders: ResponseGate.#sharedGate((gate) => gate.#flushHeaders, () => undefined),
  };

  /** A shared gate: passes on to `original` of the response's gate; `held` is what a held call returns. */
  static #sharedGate(original: (gate: ResponseGate) => Method, held: (res: ServerResponse) => unknown): Method {
    return function gateCall(...args) {
      const gate = (this as GatedResponse | undefined)?.[GATE];
      // As with node's own methods, a call that is not on the response (detached, or copied to another object) cannot work.
      if (gate === undefined) throw new TypeError("persist-session: a response method was called without the response it belongs to as `this`.");
      return gate.#call(original(gate), args, held(this));
    };
  }

  /** Answers `error` (a failed handler) unless the response is already failed; later calls are dropped. */
  fail(error: unknown): void {
    if (this.phase !== "failed") this.#failed(error);
  }

  /** `held` is what a held call returns, as the original would have. */
  #call(method: Method, args: unknown[], held: unknown): unknown {
    switch (this.phase) {
      case "passing":
        return method.apply(this.res, args);
      case "open":
        return this.#commit(method, args, held);
      case "waiting":
        this.#held!.push({ method, args });
        return held;
      case "failed":
        return this.#drop(method, args);
    }
  }

  #commit(method: Method, args: unknown[], held: unknown): unknown {
    const writeHeadArgs = method === this.#writeHead ? args : undefined;
    const status = writeHeadArgs !== undefined && typeof args[0] === "number" ? args[0] : this.res.statusCode;
    let result: CommitResult;
    try {
      result = this.owner.commitPoint(status);
    } catch (error) {
      this.#failed(error);
      return method === this.#write ? false : this.res;
    }
    addSetCookies(this.res, result, writeHeadArgs);
    if (result.stored === undefined) {
      this.phase = "passing";
      return method.apply(this.res, args);
    }
    this.phase = "waiting";
    this.#held = [{ method, args }];
    result.stored.then(
      () => this.#release(),
      (error: unknown) => this.#failed(error),
    );
    return held;
  }

  #release(): void {
    if (this.phase !== "waiting") return;
    this.phase = "passing";
    const calls = this.#held!;
    this.#held = undefined;
    for (const { method, args } of calls) method.apply(this.res, args);
  }

  /**
   * Answers with the failure, then drops what the handler still writes:
   * passed on, a write after the failure's end is an 'error' event on the
   * response that nobody listens to, and it would crash the process.
   */
  #failed(error: unknown): void {
    this.#held = undefined;
    this.phase = "passing"; // the failure's answer goes through the gates to the originals
    try {
      this.owner.fail(error);
    } finally {
      this.phase = "failed";
    }
  }

  #drop(method: Method, args: unknown[]): unknown {
    if (method === this.#write) return false;
    if (method === this.#flushHeaders) return undefined;
    // Ending again is harmless without data, and runs the handler's callback.
    if (method === this.#end) return this.#end.apply(this.res, args.filter((arg) => typeof arg === "function"));
    return this.res;
  }
}

function addSetCookies(res: ServerResponse, result: CommitResult, writeHeadArgs: unknown[] | undefined): void {
  const { cookies } = result;
  if (cookies.length === 0) return;
  const lines = cookies.map((cookie) => cookie.header);
  const existing = res.getHeader("set-cookie");
  res.setHeader("set-cookie", existing === undefined ? lines : [...(Array.isArray(existing) ? existing : [String(existing)]), ...lines]);
  // writeHead(status, headers) lets its own headers replace setHeader's: merge ours into them too.
  const headers = writeHeadArgs?.find((arg, i) => i > 0 && typeof arg === "object" && arg !== null);
  if (headers === undefined) return;
  if (Array.isArray(headers)) {
    for (const line of lines) headers.push("set-cookie", line);
    return;
  }
  const record = headers as OutgoingHttpHeaders;
  const name = Object.keys(record).find((header) => header.toLowerCase() === "set-cookie");
  if (name === undefined) return;
  const own = record[name];
  record[name] = [...(Array.isArray(own) ? own : [String(own)]), ...lines];
}
