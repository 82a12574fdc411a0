// Express 5 and Express 4 with persist-session mounted as the README's Express section does
// (app.use("/app", sessions)): one build, type-checked against both versions' types, run on each.
import { finish } from "../lib/check.mjs";
import { checkStateApp, startStateApp, tsc, tscAgainst, withAlias } from "../lib/state-app.mjs";

tsc("-p", "."); // against Express 5's types (@types/express 5)
tscAgainst("express", "express4"); // against Express 4's (@types/express 4, installed as @types/express4)

const express4 = withAlias("express", "express4", "dist/server.js");
for (const [label, args, env] of [
  ["express 5", ["dist/server.js"], {}],
  ["express 4", express4.args, express4.env],
]) {
  const app = await startStateApp(args, env);
  try {
    await checkStateApp(label, app);
  } finally {
    await app.stop();
  }
}
finish();
