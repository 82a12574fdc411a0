import type { APIRoute } from "astro";
import { Counter } from "../../state";

// An endpoint's POST handler writes.
export const POST: APIRoute = () => {
  const counter = new Counter();
  counter.count += 1;
  return Response.json({ count: counter.count });
};
