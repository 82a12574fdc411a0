// Hono with persist-session/hono, as the README's section mounts it, on @hono/node-server and
// on a plain Fetch runtime (app.fetch given standard Requests).
import { checkStateApps, tsc } from "../lib/state-app.mjs";

tsc("-p", "."); // the README's snippet, type-checked against Hono's own types
await checkStateApps(
  [
    { label: "hono on @hono/node-server", args: ["dist/server-node.js"] },
    { label: "hono on a Fetch runtime", args: ["dist/server-fetch.js"] },
  ],
  { failureBody: /^onError: / }, // failures were answered by the app's onError
);
