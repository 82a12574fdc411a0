import { app } from "./app.js";

app.listen(Number(process.env.PORT), process.env.HOST);
