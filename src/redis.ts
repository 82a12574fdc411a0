// The Redis store, on its own entry point so apps on FileStore never load it: `import { RedisStore } from "persist-session/redis"`.
export { RedisStore, type RedisStoreOptions, type RedisClientLike, type RedisSubscriberLike } from "./stores/redis.js";
export { LeaseLostError, StoreUnavailableError, type Lease } from "./stores/store.js";
