import { Counter } from "$lib/server/state";

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// A streamed promise that changes state once the response has gone: it is rejected with persist-session's error.
export function load() {
  const counter = new Counter();
  return { late: delay(50).then(() => (counter.count += 1)) };
}

export const actions = {
  default: () => {
    new Counter().count += 1;
  },
};
