"use server";
// Not in the README: the reset button of the suite.
import { clearCookieState } from "persist-session";
import { Counter, withState } from "./state";

export const reset = withState(async () => {
  await clearCookieState(new Counter());
});
