import type { Rng } from "../util/clock.ts";

export interface RenewalTiming {
  /** Renew at this fraction of the certificate's life (default 0.5). */
  readonly renewFraction: number;
  /** ± this fraction of the life, uniformly (default 0.1), so a fleet does not renew in lockstep. */
  readonly jitterFraction: number;
}

export const DEFAULT_RENEWAL_TIMING: RenewalTiming = { renewFraction: 0.5, jitterFraction: 0.1 };

/**
 * When to renew, in ms from `receivedAt`. The life is measured from when we received the
 * certificate, not from NotBefore, which the CA backdates for clock skew (15 minutes by
 * default): measuring from NotBefore would make short-lived certificates renew at once.
 */
export function renewalDelay(receivedAt: number, notAfter: number, timing: RenewalTiming, rng: Rng): number {
  const life = Math.max(0, notAfter - receivedAt);
  const jitter = (rng() * 2 - 1) * timing.jitterFraction;
  return Math.max(0, Math.round(life * (timing.renewFraction + jitter)));
}

export interface Backoff {
  readonly initialMs: number;
  readonly maxMs: number;
}

export const DEFAULT_BACKOFF: Backoff = { initialMs: 1000, maxMs: 60_000 };

/** Capped exponential backoff with jitter in [50%, 100%] of the step. */
export function backoffDelay(attempt: number, backoff: Backoff, rng: Rng): number {
  const step = Math.min(backoff.maxMs, backoff.initialMs * 2 ** Math.min(attempt, 30));
  return Math.round(step * (0.5 + rng() * 0.5));
}
