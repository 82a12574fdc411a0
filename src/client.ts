// persist-session/client: the browser side of live sync. A browser ES module
// with no dependencies and nothing from Node; nothing on the server imports it.
//
// One events stream per browser: the tabs of one origin elect a holder (the
// Web Locks API, or a heartbeat election over BroadcastChannel where locks are
// missing); the holder reads the stream and shares what it hears on a
// BroadcastChannel. Without BroadcastChannel each tab holds its own stream.
//
// Every event id is the whole picture ("app-state=7,shared-notes=2", all the
// records the stream follows), and the stream's `ready` event names what it
// follows (`targets`, a hash of the record ids). So each tab compares
// pictures instead of counting events: a repeated or older version is never
// reported again, and a reconnect or a new holder loses nothing.
//
// Which records a browser has changes when one of its requests sets or clears
// a cookie (a first change, a reset, a sign-in or sign-out). The cookies are
// HttpOnly, so no script sees that; instead, after any request a tab makes
// (seen through PerformanceObserver), the holder asks the events URL which
// targets a stream would follow now and at which versions (`Accept:
// application/json`); when they differ from its stream's, it shares those
// versions at once and reconnects.

/**
 * A record of this browser (or of its signed-in user) changed: its key and its new version (0: deleted, or no longer followed).
 * @example
 * ```ts
 * sync.on("change", ({ key, version }: StateChange) => key === "cart" && refetchCart());
 * ```
 */
export interface StateChange {
  /** The `@persist` key. */
  readonly key: string;
  /** The stored version now; 0 when there is no record for the key any more. */
  readonly version: number;
}

/**
 * Whether changes arrive: `"live"` once the browser's stream is open, `"offline"` while it reconnects.
 * @example
 * ```ts
 * sync.on("status", (status: SyncStatus) => (badge.hidden = status !== "live"));
 * ```
 */
export type SyncStatus = "connecting" | "live" | "offline";

/**
 * What {@link StateWatch.on} can listen to, and what each listener gets.
 * @example
 * ```ts
 * const log = <K extends keyof StateWatchEvents>(type: K) => sync.on(type, (value: StateWatchEvents[K]) => console.log(type, value));
 * ```
 */
export interface StateWatchEvents {
  /** A record changed; never twice for one version, never for a version older than one reported. */
  change: StateChange;
  /** The connection's {@link SyncStatus} changed. */
  status: SyncStatus;
}

/**
 * Options of {@link watchState}.
 * @example
 * ```ts
 * watchState({ url: "/api/events", versions: { "app-state": 7 } });
 * ```
 */
export interface WatchStateOptions {
  /**
   * The events endpoint (`sessions.events` or `sessions.fetchEvents`).
   * @default "/events"
   */
  url?: string;
  /**
   * The versions the page shows, by key (`inspectState(state).version` when it
   * was rendered). A record whose version differs once the stream is open is
   * reported at once, so a page rendered just before a change catches up.
   * Without it, the first versions heard are the baseline.
   */
  versions?: Readonly<Record<string, number>>;
}

/**
 * What {@link watchState} returns.
 * @example
 * ```ts
 * const sync: StateWatch = watchState();
 * addEventListener("pagehide", () => sync.close());
 * ```
 */
export interface StateWatch {
  /**
   * Calls `listener` for each `change` (or `status`); returns the function that removes it.
   * @example
   * ```ts
   * const off = sync.on("change", ({ key, version }) => console.log(key, version));
   * ```
   */
  on<K extends keyof StateWatchEvents>(type: K, listener: (value: StateWatchEvents[K]) => void): () => void;
  /** The connection's status now. */
  readonly status: SyncStatus;
  /** Whether this tab holds the browser's events stream (the others hear it through this one). */
  readonly holdsStream: boolean;
  /** Stops watching; if this tab held the stream, another tab takes it over. Idempotent. */
  close(): void;
}

/**
 * What tabs tell each other: h = the holder's id, t/v/s = its targets, event id and status;
 * c = "check the targets" (j: "and say what you have", from a tab that just opened); b = the holder is leaving.
 */
interface Message {
  h?: string;
  t?: string;
  v?: string;
  s?: SyncStatus;
  c?: 1;
  j?: 1;
  b?: 1;
}

/** Longest wait between reconnection attempts. */
const MAX_BACKOFF_MS = 30_000;
/** Election without Web Locks: the holder says it is there this often, and is given up for gone after three times as long. */
const HEARTBEAT_MS = 1000;

/**
 * Tells the page when this browser's (or its signed-in user's) state changed,
 * in any tab or on any device, with one events stream for all the tabs of the
 * browser. It reconnects by itself (with backoff, resuming from the last event
 * id), and follows new records after a first change, a reset, a sign-in or a
 * sign-out in any tab.
 *
 * @example
 * ```ts
 * import { watchState } from "persist-session/client";
 *
 * const sync = watchState({ url: "/events" });
 * sync.on("change", ({ key, version }) => refresh(key, version));
 * // later: sync.close();
 * ```
 */
