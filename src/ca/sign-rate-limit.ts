/**
 * How many certificates one source address may be issued: a token bucket per address (`burst`
 * certificates at once, refilled at `perSecond`). Every issuance is a row in the store, and one
 * valid token or SVID would otherwise mint them without bound. Taken before attestation, so a
 * refused request spends no join token. Given back when the request ends without a certificate
 * and cost the CA nothing (refused before attestation or by the validator's local checks, such as
 * a malformed token) or failed through the CA's own fault: a caller without a credential sharing
 * the address (pods behind their node's SNAT) must not use up the allowance of the workloads
 * beside it with garbage, and a workload retrying after a CA failure is not penalised. A refusal
 * that cost a verification (a TokenReview, a JWKS fetch, a signature check, a store read) keeps
 * it: forged tokens of the right shape are counted like issuances
 * (CertificateAuthority's countsAgainstSignRateLimit).
 */
export interface SignRateLimitOptions {
  readonly burst: number;
  readonly perSecond: number;
  /** Addresses tracked at once; past it the least recently seen one is forgotten (a full bucket). */
  readonly maxAddresses?: number;
}

interface Bucket {
  tokens: number;
  at: number;
}

const DEFAULT_MAX_ADDRESSES = 65_536;

export class SignRateLimiter {
  readonly #buckets = new Map<string, Bucket>();
  readonly #maxAddresses: number;

  constructor(private readonly options: SignRateLimitOptions) {
    this.#maxAddresses = options.maxAddresses ?? DEFAULT_MAX_ADDRESSES;
  }

  /** Takes one issuance for `address`: 0 when allowed, else the milliseconds until one is. */
  take(address: string, nowMs: number): number {
    const { burst, perSecond } = this.options;
    const bucket = this.#buckets.get(address);
    let tokens = burst;
    if (bucket !== undefined) {
      tokens = Math.min(burst, bucket.tokens + (Math.max(0, nowMs - bucket.at) * perSecond) / 1000);
      this.#buckets.delete(address); // re-inserted below: the map's order is least recently seen first
    }
    if (tokens < 1) {
      this.#buckets.set(address, { tokens, at: nowMs });
      return Math.ceil(((1 - tokens) * 1000) / perSecond);
    }
    if (this.#buckets.size >= this.#maxAddresses) this.#buckets.delete(this.#buckets.keys().next().value!);
    this.#buckets.set(address, { tokens: tokens - 1, at: nowMs });
    return 0;
  }

  /** Gives back one taken by `take` for a request that ended without a certificate and cost nothing (see countsAgainstSignRateLimit). */
  giveBack(address: string): void {
    const bucket = this.#buckets.get(address);
    if (bucket !== undefined) bucket.tokens = Math.min(this.options.burst, bucket.tokens + 1);
  }

  get addresses(): number {
    return this.#buckets.size;
  }
}
