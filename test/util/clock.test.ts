import { afterEach, expect, it, vi } from "vitest";
import { systemClock, WALL_CLOCK_SLICE_MS } from "../../src/util/clock.ts";

// A host suspend cannot be had in a test. vitest's fake timers model one: setSystemTime moves
// Date.now() and runs no timer, as a suspend moves the wall clock while Node's (monotonic)
// timers stand still. Only setTimeout/clearTimeout/Date are faked; the code under test is the real systemClock.
const fakeTimers = () => vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "Date"], now: Date.parse("2026-01-01T00:00:00Z") });
afterEach(() => vi.useRealTimers());

it("a timer whose deadline passed while the host was suspended fires within a slice of waking", () => {
  fakeTimers();
  let fired = 0;
  systemClock.setTimeout(() => fired++, 30 * 60_000); // a renewal due in 30 minutes
  vi.advanceTimersByTime(5 * 60_000);
  expect(fired).toBe(0);
  vi.setSystemTime(Date.now() + 45 * 60_000); // suspended 45 minutes: the deadline is 20 minutes past
  vi.advanceTimersByTime(WALL_CLOCK_SLICE_MS);
  expect(fired).toBe(1);
  vi.advanceTimersByTime(60 * 60_000);
  expect(fired).toBe(1);
});

it("fires at its deadline without a suspend, not before, and not after it was cleared", () => {
  fakeTimers();
  let fired = 0;
  systemClock.setTimeout(() => fired++, 95_000);
  const cleared = systemClock.setTimeout(() => fired += 100, 95_000);
  vi.advanceTimersByTime(40_000);
  systemClock.clearTimeout(cleared);
  vi.advanceTimersByTime(54_999);
  expect(fired).toBe(0);
  vi.advanceTimersByTime(1);
  expect(fired).toBe(1);
});

it("a wall clock set back does not delay a timer past its delay", () => {
  fakeTimers();
  let fired = 0;
  systemClock.setTimeout(() => fired++, 90_000);
  vi.setSystemTime(Date.now() - 10 * 60_000);
  vi.advanceTimersByTime(90_000);
  expect(fired).toBe(1);
});

it("a delay beyond setTimeout's ~24.8-day limit waits, rather than firing at once", () => {
  fakeTimers();
  let fired = 0;
  const days = 26;
  systemClock.setTimeout(() => fired++, days * 86_400_000);
  vi.advanceTimersByTime((days - 1) * 86_400_000);
  expect(fired).toBe(0);
  vi.advanceTimersByTime(86_400_000);
  expect(fired).toBe(1);
});
