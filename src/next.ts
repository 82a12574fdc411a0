// persist-session/next: the Next.js App Router adapter (Node.js runtime).
export { nextState, type WithState } from "./adapters/next.js";
