import type { Logger } from "./logger.js";

/**
 * Logs an unreachable store once per outage instead of once per failed
 * request (a Redis restart under load was hundreds of identical lines a
 * second), and says how many requests failed when the store answers again.
 */
export class OutageLog {
  #failures = 0;

  constructor(readonly logger: Logger) {}

  /** Whether an outage is in progress. */
  get active(): boolean {
    return this.#failures > 0;
  }

  /** A request failed because the store could not be reached; logged only if it is the outage's first. */
  failed(message: string, error: unknown): void {
    if (this.#failures++ > 0) return;
    this.logger.error(`${message} Further failures are counted, not logged, until the store answers again.`, error);
  }

  /** The store answered: ends the outage, if any, with its count. */
  answered(): void {
    if (this.#failures === 0) return;
    const failures = this.#failures;
    this.#failures = 0;
    this.logger.warn(`persist-session: the store answers again; ${failures} request${failures === 1 ? "" : "s"} failed while it could not be reached.`);
  }
}
