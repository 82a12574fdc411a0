import { randomBytes } from "node:crypto";
import { LeaseLostError, type Lease } from "./store.js";

/**
 * The lease mechanics the shared stores (Redis, PostgreSQL) have in common: a
 * random token, a timer that renews the lease while it is held, and a local
 * estimate of whether it still holds. What a lease is in the backend (a key,
 * a row's token and expiry) is the store's, behind {@link LeaseBackend}.
 */

/** What a {@link RenewedLease} asks of the store that issued it. */
export interface LeaseBackend {
  /** Extends the lease by its lease time; resolves `false` when the backend no longer has it under this token. */
  renew(lease: RenewedLease): Promise<boolean>;
  /** Gives the lease up in the backend, only where its token still holds it. */
  release(lease: RenewedLease): Promise<unknown>;
  /** Told once, when the lease ends (lost, released, lapsed or taken over): the store stops tracking it. */
  ended(lease: RenewedLease): void;
  /**
   * Whether an idle lease may be kept now rather than released: only a store that hears at once
   * when another process asks for the record (RedisStore's "wanted" notices) can say yes, or a
   * second process would wait up to the lease time behind a process that no longer uses the record.
   * Without it, leases are never kept.
   */
  keeps?(): boolean;
}

/** A random token naming one holder of one lease. */
export function newLeaseToken(): string {
  return randomBytes(16).toString("base64url");
}

/**
 * A lease on one record: renewed on a timer while held, so only a holder that stops running loses it.
 *
 * States: `held` (a request of this process uses the record: renewed every third of the lease
 * time), `kept` (the record went idle and the store can hear other processes ask for it: not
 * renewed, kept for this process's next request until it runs out or is asked for), and the ends
 * `lost`, `released` (released or handed over to a new lease of this process) and `lapsed`.
 */
export class RenewedLease implements Lease {
  #state: "held" | "kept" | "lost" | "released" | "lapsed" = "held";
  #validUntil: number;
  #renewing = false;
  #released: Promise<void> | undefined;
  /** Another process asked for the record: release it once idle instead of keeping it. */
  #wanted = false;
  /**
   * One interval for the lease's whole life, every third of the lease time: it renews a held
   * lease and lapses a kept one. Keeping and resuming leave it as it is: a hot record is kept and
   * resumed once per request, and two new timers per request (each an async resource) were a
   * measurable share of a hot request's cost.
   */
  readonly #timer: NodeJS.Timeout;
  /** Told when a kept lease ends before a request takes it up again. */
  #onEnd: (() => void) | undefined;

  /**
   * @param backend the store that issued it; stores compare it to refuse a lease they did not issue
   * @param startedAt `Date.now()` from just before the request that took the lease was sent
   */
  constructor(
    readonly backend: LeaseBackend,
    readonly id: string,
    readonly token: string,
    readonly leaseTime: number,
    startedAt: number,
  ) {
    this.#validUntil = validUntil(startedAt, leaseTime);
    this.#timer = setInterval(() => this.#tick(), leaseTime / 3).unref();
  }

