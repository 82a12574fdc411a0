import { clearCookieState } from "persist-session";
import { HTTPException } from "hono/http-exception";
import { AppState, hold, holding, releaseHold, sessions } from "./state.js";

// #region readme
import { Hono } from "hono";
import { persistState, serveEvents } from "persist-session/hono";

export const app = new Hono();
app.use("/app/*", persistState(sessions)); // only the routes that use state take its lock
app.get("/events", serveEvents(sessions));
app.post("/app/inc", (c) => {
  const state = new AppState();
  state.count += 1;
  return c.json({ count: state.count });
});
// #endregion readme

app.get("/app/count", (c) => c.json({ count: new AppState().count }));
app.post("/app/reset", async (c) => {
  const state = new AppState();
  await clearCookieState(state);
  return c.json({ count: state.count });
});
app.post("/app/fail", () => {
  new AppState().count += 100;
  throw new Error("boom");
});
app.get("/app/hold", async (c) => {
  const state = new AppState();
  await hold();
  return c.json({ count: state.count });
});
app.get("/plain", (c) => c.text("plain"));
app.get("/holding", (c) => c.text(holding()));
app.post("/release", (c) => {
  releaseHold();
  return c.text("released");
});
app.get("/streams", (c) => c.json({ open: sessions.openStreams }));
// Failures reach Hono's own error handling: the adapter throws, it never answers itself.
app.onError((error, c) => c.text(`onError: ${error.message}`, error instanceof HTTPException ? error.status : 500));
