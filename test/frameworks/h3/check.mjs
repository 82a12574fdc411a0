// h3 1.x with persist-session/h3, as the README's section mounts it (a router wrapped by
// persistState under /app), served the way Nitro's node preset serves h3: toNodeListener.
import { checkStateApps, tsc } from "../lib/state-app.mjs";

tsc("-p", "."); // the README's snippet, type-checked against h3's own types
await checkStateApps([{ label: "h3", args: ["dist/server.js"] }], { failureBody: /"statusCode":\s*(500|503)/ });
