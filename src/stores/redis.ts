import { createHash, randomBytes } from "node:crypto";
import type { RecordChange } from "../change-feed.js";
import { positive } from "../option-checks.js";
import { ChangeNotices, formatChange, type ChangeSubscription } from "./change-message.js";
import { withDeadline } from "./deadline.js";
import { leaseLostError, newLeaseToken, ownLease, RenewedLease, type LeaseBackend } from "./lease.js";
import { formatRecordText, parseRecordText } from "./record-text.js";
import { SubscriberConnection, type RedisSubscriberLike } from "./redis-subscriber.js";
import { CorruptRecordError, DEFAULT_QUARANTINE_TTL_SECONDS, StoreUnavailableError, type Lease, type SessionStore, type StoredRecord, type StoreSecret } from "./store.js";
import { RELEASED_PREFIX, WantedNotices } from "./wanted-notices.js";

export type { RedisSubscriberLike } from "./redis-subscriber.js";

/*
 * The lease protocol, and what a request costs in round trips to Redis (issue #22).
 *
 * Keys: the record `<prefix><id>`, its lease `<prefix>lease:<id>` (a random token, PX leaseTime).
 *
 * - Take (ACQUIRE, one script): when the lease key is free, or still holds the token of this
 *   process's own kept lease, SET it to a new token and return the record's value (and its type,
 *   so a hash under our key is set aside like any unreadable record) in the same reply; the
 *   library's get() that follows is answered from it. When another process holds it, PUBLISH
 *   the id on `<prefix>wanted` and return nil: the caller polls with backoff, publishing again
 *   each time.
 * - Write (WRITE, one script): applied only while the lease holds the writer's token; PEXPIREs
 *   the lease by leaseTime and PUBLISHes the change on `<prefix>changes` in the same script.
 * - Idle: when no request of this process uses the record and its writes are stored, the lease
 *   is kept, not released: no RELEASE, no more renewals, the entry and its in-process copy stay
 *   (up to `cacheSize` records; one evicted releases its lease). The next request of this process
 *   for the record takes it up with no command before its handler while more than half of the
 *   lease time remains (enough for the first renewal to land in time); otherwise ACQUIRE takes it
 *   over in one round trip. A request that changes nothing then costs 0 round trips, one that
 *   changes the record 1 (its WRITE, which also extends the kept lease); a cold one 2.
 * - Handing over: every process keeping leases listens on `<prefix>wanted` (on a subscriber
 *   connection of its own, or the app's `subscriber`) and releases a kept lease as soon as another process asks
 *   for it, or when its busy record next goes idle, publishing `released:<id>` from the same
 *   script; the asker, when it listens too, waits for that (a short while, LEASE_HANDOVER_WAIT_MS)
 *   after its failed attempt and tries again at once. Leases are only kept while that listening is
 *   confirmed: before it is, with no subscriber possible (a client without duplicate() and no
 *   `subscriber` option), or while the subscriber connection is down, they are released at idle.
 *   If a notice is still missed, the asker waits at worst until the kept lease runs out: at most
 *   leaseTime (5 s by default), below lockTimeout, so it is served late rather than refused.
 * - Fencing is unchanged: a process stalled past its lease has its write refused (LeaseLostError,
 *   a 503), kept or not, since its token no longer holds the lease key.
 * - Writes in flight: while this store's writes take 0.5 ms or more to be answered (a moving
 *   average: Redis across a network), a busy record's next WRITE is sent at the end of the
 *   event-loop turn of its commit, beside those unanswered (up to sixteen; see
 *   SessionStore.writesInOrder); quicker answers, as on loopback, let the commits made meanwhile
 *   coalesce into one write. Redis runs one connection's commands in the
 *   order they came, and each WRITE holds the whole record, so the last one applied is the
 *   newest. Fenced scripts go by EVAL, not EVALSHA, so none is ever sent a second time behind a
 *   later write's back after Redis lost its script cache.
 */

