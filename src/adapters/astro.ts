import type { MiddlewareHandler } from "astro";
import type { Sessions } from "../session.js";
import { coreOf, serveFrameworkRequest } from "./web-framework.js";

const READ_ONLY_ADVICE =
  "Page renders (GET and HEAD requests) only read it: change it in an Astro Action, in an endpoint's POST, PUT, PATCH or DELETE handler, or in a page's frontmatter on a POST.";

/**
 * Astro 5 middleware (on-demand rendering, e.g. with @astrojs/node) that gives
 * pages, endpoints and Astro Actions their `@persist` state: `new State()` in
 * them is this browser's instance. Prerendered pages are left alone.
 *
 * - **Pages read, actions write.** A GET or HEAD request (a page render)
 *   reads what is stored, takes no lock and writes nothing. It ends when the
 *   page has been streamed, so every component reads state, however late it
 *   renders; a change anywhere throws, naming Actions and endpoints.
 * - A POST (PUT, PATCH, DELETE) request — an Action, an endpoint, a form
 *   posted to a page — commits when its response is complete: a page's
 *   components are rendered in full first (that response is not streamed),
 *   so a change in any of them is stored and its cookie sent. A thrown error,
 *   a component failing or a 5xx stores nothing (and answers a real 500).
 * - HTTPS is `context.url`'s, as Astro computed it: a TLS connection (the
 *   Node adapter's `SERVER_CERT_PATH`), or `X-Forwarded-Proto`, checked
 *   against `security.allowedDomains` when that is set.
 *
 * @example
 * ```ts
 * // src/middleware.ts
 * import { createMiddleware } from "persist-session/astro";
 * import { sessions } from "./state";
 * export const onRequest = createMiddleware(sessions);
 * ```
 */
export function createMiddleware(sessions: Sessions): MiddlewareHandler {
  coreOf(sessions); // a TypeError now, not at the first request
  return (context, next) => {
    // Rendered at build time: no visitor, no cookies (and reading the headers would warn).
    if (context.isPrerendered) return next();
    // `context.url` is made from `context.request.url`, whose protocol decides `Secure`.
    return serveFrameworkRequest(sessions, { request: context.request, readOnlyAdvice: READ_ONLY_ADVICE, beforeCommit: renderInFull }, next);
  };
}

/**
 * Astro renders a page's components while its body streams, after the
 * middleware got the Response: a writing request waits for the whole page,
 * so what its components change is in the commit, and a component that fails
 * fails the request instead of ending a 200 page half-way.
 */
async function renderInFull(response: Response): Promise<Response> {
  if (response.body === null || !(response.headers.get("content-type") ?? "").startsWith("text/html")) return response;
  const body = await response.arrayBuffer();
  return new Response(body, { status: response.status, statusText: response.statusText, headers: response.headers });
}
