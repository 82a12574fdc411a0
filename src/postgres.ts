// The PostgreSQL store, on its own entry point so apps on other stores never load it: `import { PostgresStore } from "persist-session/postgres"`.
export {
  PostgresStore,
  createTableSql,
  type PostgresStoreOptions,
  type PostgresPoolLike,
  type PostgresPoolClientLike,
  type PostgresQueryResultLike,
  type PostgresNotificationLike,
} from "./stores/postgres.js";
export { LeaseLostError, StoreUnavailableError, type Lease } from "./stores/store.js";
