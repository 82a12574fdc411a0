import type { Handle } from "@sveltejs/kit";
import { Counter } from "./state";

// Another handle after persist-session's in sequence(): it runs inside the request, so it reads state too.
// (Not on /late, whose streamed promise must be the first to read it.)
export const countHeader: Handle = async ({ event, resolve }) => {
  if (event.url.pathname === "/late") return resolve(event);
  const count = new Counter().count;
  const response = await resolve(event);
  response.headers.set("x-count", String(count));
  return response;
};
