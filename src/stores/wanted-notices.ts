import { isUuidV4 } from "../cookie-signing.js";
import type { ConnectionEvents } from "./redis-subscriber.js";

/** What a process gives up a lease with when another one asked for it: `released:<id>`, on the same channel. */
export const RELEASED_PREFIX = "released:";

/**
 * Hears other processes ask for records ("wanted" notices), so a process that keeps an idle
 * record's lease gives it up at once instead of making them wait until it runs out. A process
 * whose attempt to take a lease fails publishes the record's id (RedisStore does it in the same
 * script as the attempt), and again on every later attempt, so a notice missed while this
 * process was starting to listen costs the asker one poll, not the lease time. The keeper
 * answers with `released:<id>` once it gave the lease up, so the asker can try again at once
 * rather than at its next poll.
 */
export class WantedNotices {
  #state: "off" | "opening" | "live" | "down" | "failed" | "closed" = "off";
  #retryAt = 0;
  #opening: Promise<void> | undefined;
  #stop: (() => Promise<void>) | undefined;

  /**
   * @param subscribe subscribes the notices channel (see SubscriberConnection.subscribe)
   * @param retryMs how long to wait before trying to listen again after a failed attempt
   * @param onWanted told the id of each record another process asked for
   * @param onReleased told the id of each record another process gave up because it was asked for
   * @param onDown told when notices may be missed (the connection failed): kept leases must go
   */
  constructor(
    private readonly subscribe: (onMessage: (message: string) => void, events: ConnectionEvents) => Promise<() => Promise<void>>,
    private readonly retryMs: number,
    private readonly onWanted: (id: string) => void,
    private readonly onReleased: (id: string) => void,
    private readonly onDown: () => void,
  ) {}

  /** Whether notices reach this process now. Starts listening when it does not yet (or tried a while ago), answering `false` meanwhile. */
  get live(): boolean {
    if (this.#state === "off" || (this.#state === "failed" && Date.now() >= this.#retryAt)) this.#start();
    return this.#state === "live";
  }

  /** Stops listening; never rejects. */
  async close(): Promise<void> {
    this.#state = "closed";
    await this.#opening;
    const stop = this.#stop;
    this.#stop = undefined;
    await stop?.().catch(() => undefined);
  }

  #start(): void {
    this.#state = "opening";
    this.#opening = (async () => {
      try {
        this.#stop = await this.subscribe(
          (message) => {
            // Anything but a record id, or a released one, on the channel is ignored, never trusted.
            if (isUuidV4(message)) this.onWanted(message);
            else if (message.startsWith(RELEASED_PREFIX) && isUuidV4(message.slice(RELEASED_PREFIX.length))) this.onReleased(message.slice(RELEASED_PREFIX.length));
          },
          {
            onError: () => {
              if (this.#state !== "live") return;
              this.#state = "down";
              this.onDown();
            },
            onReady: () => {
              if (this.#state === "down") this.#state = "live";
            },
          },
        );
        if (this.#state === "opening") this.#state = "live";
      } catch {
        // No subscriber connection now (Redis down, or none can exist): leases are released at idle meanwhile.
        if (this.#state === "opening") this.#state = "failed";
        this.#retryAt = Date.now() + this.retryMs;
      }
    })();
  }
}
