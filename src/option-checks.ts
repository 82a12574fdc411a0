/** Start-up checks of numeric options, with the message every option error uses. */

/** `value`, or `fallback` when it is undefined; throws unless it is a finite number above 0. */
export function positive(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) {
    throw new TypeError(`persist-session: option ${name} is invalid: ${String(value)}. Use a positive number.`);
  }
  return value;
}

/** `value`, or `fallback` when it is undefined; throws unless it is a finite number of 0 or more. */
export function nonNegative(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isFinite(value) || value < 0) {
    throw new TypeError(`persist-session: option ${name} is invalid: ${String(value)}. Use 0 or a positive number.`);
  }
  return value;
}
