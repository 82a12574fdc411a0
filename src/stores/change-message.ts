import type { RecordChange } from "../change-feed.js";
import { isUuidV4 } from "../cookie-signing.js";

/**
 * The text a shared store sends other processes about a stored write (Redis
 * PUBLISH, PostgreSQL NOTIFY), and its strict reading: anything on the channel
 * that is not such a notice is ignored, never trusted.
 */
export function formatChange(change: RecordChange): string {
  const { id, key, version } = change;
  return JSON.stringify({ id, key, version });
}

/** A change notice as {@link formatChange} wrote it, or `undefined` for anything else. */
export function parseChange(message: string): RecordChange | undefined {
  let value: unknown;
  try {
    value = JSON.parse(message);
  } catch {
    return undefined;
  }
  if (typeof value !== "object" || value === null) return undefined;
  const { id, key, version } = value as Record<string, unknown>;
  if (typeof id !== "string" || !isUuidV4(id) || typeof key !== "string" || !Number.isSafeInteger(version) || (version as number) < 0) return undefined;
  return { id, key, version: version as number };
}
