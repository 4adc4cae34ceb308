/**
 * Time, injected wherever rotation or expiry logic depends on it (DESIGN.md), so tests
 * drive time instead of sleeping.
 */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): ClockTimer;
  clearTimeout(timer: ClockTimer): void;
}

/** Opaque handle from Clock.setTimeout. */
export interface ClockTimer {
  readonly id: unknown;
}

const MAX_TIMER_MS = 2 ** 31 - 1;

/** Real time. Timers are unref'd (they never keep the process alive) and may exceed Node's ~24.8-day limit. */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout(fn, ms) {
    const handle: { id: NodeJS.Timeout | undefined } = { id: undefined };
    const due = Date.now() + Math.max(0, ms);
    const arm = () => {
      const left = due - Date.now();
      handle.id = setTimeout(left > MAX_TIMER_MS ? arm : fn, Math.min(Math.max(0, left), MAX_TIMER_MS));
      handle.id.unref();
    };
    arm();
    return handle;
  },
  clearTimeout(timer) {
    clearTimeout((timer as { id: NodeJS.Timeout | undefined }).id);
  },
};

/** Random numbers in [0, 1), injected for jitter. */
export type Rng = () => number;
