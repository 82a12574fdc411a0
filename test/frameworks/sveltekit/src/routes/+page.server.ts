import { clearCookieState } from "persist-session";
import { Counter } from "$lib/server/state";

export function load() {
  return { count: new Counter().count };
}

export const actions = {
  inc: () => {
    new Counter().count += 1;
  },
  reset: async () => {
    await clearCookieState(new Counter());
  },
};
