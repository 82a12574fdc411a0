import { clearCookieState } from "persist-session";
import { Counter } from "$lib/server/state";

export function load() {
  // Streamed after the headers: a GET request reads state until its body ends.
  const later = new Promise((resolve) => setTimeout(resolve, 20)).then(() => new Counter().count);
  return { count: new Counter().count, later };
}

export const actions = {
  inc: () => {
    new Counter().count += 1;
  },
  reset: async () => {
    await clearCookieState(new Counter());
  },
};
