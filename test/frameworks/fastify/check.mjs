// Fastify 5 with the persist-session/fastify plugin registered in encapsulated contexts, as
// the README's section does; the events route is an async handler outside them.
import { finish } from "../lib/check.mjs";
import { checkStateApp, startStateApp, tsc } from "../lib/state-app.mjs";

tsc("-p", "."); // the README's snippet, type-checked against Fastify's own types

const app = await startStateApp(["dist/server.js"]);
try {
  await checkStateApp("fastify", app, { failureBody: /"statusCode":\s*(500|503)/ });
} finally {
  await app.stop();
}
finish();
