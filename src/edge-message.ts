/**
 * What persist-session says where it cannot run: an Edge runtime (Next.js middleware or `runtime = "edge"`, Vercel Edge Functions).
 *
 * @example
 * ```ts
 * if (process.env.NEXT_RUNTIME === "edge") throw new Error(EDGE_RUNTIME_MESSAGE);
 * ```
 */
export const EDGE_RUNTIME_MESSAGE =
  "persist-session: the Edge runtime cannot run persist-session: it keeps state with node:fs, node:crypto and AsyncLocalStorage. " +
  'Use it on the Node.js runtime: in Next.js, in a Server Action, Route Handler or Server Component without `export const runtime = "edge"` ' +
  '(the default is "nodejs"); middleware.ts runs on the Edge unless its config says `runtime: "nodejs"`.';
