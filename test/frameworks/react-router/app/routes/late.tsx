import { Suspense } from "react";
import { Await, useLoaderData } from "react-router";
import { Counter } from "../state";

// Deferred data, streamed after the headers: the state is first read then, and a GET reads it until its body ends.
export function loader() {
  return { later: new Promise((resolve) => setTimeout(resolve, 100)).then(() => new Counter().count) };
}

export default function Late() {
  const { later } = useLoaderData<typeof loader>();
  return (
    <Suspense fallback={<p>loading</p>}>
      <Await resolve={later}>{(value) => <p id="later">later={value}</p>}</Await>
    </Suspense>
  );
}
