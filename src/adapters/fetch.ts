import { runInRequest } from "../context.js";
import type { SessionCore } from "../session-core.js";
import { failureAnswer } from "./failure.js";

/** A Fetch API handler: Hono, Next.js route handlers, Deno-style servers, Bun. */
export type FetchHandler<A extends unknown[]> = (request: Request, ...rest: A) => Response | Promise<Response>;

/**
 * Wraps a Fetch handler: the state is committed when the handler's Response is
 * ready, and that Response is returned (with Set-Cookie) once the state is stored.
 */
export function wrapFetchHandler<A extends unknown[]>(core: SessionCore, handler: FetchHandler<A>): (request: Request, ...rest: A) => Promise<Response> {
  return async (request, ...rest) => {
    let session;
    try {
      session = await core.begin(request.headers.get("cookie") ?? undefined, isHttps(request, core.trustProxy), request);
    } catch (error) {
      return failure(core, error);
    }
    let response: Response | undefined;
    let handlerError: unknown;
    let threw = false;
    try {
      response = await runInRequest(session, () => handler(request, ...rest));
    } catch (error) {
      threw = true;
      handlerError = error;
    }
    let setCookies;
    try {
      const result = session.commit();
      await result.durable;
      setCookies = result.setCookies;
    } catch (error) {
      // The handler's Response is replaced by the failure: cancel its body, or a streaming one would run on unread.
      response?.body?.cancel().catch(() => undefined);
      return failure(core, error);
    }
    if (threw) throw handlerError;
    return withSetCookies(response!, setCookies);
  };
}

function withSetCookies(response: Response, cookies: readonly string[]): Response {
  if (cookies.length === 0) return response;
  try {
    for (const cookie of cookies) response.headers.append("set-cookie", cookie);
    return response;
  } catch {
    // Immutable headers (Response.redirect, a fetched Response): copy into a new Response.
    const copy = new Response(response.body, { status: response.status, statusText: response.statusText, headers: new Headers(response.headers) });
    for (const cookie of cookies) copy.headers.append("set-cookie", cookie);
    return copy;
  }
}

/** The Response for a failed request; see {@link failureAnswer}. */
export function failure(core: SessionCore, error: unknown): Response {
  const { status, headers, body } = failureAnswer(core, error);
  return new Response(body, { status, headers });
}

function isHttps(request: Request, trustProxy: boolean): boolean {
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
