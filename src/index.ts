// Declaring state
export { persist, type PersistOptions, type PersistableClass } from "./persist.js";
export { UnpersistableValueError, RecordTooLargeError, type PersistType, type PersistTypes } from "./serialization.js";

// Serving requests
export { persistSession, clearCookieState, inspectState, type Sessions } from "./session.js";
export type { StateInfo } from "./request-session.js";
export type { PersistSessionOptions, CookieOptions } from "./session-core.js";
export type { FetchHandler } from "./adapters/fetch.js";
export type { NextFunction } from "./adapters/node.js";
export type { Logger } from "./logger.js";

// Stores
export { FileStore, type FileStoreOptions } from "./stores/file.js";
export { MemoryStore } from "./stores/memory.js";
export { CorruptRecordError, StoreUnavailableError, type SessionStore, type StoredRecord } from "./stores/store.js";
