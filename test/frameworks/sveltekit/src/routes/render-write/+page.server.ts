import { Counter } from "$lib/server/state";

// A load that changes state: load only reads, so this throws persist-session's error.
export function load() {
  new Counter().count += 1;
  return {};
}
