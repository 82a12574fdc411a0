/**
 * A subscriber connection of a RedisStore (pub/sub needs a connection of its own): the app's,
 * or a duplicate of its client opened on first use and closed by {@link SubscriberConnection.close}.
 */

/**
 * A connection in subscriber mode, for live sync and kept leases. node-redis's fits as it is
 * (`client.duplicate()`, connected). For ioredis:
 * ```ts
 * const sub = redis.duplicate();
 * const subscriber = {
 *   subscribe: async (channel: string, listener: (message: string) => void) => {
 *     sub.on("message", (from: string, message: string) => from === channel && listener(message));
 *     await sub.subscribe(channel);
 *   },
 *   unsubscribe: (channel: string) => sub.unsubscribe(channel),
 * };
 * ```
 */
export interface RedisSubscriberLike {
  subscribe(channel: string, listener: (message: string) => void): Promise<unknown>;
  unsubscribe(channel: string): Promise<unknown>;
}

/** What a subscription hears of its connection after it is open. */
export interface ConnectionEvents {
  /** The connection failed; messages may be missed until it is back. Told once per outage. */
  onError(error: Error): void;
  /** The connection is back (the client subscribes its channels again by itself). Only for a connection the store opened. */
  onReady?(): void;
}

/**
 * One subscriber connection of a store. RedisStore opens one per channel it follows (other
 * processes' changes; requests for its kept leases) unless the app gave its own subscriber,
 * which then carries both: a channel subscribed on a connection that is still reconnecting
 * after an outage waits out the client's reconnect backoff, so an events stream opened then
 * would miss changes. A connection per channel keeps the change feed's connection as it was:
 * opened by the first events stream, fresh.
 */
export class SubscriberConnection {
  #opening: Promise<RedisSubscriberLike> | undefined;
  #owned: OwnedConnection | undefined;
  readonly #listeners = new Set<ConnectionEvents>();

  /**
   * @param client the store's client, duplicated when `given` is undefined
   * @param given the app's subscriber connection, if it passed one
   * @param guard runs a command with the store's guards (fail fast while disconnected, commandTimeout)
   */
  constructor(
    private readonly client: object,
    private readonly given: RedisSubscriberLike | undefined,
    private readonly guard: (run: () => Promise<unknown>) => Promise<unknown>,
  ) {}

  /** Whether a subscriber connection can exist: the app gave one, or the client can duplicate itself. */
  get possible(): boolean {
    return this.given !== undefined || typeof (this.client as { duplicate?: unknown }).duplicate === "function";
  }

  /**
   * Subscribes `onMessage` to `channel`, opening the connection first when it is not open; resolves
   * once messages flow, with the function that unsubscribes. `events` hears of the connection after that.
   */
  async subscribe(channel: string, onMessage: (message: string) => void, events: ConnectionEvents): Promise<() => Promise<void>> {
    this.#listeners.add(events);
    let subscriber: RedisSubscriberLike;
    try {
      subscriber = await this.#open();
      await this.guard(() => subscriber.subscribe(channel, onMessage));
    } catch (error) {
      this.#listeners.delete(events);
      throw error;
    }
    return async () => {
      this.#listeners.delete(events);
      await subscriber.unsubscribe(channel).catch(() => undefined);
    };
  }

  /** Closes the connection if the store opened it; the app's own stays open. */
  async close(): Promise<void> {
    await this.#opening?.catch(() => undefined);
    const owned = this.#owned;
    this.#opening = undefined;
    this.#owned = undefined;
    this.#listeners.clear();
    await owned?.close();
  }

  #open(): Promise<RedisSubscriberLike> {
    this.#opening ??= (async () => {
      if (this.given !== undefined) return this.given;
      const owned = duplicateOf(
        this.client,
        (error) => {
          for (const listener of [...this.#listeners]) listener.onError(error);
        },
        () => {
          for (const listener of [...this.#listeners]) listener.onReady?.();
        },
      );
      try {
        // The same guards as any command: fail at once while disconnected, never wait past commandTimeout.
        await this.guard(() => owned.connect());
      } catch (error) {
        await owned.close();
        throw error;
      }
      this.#owned = owned;
      return owned.subscriber;
    })().catch((error: unknown) => {
      // The next subscription tries again.
      this.#opening = undefined;
      throw error;
    });
    return this.#opening;
  }
}

/** A subscriber connection RedisStore opened itself, and so must close. */
interface OwnedConnection {
  readonly subscriber: RedisSubscriberLike;
  connect(): Promise<unknown>;
  close(): Promise<void>;
}

/** What RedisStore uses of node-redis's `duplicate()`: a new client, not yet connected. */
interface DuplicatedClient extends RedisSubscriberLike {
  connect(): Promise<unknown>;
  on(event: "error", listener: (error: Error) => void): unknown;
  on(event: "ready", listener: () => void): unknown;
  close?(): Promise<unknown>;
  quit?(): Promise<unknown>;
  destroy?(): unknown;
}

function duplicateOf(client: object, onError: (error: Error) => void, onReady: () => void): OwnedConnection {
  const duplicate = (client as { duplicate?: unknown }).duplicate;
  if (typeof duplicate !== "function") {
    throw new TypeError(
      "persist-session: RedisStore cannot follow other processes' changes: the client has no duplicate() for a subscriber connection. Pass RedisStore's subscriber option (see RedisSubscriberLike).",
    );
  }
  const connection = duplicate.call(client) as DuplicatedClient;
  // One report per outage: the client retries on its own and emits an error for every failed attempt.
  let reported = false;
  connection.on("error", (error) => {
    if (reported) return;
    reported = true;
    onError(error);
  });
  connection.on("ready", () => {
    const wasDown = reported;
    reported = false;
    if (wasDown) onReady();
  });
  return {
    subscriber: connection,
    connect: () => connection.connect(),
    close: async () => {
      try {
        await (connection.close ?? connection.quit)?.call(connection);
      } catch {
        connection.destroy?.();
      }
    },
  };
}