export function watchState(options: WatchStateOptions = {}): StateWatch {
  const url = new URL(options.url ?? "/events", location.href).href;
  const origin = new URL(url).origin;
  const name = "persist-session " + url;
  const me = Math.random().toString(36).slice(2);
  const listeners: { [K in keyof StateWatchEvents]: Set<(value: StateWatchEvents[K]) => void> } = { change: new Set(), status: new Set() };
  const channel = typeof BroadcastChannel == "function" ? new BroadcastChannel(name) : undefined;
  const locks = navigator.locks;
  const lockRequest = new AbortController();
  let status: SyncStatus = "connecting";
  let holding = false;
  let closed = false;

  // What this tab knows: the targets of the versions it has, and the last event id (to resume from).
  let tag: string | undefined;
  let seen = new Map(Object.entries(options.versions ?? {}));
  let known = options.versions !== undefined;
  let lastId: string | undefined;

  // The holder's stream.
  let stream: AbortController | undefined;
  let streamTag: string | undefined;
  /** Targets a check found while the stream was still connecting: compared once it is ready. */
  let wanted: string | undefined;
  let generation = 0;
  let attempts = 0;
  let retry: ReturnType<typeof setTimeout> | undefined;
  let probing = false;
  let probeAgain = false;
  let release: (() => void) | undefined;

  // Election without Web Locks.
  let heard = 0;
  const ticker = channel !== undefined && locks === undefined ? setInterval(tick, HEARTBEAT_MS) : undefined;

  const emit = <K extends keyof StateWatchEvents>(type: K, value: StateWatchEvents[K]) => {
    for (const listener of [...listeners[type]]) {
      try {
        listener(value);
      } catch (error) {
        // One failing listener must not stop the others, nor the sharing with other tabs.
        setTimeout(() => {
          throw error;
        });
      }
    }
  };

  const setStatus = (next: SyncStatus) => {
    if (next !== status) emit("status", (status = next));
  };

  const post = (message: Message) => channel?.postMessage(message);

  /** The holder tells the other tabs what it has. */
  const announce = () => post({ h: me, t: streamTag, v: lastId, s: status });

  /**
   * Takes in the picture of event id `id` for targets `targets`, and reports
   * what differs from what this tab has. Same targets: only a newer version
   * (or a deletion) is news. Other targets (a new record, another user): every
   * key whose version differs is.
   */
  function apply(targets: string, id: string) {
    lastId = id;
    const next = new Map<string, number>();
    for (const part of id.split(",")) {
      const at = part.lastIndexOf("=");
      if (at > 0) next.set(part.slice(0, at), Number(part.slice(at + 1)));
    }
    const fresh = targets !== tag;
    for (const key of new Set([...seen.keys(), ...next.keys()])) {
      const version = next.get(key) ?? 0;
      const had = seen.get(key) ?? 0;
      if (fresh ? version !== had : version > had || (version === 0 && had > 0)) {
        if (!fresh) seen.set(key, version);
        if (known) emit("change", { key, version });
      }
    }
    if (fresh) {
      tag = targets;
      seen = next;
      known = true;
    }
  }

  function hold() {
    if (closed || holding) return;
    holding = true;
    connect();
  }

  function stepDown() {
    holding = false;
    stream?.abort();
    clearTimeout(retry);
  }

  /** Opens the stream, resuming from the last event id any tab heard; a previous stream is dropped. */
  function connect() {
    stream?.abort();
    clearTimeout(retry);
    const controller = (stream = new AbortController());
    generation++;
    wanted = undefined;
    streamTag = undefined;
    setStatus("connecting");
    announce();
    const headers: Record<string, string> = { accept: "text/event-stream" };
    if (lastId !== undefined) headers["last-event-id"] = lastId;
    let watchdog: ReturnType<typeof setTimeout> | undefined;
    fetch(url, { headers, cache: "no-store", signal: controller.signal })
      .then(async (response) => {
        if (!response.ok || response.body === null) throw new Error();
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        let heartbeat = 0;
        for (;;) {
          const { value, done } = await reader.read();
          clearTimeout(watchdog);
          if (done) return;
          // A connection that went quiet (a cut the network did not report) is given up after missing two heartbeats.
          if (heartbeat > 0) watchdog = setTimeout(() => controller.abort(), heartbeat * 2.5);
          buffer += value;
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            const field = (key: string) => new RegExp(`^${key}: ?(.*)`, "m").exec(block)?.[1];
            const event = field("event");
            const id = field("id");
            if (id === undefined || controller !== stream) continue;
            if (event === "ready") {
              const ready = JSON.parse(field("data") ?? "{}") as { targets?: string; heartbeat?: number };
              // Cookies changed while this stream was connecting: it follows the old records.
              if (wanted !== undefined && wanted !== ready.targets) return connect();
              heartbeat = ready.heartbeat ?? 0;
              streamTag = ready.targets ?? "";
              attempts = 0;
            }
            // Changes before `ready` are what the stream missed; ready's id has them all, with the targets.
            if (streamTag === undefined) continue;
            apply(streamTag, id);
            setStatus("live");
            announce();
          }
        }
      })
      .catch(() => undefined)
      .then(() => {
        clearTimeout(watchdog);
        if (controller !== stream || !holding) return;
        setStatus("offline");
        announce();
        // Backoff with jitter: a restarted server is not met by every browser at the same instant.
        retry = setTimeout(connect, Math.min(MAX_BACKOFF_MS, 500 * 2 ** attempts++) * (0.5 + Math.random() / 2));
      });
  }

  /** A request of this page may have changed which records the browser has: the holder checks. */
  function check(join?: 1) {
    if (!holding) return void post({ c: 1, j: join });
    if (probing) return void (probeAgain = true);
    probing = true;
    const started = generation;
    fetch(url, { headers: { accept: "application/json" }, cache: "no-store", signal: AbortSignal.timeout(10_000) })
      .then((response) => response.json() as Promise<{ targets?: string; id?: string }>)
      .then(({ targets, id }) => {
        // A stream opened since the check began follows what the cookies say now.
        if (started !== generation || !holding || targets === undefined || targets === streamTag) return;
        // Other records: the probe's versions are news at once, before a stream for them is open.
        if (id !== undefined) {
          apply(targets, id);
          post({ h: me, t: targets, v: id, s: status });
        }
        if (streamTag === undefined) wanted = targets;
        else connect();
      })
      .catch(() => undefined)
      .then(() => {
        probing = false;
        if (probeAgain) {
          probeAgain = false;
          check();
        }
      });
  }

  function tick() {
    if (holding) announce();
    else if (Date.now() - heard > 3 * HEARTBEAT_MS) hold();
  }

  if (channel !== undefined) {
    channel.onmessage = ({ data }: MessageEvent<Message>) => {
      if (data.h !== undefined) {
        heard = Date.now();
        // Two holders without Web Locks: the smaller id keeps the stream.
        if (holding && ticker !== undefined && data.h < me) stepDown();
        if (holding) return;
        if (data.s !== undefined) setStatus(data.s);
        if (data.t !== undefined && data.v !== undefined) apply(data.t, data.v);
      } else if (data.b !== undefined) {
        // The holder left (without Web Locks): someone takes over, after a random pause so that one does.
        heard = 0;
        setTimeout(() => Date.now() - heard > 3 * HEARTBEAT_MS && hold(), Math.random() * 300);
      } else if (data.c !== undefined && holding) {
        if (data.j !== undefined) announce();
        check();
      }
    };
  }

  const observer =
    typeof PerformanceObserver == "function"
      ? new PerformanceObserver((list) => {
          const requested = list
            .getEntries()
            .some((entry) => /^(fetch|xmlhttprequest|beacon)$/.test((entry as PerformanceResourceTiming).initiatorType) && entry.name.startsWith(origin) && !entry.name.startsWith(url));
          if (requested) check();
        })
      : undefined;
  observer?.observe({ type: "resource" });

  const onVisible = () => document.visibilityState === "visible" && check();
  const onOnline = () => {
    if (holding && status !== "live") {
      attempts = 0;
      connect();
    }
  };
  const onHide = () => holding && ticker !== undefined && post({ b: 1 });
  document.addEventListener("visibilitychange", onVisible);
  addEventListener("online", onOnline);
  addEventListener("pagehide", onHide);

  // A page just loaded (a navigation may have changed the cookies): the holder, if any, checks and says what it has.
  check(1);
  if (channel === undefined) hold();
  else if (locks !== undefined) {
    locks
      // Granted just as close() ran (too late to abort the request): let go at once.
      .request(name, { signal: lockRequest.signal }, () => new Promise<void>((resolve) => ((release = resolve), closed ? resolve() : hold())))
      .catch(() => closed || hold()); // locks refused (a sandboxed frame): a stream of its own
  }

  return {
    on(type, listener) {
      listeners[type].add(listener);
      return () => void listeners[type].delete(listener);
    },
    get status() {
      return status;
    },
    get holdsStream() {
      return holding;
    },
    close() {
      if (closed) return;
      onHide();
      closed = true;
      stepDown();
      lockRequest.abort();
      release?.();
      clearInterval(ticker);
      observer?.disconnect();
      channel?.close();
      document.removeEventListener("visibilitychange", onVisible);
      removeEventListener("online", onOnline);
      removeEventListener("pagehide", onHide);
    },
  };
}
