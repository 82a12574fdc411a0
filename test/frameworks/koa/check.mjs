// Koa 3 and Koa 2 with @koa/router and persist-session/koa, as the README's section mounts it:
// one build, type-checked against both versions' types, run on each.
import { checkStateApps, tsc, tscAgainst, withAlias } from "../lib/state-app.mjs";

tsc("-p", "."); // against Koa 3's types (@types/koa 3)
tscAgainst("koa", "koa2"); // against Koa 2's (@types/koa 2, installed as @types/koa2)
await checkStateApps(
  [
    { label: "koa 3", args: ["dist/server.js"] },
    { label: "koa 2", ...withAlias("koa", "koa2", "dist/server.js") },
  ],
  { failureBody: /^(Internal Server Error|Service Unavailable)$/ }, // Koa's own error answers
);
