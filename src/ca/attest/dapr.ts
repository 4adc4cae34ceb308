import { LEGACY_SENTRY_AUDIENCE, type CaConfig } from "../../config/ca.ts";
import type { ValidatorName } from "../authority.ts";
import type { Attestor } from "./attestor.ts";
import { jwksAttestor } from "./jwks.ts";
import { inClusterApiServer, kubernetesApi, type KubernetesApi } from "./kube-api.ts";
import type { KubeApiBreakerEvent } from "./kube-api-breaker.ts";
import { kubernetesAttestor } from "./kubernetes.ts";
import { parseSpiffeId } from "../../spiffe/id.ts";

/** spiffe://<td>/ns/<namespace>/… → namespace (Sentry's own); "dapr-system" when the ID has another form. */
function controlPlaneNamespaceOf(servingId: string): string {
  const segments = parseSpiffeId(servingId).segments;
  return segments[0] === "ns" && segments[1] !== undefined ? segments[1] : "dapr-system";
}

/**
 * The validators behind Dapr's JWKS and KUBERNETES: the `jwks` block serves JWKS, and KUBERNETES
 * too (with the kubernetes mapping) unless a `kubernetes` block asks for the TokenReview path.
 * Audiences default to what daprd's tokens carry: the injector projects the token for Sentry's
 * SPIFFE ID (dapr/dapr pkg/injector/patcher/sidecar_volumes.go), Sentry also accepts the legacy
 * `dapr.io/sentry` (pkg/sentry/server/validator/kubernetes), and its JWKS validator wants its own
 * SPIFFE ID (pkg/sentry/server/validator/jwks).
 */
export function daprAttestors(
  config: CaConfig,
  trustDomain: string,
  servingId: string,
  api?: KubernetesApi,
  hooks: { readonly now?: () => number; readonly onBreakerChange?: (event: KubeApiBreakerEvent) => void } = {},
): Map<ValidatorName, Attestor> {
  const attestors = new Map<ValidatorName, Attestor>();
  const kubernetesAudiences = [servingId, LEGACY_SENTRY_AUDIENCE];
  if (config.jwks !== undefined) {
    const defaultAudiences = config.jwks.mapping === "kubernetes" ? kubernetesAudiences : [servingId];
    const validator = jwksAttestor({ ...config.jwks, trustDomain, defaultAudiences });
    attestors.set("jwks", validator);
    // KUBERNETES is served from the jwks block only when its keys are a cluster's: the kubernetes
    // mapping (whose issuer is required) or OIDC discovery from the API server. Keys of another
    // identity provider, behind a claim or sentry mapping, must not also mint identities from a
    // `system:serviceaccount:<ns>:<sa>` subject, which such a provider may let a user choose.
    if (config.kubernetes === undefined && (config.jwks.mapping === "kubernetes" || config.jwks.kubernetes !== undefined)) {
      attestors.set(
        "kubernetes",
        config.jwks.mapping === "kubernetes" ? validator : jwksAttestor({ ...config.jwks, audience: undefined, mapping: "kubernetes", trustDomain, defaultAudiences: kubernetesAudiences }, "kubernetes"),
      );
    }
  }
  if (config.kubernetes !== undefined) {
    const k8s = config.kubernetes;
    attestors.set(
      "kubernetes",
      kubernetesAttestor({
        api:
          api ??
          kubernetesApi({
            apiServer: k8s.apiServer ?? inClusterApiServer(),
            tokenFile: k8s.tokenFile,
            caFile: k8s.caFile,
            ...(hooks.now === undefined ? {} : { breaker: { now: hooks.now } }),
            onBreakerChange: hooks.onBreakerChange,
          }),
        trustDomain,
        audiences: k8s.audience ?? kubernetesAudiences,
        appId: k8s.appId,
        controlPlaneNamespace: controlPlaneNamespaceOf(servingId),
      }),
    );
  }
  return attestors;
}
