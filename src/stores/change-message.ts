import type { RecordChange } from "../change-feed.js";
import { isUuidV4 } from "../cookie-signing.js";
import { jsonFields } from "./json-fields.js";

/**
 * The text a shared store sends other processes about a stored write (Redis
 * PUBLISH, PostgreSQL NOTIFY), and its strict reading: anything on the channel
 * that is not such a notice is ignored, never trusted.
 */
export function formatChange(change: RecordChange): string {
  const { id, key, version } = change;
  return JSON.stringify({ id, key, version });
}

/** A change notice as {@link formatChange} wrote it, or `undefined` for anything else. */
export function parseChange(message: string): RecordChange | undefined {
  const fields = jsonFields(message);
  if (fields === undefined) return undefined;
  const { id, key, version } = fields;
  if (typeof id !== "string" || !isUuidV4(id) || typeof key !== "string" || !Number.isSafeInteger(version) || (version as number) < 0) return undefined;
  return { id, key, version: version as number };
}

/** A live subscription to a shared store's change channel. */
export interface ChangeSubscription {
  stop(): Promise<void>;
}

/**
 * The listeners of a shared store's change feed, over one subscription that the first
 * of them opens: `subscribe(onError, onMessage)` connects and resolves once messages
 * flow, and its messages reach every listener once read by {@link parseChange}.
 */
export class ChangeNotices {
  readonly #listeners = new Set<(change: RecordChange) => void>();
  #subscription: Promise<ChangeSubscription> | undefined;

  constructor(private readonly subscribe: (onError: (error: Error) => void, onMessage: (message: string) => void) => Promise<ChangeSubscription>) {}

  /** Adds `listener`, opening the subscription when it is the first; resolves with the function that removes it. */
  async listen(listener: (change: RecordChange) => void, onError: (error: Error) => void): Promise<() => void> {
    this.#subscription ??= this.subscribe(onError, (message) => {
      const change = parseChange(message);
      if (change !== undefined) for (const each of [...this.#listeners]) each(change);
    }).catch((error: unknown) => {
      // The next listener tries again.
      this.#subscription = undefined;
      throw error;
    });
    await this.#subscription;
    this.#listeners.add(listener);
    return () => {
      this.#listeners.delete(listener);
    };
  }

  /** Drops every listener and ends the subscription; never rejects. */
  async close(): Promise<void> {
    const subscription = this.#subscription;
    this.#subscription = undefined;
    this.#listeners.clear();
    await subscription?.then((open) => open.stop()).catch(() => undefined);
  }
}
