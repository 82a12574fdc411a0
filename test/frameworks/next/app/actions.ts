"use server";
import { Counter, withState } from "./state";

export const increment = withState(async () => { new Counter().count += 1; });
