import { Suspense } from "react";
import { Await, Form, useLoaderData } from "react-router";
import { clearCookieState } from "persist-session";
import { Counter } from "../state";

export function loader() {
  // Streamed after the headers: a GET request reads state until its body ends.
  const later = new Promise((resolve) => setTimeout(resolve, 20)).then(() => new Counter().count);
  return { count: new Counter().count, later };
}

export async function action({ request }: { request: Request }) {
  const form = await request.formData();
  const counter = new Counter();
  if (form.get("intent") === "reset") await clearCookieState(counter);
  else counter.count += 1;
  return null;
}

export default function Home() {
  const { count, later } = useLoaderData<typeof loader>();
  return (
    <main>
      <p id="count">count={count}</p>
      <Suspense fallback={<p>loading</p>}>
        <Await resolve={later}>{(value) => <p id="later">later={value}</p>}</Await>
      </Suspense>
      <Form method="post">
        <button name="intent" value="inc">+1</button>
        <button name="intent" value="reset">reset</button>
      </Form>
    </main>
  );
}
