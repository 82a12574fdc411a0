import { clearCookieState } from "persist-session";
import { AppState, hold, holding, releaseHold, sessions } from "./state.js";

// #region readme
import Koa from "koa";
import Router from "@koa/router";
import { persistState, serveEvents } from "persist-session/koa";

const router = new Router();
router.get("/events", serveEvents(sessions));
router.use("/app", persistState(sessions)); // only the /app routes take the state's lock
router.post("/app/inc", (ctx) => {
  ctx.body = { count: ++new AppState().count };
});
export const app = new Koa().use(router.routes());
// #endregion readme

router.get("/app/count", (ctx) => {
  ctx.body = { count: new AppState().count };
});
router.post("/app/reset", async (ctx) => {
  const state = new AppState();
  await clearCookieState(state);
  ctx.body = { count: state.count };
});
router.post("/app/fail", () => {
  new AppState().count += 100;
  throw new Error("boom");
});
router.get("/app/hold", async (ctx) => {
  const state = new AppState();
  await hold();
  ctx.body = { count: state.count };
});
router.get("/plain", (ctx) => {
  ctx.body = "plain";
});
router.get("/holding", (ctx) => {
  ctx.body = holding();
});
router.post("/release", (ctx) => {
  releaseHold();
  ctx.body = "released";
});
router.get("/streams", (ctx) => {
  ctx.body = { open: sessions.openStreams };
});
