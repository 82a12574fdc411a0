// Fastify 5 with the persist-session/fastify plugin registered in encapsulated contexts, as
// the README's section does; the events route is an async handler outside them.
import { checkStateApps, tsc } from "../lib/state-app.mjs";

tsc("-p", "."); // the README's snippet, type-checked against Fastify's own types
await checkStateApps([{ label: "fastify", args: ["dist/server.js"] }], { failureBody: /"statusCode":\s*(500|503)/ });
