import { clearCookieState } from "persist-session";
import { AppState, hold, holding, releaseHold, sessions } from "./state.js";

// #region readme
import { createApp, createRouter, eventHandler } from "h3";
import { persistState, serveEvents } from "persist-session/h3";

const router = createRouter().post("/inc", eventHandler(() => ({ count: ++new AppState().count })));
export const app = createApp()
  .use("/events", serveEvents(sessions))
  .use("/app", persistState(sessions, router.handler)); // only /app takes the state's lock
// #endregion readme

router
  .get("/count", eventHandler(() => ({ count: new AppState().count })))
  .post(
    "/reset",
    eventHandler(async () => {
      const state = new AppState();
      await clearCookieState(state);
      return { count: state.count };
    }),
  )
  .post(
    "/fail",
    eventHandler(() => {
      new AppState().count += 100;
      throw new Error("boom");
    }),
  )
  .get(
    "/hold",
    eventHandler(async () => {
      const state = new AppState();
      await hold();
      return { count: state.count };
    }),
  );
const plain = createRouter()
  .get("/plain", eventHandler(() => "plain"))
  .get("/holding", eventHandler(() => holding()))
  .post("/release", eventHandler(() => (releaseHold(), "released")))
  .get("/streams", eventHandler(() => ({ open: sessions.openStreams })));
app.use(plain);