/**
 * The one method RedisStore calls on a client: send a command, get its reply.
 * A connected node-redis client (`createClient()`, v4 or later) fits as it is,
 * so this package never imports `redis` itself.
 *
 * For ioredis, pass a two-line adapter:
 * ```ts
 * const redis = new Redis(process.env.REDIS_URL!);
 * const client = {
 *   sendCommand: ([command, ...args]: string[]) => redis.call(command!, ...args),
 *   get isReady() { return redis.status === "ready"; },
 * };
 * ```
 */
export interface RedisClientLike {
  /** Sends one command, like `["GET", key]`, and resolves with Redis's reply. */
  sendCommand(args: string[]): Promise<unknown>;
  /**
   * `false` while the client is disconnected. RedisStore then fails the request
   * at once (503) instead of letting the client queue the command until Redis
   * is back. Clients without it rely on `commandTimeout` alone.
   */
  readonly isReady?: boolean;
}

/** Options of {@link RedisStore}. */
export interface RedisStoreOptions {
  /**
   * A connected node-redis client (see {@link RedisClientLike} for ioredis).
   * The app owns it: give it an `error` listener (node-redis throws unhandled
   * `error` events) and quit it after `sessions.close()`.
   */
  client: RedisClientLike;
  /**
   * The connection that receives other processes' changes for live sync
   * and the requests of other processes for records this process keeps leases
   * on (pub/sub needs a connection of its own). The app owns it. Without it,
   * RedisStore opens `client.duplicate()` for each (on its first idle lease,
   * and on the first events stream) and closes them in `close()`; a client
   * without `duplicate` then gets live sync within each process only, and its
   * leases are released at idle rather than kept.
   */
  subscriber?: RedisSubscriberLike;
  /**
   * Start of every key: records are `<prefix><id>`, leases `<prefix>lease:<id>`,
   * set-aside records `<prefix>quarantine:<id>:<ms>`, the generated secret `<prefix>secret`;
   * changes are published on the channel `<prefix>changes`, requests for kept leases on `<prefix>wanted`.
   * @default "persist-session:"
   */
  prefix?: string;
  /**
   * Milliseconds a process's lease on a record lasts without renewal. It is
   * renewed every third of this while held, so only a dead, paused or cut-off
   * holder loses it; that is also the longest such a holder blocks its browser's
   * requests, and the longest another process waits for a lease this one kept
   * while it could not tell it (its subscriber connection down). Keep it below
   * `lockTimeout` so they then wait instead of failing.
   * @default 5000
   */
  leaseTime?: number;
  /**
   * Milliseconds to wait for any one reply. A request whose command gets none
   * in time fails with a 503 instead of hanging while Redis is unreachable.
   * @default 2000
   */
  commandTimeout?: number;
  /**
   * Seconds a set-aside (unreadable) record is kept for inspection before Redis expires it (its key's PX),
   * the same default as the FileStore's.
   * @default 2592000 (30 days)
   */
  quarantineTtl?: number;
}

const DEFAULT_PREFIX = "persist-session:";
const DEFAULT_LEASE_TIME_MS = 5000;
const DEFAULT_COMMAND_TIMEOUT_MS = 2000;
/**
 * How long a failed lease attempt waits for the holder's `released:<id>` before it returns: a
 * holder that kept the lease idle answers within two round trips of the notice, a busy one once
 * its requests are done, and the caller polls again after this either way.
 */
const LEASE_HANDOVER_WAIT_MS = 25;
/** Reply codes that mean "not now" rather than "wrong": the request gets a 503, as when Redis is down. */
const UNAVAILABLE_CODES = new Set(["LOADING", "BUSY", "MASTERDOWN", "READONLY", "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS", "OOM"]);

interface Script {
  readonly source: string;
  readonly sha: string;
}

function script(source: string): Script {
  return { source, sha: createHash("sha1").update(source).digest("hex") };
}

