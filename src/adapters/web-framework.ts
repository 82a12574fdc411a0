import type { SessionCore } from "../session-core.js";
import { kCore, type Sessions, type StateRequest } from "../session.js";
import { failure, isHttps, withSetCookies } from "./fetch.js";

/**
 * What a framework adapter knows of one request, for {@link serveFrameworkRequest}.
 * The frameworks here (React Router middleware, SvelteKit's `handle`, Astro
 * middleware) each hand their middleware a Fetch `Request` and get a `Response` back.
 *
 * @example
 * ```ts
 * const init: FrameworkRequest = { request: event.request, readOnlyAdvice: "Change it in a form action." };
 * ```
 */
export interface FrameworkRequest {
  readonly request: Request;
  /**
   * Whether the request came over HTTPS, which decides the cookies' `Secure`.
   * @default the protocol of the request's URL, as the framework computed it (or, with `trustProxy`, `X-Forwarded-Proto`)
   */
  readonly https?: boolean;
  /** Where state may change in this framework: the advice of the error a change in a reading request throws. */
  readonly readOnlyAdvice: string;
  /**
   * Runs once a writing request's handler returned, before the commit: Astro
   * renders a page's components while the body streams, so it waits for the
   * whole page here (their changes are then stored and their cookies sent).
   */
  readonly beforeCommit?: (response: Response) => Promise<Response>;
}

/**
 * RFC 9110 section 9.2.1: GET, HEAD, OPTIONS and TRACE are safe, "essentially
 * read-only". A framework's page renders and loaders run on them, its actions
 * on the others.
 */
const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS", "TRACE"]);

/**
 * Whether a request of `method` only reads state (RFC 9110's safe methods).
 *
 * @example
 * ```ts
 * isReadingMethod("GET"); // true: a page render
 * isReadingMethod("POST"); // false: an action
 * ```
 */
export function isReadingMethod(method: string): boolean {
  return SAFE_METHODS.has(method.toUpperCase());
}

/**
 * The engine behind `sessions`, for the adapters' failure answers and
 * warnings; a `TypeError` for anything persistSession() did not return.
 *
 * @example
 * ```ts
 * coreOf(sessions).logger.warn("persist-session: …");
 * ```
 */
export function coreOf(sessions: Sessions): SessionCore {
  const core = (sessions as unknown as Record<symbol, SessionCore | undefined>)[kCore];
  if (core === undefined) throw new TypeError("persist-session: the adapter was given something persistSession() did not return. Pass it the `sessions` that persistSession() returned.");
  return core;
}

/**
 * One request of a framework, through the request lifecycle:
 * - A request of a safe method (GET, HEAD: page renders, loaders, `load`)
 *   only reads: it takes no lock and stores nothing, and a change throws with
 *   the framework's advice. It ends when its body has been sent, so what the
 *   page renders or streams after the headers (Astro components, SvelteKit's
 *   and React Router's streamed promises) reads state too.
 * - Any other request (actions, endpoints) may write: the Response the
 *   framework returns is the commit point (a 5xx aborts, and so does a thrown
 *   error), and it is returned with its cookies once the state is stored.
 *   A change after that, in a part of the body still streaming, throws
 *   `… after the response was sent`.
 *
 * @example
 * ```ts
 * export const handle: Handle = ({ event, resolve }) =>
 *   serveFrameworkRequest(sessions, { request: event.request, readOnlyAdvice: "Change it in a form action." }, async () => resolve(event));
 * ```
 */
export async function serveFrameworkRequest(sessions: Sessions, init: FrameworkRequest, handle: () => Promise<Response>): Promise<Response> {
  const core = coreOf(sessions);
  const { request } = init;
  const reading = isReadingMethod(request.method);
  let state: StateRequest;
  try {
    state = await sessions.open({
      cookieHeader: request.headers.get("cookie") ?? undefined,
      https: init.https ?? isHttps(request, core.trustProxy),
      request,
      signal: request.signal,
      ...(reading ? { readOnly: init.readOnlyAdvice } : {}),
    });
  } catch (error) {
    return failure(core, error);
  }
  let response: Response;
  try {
    response = await state.run(handle);
    if (!reading && init.beforeCommit !== undefined) response = await state.run(() => init.beforeCommit!(response));
  } catch (error) {
    // A thrown Response (React Router's `throw redirect()` in a middleware) is the response all the same.
    if (error instanceof Response && error.status < 500) throw await commitWith(core, state, error);
    state.abort();
    throw error;
  }
  if (reading) return endWithBody(response, () => state.commit({ status: response.status }));
  return commitWith(core, state, response);
}

/** Commits `state` for `response` and returns it with the cookies, or the failure when the state could not be stored. */
async function commitWith(core: SessionCore, state: StateRequest, response: Response): Promise<Response> {
  try {
    const { cookies, stored } = state.commit({ status: response.status });
    await stored;
    return withSetCookies(response, cookies);
  } catch (error) {
    // The handler's Response is replaced by the failure: cancel its body, or a streaming one would run on unread.
    response.body?.cancel().catch(() => undefined);
    return failure(core, error);
  }
}

/**
 * `response` with a body that calls `end` once it has been read to its end,
 * failed or been cancelled (the client left); `end` runs at once when there is no body.
 *
 * @example
 * ```ts
 * return endWithBody(response, () => state.commit({ status: response.status }));
 * ```
 */
export function endWithBody(response: Response, end: () => void): Response {
  const body = response.body;
  if (body === null) {
    end();
    return response;
  }
  let ended = false;
  const finish = () => {
    if (ended) return;
    ended = true;
    end();
  };
  const reader = body.getReader();
  const wrapped = new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const { done, value } = await reader.read();
        if (done) {
          finish();
          controller.close();
        } else {
          controller.enqueue(value);
        }
      } catch (error) {
        finish();
        controller.error(error);
      }
    },
    async cancel(reason) {
      finish();
      await reader.cancel(reason);
    },
  });
  return new Response(wrapped, { status: response.status, statusText: response.statusText, headers: response.headers });
}
