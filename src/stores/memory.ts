import { randomBytes } from "node:crypto";
import type { SessionStore, StoredRecord, StoreSecret } from "./store.js";

/**
 * Keeps records in this process's memory: for tests and single-process apps
 * that may lose state on restart. Expired records are removed by the sweep.
 */
export class MemoryStore implements SessionStore {
  readonly #records = new Map<string, StoredRecord>();
  /** Quarantined records, kept for inspection like the FileStore's renamed files. */
  readonly quarantined = new Map<string, StoredRecord>();
  #secret: string | undefined;

  async get(id: string): Promise<StoredRecord | undefined> {
    return this.#records.get(id);
  }

  async set(id: string, record: StoredRecord): Promise<void> {
    this.#records.set(id, { ...record });
  }

  async delete(id: string): Promise<void> {
    this.#records.delete(id);
  }

  async quarantine(id: string): Promise<void> {
    const record = this.#records.get(id);
    if (record === undefined) return;
    this.quarantined.set(id, record);
    this.#records.delete(id);
  }

  async *expiredIds(now: number): AsyncIterable<string> {
    for (const [id, record] of this.#records) {
      if (record.expires <= now) yield id;
    }
  }

  async secret(): Promise<StoreSecret> {
    const created = this.#secret === undefined;
    this.#secret ??= randomBytes(48).toString("base64url");
    return { secret: this.#secret, created };
  }

  describe(): string {
    return "memory of this process";
  }

  /** How many records are stored. */
  get size(): number {
    return this.#records.size;
  }
}
