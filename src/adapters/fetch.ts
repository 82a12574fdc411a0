import { runInRequest } from "../context.js";
import type { RequestState } from "../request-state.js";
import type { SessionCore } from "../session-core.js";
import type { SetCookie } from "../set-cookie.js";
import { failureAnswer } from "./failure.js";

/** A Fetch API handler: Hono, Next.js route handlers, Deno-style servers, Bun. */
export type FetchHandler<A extends unknown[]> = (request: Request, ...rest: A) => Response | Promise<Response>;

/**
 * The Fetch API translation of the request lifecycle: the handler's returned
 * Response is the commit point (a 5xx aborts, and so does a thrown handler),
 * and it is returned, with Set-Cookie, once the state is stored. The
 * Request's `signal` tells the lifecycle when the client left.
 */
export function wrapFetchHandler<A extends unknown[]>(core: SessionCore, handler: FetchHandler<A>): (request: Request, ...rest: A) => Promise<Response> {
  return async (request, ...rest) => {
    let state: RequestState;
    try {
      state = openFetchRequest(core, request);
      if (state.ready !== undefined) await state.ready;
    } catch (error) {
      return failure(core, error);
    }
    let response: Response;
    try {
      response = await runInRequest(state, handler, request, ...rest);
    } catch (error) {
      state.abort();
      throw error;
    }
    let cookies: readonly SetCookie[];
    try {
      const result = state.commit(response.status);
      await result.stored;
      cookies = result.cookies;
    } catch (error) {
      // The handler's Response is replaced by the failure: cancel its body, or a streaming one would run on unread.
      response.body?.cancel().catch(() => undefined);
      return failure(core, error);
    }
    return withSetCookies(response, cookies);
  };
}

/** Opens the request of a Fetch `request` (its Cookie header, its URL's protocol), told by its `signal` when the client leaves. */
export function openFetchRequest(core: SessionCore, request: Request): RequestState {
  const state = core.open({ cookieHeader: request.headers.get("cookie") ?? undefined, https: isHttps(request, core.trustProxy), request });
  // A client that leaves while the request waits for a lock gives its place up; later, the handler runs on.
  request.signal.addEventListener("abort", () => state.disconnected(), { once: true });
  return state;
}

/** `response` with `cookies` added; a copy when its headers are immutable (Response.redirect, a fetched Response). */
export function withSetCookies(response: Response, cookies: readonly SetCookie[]): Response {
  if (cookies.length === 0) return response;
  try {
    for (const cookie of cookies) response.headers.append("set-cookie", cookie.header);
    return response;
  } catch {
    const copy = new Response(response.body, { status: response.status, statusText: response.statusText, headers: new Headers(response.headers) });
    for (const cookie of cookies) copy.headers.append("set-cookie", cookie.header);
    return copy;
  }
}

/** The Response for a failed request; see {@link failureAnswer}. */
export function failure(core: SessionCore, error: unknown): Response {
  const { status, headers, body } = failureAnswer(core, error);
  return new Response(body, { status, headers });
}

/** HTTPS as the Request's URL says, or (with `trustProxy`) the proxy's `X-Forwarded-Proto`. */
export function isHttps(request: Request, trustProxy: boolean): boolean {
  if (trustProxy) {
    const proto = request.headers.get("x-forwarded-proto")?.split(",")[0]?.trim().toLowerCase();
    if (proto !== undefined) return proto === "https";
  }
  try {
    return new URL(request.url).protocol === "https:";
  } catch {
    return false;
  }
}
