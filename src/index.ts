// Declaring state
export { persist, type PersistOptions, type PersistableClass } from "./persist.js";
export type { Migrations, RepairFunction, StandardSchemaIssue, StandardSchemaResult, StandardSchemaV1, StoredFields } from "./versioning.js";
export { UnpersistableValueError, RecordTooLargeError, type PersistType, type PersistTypes } from "./serialization.js";

// Serving requests
export { persistSession, clearCookieState, commitState, inspectState, rotateStateIds, type Sessions } from "./session.js";
export type { StateInfo } from "./request-state.js";
export type { PersistSessionOptions, UserRecord } from "./session-core.js";
export type { CookieOptions } from "./set-cookie.js";

// Writing an adapter: the request lifecycle
export type { OpenRequestInit, StateRequest } from "./session.js";
export type { OpenInit } from "./session-core.js";
export type { CommitResult, RequestPhase } from "./request-state.js";
export type { CookieAttributes, SetCookie } from "./set-cookie.js";
export type { FetchHandler } from "./adapters/fetch.js";
export type { NextFunction } from "./adapters/node.js";
export type { Logger } from "./logger.js";

// Stores
export { FileStore, type FileStoreOptions } from "./stores/file.js";
export { MemoryStore } from "./stores/memory.js";
export { CorruptRecordError, StoreUnavailableError, type SessionStore, type StoredRecord, type StoreSecret } from "./stores/store.js";