  get held(): boolean {
    // A process paused past the lease (SIGSTOP, a long GC) sees the clock jump here before any renewal can run.
    return (this.#state === "held" || this.#state === "kept") && Date.now() < this.#validUntil;
  }

  /** Whether the lease is kept: idle, not renewed, waiting for this process's next request. */
  get kept(): boolean {
    return this.#state === "kept";
  }

  /**
   * Keeps the idle lease instead of releasing it, when the store can hear other processes ask
   * for the record and none has yet; `onEnd` hears if it ends (runs out, is asked for) before
   * {@link resume}. Renewal stops: a kept lease lasts what its last renewal or write gave it.
   * It lapses at the first tick of the interval a little after it ran out (see {@link #tick}).
   */
  keep(onEnd: () => void): boolean {
    if (this.#state !== "held" || this.#wanted || !this.held || this.backend.keeps?.() !== true) return false;
    this.#state = "kept";
    this.#onEnd = onEnd;
    return true;
  }

  /**
   * Takes a kept lease up again for a request, renewing it from now on, when more than half of it
   * remains: enough for the first renewal (a third of the lease time away) to land before it runs
   * out, so the request needs no command before its handler. `false` otherwise (or when it ended);
   * the lease then stays kept for the store to take over, and the library takes a new one. A
   * lease that was not kept is left as it is (`true`): the library checks {@link held} as before,
   * and releases it itself, so a held lease is never dropped while it still renews. The interval
   * goes on as it was: its next tick comes within a third of the lease time, when at least a sixth
   * of the lease still remains, time for the renewal's round trip.
   */
  resume(): boolean {
    if (this.#state === "held") return true;
    if (this.#state !== "kept" || this.#validUntil - Date.now() <= this.leaseTime / 2) return false;
    this.#onEnd = undefined;
    this.#state = "held";
    return true;
  }

  /** Whether another process asked for the record while this process held the lease. */
  get wanted(): boolean {
    return this.#wanted;
  }

  /** Another process asked for the record: a kept lease is released now, a held one once idle. */
  want(): void {
    this.#wanted = true;
    if (this.#state === "kept") this.release().catch(() => undefined);
  }

  /** A write under the lease, sent at `startedAt`, also extended it in the backend by the lease time. */
  extended(startedAt: number): void {
    if (this.#state === "held" || this.#state === "kept") this.#validUntil = Math.max(this.#validUntil, validUntil(startedAt, this.leaseTime));
  }

  /** Marks the lease lost (the backend refused a write under it); it is no longer renewed. */
  lose(): void {
    if (this.#state !== "held" && this.#state !== "kept") return;
    this.#state = "lost";
    this.#end();
  }

  /** Ends a kept lease without a command: the store is replacing it by a new lease of this process in the same backend call. */
  handOver(): void {
    if (this.#state !== "kept") return;
    this.#state = "released";
    this.#end();
  }

  release(): Promise<void> {
    this.#released ??= (async () => {
      const wasHeld = this.#state === "held" || this.#state === "kept";
      if (wasHeld) this.#state = "released";
      this.#end();
      if (wasHeld) await this.backend.release(this);
    })();
    return this.#released;
  }

  #tick(): void {
    if (this.#state === "held") void this.#renew();
    // A kept lease ends a little after the backend surely let it go: until then the store can
    // take it over for this process in one round trip (see RedisStore.lease), rather than wait
    // for it to run out. Ending it later than that is harmless: `held` is false from
    // `validUntil` on, so no request trusts it meanwhile.
    else if (this.#state === "kept" && Date.now() >= this.#validUntil + Math.ceil(this.leaseTime / 10)) {
      this.#state = "lapsed";
      this.#end();
    }
  }

  /** Called by {@link #tick} only while held. */
  async #renew(): Promise<void> {
    if (this.#renewing) return;
    // A write under the lease extended it lately (RedisStore's does): no renewal needed yet.
    if (this.#validUntil - Date.now() > (this.leaseTime * 2) / 3) return;
    this.#renewing = true;
    const startedAt = Date.now();
    try {
      const renewed = await this.backend.renew(this);
      if (this.#state !== "held" && this.#state !== "kept") return;
      if (renewed) this.#validUntil = Math.max(this.#validUntil, validUntil(startedAt, this.leaseTime));
      else this.lose();
    } catch {
      // The backend is unreachable: `held` turns false when the lease runs out, and writes under it are refused.
    } finally {
      this.#renewing = false;
    }
  }

  #end(): void {
    clearInterval(this.#timer);
    this.backend.ended(this);
    const onEnd = this.#onEnd;
    this.#onEnd = undefined;
    onEnd?.();
  }
}

/** When a lease taken or renewed at `startedAt` surely still holds: minus a margin for clock drift (as Redlock does). */
function validUntil(startedAt: number, leaseTime: number): number {
  return startedAt + leaseTime - Math.ceil(leaseTime * 0.01) - 2;
}

/**
 * The lease `lease` when `backend` issued it for record `id`; `undefined` for none.
 * Any other lease is a programming error (a lease passed to the wrong store or record).
 */
export function ownLease(backend: LeaseBackend, storeName: string, id: string, lease: Lease | undefined): RenewedLease | undefined {
  if (lease === undefined) return undefined;
  if (lease instanceof RenewedLease && lease.backend === backend && lease.id === id) return lease;
  throw new TypeError(`persist-session: ${storeName} was given a lease it did not issue for record ${id}. Pass the lease from this store's lease(id).`);
}

/**
 * What a fenced write refused by the backend throws; marks `lease` lost. `backendName` is what
 * the holder lost touch with ("Redis"), `alsoWhen` another cause ("or Redis restarted without its data").
 */
export function leaseLostError(id: string, lease: RenewedLease | undefined, leaseTime: number, backendName: string, storeName: string, alsoWhen?: string): LeaseLostError {
  lease?.lose();
  return new LeaseLostError(
    `persist-session: a write of record ${id} was refused because this process no longer held its lease (it was paused or cut off from ${backendName} for over ${leaseTime} ms${alsoWhen === undefined ? "" : `, ${alsoWhen}`}), so another process may have written since; nothing was written. ` +
      `Retry the request; if pauses this long are expected, raise ${storeName}'s leaseTime option.`,
  );
}