// Takes the lease when it is free, or still held by this process's kept lease (ARGV[3], "" for
// none), and returns the record with it: `{type, value}` ("string" and the value, "none", or the
// type of something that is not a record). When another process holds it, asks that one for it
// on the wanted channel (see the protocol above) and returns nil.
const ACQUIRE = script(`
local holder = redis.call("GET", KEYS[1])
if holder and holder ~= ARGV[3] then
  redis.call("PUBLISH", ARGV[4], ARGV[5])
  return false
end
redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
local kind = redis.call("TYPE", KEYS[2])["ok"]
if kind == "string" then return {kind, redis.call("GET", KEYS[2])} end
return {kind}`);

// The fence: a write applies only while the writer's token still holds the
// lease, checked and applied in one script so nothing can come between. The
// change is published by the same script, so no fenced write goes unannounced,
// and the lease is extended by it, so a lease kept after the write lasts a
// whole lease time with no renewal of its own.
// (A write without a lease, of a just-minted record, is a plain SET: see write().)
const WRITE = script(`
if redis.call("GET", KEYS[2]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[3]) > 0 then
  redis.call("SET", KEYS[1], ARGV[2], "PX", ARGV[3])
else
  redis.call("DEL", KEYS[1])
end
redis.call("PEXPIRE", KEYS[2], ARGV[6])
redis.call("PUBLISH", ARGV[4], ARGV[5])
return 1`);

const QUARANTINE = script(`
if ARGV[1] ~= "" and redis.call("GET", KEYS[2]) ~= ARGV[1] then return 0 end
if redis.call("EXISTS", KEYS[1]) == 1 then
  redis.call("RENAME", KEYS[1], KEYS[3])
  redis.call("PEXPIRE", KEYS[3], ARGV[2])
end
return 1`);

const RENEW = script(`
if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) end
return 0`);

