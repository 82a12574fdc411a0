import { Form, useLoaderData } from "react-router";
import { clearCookieState } from "persist-session";
import { Counter } from "../state";

export function loader() {
  return { count: new Counter().count };
}

export async function action({ request }: { request: Request }) {
  const form = await request.formData();
  const counter = new Counter();
  if (form.get("intent") === "reset") await clearCookieState(counter);
  else counter.count += 1;
  return null;
}

export default function Home() {
  const { count } = useLoaderData<typeof loader>();
  return (
    <main>
      <p id="count">count={count}</p>
      <Form method="post">
        <button name="intent" value="inc">+1</button>
        <button name="intent" value="reset">reset</button>
      </Form>
    </main>
  );
}
