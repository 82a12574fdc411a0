// The production build behind a TLS-terminating proxy: React Router's Express
// adapter, with Express trusting the proxy on loopback for X-Forwarded-Proto.
import { createRequestHandler } from "@react-router/express";
import express from "express";

const app = express();
app.set("trust proxy", "loopback");
app.use(express.static("build/client"));
app.all("*", createRequestHandler({ build: await import("./build/server/index.js") }));
app.listen(Number(process.env.PORT), process.env.HOST);
