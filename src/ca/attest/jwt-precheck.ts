/**
 * What a JWT must look like before the CA spends anything on it (a TokenReview, an OIDC discovery
 * or JWKS fetch): three base64url parts, a JSON object header naming an algorithm, a JSON object
 * payload, an `exp` not past (with the clock tolerance, compared as jose does), and, when
 * audiences are given, an `aud` naming one of them. Nothing is verified here: the signature and
 * every other claim are checked afterwards by whoever holds the keys. These are the checks that
 * cost nothing for a real token and refuse garbage without a network call.
 */
export type JwtPrecheckFailure = "malformed" | "exp-missing" | "expired" | "audience";

export interface JwtPrecheckOptions {
  readonly now: Date;
  /** Seconds tolerated between the CA's clock and the issuer's. */
  readonly clockToleranceSeconds: number;
  /** Accepted audiences; empty means no audience check here. */
  readonly audiences: readonly string[];
}

const BASE64URL = /^[A-Za-z0-9_-]+$/;

/** undefined when the token passes; otherwise which check it failed. */
export function precheckJwt(token: string, options: JwtPrecheckOptions): JwtPrecheckFailure | undefined {
  const parts = token.split(".");
  if (parts.length !== 3 || !parts.every((part) => BASE64URL.test(part))) return "malformed";
  const header = jsonObject(parts[0] as string);
  const payload = jsonObject(parts[1] as string);
  if (header === undefined || payload === undefined || typeof header.alg !== "string") return "malformed";
  const exp = payload.exp;
  if (exp === undefined) return "exp-missing";
  if (typeof exp !== "number" || !Number.isFinite(exp)) return "malformed";
  if (exp <= Math.floor(options.now.getTime() / 1000) - options.clockToleranceSeconds) return "expired";
  if (options.audiences.length > 0) {
    const aud = payload.aud;
    const list = typeof aud === "string" ? [aud] : Array.isArray(aud) ? aud : [];
    if (!list.some((a) => typeof a === "string" && options.audiences.includes(a))) return "audience";
  }
  return undefined;
}

function jsonObject(part: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(Buffer.from(part, "base64url").toString("utf8"));
    return typeof value === "object" && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}
