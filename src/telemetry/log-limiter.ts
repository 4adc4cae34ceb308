/**
 * Rate limits for log lines that a peer can cause at will (denials, malformed requests): at most
 * `perWindow` lines per key (caller and reason) in each window; the rest are counted, and the
 * count is reported on the key's next line or, when none comes, in a summary line. Metrics
 * still count every event: only the logging is limited.
 */
export interface LogLimiterOptions {
  /** Lines logged per key per window. */
  readonly perWindow?: number;
  readonly windowMs?: number;
  /** Keys tracked at once; events of further keys share one key ("other"), so memory stays bounded. */
  readonly maxKeys?: number;
  readonly now?: () => number;
}

interface KeyState {
  windowStart: number;
  logged: number;
  suppressed: number;
}

export const OTHER_KEY = "other";

export class LogLimiter {
  readonly #keys = new Map<string, KeyState>();
  readonly #perWindow: number;
  readonly #windowMs: number;
  readonly #maxKeys: number;
  readonly #now: () => number;

  constructor(options: LogLimiterOptions = {}) {
    this.#perWindow = options.perWindow ?? 5;
    this.#windowMs = options.windowMs ?? 10_000;
    this.#maxKeys = options.maxKeys ?? 1000;
    this.#now = options.now ?? Date.now;
  }

  /**
   * Whether to log this event: undefined when it is suppressed, else how many events of the same
   * key were suppressed since its last logged line (put it in the line as `suppressed`).
   */
  admit(key: string): number | undefined {
    const now = this.#now();
    let state = this.#keys.get(key);
    if (state === undefined) {
      // Past maxKeys every new key shares one slot (the one key allowed beyond the limit).
      if (this.#keys.size >= this.#maxKeys && key !== OTHER_KEY) return this.admit(OTHER_KEY);
      state = { windowStart: now, logged: 0, suppressed: 0 };
      this.#keys.set(key, state);
    }
    if (now - state.windowStart >= this.#windowMs) {
      const reported = state.suppressed;
      state.windowStart = now;
      state.logged = 1;
      state.suppressed = 0;
      return reported;
    }
    if (state.logged < this.#perWindow) {
      state.logged++;
      return 0;
    }
    state.suppressed++;
    return undefined;
  }

  /**
   * Ends the windows that are over: each key whose events were suppressed and not reported yet
   * is handed to `report` (for a summary line) and forgotten, as are quiet keys.
   */
  sweep(report: (key: string, suppressed: number) => void): void {
    const now = this.#now();
    for (const [key, state] of this.#keys) {
      if (now - state.windowStart < this.#windowMs) continue;
      if (state.suppressed > 0) report(key, state.suppressed);
      this.#keys.delete(key);
    }
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
