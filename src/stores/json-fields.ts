/**
 * The fields of `text` read as a JSON object, or `undefined` when it is not one: for what a store
 * reads back from places others can write (a claim file, a notice on a shared channel), where
 * anything unexpected is ignored, never trusted. The caller checks each field it uses.
 */
export function jsonFields(text: string): Record<string, unknown> | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  return typeof value === "object" && value !== null ? (value as Record<string, unknown>) : undefined;
}
