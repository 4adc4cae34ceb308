import { POOL_TIMEOUT } from "./http1/pool.ts";

interface Waiter {
  readonly start: (release: () => void) => void;
  readonly timedOut: (error: Error) => void;
  timer: NodeJS.Timeout | undefined;
}

interface Share {
  held: number;
  /** HTTP/2 streams waiting for a slot; made for the first one (an HTTP/1 exchange never waits, and makes a share per request). */
  waiting: Set<Waiter> | undefined;
}

/**
 * Each caller address's share of the inbound's connections to an HTTP/1 app: at most `max` held
 * at once for one source address (its HTTP/1 exchanges and its HTTP/2 streams bridged to
 * HTTP/1 together), so that one caller cannot take every connection the pool may open
 * (limits.maxConnections) and leave everyone else `503 E_APP_BUSY`. An HTTP/2 stream over the
 * share waits, first come first served among that address's streams, for one of them to end, at
 * most `maxWaitMs` (as a request waits for the pool): then it fails like a pool timeout
 * (POOL_TIMEOUT, answered 503 E_APP_BUSY). An HTTP/1 exchange is counted but never waits: a
 * connection carries one at a time, so the per-address connection cap already bounds them.
 */
export class AppShare {
  readonly #shares = new Map<string, Share>();

  constructor(
    readonly max: number,
    private readonly maxWaitMs: number,
  ) {}

  #share(address: string): Share {
    let share = this.#shares.get(address);
    if (share === undefined) {
      share = { held: 0, waiting: undefined };
      this.#shares.set(address, share);
    }
    return share;
  }

  /** Gives one slot back, once: the first waiter of the address takes it. */
  #releaser(address: string, share: Share): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const waiting = share.waiting;
      if (waiting !== undefined) for (const next of waiting) {
        waiting.delete(next);
        clearTimeout(next.timer);
        next.start(this.#releaser(address, share));
        return;
      }
      share.held--;
      if (share.held <= 0 && (waiting === undefined || waiting.size === 0) && this.#shares.get(address) === share) this.#shares.delete(address);
    };
  }

  /** Counts an exchange that takes a connection now, whatever the share (HTTP/1): the returned function ends it, once. */
  hold(address: string): () => void {
    const share = this.#share(address);
    share.held++;
    return this.#releaser(address, share);
  }

  /**
   * Runs `start` with the slot's release function now if the address is under its share, or
   * once one of its exchanges ends; `timedOut` instead if none ended within maxWaitMs. Returns a
   * function that withdraws a waiting request (its caller went away); it does nothing once started.
   */
  enter(address: string, start: (release: () => void) => void, timedOut: (error: Error) => void): () => void {
    const share = this.#share(address);
    if (share.held < this.max) {
      share.held++;
      start(this.#releaser(address, share));
      return () => undefined;
    }
    const waiter: Waiter = { start, timedOut, timer: undefined };
    const waiting = (share.waiting ??= new Set());
    waiting.add(waiter);
    waiter.timer = setTimeout(() => {
      if (!waiting.delete(waiter)) return;
      timedOut(Object.assign(new Error(`no connection to the app became free for this caller within ${this.maxWaitMs} ms (its ${this.max} allowed, limits.maxConnectionsPerAddress, are in use)`), { code: POOL_TIMEOUT }));
    }, this.maxWaitMs);
    waiter.timer.unref();
    return () => {
      if (!waiting.delete(waiter)) return;
      clearTimeout(waiter.timer);
      if (share.held <= 0 && waiting.size === 0 && this.#shares.get(address) === share) this.#shares.delete(address);
    };
  }

  /** Exchanges held now for `address`, and streams waiting (tests, status). */
  heldBy(address: string): { held: number; waiting: number } {
    const share = this.#shares.get(address);
    return { held: share?.held ?? 0, waiting: share?.waiting?.size ?? 0 };
  }
}
