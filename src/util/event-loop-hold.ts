/**
 * Keeps Node's event loop alive until the promise settles. An identity source retries on
 * unref'd timers (they must never keep a finished process up), so while an app awaits its first
 * certificate (`await identity.ready()` at the top level, with the CA or agent still down) nothing
 * else may hold the loop, and Node would end the process with code 13 instead of waiting.
 */
export function holdEventLoopUntilSettled(promise: Promise<unknown>): void {
  const hold = setInterval(() => undefined, 1 << 30);
  const release = () => clearInterval(hold);
  promise.then(release, release);
}