// RELEASE for a lease another process asked for: tells it, so it tries again at once.
const HAND_OVER = script(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
  redis.call("DEL", KEYS[1])
  redis.call("PUBLISH", ARGV[2], ARGV[3])
  return 1
end
return 0`);

const RELEASE = script(`
if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end
return 0`);

/**
 * Records in Redis, shared by every process and machine of the app: each
 * record is one string key written by one command, so a reader never sees a
 * torn one, and Redis's own expiry (`PX`, renewed by every write) removes it
 * when it is not used for `ttl`. Two processes never hold one record at once:
 * each takes a lease (`SET NX PX` with a random token) before reading it, and
 * every write is fenced by that token, so a holder that stalled past its lease
 * has its late write refused instead of overwriting newer state. An idle
 * record's lease is kept for this process's next request, and handed over as
 * soon as another process asks (the protocol is at the top of this file): a
 * request costs 2 round trips on a record another process had last, 1 on one
 * this process served last (0 if it changes nothing).
 *
 * Single Redis or a primary with replicas (Sentinel); not Redis Cluster.
 *
 * @example
 * ```ts
 * import { createClient } from "redis";
 * import { RedisStore } from "persist-session/redis";
 *
 * const client = createClient({ url: process.env.REDIS_URL });
 * client.on("error", (error) => console.error("redis:", error.message));
 * await client.connect();
 * const sessions = persistSession({ secret, store: new RedisStore({ client }) });
 * ```
 */
export class RedisStore implements SessionStore {
  readonly shared = true;
  /** A record's writes go in order on the client's one connection, fenced scripts by EVAL (never retried): see {@link SessionStore.writesInOrder}. */
  readonly writesInOrder = true;
  readonly prefix: string;
  // TS-private, not #private: apps wrap stores with Object.create(store) to
  // count or log calls, and #private fields are not reachable through a wrapper.
  private readonly redis: RedisCommands;
  private readonly leaseTime: number;
  private readonly quarantineTtl: number;
  private readonly leases = new Set<RenewedLease>();
  /** The newest lease this store issued per record: where a wanted notice for the record goes. */
  private readonly current = new Map<string, RenewedLease>();
  /** Failed lease attempts waiting for the holder to give the record up, by record. */
  private readonly handovers = new Map<string, Set<() => void>>();
  /** What ACQUIRE read with each lease, until the holder's get() (or a write) uses it up. */
  private readonly taken = new Map<string, { readonly lease: RenewedLease; readonly reply: unknown[] }>();
  /** How this store's leases renew and release themselves; also names the leases this store issued. */
  private readonly leaseBackend: LeaseBackend;
  private readonly channel: string;
  private readonly wantedChannel: string;
  /** The subscriber connections of the change feed and of the wanted notices (see SubscriberConnection for why two). */
  private readonly changesConnection: SubscriberConnection;
  private readonly wantedConnection: SubscriberConnection;
  /** Other processes' changes, for the store's watchers: one subscription, opened by the first. */
  private readonly notices = new ChangeNotices((onError, onMessage) => this.follow(onError, onMessage));
  /** Other processes' requests for records this store keeps leases on. */
  private readonly wanted: WantedNotices;

  constructor(options: RedisStoreOptions) {
    if (typeof options !== "object" || options === null) {
      throw new TypeError("persist-session: RedisStore expects an options object. Pass { client } with a connected node-redis client.");
    }
    const { client, prefix = DEFAULT_PREFIX } = options;
    if (typeof client !== "object" || client === null || typeof client.sendCommand !== "function") {
      throw new TypeError(
        `persist-session: option client is invalid: ${client === null ? "null" : typeof client}. Pass a connected node-redis client (await createClient().connect()).`,
      );
    }
    if (typeof prefix !== "string") {
      throw new TypeError(`persist-session: option prefix is invalid: ${String(prefix)}. Use a string such as "persist-session:".`);
    }
    const { subscriber } = options;
    if (subscriber !== undefined && (typeof subscriber !== "object" || subscriber === null || typeof subscriber.subscribe !== "function" || typeof subscriber.unsubscribe !== "function")) {
      throw new TypeError("persist-session: option subscriber is invalid. Pass a connected node-redis client of its own (await client.duplicate().connect()), or leave it out.");
    }
    this.prefix = prefix;
    this.channel = `${prefix}changes`;
    this.wantedChannel = `${prefix}wanted`;
    this.leaseTime = positive("leaseTime", options.leaseTime, DEFAULT_LEASE_TIME_MS);
    this.quarantineTtl = positive("quarantineTtl", options.quarantineTtl, DEFAULT_QUARANTINE_TTL_SECONDS);
    this.redis = new RedisCommands(client, positive("commandTimeout", options.commandTimeout, DEFAULT_COMMAND_TIMEOUT_MS));
    const redis = this.redis;
    this.changesConnection = new SubscriberConnection(client, subscriber, (run) => redis.guard(run));
    this.wantedConnection = new SubscriberConnection(client, subscriber, (run) => redis.guard(run));
    this.wanted = new WantedNotices(
      (onMessage, events) => this.wantedConnection.subscribe(this.wantedChannel, onMessage, events),
      this.leaseTime,
      (id) => this.current.get(id)?.want(),
      (id) => {
        for (const wake of this.handovers.get(id) ?? []) wake();
      },
      // Requests for kept leases may be missed now (and Redis may have restarted): give them all up.
      () => {
        for (const lease of [...this.leases]) lease.want();
      },
    );
    this.leaseBackend = {
      renew: async (lease) => (await redis.script(RENEW, [this.leaseKey(lease.id)], [lease.token, String(lease.leaseTime)])) === 1,
      release: (lease) =>
        lease.wanted
          ? redis.script(HAND_OVER, [this.leaseKey(lease.id)], [lease.token, this.wantedChannel, `${RELEASED_PREFIX}${lease.id}`])
          : redis.script(RELEASE, [this.leaseKey(lease.id)], [lease.token]),
      ended: (lease) => {
        this.leases.delete(lease);
        if (this.current.get(lease.id) === lease) this.current.delete(lease.id);
        if (this.taken.get(lease.id)?.lease === lease) this.taken.delete(lease.id);
      },
      // Kept only while this store hears other processes ask for records (see the protocol above).
      keeps: () => this.listening,
    };
  }

  /** The record; right after {@link lease} took the lease, what ACQUIRE read with it, at no round trip. */
  async get(id: string): Promise<StoredRecord | undefined> {
    const taken = this.taken.get(id);
    if (taken !== undefined) {
      this.taken.delete(id);
      // While the lease holds and this process has not written, no other process can have changed the record.
      if (taken.lease.held) return readAcquired(taken.reply);
    }
    let reply: unknown;
    try {
      reply = await this.redis.send(["GET", this.recordKey(id)]);
    } catch (error) {
      // Something else under our prefix (a hash, a list): set it aside like any unreadable record.
      if (error instanceof RedisReplyError && error.code === "WRONGTYPE") throw new CorruptRecordError("not a string value");
      throw error;
    }
    if (reply === null || reply === undefined) return undefined;
    return readValue(reply);
  }

  async set(id: string, record: StoredRecord, lease?: Lease): Promise<void> {
    const { key, version, expires } = record;
    // An expiry already past deletes: Redis refuses a PX of 0 or less, and such a record counts as missing anyway.
    const ttl = Math.max(Math.ceil(expires - Date.now()), 0);
    await this.write(id, lease, ttl > 0 ? formatRecordText(record) : "", ttl, { id, key, version });
  }

  async delete(id: string, lease?: Lease): Promise<void> {
    await this.write(id, lease, "", 0, { id, key: "", version: 0 });
  }

  /**
   * Follows every process's writes through Redis pub/sub on `<prefix>changes`. A write
   * without a lease (a just-minted record's first) is not announced: no browser has its id yet.
   */
  watch(listener: (change: RecordChange) => void, onError: (error: Error) => void): Promise<() => void> {
    return this.notices.listen(listener, onError);
  }

  /** Renames the record to `<prefix>quarantine:<id>:<ms>`, kept for `quarantineTtl` seconds. */
  async quarantine(id: string, _reason: string, lease?: Lease): Promise<void> {
    this.taken.delete(id);
    await this.fenced(QUARANTINE, id, lease, [`${this.prefix}quarantine:${id}:${Date.now()}`], [String(this.quarantineTtl * 1000)]);
  }

  /**
   * Takes the record's lease (ACQUIRE: one round trip that also reads the record for the next
   * {@link get}), or `undefined` when another process holds it, which that process is then asked
   * to give up; while this store hears the answer, it waits a little for it and tries once more.
   * A lease this store keeps for the record is taken over in the same script.
   */
  async lease(id: string): Promise<Lease | undefined> {
    const lease = await this.acquire(id);
    if (lease !== undefined || !this.listening) return lease;
    return (await this.handedOver(id)) ? this.acquire(id) : undefined;
  }

  /** Whether this store hears other processes' wanted and released notices now (and starts listening when it does not yet). */
  private get listening(): boolean {
    return this.wantedConnection.possible && this.wanted.live;
  }

  private async acquire(id: string): Promise<RenewedLease | undefined> {
    const key = this.leaseKey(id);
    const token = newLeaseToken();
    // The library gave up on this kept lease (too little of it left): its token lets ACQUIRE
    // replace it at once, where SET NX would wait for it to run out.
    const previous = this.current.get(id);
    const kept = previous?.kept === true ? previous : undefined;
    kept?.handOver();
    const startedAt = Date.now();
    let reply: unknown;
    try {
      reply = await this.redis.script(ACQUIRE, [key, this.recordKey(id)], [token, String(this.leaseTime), kept?.token ?? "", this.wantedChannel, id]);
    } catch (error) {
      // The script may still reach Redis after we gave up on it: queue releases behind it on the same connection.
      this.redis.script(RELEASE, [key], [token]).catch(() => undefined);
      if (kept !== undefined) this.redis.script(RELEASE, [key], [kept.token]).catch(() => undefined);
      throw error;
    }
    if (!Array.isArray(reply)) return undefined;
    const lease = new RenewedLease(this.leaseBackend, id, token, this.leaseTime, startedAt);
    this.leases.add(lease);
    this.current.set(id, lease);
    this.taken.set(id, { lease, reply });
    return lease;
  }

  /** Resolves `true` when the holder of `id` announces it gave the record up, `false` after LEASE_HANDOVER_WAIT_MS. */
  private handedOver(id: string): Promise<boolean> {
    return new Promise((resolve) => {
      let waiting = this.handovers.get(id);
      if (waiting === undefined) this.handovers.set(id, (waiting = new Set()));
      const done = (released: boolean) => {
        clearTimeout(timer);
        waiting.delete(wake);
        if (waiting.size === 0 && this.handovers.get(id) === waiting) this.handovers.delete(id);
        resolve(released);
      };
      const wake = () => done(true);
      const timer = setTimeout(() => done(false), LEASE_HANDOVER_WAIT_MS);
      waiting.add(wake);
    });
  }

  async secret(): Promise<StoreSecret> {
    const key = `${this.prefix}secret`;
    // NX: the first process to start generates it; every other one reads that one.
    const reply = await this.redis.send(["SET", key, randomBytes(48).toString("base64url"), "NX"]);
    const secret = await this.redis.send(["GET", key]);
    if (typeof secret !== "string" || secret.length < 32) {
      throw new Error(`persist-session: the generated secret in Redis key ${key} is missing or too short. Delete the key, or pass \`secret\` to persistSession().`);
    }
    return { secret, created: reply === "OK" };
  }

  describe(): string {
    return `redis ${this.prefix}*`;
  }

  /** Releases the leases this store still holds (kept ones too) and the subscriber it opened. The client stays open: the app owns it. */
  async close(): Promise<void> {
    await Promise.allSettled([...[...this.leases].map((lease) => lease.release()), this.notices.close(), this.wanted.close()]);
    await Promise.allSettled([this.changesConnection.close(), this.wantedConnection.close()]);
  }

  /** Subscribes to the change channel, on the app's subscriber or a duplicate of the client. */
  private async follow(onError: (error: Error) => void, onMessage: (message: string) => void): Promise<ChangeSubscription> {
    return { stop: await this.changesConnection.subscribe(this.channel, onMessage, { onError }) };
  }

  private recordKey(id: string): string {
    return `${this.prefix}${id}`;
  }

  private leaseKey(id: string): string {
    return `${this.prefix}lease:${id}`;
  }

  /** Stores `text` for `ttl` ms (0: deletes) under `lease`, and announces `change` to other processes. */
  private async write(id: string, lease: Lease | undefined, text: string, ttl: number, change: RecordChange): Promise<void> {
    // What ACQUIRE read is older than this write.
    this.taken.delete(id);
    if (lease === undefined) {
      // A just-minted record: no token to check and no one to tell (no browser has its id yet), so a
      // plain SET does it. The fenced script costs Redis about ten times the CPU, and a new session
      // per request is where that showed (bench/README.md).
      await this.redis.send(ttl > 0 ? ["SET", this.recordKey(id), text, "PX", String(ttl)] : ["DEL", this.recordKey(id)]);
      return;
    }
    const startedAt = Date.now();
    const fence = await this.fenced(WRITE, id, lease, [], [text, String(ttl), this.channel, formatChange(change), String(this.leaseTime)]);
    fence?.extended(startedAt);
  }

  /** Runs a record script guarded by `lease`'s token; throws {@link LeaseLostError} when the script refused. */
  private async fenced(code: Script, id: string, lease: Lease | undefined, extraKeys: string[], args: string[]): Promise<RenewedLease | undefined> {
    const fence = ownLease(this.leaseBackend, "RedisStore", id, lease);
    const applied = await this.redis.evaluate(code, [this.recordKey(id), this.leaseKey(id), ...extraKeys], [fence?.token ?? "", ...args]);
    if (applied === 1) return fence;
    throw leaseLostError(id, fence, this.leaseTime, "Redis", "RedisStore", "or Redis restarted without its data");
  }
}

