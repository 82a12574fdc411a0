import { createHash } from "node:crypto";

/** Longest user id accepted from the `user` resolver. */
const MAX_USER_ID_LENGTH = 512;

/**
 * The record id of `key` for `userId`: a UUIDv4-shaped digest, so it passes the
 * same strict check as cookie ids before it becomes a file name. It is not a
 * capability (no cookie carries it; only the app's resolver selects it), so it
 * does not depend on the rotating cookie secret and survives a rotation.
 */
export function userRecordId(key: string, userId: string): string {
  const bytes = createHash("sha256").update(`persist-session/v1/user\n${key}\n${userId}`).digest().subarray(0, 16);
  bytes[6] = (bytes[6]! & 0x0f) | 0x40; // version 4
  bytes[8] = (bytes[8]! & 0x3f) | 0x80; // RFC 4122 variant
  const hex = bytes.toString("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** Checks what the app's resolver returned; a wrong type is a developer error, not client input. */
export function checkUserId(value: unknown): string | undefined {
  if (value === undefined || value === null || value === "") return undefined;
  if (typeof value !== "string" || value.length > MAX_USER_ID_LENGTH) {
    throw new TypeError(
      `persist-session: option user returned ${typeof value === "string" ? `a ${value.length}-character string` : typeof value}. Return the signed-in user's id as a string of up to ${MAX_USER_ID_LENGTH} characters, or undefined.`,
    );
  }
  return value;
}
