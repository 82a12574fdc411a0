import type { IncomingMessage, ServerResponse } from "node:http";
import { EventStream } from "../event-stream.js";
import type { SessionCore } from "../session-core.js";
import { failureStatus, logFailure } from "./failure.js";

const EVENT_HEADERS = {
  "content-type": "text/event-stream; charset=utf-8",
  "cache-control": "no-store",
  // nginx buffers responses unless told not to.
  "x-accel-buffering": "no",
} as const;

/** Serves a browser's events stream over node:http / Express. */
export function serveNodeEvents(core: SessionCore, req: IncomingMessage, res: ServerResponse): void {
  const cookie = Array.isArray(req.headers.cookie) ? req.headers.cookie.join("; ") : req.headers.cookie;
  const lastEventId = req.headers["last-event-id"];
  core.streamTargets(cookie, req).then(
    (targets) => {
      if (res.destroyed) return;
      res.writeHead(200, EVENT_HEADERS);
      const stream = new EventStream(core, targets, { write: (chunk) => void res.write(chunk) });
      res.once("close", () => stream.close());
      stream.start(typeof lastEventId === "string" ? lastEventId : undefined).catch((error: unknown) => {
        logFailure(core, error);
        stream.close();
        res.end();
      });
    },
    (error: unknown) => {
      logFailure(core, error);
      if (res.headersSent) return void res.end();
      res.writeHead(failureStatus(error), { "content-type": "text/plain; charset=utf-8" }).end("Events unavailable\n");
    },
  );
}

/** Serves a browser's events stream as a Fetch API Response. */
export async function serveFetchEvents(core: SessionCore, request: Request): Promise<Response> {
  let targets;
  try {
    targets = await core.streamTargets(request.headers.get("cookie") ?? undefined, request);
  } catch (error) {
    logFailure(core, error);
    return new Response("Events unavailable\n", { status: failureStatus(error) });
  }
  const encoder = new TextEncoder();
  let stream: EventStream | undefined;
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      stream = new EventStream(core, targets, {
        write: (chunk) => {
          try {
            controller.enqueue(encoder.encode(chunk));
          } catch {
            stream?.close(); // the consumer went away
          }
        },
      });
      request.signal.addEventListener("abort", () => stream?.close(), { once: true });
      stream.start(request.headers.get("last-event-id") ?? undefined).catch((error: unknown) => {
        logFailure(core, error);
        stream?.close();
        controller.close();
      });
    },
    cancel() {
      stream?.close();
    },
  });
  return new Response(body, { headers: EVENT_HEADERS });
}
