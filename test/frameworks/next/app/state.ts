import { FileStore, persist, persistSession } from "persist-session";
import { nextState } from "persist-session/next";

@persist("counter")
export class Counter { count = 0; }

const sessions = persistSession({ secret: process.env.SESSION_SECRET, store: new FileStore({ dir: process.env.PERSIST_DIR }) });
export const withState = nextState(sessions);