/** A record from what ACQUIRE read with a lease: `[type, value]`. */
function readAcquired(reply: unknown[]): StoredRecord | undefined {
  const [kind, value] = reply;
  if (kind === "none") return undefined;
  // Something else under our prefix (a hash, a list): set it aside like any unreadable record.
  if (kind !== "string") throw new CorruptRecordError("not a string value");
  return readValue(value);
}

function readValue(reply: unknown): StoredRecord {
  return parseRecordText(typeof reply === "string" ? reply : Buffer.isBuffer(reply) ? reply.toString("utf8") : "", "value");
}

/** A Redis error reply, like `WRONGTYPE Operation against a key…`; failures to reach Redis are {@link StoreUnavailableError}s. */
class RedisReplyError extends Error {
  override readonly name = "RedisReplyError";
  constructor(
    readonly code: string,
    message: string,
    options: { cause: unknown },
  ) {
    super(message, options);
  }
}

/** Sends commands with the guards every call needs: fail fast while disconnected, never wait past the timeout. */
class RedisCommands {
  constructor(
    private readonly client: RedisClientLike,
    private readonly timeout: number,
  ) {}

  send(args: string[]): Promise<unknown> {
    return this.guard(() => this.client.sendCommand(args));
  }

  /** EVALSHA, falling back to EVAL when Redis has not seen the script (first use, or after a restart). */
  script(code: Script, keys: string[], args: string[]): Promise<unknown> {
    const tail = [String(keys.length), ...keys, ...args];
    return this.guard(() =>
      this.client.sendCommand(["EVALSHA", code.sha, ...tail]).catch((error: unknown) => {
        if (replyCode(error) !== "NOSCRIPT") throw error;
        return this.client.sendCommand(["EVAL", code.source, ...tail]);
      }),
    );
  }

