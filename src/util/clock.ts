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

/** The longest delay a Node timer takes (2^31 − 1 ms, ~24.8 days); a longer one fires at once, with a warning. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * The longest a wall-clock timer sleeps before it looks at the clock again. Node's timers count
 * monotonic time, which stops while the host is suspended (a laptop lid, a paused VM), but the
 * deadlines given here are wall-clock instants (a renewal point, a certificate's NotAfter). A
 * timer armed for the whole delay fires that much too late after a suspend: a renewal due during
 * the sleep would run only after the certificate expired, when the single-use join token that
 * could replace it is long spent. In slices, a deadline passed during a suspend is met at most
 * this long after waking. (Also below setTimeout's ~24.8-day limit, so any delay works.)
 */
export const WALL_CLOCK_SLICE_MS = 30_000;

/**
 * Timers for deadlines on `base.now()`'s clock: each fires when its delay has passed on `base`'s
 * timers or when `base.now()` reaches its deadline, whichever comes first. `base`'s timers are
 * re-armed in slices of at most WALL_CLOCK_SLICE_MS, each looking at `base.now()`, so time during
 * which they did not run (a suspended host) counts; a wall clock set back delays nothing.
 */
export function wallClockTimers(base: Clock): Clock {
  return {
    now: () => base.now(),
    setTimeout(fn, ms) {
      const handle: { id: ClockTimer | undefined } = { id: undefined };
      const delay = ms > 0 ? ms : 0; // NaN as 0, as Node does
      const due = base.now() + delay;
      let waited = 0;
      const arm = (): void => {
        const slice = Math.min(Math.max(0, Math.min(due - base.now(), delay - waited)), WALL_CLOCK_SLICE_MS);
        handle.id = base.setTimeout(() => {
          waited += slice;
          if (waited >= delay || base.now() >= due) fn();
          else arm();
        }, slice);
      };
      arm();
      return handle;
    },
    clearTimeout(timer) {
      const id = (timer as { id: ClockTimer | undefined }).id;
      if (id !== undefined) base.clearTimeout(id);
    },
  };
}

/** Node's own timers (monotonic: they do not count time the host was suspended), unref'd. */
const nodeTimers: Clock = {
  now: () => Date.now(),
  setTimeout(fn, ms) {
    const id = setTimeout(fn, ms);
    id.unref();
    return { id };
  },
  clearTimeout(timer) {
    clearTimeout(timer.id as NodeJS.Timeout);
  },
};

/**
 * Real time. A timer fires after its delay, or once Date.now() reaches its deadline if that comes
 * first (checked at least every WALL_CLOCK_SLICE_MS): time the host spent suspended counts. Timers
 * are unref'd (they never keep the process alive) and may exceed Node's ~24.8-day limit.
 */
export const systemClock: Clock = wallClockTimers(nodeTimers);

/** Random numbers in [0, 1), injected for jitter. */
export type Rng = () => number;
