import type { MiddlewareFunction } from "react-router";
import type { Sessions } from "../session.js";
import { coreOf, serveFrameworkRequest } from "./web-framework.js";

const READ_ONLY_ADVICE =
  "Loaders and the page render (GET and HEAD requests) only read it: change it in an action (a POST, PUT, PATCH or DELETE request).";

/**
 * React Router 7 (framework mode) middleware that gives every request its
 * `@persist` state: `new State()` in a loader, an action or a component is
 * this browser's instance.
 *
 * - **Loaders read, actions write.** A GET or HEAD request (a page render,
 *   a loader's `.data` fetch) reads what is stored, takes no lock and writes
 *   nothing; a change there throws, naming actions. It ends when its body has
 *   been streamed, so deferred loader data reads state too.
 * - An action's request (POST, PUT, PATCH, DELETE) commits when the Response
 *   is ready: its changes are stored, then it is sent with its cookies. A
 *   thrown error or a 5xx stores nothing.
 * - HTTPS is the request URL's, as React Router's server built it:
 *   `react-router-serve` serves plain HTTP; behind a TLS proxy, a custom
 *   Express server with `app.set("trust proxy", …)` makes it follow
 *   `X-Forwarded-Proto` (or set `trustProxy` in `persistSession()`).
 *
 * Needs `future: { v8_middleware: true }` in react-router.config.ts.
 *
 * @example
 * ```ts
 * // app/root.tsx
 * import { createMiddleware } from "persist-session/react-router";
 * import { sessions } from "./state";
 * export const middleware = [createMiddleware(sessions)];
 * ```
 */
export function createMiddleware(sessions: Sessions): MiddlewareFunction<Response> {
  coreOf(sessions); // a TypeError now, not at the first request
  return ({ request }, next) => serveFrameworkRequest(sessions, { request, readOnlyAdvice: READ_ONLY_ADVICE }, next);
}
