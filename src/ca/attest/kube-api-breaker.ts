import { MeshwardError } from "../../errors.ts";

/** Failed calls in a row (each one sent to the API server) after which the CA stops calling it. */
export const KUBE_API_FAILURES_TO_OPEN = 5;
/** First pause after the API server failed; doubled after each failed probe, up to KUBE_API_MAX_COOLDOWN_MS. */
export const KUBE_API_COOLDOWN_MS = 1_000;
/** Longest pause between probes: twice the client's default timeout, so recovery is seen within seconds. */
export const KUBE_API_MAX_COOLDOWN_MS = 10_000;

export interface KubeApiBreakerOptions {
  /** For messages: https://host:port of the API server. */
  readonly apiServer: string;
  readonly failuresToOpen?: number;
  readonly cooldownMs?: number;
  readonly maxCooldownMs?: number;
  /** Milliseconds since the epoch; Date.now by default (tests drive it). */
  readonly now?: () => number;
  /** Called once per state change: opened (calls stop) and closed (a call succeeded again). */
  readonly onChange?: (event: KubeApiBreakerEvent) => void;
}

export type KubeApiBreakerEvent =
  | { readonly state: "open"; readonly apiServer: string; readonly failures: number; readonly lastError: string; readonly retryAt: Date }
  | { readonly state: "closed"; readonly apiServer: string; readonly openForMs: number; readonly refused: number };

export interface KubeApiBreaker {
  /**
   * Runs `call` unless the breaker is open; a failure counts unless `uncounted(error)`: the call
   * never reached the API server, or its answer was about that one call (kube-api.ts answeredAboutCall).
   */
  run<T>(call: () => Promise<T>, uncounted: (error: unknown) => boolean): Promise<T>;
}

/**
 * A circuit breaker for the calls to the Kubernetes API server (TokenReviews and pod reads).
 * Closed: every call is sent; after `failuresToOpen` failed calls in a row (5xx, 429, 401/403 on a
 * TokenReview, a timeout, a refused connection: any failure of a call that was sent, except an
 * answer about that one call, such as a 400 for its token) it opens.
 * Open: no call is sent for the cooldown; each attestation is refused E_KUBERNETES_UNAVAILABLE at
 * once, naming the last failure and when the CA tries again. Then one call goes through (the
 * probe; the others meanwhile are still refused at once): its success closes the breaker, its
 * failure opens it again with the cooldown doubled (1 s, 2 s, … up to 10 s). So while the API
 * server fails, the CA sends it about one call per cooldown however many requests arrive, forged
 * tokens of the right shape included (before: as many as the 8 connections could carry), and
 * legitimate workloads get a fast refusal to retry with their backoff instead of waiting on a
 * timeout. A call that never reached the API server (no free connection within the timeout, the
 * CA's own token file unreadable) counts neither way, nor does an answer about that one call (a
 * caller choosing tokens the API server answers 4xx cannot open the breaker for everyone).
 */
export function kubeApiBreaker(options: KubeApiBreakerOptions): KubeApiBreaker {
  const failuresToOpen = options.failuresToOpen ?? KUBE_API_FAILURES_TO_OPEN;
  const baseCooldown = options.cooldownMs ?? KUBE_API_COOLDOWN_MS;
  const maxCooldown = Math.max(baseCooldown, options.maxCooldownMs ?? KUBE_API_MAX_COOLDOWN_MS);
  const now = options.now ?? Date.now;
  let failures = 0;
  let last: { at: number; message: string } | undefined;
  /** Set while open (and half-open: past openUntil, a probe may go). */
  let open: { since: number; until: number; cooldown: number; probing: boolean; refused: number } | undefined;

  const refuse = (state: NonNullable<typeof open>, at: number): never => {
    state.refused += 1;
    const lastText = last === undefined ? "" : `; the last (at ${new Date(last.at).toISOString()}): ${last.message}`;
    const when = state.probing
      ? "is trying one call now"
      : `sends it no call until ${new Date(state.until).toISOString()} (in ${Math.max(1, Math.ceil((state.until - at) / 1000))} s), then tries one`;
    throw new MeshwardError(
      "E_KUBERNETES_UNAVAILABLE",
      `the Kubernetes API at ${options.apiServer} is failing (${failures} calls in a row failed${lastText}); the CA ${when}: retry later`,
    );
  };

  const succeeded = () => {
    failures = 0;
    if (open === undefined) return;
    const closed = open;
    open = undefined;
    options.onChange?.({ state: "closed", apiServer: options.apiServer, openForMs: now() - closed.since, refused: closed.refused });
  };

  const failed = (error: unknown, probe: boolean) => {
    const at = now();
    failures += 1;
    last = { at, message: error instanceof Error ? error.message : String(error) };
    if (probe && open !== undefined) {
      // Half-open → open again, for twice as long (not logged: the gauge and each refusal say it).
      open.cooldown = Math.min(maxCooldown, open.cooldown * 2);
      open.until = at + open.cooldown;
      open.probing = false;
      return;
    }
    if (open === undefined && failures >= failuresToOpen) {
      open = { since: at, until: at + baseCooldown, cooldown: baseCooldown, probing: false, refused: 0 };
      options.onChange?.({ state: "open", apiServer: options.apiServer, failures, lastError: last.message, retryAt: new Date(open.until) });
    }
    // Failures of calls sent before the breaker opened change nothing more while it is open.
  };

  return {
    async run(call, uncounted) {
      let probe = false;
      if (open !== undefined) {
        const at = now();
        if (at < open.until || open.probing) refuse(open, at);
        open.probing = true;
        probe = true;
      }
      let result;
      try {
        result = await call();
      } catch (error) {
        if (!uncounted(error)) failed(error, probe);
        else if (probe && open !== undefined) open.probing = false; // the next call probes
        throw error;
      }
      succeeded();
      return result;
    },
  };
}
