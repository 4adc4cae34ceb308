import type { Clock, ClockTimer } from "../../src/util/clock.ts";

/** A clock the test moves by hand; due timers run in order as time advances. */
export class FakeClock implements Clock {
  #now: number;
  #timers = new Map<number, { due: number; fn: () => void }>();
  #nextId = 1;

  constructor(start = Date.parse("2026-01-01T00:00:00Z")) {
    this.#now = start;
  }

  now(): number {
    return this.#now;
  }

  setTimeout(fn: () => void, ms: number): ClockTimer {
    const id = this.#nextId++;
    this.#timers.set(id, { due: this.#now + Math.max(0, ms), fn });
    return { id };
  }

  clearTimeout(timer: ClockTimer): void {
    this.#timers.delete(timer.id as number);
  }

  /** Moves time forward, running each due timer at its own instant and letting promises settle in between. */
  async advance(ms: number): Promise<void> {
    const target = this.#now + ms;
    for (;;) {
      const next = [...this.#timers.entries()].filter(([, t]) => t.due <= target).sort((a, b) => a[1].due - b[1].due)[0];
      if (next === undefined) break;
      this.#timers.delete(next[0]);
      this.#now = Math.max(this.#now, next[1].due);
      next[1].fn();
      await settle();
    }
    this.#now = target;
    await settle();
  }

  pendingTimers(): number {
    return this.#timers.size;
  }
}

/** Lets pending promise callbacks and I/O callbacks run. */
export async function settle(rounds = 20): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise((resolve) => setImmediate(resolve));
}

/**
 * A host that can be suspended. now() is its wall clock; its timers count monotonic time, as
 * Node's do, which stands still while the host sleeps: suspend() moves the wall clock only. A
 * real suspend cannot be had in a test; this is what one looks like to a process.
 */
export class SuspendableClock implements Clock {
  #wall: number;
  #mono = 0;
  #timers = new Map<number, { due: number; fn: () => void }>();
  #nextId = 1;

  constructor(start = Date.parse("2026-01-01T00:00:00Z")) {
    this.#wall = start;
  }

  now(): number {
    return this.#wall;
  }

  setTimeout(fn: () => void, ms: number): ClockTimer {
    const id = this.#nextId++;
    this.#timers.set(id, { due: this.#mono + Math.max(0, ms), fn });
    return { id };
  }

  clearTimeout(timer: ClockTimer): void {
    this.#timers.delete(timer.id as number);
  }

  /** The host sleeps: the wall clock moves on, no timer runs. */
  suspend(ms: number): void {
    this.#wall += ms;
  }

  /** The host is awake for `ms`: both clocks move, each due timer runs at its own instant and promises settle in between. */
  async advance(ms: number): Promise<void> {
    const target = this.#mono + ms;
    for (;;) {
      const next = [...this.#timers.entries()].filter(([, t]) => t.due <= target).sort((a, b) => a[1].due - b[1].due)[0];
      if (next === undefined) break;
      this.#timers.delete(next[0]);
      this.#wall += next[1].due - this.#mono;
      this.#mono = next[1].due;
      next[1].fn();
      await settle();
    }
    this.#wall += target - this.#mono;
    this.#mono = target;
    await settle();
  }
}
