// Express 5 and Express 4 with persist-session mounted as the README's Express section does
// (app.use("/app", sessions)): one build, type-checked against both versions' types, run on each.
import { checkStateApps, tsc, tscAgainst, withAlias } from "../lib/state-app.mjs";

tsc("-p", "."); // against Express 5's types (@types/express 5)
tscAgainst("express", "express4"); // against Express 4's (@types/express 4, installed as @types/express4)
await checkStateApps([
  { label: "express 5", args: ["dist/server.js"] },
  { label: "express 4", ...withAlias("express", "express4", "dist/server.js") },
]);
