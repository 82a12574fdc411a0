"use client";
// The Server Actions imported by a Client Component: Next runs them in another module
// graph than the page and the Route Handler (its own copy of state.ts and of persist-session).
import { increment } from "./actions";
import { reset } from "./reset";

export function Buttons() {
  return (
    <>
      <button onClick={() => increment()}>+1</button>
      <button onClick={() => reset()}>reset</button>
    </>
  );
}
