// Koa 3 and Koa 2 with @koa/router and persist-session/koa, as the README's section mounts it:
// one build, type-checked against both versions' types, run on each.
import { finish } from "../lib/check.mjs";
import { checkStateApp, startStateApp, tsc, tscAgainst, withAlias } from "../lib/state-app.mjs";

tsc("-p", "."); // against Koa 3's types (@types/koa 3)
tscAgainst("koa", "koa2"); // against Koa 2's (@types/koa 2, installed as @types/koa2)

const koa2 = withAlias("koa", "koa2", "dist/server.js");
for (const [label, args, env] of [
  ["koa 3", ["dist/server.js"], {}],
  ["koa 2", koa2.args, koa2.env],
]) {
  const app = await startStateApp(args, env);
  try {
    await checkStateApp(label, app, { failureBody: /^(Internal Server Error|Service Unavailable)$/ });
  } finally {
    await app.stop();
  }
}
finish();
