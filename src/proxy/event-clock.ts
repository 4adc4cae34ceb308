/**
 * The monotonic clock (performance.now(), in ms) as the request path reads it: once per I/O
 * event instead of once per use. A relay's handlers for one read from a client or an upstream
 * (parse, decide, forward, answer, release, start the next request) run synchronously, in
 * microseconds, and stamped the time 8–10 times per request for their idle, head and keep-alive
 * deadlines and the request-duration metric; each reading of the clock costs ~300 (Date.now) to
 * ~550 (performance.now) instructions, ~2 % of a sidecar's per-request work. Inside `held` (one
 * synchronous handler) every reading returns the time the handler started; outside one, the
 * clock itself.
 *
 * The deadlines it feeds are seconds long and checked by sweepers every ≥ 50 ms, so a reading
 * that is a handler's duration old changes no outcome. Monotonic time, unlike Date.now(), does
 * not jump when the wall clock is set: an idle deadline never fires early because of NTP.
 */
let heldAt = -1;

/** The time now, or the time the synchronous handler running now started (ms, performance.now()). */
export function eventNow(): number {
  return heldAt >= 0 ? heldAt : performance.now();
}

/**
 * Holds the clock for the synchronous handler about to run: until `releaseClock(outer)`, every
 * eventNow() returns this moment. Nested holds keep the outer one's time. Returns what
 * releaseClock must be given.
 */
export function holdClock(): number {
  const outer = heldAt;
  if (outer < 0) heldAt = performance.now();
  return outer;
}

/** Ends a hold (in a `finally`, so that a throw cannot leave the clock stopped). */
export function releaseClock(outer: number): void {
  heldAt = outer;
}
