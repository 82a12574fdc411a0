// Hono with persist-session/hono, as the README's section mounts it, on @hono/node-server and
// on a plain Fetch runtime (app.fetch given standard Requests).
import { finish } from "../lib/check.mjs";
import { checkStateApp, startStateApp, tsc } from "../lib/state-app.mjs";

tsc("-p", "."); // the README's snippet, type-checked against Hono's own types

for (const [label, entry] of [
  ["hono on @hono/node-server", "dist/server-node.js"],
  ["hono on a Fetch runtime", "dist/server-fetch.js"],
]) {
  const app = await startStateApp([entry]);
  try {
    await checkStateApp(label, app, { failureBody: /^onError: / });
  } finally {
    await app.stop();
  }
}
finish();
