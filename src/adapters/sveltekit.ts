import type { IncomingMessage } from "node:http";
import type { TLSSocket } from "node:tls";
import type { Handle, RequestEvent } from "@sveltejs/kit";
import type { SessionCore } from "../session-core.js";
import type { Sessions } from "../session.js";
import { isHttps } from "./fetch.js";
import { coreOf, serveFrameworkRequest } from "./web-framework.js";

const READ_ONLY_ADVICE =
  "load functions and the page render (GET and HEAD requests) only read it: change it in a form action or in a POST, PUT, PATCH or DELETE request handler.";

/**
 * Options of {@link createHandle}.
 *
 * @example
 * ```ts
 * // Behind a proxy of your own that always terminates TLS:
 * export const handle = createHandle(sessions, { https: () => true });
 * ```
 */
export interface HandleOptions {
  /**
   * Whether the request came over HTTPS, which decides the cookies' `Secure`.
   * @default the protocol of `event.url`, except where adapter-node guessed it (see {@link createHandle})
   */
  https?: (event: RequestEvent) => boolean;
}

/**
 * SvelteKit 2 `handle` hook that gives every request its `@persist` state:
 * `new State()` in a `load`, a form action or a `+server.ts` handler is this
 * browser's instance. Compose it with others through `sequence()`.
 *
 * - **`load` reads, form actions write.** A GET or HEAD request (a page
 *   render, a `__data.json` fetch) reads what is stored, takes no lock and
 *   writes nothing; a change there throws, naming form actions. It ends when
 *   its body has been streamed, so streamed promises of `load` read state too.
 * - A POST (PUT, PATCH, DELETE) request commits when `resolve(event)` returns
 *   its Response: its changes are stored, then it is sent with its cookies.
 *   A change in a promise still streaming after that throws
 *   `… after the response was sent`. A thrown error or a 5xx stores nothing.
 * - HTTPS is `event.url`'s protocol as SvelteKit computed it: Vite's in dev;
 *   with adapter-node, `ORIGIN`, or `PROTOCOL_HEADER` behind a proxy. Where
 *   neither speaks (no ORIGIN, no such header on the request), adapter-node
 *   calls the request https without knowing; there the connection decides
 *   (plain HTTP: no `Secure`), with one warning.
 *
 * @example
 * ```ts
 * // src/hooks.server.ts
 * import { sequence } from "@sveltejs/kit/hooks";
 * import { createHandle } from "persist-session/sveltekit";
 * import { sessions } from "$lib/server/state";
 * export const handle = sequence(createHandle(sessions), otherHandle);
 * ```
 */
export function createHandle(sessions: Sessions, options: HandleOptions = {}): Handle {
  const core = coreOf(sessions);
  const https = options.https ?? ((event: RequestEvent) => isHttpsEvent(core, event));
  return ({ event, resolve }) =>
    serveFrameworkRequest(sessions, { request: event.request, https: https(event), readOnlyAdvice: READ_ONLY_ADVICE }, async () => resolve(event));
}

/** The engines that logged the warning of {@link isHttpsEvent} already: once per `persistSession()`. */
const warnedGuess = new WeakSet<SessionCore>();

/**
 * adapter-node builds `event.url` from `ORIGIN`, or from the header named by
 * `PROTOCOL_HEADER` that a proxy sends; without either it writes "https"
 * whatever the client used (its `get_origin` defaults the protocol). That
 * guess would set `Secure` on plain HTTP, so there the connection decides.
 * `event.platform.req` is how adapter-node's request shows.
 */
function isHttpsEvent(core: SessionCore, event: RequestEvent): boolean {
  // `event.url` is made from `event.request.url`.
  if (!isHttps(event.request, core.trustProxy)) return false;
  if (core.trustProxy && event.request.headers.has("x-forwarded-proto")) return true; // the proxy's word, which trustProxy believes
  const req = (event.platform as { req?: IncomingMessage } | undefined)?.req;
  if (req?.socket === undefined) return true; // the dev server, another adapter: its URL says it
  const { ORIGIN = "", PROTOCOL_HEADER = "" } = process.env;
  if (ORIGIN !== "") return true;
  if (PROTOCOL_HEADER !== "" && req.headers[PROTOCOL_HEADER.toLowerCase()] !== undefined) return true;
  const encrypted = (req.socket as Partial<TLSSocket>).encrypted === true;
  if (!encrypted && !warnedGuess.has(core)) {
    warnedGuess.add(core);
    core.logger.warn(
      "persist-session: adapter-node reports https for a request that came over plain HTTP (ORIGIN is not set, and PROTOCOL_HEADER is not set or the request has no such header), so cookies are sent without Secure. " +
        "Set ORIGIN=https://your.host, or PROTOCOL_HEADER=x-forwarded-proto behind a proxy (or pass `https` to createHandle()).",
    );
  }
  return encrypted;
}
