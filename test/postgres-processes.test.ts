/**
 * Two app processes over one PostgreSQL serve one browser as if they were one
 * (the suite is test/suites/across-processes.ts).
 */
import type pg from "pg";
import { describe } from "vitest";
import { connectPostgres, dropPostgresSchema, postgresAvailable, postgresUrl, uniquePostgresSchema } from "./helpers/stores.js";
import { describeAcrossProcesses } from "./suites/across-processes.js";

describe.skipIf(!postgresAvailable)("PostgresStore", () => {
  let pool: pg.Pool;
  describeAcrossProcesses({
    store: "PostgresStore",
    kind: "postgres",
    built: "dist/postgres.js",
    env: { POSTGRES_URL: postgresUrl },
    setup: async () => {
      pool = connectPostgres();
    },
    namespace: () => {
      const schema = uniquePostgresSchema();
      /** The record's row: its state and who holds its lease (no row before the processes made the table). */
      const row = async (id: string) =>
        (
          await pool.query(`SELECT version, data, lease_token FROM "${schema}"."persist_session" WHERE id = $1`, [id]).catch((error: { code?: string }) => {
            if (error.code === "42P01") return { rows: [] };
            throw error;
          })
        ).rows[0] as { version: string; data: string | null; lease_token: string | null } | undefined;
      return {
        env: { SCHEMA: schema },
        leased: async (id) => (await row(id))?.lease_token != null,
        stored: async (id) => {
          const found = await row(id);
          return found === undefined ? undefined : { version: found.version, data: found.data };
        },
        cleanup: () => dropPostgresSchema(pool, schema),
      };
    },
    teardown: async () => {
      await pool?.end();
    },
  });
});
