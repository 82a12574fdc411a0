/** One server-sent event as a browser's EventSource would see it. */
export interface ServerEvent {
  readonly event: string;
  readonly id: string | undefined;
  readonly data: string;
}

/** Reads an event stream response event by event; `next(timeoutMs)` rejects when none arrives in time. */
export class EventReader {
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  readonly #decoder = new TextDecoder();
  readonly #queue: ServerEvent[] = [];
  #buffer = "";
  #reading: Promise<ReadableStreamReadResult<Uint8Array>> | undefined;

  constructor(response: Response) {
    this.#reader = response.body!.getReader();
  }

  async next(timeoutMs = 5000): Promise<ServerEvent> {
    const deadline = Date.now() + timeoutMs;
    while (this.#queue.length === 0) {
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new Error(`no event within ${timeoutMs} ms`);
      let timer: NodeJS.Timeout | undefined;
      // A read that outlives a timeout is kept for the next call: its chunk must not be dropped.
      this.#reading ??= this.#reader.read();
      const chunk = await Promise.race([
        this.#reading,
        new Promise<"timeout">((resolve) => (timer = setTimeout(() => resolve("timeout"), remaining))),
      ]);
      clearTimeout(timer);
      if (chunk === "timeout") throw new Error(`no event within ${timeoutMs} ms`);
      this.#reading = undefined;
      if (chunk.done) throw new Error("the stream ended");
      this.#buffer += this.#decoder.decode(chunk.value, { stream: true });
      this.#parse();
    }
    return this.#queue.shift()!;
  }

  /** Resolves with the events that arrive within `ms` (for asserting that nothing arrives). */
  async drain(ms: number): Promise<ServerEvent[]> {
    const events: ServerEvent[] = [];
    const until = Date.now() + ms;
    for (;;) {
      const remaining = until - Date.now();
      if (remaining <= 0) return events;
      try {
        events.push(await this.next(remaining));
      } catch {
        return events;
      }
    }
  }

  async close(): Promise<void> {
    await this.#reader.cancel().catch(() => undefined);
  }

  #parse(): void {
    let end;
    while ((end = this.#buffer.indexOf("\n\n")) !== -1) {
      const block = this.#buffer.slice(0, end);
      this.#buffer = this.#buffer.slice(end + 2);
      let event = "message";
      let id: string | undefined;
      const data: string[] = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":") || line === "") continue;
        const colon = line.indexOf(":");
        const field = colon === -1 ? line : line.slice(0, colon);
        const value = colon === -1 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") event = value;
        else if (field === "id") id = value;
        else if (field === "data") data.push(value);
      }
      if (data.length > 0 || id !== undefined) this.#queue.push({ event, id, data: data.join("\n") });
    }
  }
}
