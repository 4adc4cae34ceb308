import { MeshwardError } from "../../errors.ts";

export interface FailureCooldown {
  /** Throws E_JWKS_UNAVAILABLE (naming the remembered failure) while the cooldown after one runs; a no-op otherwise. */
  check(): void;
  /** Remembers `error` as the last failure (when the cooldown is above 0) and returns it, for `throw cooldown.record(error)`. */
  record(error: unknown): unknown;
}

/**
 * After a failed fetch, no new fetch for `cooldown` ms (the same cooldown as an unknown key id):
 * while the server fails, the requests that arrive meanwhile are answered E_JWKS_UNAVAILABLE
 * from the remembered failure instead of each sending the server another request. jose's remote
 * JWKS set does not do this itself: its cooldown only spaces refetches for an unknown key id
 * after a *successful* fetch; while it holds no fresh key set (none fetched yet, or older than
 * cacheMaxAge) it fetches again for every token (jose 6 dist/webapi/jwks/remote.js:
 * `(!local || !isFreshFor(jwksTimestamp, cacheMaxAge)) && await reload()`).
 * Used by every remote key source: OIDC discovery and the JWKS from the Kubernetes API server
 * (kubernetes-oidc.ts) and a `jwksUrl` (jwks.ts).
 */
export function failureCooldown(cooldown: number): FailureCooldown {
  let failed: { at: number; message: string } | undefined;
  return {
    check() {
      if (failed === undefined) return;
      const left = failed.at + cooldown - Date.now();
      if (left <= 0) {
        failed = undefined;
        return;
      }
      throw new MeshwardError("E_JWKS_UNAVAILABLE", `${failed.message} (at ${new Date(failed.at).toISOString()}; the CA tries again in ${Math.ceil(left / 1000)}s)`);
    },
    record(error) {
      if (cooldown > 0) failed = { at: Date.now(), message: error instanceof Error ? error.message : String(error) };
      return error;
    },
  };
}
