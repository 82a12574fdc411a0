/**
 * `run()`'s result, or a rejection with `onTimeout()`'s error once `ms` have passed
 * first: a request must fail (503) rather than wait while a backend is unreachable.
 * Failures of `run` pass through `mapError`. What settles after the deadline is
 * dropped (handled, so a late rejection is never unhandled); `onTimeout` is where
 * the caller gives back what that late work holds (a pool's connection).
 */
export function withDeadline<T>(run: () => Promise<T>, ms: number, onTimeout: () => Error, mapError: (error: unknown) => Error): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(onTimeout()), ms);
    let result: Promise<T>;
    try {
      result = run();
    } catch (error) {
      result = Promise.reject(error);
    }
    result.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(mapError(error));
      },
    );
  });
}
