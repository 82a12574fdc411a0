import { createMiddleware } from "persist-session/astro";
import { sessions } from "./state";

export const onRequest = createMiddleware(sessions);
