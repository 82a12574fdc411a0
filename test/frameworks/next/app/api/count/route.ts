import { Counter, withState } from "../../state";

export const POST = withState(async () => Response.json({ count: ++new Counter().count }));
