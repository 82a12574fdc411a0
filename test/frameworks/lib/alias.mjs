// Runs an app on a second version of its framework, installed under an npm alias:
//   PACKAGE_ALIAS=koa=koa2 node --import ../lib/alias.mjs dist/server.js
// resolves the app's (and its dependencies') import of "koa" to the "koa2" package.
import { register } from "node:module";

const [name, alias] = (process.env.PACKAGE_ALIAS ?? "").split("=");
if (name && alias) {
  const hooks = `export async function resolve(specifier, context, next) {
    return next(specifier === ${JSON.stringify(name)} ? ${JSON.stringify(alias)} : specifier, context);
  }`;
  register(`data:text/javascript,${encodeURIComponent(hooks)}`);
}
