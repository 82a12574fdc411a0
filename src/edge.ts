// What bundlers load for an Edge runtime (the `edge-light` export condition,
// which Next.js's edge compiler asks for): the package's names, each throwing
// the message that says to use the Node.js runtime, instead of a build that
// fails on node:fs or node:crypto with no word from us (issue #15).
// test/edge.test.ts checks that every runtime name of each entry is here.
import { EDGE_RUNTIME_MESSAGE } from "./edge-message.js";

/** Throws, called or constructed: nothing of persist-session runs on the Edge. */
function unavailable(): never {
  throw new Error(EDGE_RUNTIME_MESSAGE);
}

export {
  unavailable as persist,
  unavailable as persistSession,
  unavailable as clearCookieState,
  unavailable as commitState,
  unavailable as rotateStateIds,
  unavailable as inspectState,
  unavailable as FileStore,
  unavailable as MemoryStore,
  unavailable as UnpersistableValueError,
  unavailable as RecordTooLargeError,
  unavailable as CorruptRecordError,
  unavailable as StoreUnavailableError,
  unavailable as nextState,
};
