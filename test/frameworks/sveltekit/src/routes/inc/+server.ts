import { json } from "@sveltejs/kit";
import { Counter } from "$lib/server/state";

// An endpoint's POST handler writes.
export function POST() {
  const counter = new Counter();
  counter.count += 1;
  return json({ count: counter.count });
}
