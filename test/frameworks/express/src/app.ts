import { clearCookieState } from "persist-session";
import { AppState, hold, holding, releaseHold, sessions } from "./state.js";

// #region readme
import express from "express";

export const app = express();
app.get("/events", sessions.events);
app.use("/app", sessions); // only the /app routes take the state's lock
app.post("/app/inc", (req, res) => {
  const state = new AppState();
  state.count += 1;
  res.json({ count: state.count });
});
// #endregion readme

app.get("/app/count", (req, res) => {
  res.json({ count: new AppState().count });
});
app.post("/app/reset", async (req, res) => {
  const state = new AppState();
  await clearCookieState(state);
  res.json({ count: state.count });
});
app.post("/app/fail", () => {
  new AppState().count += 100;
  throw new Error("boom");
});
app.get("/app/hold", async (req, res) => {
  const state = new AppState();
  await hold();
  res.json({ count: state.count });
});
app.get("/plain", (req, res) => {
  res.send("plain");
});
app.get("/holding", (req, res) => {
  res.send(holding());
});
app.post("/release", (req, res) => {
  releaseHold();
  res.send("released");
});
app.get("/streams", (req, res) => {
  res.json({ open: sessions.openStreams });
});
