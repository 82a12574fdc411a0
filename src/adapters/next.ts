import { cookies, headers } from "next/headers.js";
import { tryGetRequestState } from "../context.js";
import { EDGE_RUNTIME_MESSAGE } from "../edge-message.js";
import { kCore, type Sessions, type StateRequest } from "../session.js";
import { storeLocation } from "../shared-engine.js";
import type { SessionStore } from "../stores/store.js";
import { controlFlowStatus, cookieHeaderOf, isNextHttps, READ_ONLY_ADVICE, rendersOnly, requestOf } from "./next-request.js";

/**
 * Runs a Server Action, a Route Handler or a Server Component with this
 * browser's state: give it the function, use what it returns in its place.
 * `new State()` inside is the browser's instance.
 *
 * @example
 * ```ts
 * export const increment = withState(async () => { new Counter().count += 1; });
 * ```
 */
export type WithState = <A extends unknown[], R>(fn: (...args: A) => R) => (...args: A) => Promise<Awaited<R>>;

/**
 * The Next.js App Router adapter: `withState` for Server Actions, Route
 * Handlers and Server Components, on the Node.js runtime.
 *
 * - A **Server Action** and a **Route Handler** change state. A Server
 *   Action's return (or its `redirect()`) is its commit point: its changes are
 *   stored and its cookies set through `next/headers` before Next answers; a
 *   throw stores nothing. A Route Handler (its first argument is a `Request`)
 *   runs as `sessions.fetch` runs a handler: its `Response` is the commit point.
 * - A **Server Component** reads state: its render opens the stored state
 *   without a lock, and a change (or `clearCookieState`) throws, naming Server
 *   Actions and Route Handlers. A render never creates a record or a cookie.
 * - `Secure` follows the protocol Next gives the request: its
 *   `X-Forwarded-Proto`, which Next sets from the connection unless a proxy did.
 *
 * @example
 * ```ts
 * export const withState = nextState(persistSession({ secret: process.env.SESSION_SECRET }));
 * // app/actions.ts ("use server"):  export const increment = withState(async () => { new Counter().count += 1; });
 * // app/api/count/route.ts:         export const POST = withState(async () => Response.json({ count: ++new Counter().count }));
 * // app/page.tsx:                   export default withState(async () => <p>{new Counter().count}</p>);
 * ```
 */
export function nextState(sessions: Sessions): WithState {
  if (process.env.NEXT_RUNTIME === "edge") throw new Error(EDGE_RUNTIME_MESSAGE);
  if (typeof sessions !== "function" || typeof (sessions as Partial<Sessions>).open !== "function") {
    throw new TypeError("persist-session: nextState() expects what persistSession() returns: nextState(persistSession({ secret })).");
  }
  checkStore((sessions as unknown as Partial<Record<symbol, { readonly store?: SessionStore }>>)[kCore]?.store);
  return <A extends unknown[], R>(fn: (...args: A) => R) => {
    if (typeof fn !== "function") throw new TypeError("persist-session: withState() expects the function of a Server Action, Route Handler or Server Component.");
    const routeHandler = sessions.fetch((request: Request, ...rest: unknown[]) => fn(...([request, ...rest] as A)) as Response | Promise<Response>);
    return async (...args: A): Promise<Awaited<R>> => {
      // A wrapped function called by another (an action a page calls) runs in the caller's request.
      if (isOpen(tryGetRequestState())) return await fn(...args);
      if (args[0] instanceof Request) return (await routeHandler(args[0], ...args.slice(1))) as Awaited<R>;
      return await runInNext(sessions, () => fn(...args));
    };
  };
}

/** A Server Action or a Server Component (Next gives neither a `Request`): the state through `next/headers`. */
async function runInNext<R>(sessions: Sessions, fn: () => R): Promise<Awaited<R>> {
  const [jar, headerList] = await Promise.all([cookies(), headers()]);
  const readOnly = rendersOnly(jar);
  const https = isNextHttps(headerList);
  const request = await sessions.open({
    cookieHeader: cookieHeaderOf(headerList.get("cookie") ?? undefined, jar),
    https,
    request: requestOf(headerList, https, readOnly ? "GET" : "POST"),
    ...(readOnly ? { readOnly: READ_ONLY_ADVICE } : {}),
  });
  let result: Awaited<R>;
  try {
    result = await request.run(fn);
  } catch (error) {
    const status = controlFlowStatus(error);
    if (status === undefined) request.abort();
    else await store(request, jar, status); // redirect() after a change is how an action ends
    throw error;
  }
  await store(request, jar, 200);
  return result;
}

/** The commit point: the changes stored, then their cookies set for Next to send. */
async function store(request: StateRequest, jar: Awaited<ReturnType<typeof cookies>>, status: number): Promise<void> {
  const { cookies: toSet, stored } = request.commit({ status });
  await stored;
  for (const cookie of toSet) jar.set(cookie.name, cookie.value, cookie.attributes);
}

function isOpen(context: object | undefined): boolean {
  return (context as { readonly phase?: unknown } | undefined)?.phase === "open";
}

/**
 * A start-up check: every module graph Next builds gets its own copy of the
 * app's modules, and they share a FileStore's engine by its directory (or a
 * Redis store's records), but a MemoryStore lives in one copy only: a page
 * would not see what an action stored.
 */
function checkStore(store: SessionStore | undefined): void {
  if (store === undefined || store.shared === true || storeLocation(store) !== undefined) return;
  throw new TypeError(
    "persist-session: nextState() needs a store every module graph of the app reaches: the FileStore (the default) or a RedisStore. " +
      "Next.js loads your modules once per graph (a Server Action imported by a Client Component runs in another than the page), and a MemoryStore lives in one of them.",
  );
}
