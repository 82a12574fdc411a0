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
  /** Told once, when the lease ends (lost or released): the store stops tracking it. */
  ended(lease: RenewedLease): void;
}

/** A random token naming one holder of one lease. */
export function newLeaseToken(): string {
  return randomBytes(16).toString("base64url");
}

/** A lease on one record: renewed on a timer while held, so only a holder that stops running loses it. */
export class RenewedLease implements Lease {
  #state: "held" | "lost" | "released" = "held";
  #validUntil: number;
  #renewing = false;
  #released: Promise<void> | undefined;
  readonly #timer: NodeJS.Timeout;

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
    this.#timer = setInterval(() => void this.#renew(), leaseTime / 3).unref();
  }

  get held(): boolean {
    // A process paused past the lease (SIGSTOP, a long GC) sees the clock jump here before any renewal can run.
    return this.#state === "held" && Date.now() < this.#validUntil;
  }

  /** Marks the lease lost (the backend refused a write under it); it is no longer renewed. */
  lose(): void {
    if (this.#state !== "held") return;
    this.#state = "lost";
    this.#end();
  }

  release(): Promise<void> {
    this.#released ??= (async () => {
      const wasHeld = this.#state === "held";
      this.#state = "released";
      this.#end();
      if (wasHeld) await this.backend.release(this);
    })();
    return this.#released;
  }

  async #renew(): Promise<void> {
    if (this.#state !== "held" || this.#renewing) return;
    this.#renewing = true;
    const startedAt = Date.now();
    try {
      const renewed = await this.backend.renew(this);
      if (this.#state !== "held") return;
      if (renewed) this.#validUntil = validUntil(startedAt, this.leaseTime);
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
