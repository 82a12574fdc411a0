import { LockTimeoutError } from "../records.js";
import { ClientGoneError } from "../request-state.js";
import type { SessionCore } from "../session-core.js";
import { LeaseLostError, StoreStartError, StoreUnavailableError } from "../stores/store.js";

/** What a failed request is answered with, whichever adapter serves it. */
export interface FailureAnswer {
  readonly status: 500 | 503;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string;
}

/** 503 when waiting may help (a busy lock, an unreachable store), else 500. */
export function failureStatus(error: unknown): 500 | 503 {
  return error instanceof LockTimeoutError || error instanceof StoreUnavailableError || error instanceof ClientGoneError ? 503 : 500;
}

export function logFailure(core: SessionCore, error: unknown): void {
  // A store that cannot start fails every request the same way: its reason is logged once.
  if (error instanceof StoreStartError) return core.reportStartFailure(error);
  const text = error instanceof Error ? error.message : String(error);
  const message = text.startsWith("persist-session:") ? text : `persist-session: the request failed: ${text}`;
  // A refused late write (LeaseLostError) is one process's problem, worth its own line; an unreachable store is one outage.
  if (error instanceof StoreUnavailableError && !(error instanceof LeaseLostError)) core.outage.failed(message, error);
  else core.logger.error(message, error);
}

/** Logs `error` and says how to answer it: its status, plain text, and Retry-After on a 503. */
export function failureAnswer(core: SessionCore, error: unknown): FailureAnswer {
  // Nobody hears the answer of a request whose client left, and it is no failure of the app's.
  if (!(error instanceof ClientGoneError)) logFailure(core, error);
  const status = failureStatus(error);
  return status === 503
    ? { status, headers: { "content-type": "text/plain; charset=utf-8", "retry-after": "1" }, body: "Service Unavailable\n" }
    : { status, headers: { "content-type": "text/plain; charset=utf-8" }, body: "Internal Server Error\n" };
}

/**
 * A request that could not be served for now (a lock held too long, the store
 * unreachable), in the shape the error handling of Koa, Fastify and h3 reads:
 * `status`/`statusCode` 503 and a Retry-After header. Its message is the
 * status text, safe to show (`expose`); the reason is its `cause`, already logged.
 */
export class ServiceUnavailableError extends Error {
  override readonly name = "ServiceUnavailableError";
  readonly status = 503;
  readonly statusCode = 503;
  /** Koa shows the message of an exposed error and does not log it again. */
  readonly expose = true;
  readonly headers: Readonly<Record<string, string>> = { "retry-after": "1" };

  constructor(cause: unknown) {
    super("Service Unavailable", { cause });
  }
}

/**
 * What a framework adapter throws into its framework's error handling when
 * the request cannot start or its state cannot be stored: the failure is
 * logged (unless the client left), a 503 becomes a {@link ServiceUnavailableError},
 * and any other error is thrown as it is (a 500 to the framework).
 */
export function frameworkFailure(core: SessionCore, error: unknown): Error {
  if (!(error instanceof ClientGoneError)) logFailure(core, error);
  if (failureStatus(error) === 503) return new ServiceUnavailableError(error);
  return error instanceof Error ? error : new Error(`persist-session: the request failed: ${String(error)}`, { cause: error });
}
