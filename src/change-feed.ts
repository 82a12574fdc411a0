/** A record was written (version ≥ 1) or deleted (version 0). */
export interface RecordChange {
  readonly id: string;
  readonly key: string;
  readonly version: number;
}

type Listener = (change: RecordChange) => void;

/**
 * Tells subscribers that a record changed. In-process: the record manager
 * publishes after each stored write; stores that see other processes' writes
 * (Redis pub/sub) publish those too, so a listener may hear one change twice
 * and must compare versions.
 */
export class ChangeFeed {
  readonly #listeners = new Map<string, Set<Listener>>();
  #subscriptions = 0;

  /** Calls `listener` for changes of any of `ids`; returns the unsubscribe function. */
  subscribe(ids: Iterable<string>, listener: Listener): () => void {
    const subscribed = [...new Set(ids)];
    for (const id of subscribed) {
      let listeners = this.#listeners.get(id);
      if (listeners === undefined) {
        listeners = new Set();
        this.#listeners.set(id, listeners);
      }
      listeners.add(listener);
    }
    this.#subscriptions++;
    let active = true;
    return () => {
      if (!active) return;
      active = false;
      this.#subscriptions--;
      for (const id of subscribed) {
        const listeners = this.#listeners.get(id);
        listeners?.delete(listener);
        if (listeners?.size === 0) this.#listeners.delete(id);
      }
    };
  }

  publish(change: RecordChange): void {
    const listeners = this.#listeners.get(change.id);
    if (listeners === undefined) return;
    for (const listener of [...listeners]) listener(change);
  }

  /** Subscriptions held now (one per open events stream). */
  get subscriptionCount(): number {
    return this.#subscriptions;
  }
}
