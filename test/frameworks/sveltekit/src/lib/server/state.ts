import { FileStore, persist, persistSession } from "persist-session";

@persist("counter")
export class Counter {
  count = 0;
}

export const sessions = persistSession({ secret: process.env.SESSION_SECRET, store: new FileStore({ dir: process.env.PERSIST_DIR }) });
