import { Counter } from "$lib/server/state";

// A streamed promise: the state is first read after the headers, and a GET reads it until its body ends.
export function load() {
  return { later: new Promise((resolve) => setTimeout(resolve, 100)).then(() => new Counter().count) };
}
