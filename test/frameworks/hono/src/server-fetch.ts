// A plain Fetch runtime, as Deno.serve, Bun.serve or a Worker are: every request a standard
// Request (its signal aborts when the client leaves), the answer whatever app.fetch returns.
import { createServer } from "node:http";
import { app } from "./app.js";

createServer(async (req, res) => {
  const aborted = new AbortController();
  res.once("close", () => aborted.abort());
  const headers = new Headers();
  for (const [name, value] of Object.entries(req.headers)) for (const item of [value ?? []].flat()) headers.append(name, item);
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  const body = req.method === "GET" || req.method === "HEAD" ? undefined : Buffer.concat(chunks);
  const request = new Request(`http://${req.headers.host}${req.url}`, { method: req.method, headers, body, signal: aborted.signal });
  const response = await app.fetch(request);
  for (const [name, value] of response.headers) if (name !== "set-cookie") res.setHeader(name, value);
  if (response.headers.getSetCookie().length > 0) res.setHeader("set-cookie", response.headers.getSetCookie());
  res.writeHead(response.status);
  if (response.body === null) return void res.end();
  // Chunk by chunk, so an events stream flows; a client that leaves cancels the body.
  const reader = response.body.getReader();
  res.once("close", () => void reader.cancel().catch(() => undefined));
  try {
    for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) res.write(chunk.value);
  } catch {
    // the client went away
  }
  res.end();
}).listen(Number(process.env.PORT), process.env.HOST);
