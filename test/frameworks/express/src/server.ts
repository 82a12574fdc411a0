import { app } from "./app.js";

app.listen(Number(process.env.PORT), process.env.HOST ?? "127.0.0.1");
