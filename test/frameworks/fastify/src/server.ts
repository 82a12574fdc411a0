import { clearCookieState } from "persist-session";
import { AppState, hold, holding, releaseHold, sessions } from "./state.js";

// #region readme
import Fastify from "fastify";
import { persistState, serveEvents } from "persist-session/fastify";

const app = Fastify();
app.get("/events", serveEvents(sessions));
app.register(async (scoped) => {
  scoped.register(persistState, { sessions }); // only the routes in here take the state's lock
  scoped.post("/app/inc", async () => ({ count: ++new AppState().count }));
});
// #endregion readme

app.register(async (scoped) => {
  scoped.register(persistState, { sessions });
  scoped.get("/app/count", async () => ({ count: new AppState().count }));
  scoped.post("/app/reset", async () => {
    const state = new AppState();
    await clearCookieState(state);
    return { count: state.count };
  });
  scoped.post("/app/fail", async () => {
    new AppState().count += 100;
    throw new Error("boom");
  });
  scoped.get("/app/hold", async () => {
    const state = new AppState();
    await hold();
    return { count: state.count };
  });
});
app.get("/plain", async () => "plain");
app.get("/holding", async () => holding());
app.post("/release", async () => {
  releaseHold();
  return "released";
});
app.get("/streams", async () => ({ open: sessions.openStreams }));
await app.listen({ port: Number(process.env.PORT), host: process.env.HOST });
