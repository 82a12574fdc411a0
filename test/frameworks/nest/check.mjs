// NestJS 11 on its Express platform, built as CommonJS (Nest's default): the app loads
// persist-session with require(), which works from Node 20.19 and 22.12 on (package.json "engines").
import { readFileSync } from "node:fs";
import { assert, check } from "../lib/check.mjs";
import { checkStateApps, tsc } from "../lib/state-app.mjs";

tsc("-p", "."); // the README's snippet, type-checked against Nest's and Express's types

await check("nest: the build is CommonJS and require()s persist-session", () => {
  const built = readFileSync("dist/state.js", "utf8");
  assert(/require\("persist-session"\)/.test(built), "dist/state.js does not require persist-session");
  assert(!/^\s*import\s/m.test(built), "dist/state.js is not CommonJS");
});

await checkStateApps([{ label: "nest", args: ["dist/main.js"] }]);
