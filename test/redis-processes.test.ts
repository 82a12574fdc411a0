/**
 * Two app processes over one Redis serve one browser as if they were one
 * (the suite is test/suites/across-processes.ts).
 */
import { describe } from "vitest";
import { connectRedis, redisAvailable, redisKeys, redisUrl, uniqueRedisPrefix, type TestRedisClient } from "./helpers/stores.js";
import { describeAcrossProcesses } from "./suites/across-processes.js";

describe.skipIf(!redisAvailable)("RedisStore", () => {
  let redis: TestRedisClient;
  describeAcrossProcesses({
    store: "RedisStore",
    kind: "redis",
    built: "dist/redis.js",
    env: { REDIS_URL: redisUrl },
    setup: async () => {
      redis = await connectRedis();
    },
    namespace: () => {
      const prefix = uniqueRedisPrefix();
      return {
        env: { PREFIX: prefix },
        leased: async (id) => (await redis.exists(`${prefix}lease:${id}`)) === 1,
        stored: async (id) => (await redis.get(`${prefix}${id}`)) ?? undefined,
        cleanup: async () => {
          const keys = await redisKeys(redis, prefix);
          if (keys.length > 0) await redis.sendCommand(["DEL", ...keys]);
        },
      };
    },
    teardown: async () => {
      redis?.destroy();
    },
  });
});
