// h3 1.x with persist-session/h3, as the README's section mounts it (a router wrapped by
// persistState under /app), served the way Nitro's node preset serves h3: toNodeListener.
import { finish } from "../lib/check.mjs";
import { checkStateApp, startStateApp, tsc } from "../lib/state-app.mjs";

tsc("-p", "."); // the README's snippet, type-checked against h3's own types

const app = await startStateApp(["dist/server.js"]);
try {
  await checkStateApp("h3", app, { failureBody: /"statusCode":\s*(500|503)/ });
} finally {
  await app.stop();
}
finish();
