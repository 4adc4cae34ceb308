/**
 * Rate limits for log lines that a peer can cause at will (denials, malformed requests): at most
 * `perWindow` lines per key (caller and reason) in each window, and at most `maxLinesPerWindow`
 * lines per window from the whole limiter; the rest are counted, and the count is reported on
 * the key's next line or, when none comes, in a summary line. Metrics still count every event:
 * only the logging is limited.
 *
 * A key's kind is its part before the first "|" (`refused`, `policy-denied`, …; the part after
 * names the address or caller). Kinds keep apart what a flood of one would hide: past `maxKeys`
 * new keys share one key per kind (`other|<kind>`), not one for all, and the first `perWindow`
 * lines of each kind in a window are logged even when the limiter's ceiling is reached. So
 * addresses by the thousand (an IPv6 /64, a NAT pool) neither go past the ceiling nor silence a
 * later policy denial.
 */
export interface LogLimiterOptions {
  /** Lines logged per key per window. */
  readonly perWindow?: number;
  readonly windowMs?: number;
  /** Keys tracked at once; events of further keys share one key per kind (`other|<kind>`), so memory stays bounded. */
  readonly maxKeys?: number;
  /**
   * Lines logged per window by the whole limiter, all keys together (each kind's first
   * `perWindow` lines of a window are logged beyond it).
   */
  readonly maxLinesPerWindow?: number;
  /** Kinds tracked at once (their overflow keys and line counts); events of further kinds share the key "other". */
  readonly maxKinds?: number;
  readonly now?: () => number;
}

interface KeyState {
  windowStart: number;
  logged: number;
  suppressed: number;
  readonly kind: string;
}

export const OTHER_KEY = "other";

/** The kind of a key: its part before the first "|" (the whole key when it has none). */
export function keyKind(key: string): string {
  const bar = key.indexOf("|");
  return bar < 0 ? key : key.slice(0, bar);
}

export class LogLimiter {
  readonly #keys = new Map<string, KeyState>();
  readonly #perWindow: number;
  readonly #windowMs: number;
  readonly #maxKeys: number;
  readonly #maxLines: number;
  readonly #maxKinds: number;
  readonly #now: () => number;
  /** The limiter-wide window: lines logged in it, all keys and per kind. */
  #windowStart = Number.NEGATIVE_INFINITY;
  #logged = 0;
  readonly #loggedByKind = new Map<string, number>();
  /** Kinds that have an overflow key now (at most maxKinds). */
  #overflowKinds = 0;

  constructor(options: LogLimiterOptions = {}) {
    this.#perWindow = options.perWindow ?? 5;
    this.#windowMs = options.windowMs ?? 10_000;
    this.#maxKeys = options.maxKeys ?? 1000;
    this.#maxLines = options.maxLinesPerWindow ?? 100;
    this.#maxKinds = options.maxKinds ?? 64;
    this.#now = options.now ?? Date.now;
  }

  /**
   * Whether to log this event: undefined when it is suppressed, else how many events of the same
   * key were suppressed since its last logged line (put it in the line as `suppressed`).
   */
  admit(key: string): number | undefined {
    const now = this.#now();
    const state = this.#stateFor(key, now);
    if (now - this.#windowStart >= this.#windowMs) {
      this.#windowStart = now;
      this.#logged = 0;
      this.#loggedByKind.clear();
    }
    const windowOver = now - state.windowStart >= this.#windowMs;
    if (!windowOver && state.logged >= this.#perWindow) {
      state.suppressed++;
      return undefined;
    }
    // The limiter's ceiling, past each kind's own first lines of the window.
    const ofKind = this.#loggedByKind.get(state.kind) ?? 0;
    if (this.#logged >= this.#maxLines && ofKind >= this.#perWindow) {
      if (windowOver) {
        state.windowStart = now;
        state.logged = 0;
      }
      state.suppressed++;
      return undefined;
    }
    this.#logged++;
    // Bounded: kinds beyond maxKinds are counted as "other" (see #stateFor).
    this.#loggedByKind.set(state.kind, ofKind + 1);
    const reported = state.suppressed;
    state.suppressed = 0;
    if (windowOver) {
      state.windowStart = now;
      state.logged = 1;
    } else {
      state.logged++;
    }
    return reported;
  }

