import { MeshwardError } from "../../errors.ts";
import { JOIN_TOKEN_PREFIX } from "../tokens.ts";
import type { ValidatorName } from "../authority.ts";

/**
 * Which validator answers a request. daprd never sends a meshward validator: with
 * DAPR_SENTRY_TOKEN_FILE it sends the file's content as JWKS, self-hosted always and in a cluster
 * up to dapr/dapr#8503 (2025-02), after which Kubernetes mode sends it as KUBERNETES; with no token
 * at all it sends UNKNOWN (dapr/dapr pkg/security/token/token.go GetSentryToken). So a token carrying the join-token prefix goes to the join-token validator whatever the request
 * names among those three (it still has to be a live token in the store); UNKNOWN otherwise
 * follows the CA's default validator (`--default-validator`), never silently INSECURE.
 */
export function routeValidator(requested: ValidatorName | undefined, token: string, defaultValidator: ValidatorName): ValidatorName {
  if ((requested === undefined || requested === "jwks" || requested === "kubernetes") && token.trimStart().startsWith(JOIN_TOKEN_PREFIX)) return "join-token";
  return requested ?? defaultValidator;
}

/**
 * One meshward CA serves one trust domain. Dapr's control-plane services (dapr-operator,
 * dapr-placement, dapr-scheduler, …) send `trust_domain` set to the control plane's own
 * (dapr/dapr pkg/security/sentry.go newRequestFn; Helm global.mtls.controlPlaneTrustDomain,
 * "cluster.local" by default), so they are refused with this error, which names the limit.
 */
export function trustDomainLimit(requested: string, served: string): MeshwardError {
  return new MeshwardError(
    "E_TRUST_DOMAIN_MISMATCH",
    `the request is for trust domain ${JSON.stringify(requested.slice(0, 256))} but this CA serves only ${JSON.stringify(served)}: a meshward CA serves one trust domain. ` +
      `Dapr control-plane services ask for the control plane's trust domain; keep them on Dapr Sentry, or run the control plane in ${JSON.stringify(served)} (Helm global.mtls.controlPlaneTrustDomain=${served})`,
    { details: { requested: requested.slice(0, 256), served } },
  );
}
