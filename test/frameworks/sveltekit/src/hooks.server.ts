import { sequence } from "@sveltejs/kit/hooks";
import { createHandle } from "persist-session/sveltekit";
import { countHeader } from "$lib/server/count-header";
import { sessions } from "$lib/server/state";

export const handle = sequence(createHandle(sessions), countHeader);
