import { Counter } from "../state";

// A loader that changes state: loaders only read, so this throws persist-session's error.
export function loader() {
  new Counter().count += 1;
  return null;
}

export default function RenderWrite() {
  return <p>unreachable</p>;
}