  /**
   * EVAL, never EVALSHA: for the record's fenced scripts, of which several may be in flight. An
   * EVALSHA that met a script cache Redis had lost (a restart, SCRIPT FLUSH) would be sent again
   * after a later write of the same record, and could then overwrite it with older data. Redis
   * caches what EVAL runs by its hash, so this costs only the script's few hundred bytes.
   */
  evaluate(code: Script, keys: string[], args: string[]): Promise<unknown> {
    return this.guard(() => this.client.sendCommand(["EVAL", code.source, String(keys.length), ...keys, ...args]));
  }

  /** Runs `run` (commands on this client or a connection beside it) with those guards; errors become store errors. */
  guard(run: () => Promise<unknown>): Promise<unknown> {
    // node-redis queues commands while reconnecting; a request must not wait for that.
    if (this.client.isReady === false) {
      return Promise.reject(
        new StoreUnavailableError("persist-session: Redis is not connected. Check that the server is running and reachable; the client reconnects by itself and requests succeed again once it has."),
      );
    }
    return withDeadline(
      run,
      this.timeout,
      () => new StoreUnavailableError(`persist-session: Redis did not answer within ${this.timeout} ms. Check the server and the network, or raise RedisStore's commandTimeout option.`),
      storeError,
    );
  }
}

/** The code of a Redis error reply (`WRONGTYPE`, `NOSCRIPT`, …), or `undefined` for any other failure. */
function replyCode(error: unknown): string | undefined {
  if (!(error instanceof Error)) return undefined;
  // node-redis's ErrorReply and ioredis's ReplyError carry the server's text, which starts with its code.
  if (!/Reply|SimpleError|BlobError/.test(error.constructor.name) && !/Reply/.test(error.name)) return undefined;
  return /^([A-Z]+)\b/.exec(error.message)?.[1];
}

function storeError(error: unknown): Error {
  const message = error instanceof Error ? error.message : String(error);
  const code = replyCode(error);
  if (code !== undefined && !UNAVAILABLE_CODES.has(code)) {
    return new RedisReplyError(code, `persist-session: Redis refused a command: ${message}. Check the server's configuration and that nothing else writes under the store's prefix.`, {
      cause: error,
    });
  }
  return new StoreUnavailableError(`persist-session: Redis failed: ${message}. Check that the server is running and reachable; requests succeed again once it is.`, {
    cause: error,
  });
}
