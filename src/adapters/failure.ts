import { LockTimeoutError } from "../records.js";
import type { SessionCore } from "../session-core.js";
import { StoreUnavailableError } from "../stores/store.js";

/** 503 when waiting may help (a busy lock, an unreachable store), else 500. */
export function failureStatus(error: unknown): 500 | 503 {
  return error instanceof LockTimeoutError || error instanceof StoreUnavailableError ? 503 : 500;
}

export function logFailure(core: SessionCore, error: unknown): void {
  const message = error instanceof Error ? error.message : String(error);
  core.logger.error(message.startsWith("persist-session:") ? message : `persist-session: the request failed: ${message}`, error);
}
