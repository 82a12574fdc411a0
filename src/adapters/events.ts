import type { IncomingMessage, ServerResponse } from "node:http";
import { EventStream, describeTargets } from "../event-stream.js";
import type { RecordTarget } from "../request-state.js";
import type { SessionCore } from "../session-core.js";
import { failure } from "./fetch.js";
import { failureAnswer, logFailure } from "./failure.js";
import { headerValue } from "./node.js";

const EVENT_HEADERS = {
  "content-type": "text/event-stream; charset=utf-8",
  "cache-control": "no-store",
  // nginx buffers responses unless told not to.
  "x-accel-buffering": "no",
} as const;

/**
 * A request for what a stream would follow now, not for the stream: `Accept:
 * application/json` (an EventSource asks for text/event-stream). persist-session/client
 * sends it after the page's requests, to learn whether they changed the browser's
 * records (cookies are HttpOnly, so the page cannot see it).
 */
function asksForTargets(accept: string | null | undefined): boolean {
  return accept != null && accept.includes("application/json") && !accept.includes("text/event-stream");
}

const TARGETS_HEADERS = { "content-type": "application/json", "cache-control": "no-store" } as const;

/** Answers a probe (see {@link asksForTargets}) over node:http. */
function answerTargets(core: SessionCore, targets: readonly RecordTarget[], res: ServerResponse): void {
  describeTargets(core, targets).then(
    (answer) => void res.writeHead(200, TARGETS_HEADERS).end(JSON.stringify(answer)),
    (error: unknown) => {
      const { status, headers, body } = failureAnswer(core, error);
      res.writeHead(status, headers).end(body);
    },
  );
}

/** Whether `res` can still take a response of ours: nothing sent, not ended, not destroyed. */
function isWritable(res: ServerResponse): boolean {
  return !res.headersSent && !res.writableEnded && !res.destroyed;
}

/**
 * Serves a browser's events stream over node:http / Express. It never writes
 * to a response that has been answered or ended (a framework that answered on
 * its own, like Koa without `ctx.respond = false`), and a failed socket's
 * 'error' is handled here: a stream cannot take the process down.
 */
export function serveNodeEvents(core: SessionCore, req: IncomingMessage, res: ServerResponse): void {
  // Without a listener, an 'error' on the response (a write after the socket failed) would crash the process.
  res.on("error", () => undefined);
  const lastEventId = req.headers["last-event-id"];
  if (!isWritable(res)) return warnAnswered(core);
  core.streamTargets(headerValue(req.headers.cookie), req).then(
    (targets) => {
      if (res.destroyed) return;
      if (!isWritable(res)) return warnAnswered(core);
      if (asksForTargets(req.headers.accept)) return void answerTargets(core, targets, res);
      res.writeHead(200, EVENT_HEADERS);
      const stream = new EventStream(core, targets, {
        write: (chunk) => {
          if (!res.writableEnded && !res.destroyed) res.write(chunk);
        },
      });
      res.once("close", () => stream.close());
      stream.start(typeof lastEventId === "string" ? lastEventId : undefined).catch((error: unknown) => {
        logFailure(core, error);
        stream.close();
        if (!res.writableEnded) res.end();
      });
    },
    (error: unknown) => {
      const { status, headers, body } = failureAnswer(core, error);
      if (!isWritable(res)) return void (res.writableEnded || res.destroyed || res.end());
      res.writeHead(status, headers).end(body);
    },
  );
}

/** Once per process: the stream was asked for on a response the framework had already answered. */
let warnedAnswered = false;
function warnAnswered(core: SessionCore): void {
  if (warnedAnswered) return;
  warnedAnswered = true;
  core.logger.warn(
    "persist-session: sessions.events was given a response that was already answered or ended, so no stream was sent. " +
      "Let the events route answer by itself (Koa: set ctx.respond = false, or use persist-session/koa; Fastify: reply.hijack(), or use persist-session/fastify).",
  );
}

/** Serves a browser's events stream as a Fetch API Response. */
export async function serveFetchEvents(core: SessionCore, request: Request): Promise<Response> {
  let targets;
  try {
    targets = await core.streamTargets(request.headers.get("cookie") ?? undefined, request);
  } catch (error) {
    return failure(core, error);
  }
  if (asksForTargets(request.headers.get("accept"))) {
    try {
      return Response.json(await describeTargets(core, targets), { headers: TARGETS_HEADERS });
    } catch (error) {
      return failure(core, error);
    }
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
