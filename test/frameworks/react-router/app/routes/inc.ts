import { Counter } from "../state";

// A resource route: an action that answers with the new count.
export function action() {
  const counter = new Counter();
  counter.count += 1;
  return Response.json({ count: counter.count });
}
