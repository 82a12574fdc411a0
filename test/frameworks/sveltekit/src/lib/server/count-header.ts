import type { Handle } from "@sveltejs/kit";
import { Counter } from "./state";

// Another handle after persist-session's in sequence(): it runs inside the request, so it reads state too.
export const countHeader: Handle = async ({ event, resolve }) => {
  const count = new Counter().count;
  const response = await resolve(event);
  response.headers.set("x-count", String(count));
  return response;
};
