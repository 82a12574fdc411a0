import { createHash } from "node:crypto";
import type { RecordChange } from "./change-feed.js";
import type { RecordTarget } from "./request-state.js";
import type { SessionCore } from "./session-core.js";

/** Where an events stream writes: a node response or a ReadableStream controller. */
export interface EventSink {
  write(chunk: string): void;
}

/** Tells the browser how long to wait before reconnecting. */
const RETRY_MS = 2000;

/**
 * One browser's server-sent events stream: "record K changed, version V" for
 * the records its cookies (and its signed-in user) name. It holds no lock;
 * event ids carry the versions by key (never record ids, which stay HttpOnly),
 * so a reconnecting EventSource's `Last-Event-ID` lets the server send what
 * the browser missed.
 */
export class EventStream {
  readonly #versions = new Map<string, number>();
  readonly #keysById = new Map<string, string>();
  #unsubscribe: (() => void) | undefined;
  #heartbeat: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(
    readonly core: SessionCore,
    readonly targets: readonly RecordTarget[],
    readonly sink: EventSink,
  ) {
    for (const target of targets) this.#keysById.set(target.id, target.key);
  }

  /** Sends the preamble and what `lastEventId` says the browser missed, then follows changes. */
  async start(lastEventId: string | undefined): Promise<void> {
    const seen = parseEventId(lastEventId);
    // Subscribe before reading versions so a change in between is not missed (the version check dedupes).
    this.#unsubscribe = this.core.feed.subscribe(this.#keysById.keys(), (change) => this.#onChange(change));
    this.sink.write(`retry: ${RETRY_MS}\n: persist-session events\n\n`);
    // Other processes' changes are followed before the versions are read, for the same reason.
    await this.core.watchStore();
    if (this.#closed) return;
    const current = await Promise.all(this.targets.map(async (target) => [target, await this.core.currentVersion(target.id)] as const));
    if (this.#closed) return;
    const missed: RecordTarget[] = [];
    for (const [target, version] of current) {
      const known = this.#versions.get(target.key);
      if (known === undefined || version > known) this.#versions.set(target.key, version);
      if (seen !== undefined && version !== (seen.get(target.key) ?? 0)) missed.push(target);
    }
    for (const target of missed) this.#send(target.key, this.#versions.get(target.key) ?? 0);
    // The end of the preamble, after what was missed: the baseline for a later Last-Event-ID, a sign
    // the stream is live, and what it follows (persist-session/client compares that with a probe's).
    const ready = JSON.stringify({ targets: targetsTag(this.targets), heartbeat: this.core.heartbeatMs });
    this.sink.write(`id: ${this.#eventId()}\nevent: ready\ndata: ${ready}\n\n`);
    // Not unref'd: the open connection keeps the process alive anyway, and a counted timer shows leaks.
    this.#heartbeat = setInterval(() => this.sink.write(": heartbeat\n\n"), this.core.heartbeatMs);
  }

  /** Stops following; idempotent. */
  close(): void {
    this.#closed = true;
    this.#unsubscribe?.();
    this.#unsubscribe = undefined;
    clearInterval(this.#heartbeat);
    this.#heartbeat = undefined;
  }

  #onChange(change: RecordChange): void {
    const key = this.#keysById.get(change.id);
    if (key === undefined || this.#closed) return;
    const known = this.#versions.get(key) ?? 0;
    // A deletion (version 0) is news; a version we already sent is an echo from the store's pub/sub.
    if (change.version !== 0 && change.version <= known) return;
    if (change.version === 0 && known === 0) return;
    this.#versions.set(key, change.version);
    this.#send(key, change.version);
  }

  #send(key: string, version: number): void {
    this.sink.write(`id: ${this.#eventId()}\nevent: change\ndata: ${JSON.stringify({ key, version })}\n\n`);
  }

  #eventId(): string {
    return formatEventId(this.#versions);
  }
}

/**
 * Names the records a stream follows without naming them: a hash of their keys
 * and ids. Two requests with the same cookies (and user) get the same tag; a
 * first change, a reset, a sign-in or a sign-out gives another. Record ids stay
 * HttpOnly: a hash of 122 random bits does not give them back.
 */
export function targetsTag(targets: readonly RecordTarget[]): string {
  const named = targets.map((target) => `${target.key}=${target.id}`).sort();
  return createHash("sha256").update(named.join(",")).digest("base64url").slice(0, 22);
}

/**
 * What a stream for `targets` would start from now: their tag, and the id its
 * `ready` event would carry. The answer to a probe: persist-session/client
 * shows the new versions at once, before the new stream is open.
 */
export async function describeTargets(core: SessionCore, targets: readonly RecordTarget[]): Promise<{ targets: string; id: string }> {
  const versions = await Promise.all(targets.map(async (target) => [target.key, await core.currentVersion(target.id)] as const));
  return { targets: targetsTag(targets), id: formatEventId(versions) };
}

/** Every followed key with its version: `key=version,key=version`. */
function formatEventId(versions: Iterable<readonly [string, number]>): string {
  return [...versions].map(([key, version]) => `${key}=${version}`).join(",");
}

/** `key=version,key=version`; anything else counts as no id. */
function parseEventId(id: string | undefined): Map<string, number> | undefined {
  if (id === undefined || id.length > 4096) return undefined;
  const versions = new Map<string, number>();
  if (id === "") return versions;
  for (const part of id.split(",")) {
    const match = /^([^=]+)=(\d{1,15})$/.exec(part);
    if (match === null) return undefined;
    versions.set(match[1]!, Number(match[2]));
  }
  return versions;
}