  /** The state of `key`, created when there is room, else its kind's overflow key's (or "other"'s). */
  #stateFor(key: string, now: number): KeyState {
    const known = this.#keys.get(key);
    if (known !== undefined) return known;
    let kind = keyKind(key);
    let tracked = key;
    if (this.#keys.size >= this.#maxKeys) {
      tracked = `${OTHER_KEY}|${kind}`;
      const overflow = this.#keys.get(tracked);
      if (overflow !== undefined) return overflow;
      if (this.#overflowKinds >= this.#maxKinds) {
        kind = OTHER_KEY;
        tracked = OTHER_KEY;
        const other = this.#keys.get(OTHER_KEY);
        if (other !== undefined) return other;
      } else {
        this.#overflowKinds++;
      }
    } else if (!this.#loggedByKind.has(kind) && this.#loggedByKind.size >= this.#maxKinds) {
      // The per-kind line counts stay bounded too.
      kind = OTHER_KEY;
    }
    const state: KeyState = { windowStart: now - this.#windowMs, logged: 0, suppressed: 0, kind };
    this.#keys.set(tracked, state);
    return state;
  }

  /**
   * Ends the windows that are over: each key whose events were suppressed and not reported yet
   * is handed to `report` (for a summary line) and forgotten, as are quiet keys. At most
   * `perWindow` keys of a kind are reported one by one; the rest of that kind in one report,
   * keyed `<kind>|… (N more keys)`, so a sweep after a flood from many addresses is no flood.
   */
  sweep(report: (key: string, suppressed: number) => void): void {
    const now = this.#now();
    const rest = new Map<string, { keys: number; suppressed: number }>();
    const reportedOfKind = new Map<string, number>();
    for (const [key, state] of this.#keys) {
      if (now - state.windowStart < this.#windowMs) continue;
      if (state.suppressed > 0) {
        const reported = reportedOfKind.get(state.kind) ?? 0;
        if (reported < this.#perWindow) {
          reportedOfKind.set(state.kind, reported + 1);
          report(key, state.suppressed);
        } else {
          const sum = rest.get(state.kind) ?? { keys: 0, suppressed: 0 };
          sum.keys++;
          sum.suppressed += state.suppressed;
          rest.set(state.kind, sum);
        }
      }
      if (key.startsWith(`${OTHER_KEY}|`)) this.#overflowKinds--;
      this.#keys.delete(key);
    }
    for (const [kind, sum] of rest) report(`${kind}|… (${sum.keys} more keys)`, sum.suppressed);
  }

  get size(): number {
    return this.#keys.size;
  }
}

interface WarnLogger {
  warn(fields: Record<string, unknown>, message: string): void;
  /** Used by LimitedWarnings.error; without it such lines are logged at warn. */
  error?(fields: Record<string, unknown>, message: string): void;
}

/**
 * A logger's warnings about events a peer can cause at will, through a LogLimiter: the admitted
 * ones carry `suppressed` when lines were left out before them, and every `sweepMs` the keys
 * whose windows ended with lines left out get a `log-suppressed` summary.
 */
export class LimitedWarnings {
  readonly #limiter: LogLimiter;
  readonly #timer: NodeJS.Timeout;

  constructor(
    private readonly logger: WarnLogger,
    options: LogLimiterOptions & { readonly sweepMs?: number } = {},
  ) {
    this.#limiter = new LogLimiter(options);
    this.#timer = setInterval(() => this.#limiter.sweep((key, suppressed) => logger.warn({ event: "log-suppressed", about: key, suppressed }, `left out ${suppressed} log lines like the last one for ${key}`)), options.sweepMs ?? 10_000);
    this.#timer.unref();
  }

  /** Logs `fields` at warn unless `key` is over its budget (a name, not a secret: it is logged). */
  warn(key: string, fields: Record<string, unknown>, message: string): void {
    this.#log("warn", key, fields, message);
  }

  /** The same at error level: a failure of this process's own that a peer's requests can repeat at will (an unreachable JWKS). */
  error(key: string, fields: Record<string, unknown>, message: string): void {
    this.#log(this.logger.error !== undefined ? "error" : "warn", key, fields, message);
  }

  #log(level: "warn" | "error", key: string, fields: Record<string, unknown>, message: string): void {
    const suppressed = this.#limiter.admit(key);
    if (suppressed === undefined) return;
    this.logger[level]!(suppressed > 0 ? { ...fields, suppressed } : fields, message);
  }

  close(): void {
    clearInterval(this.#timer);
  }
}
