import { decodeJwt } from "jose";
import { DEFAULT_JWT_CLOCK_TOLERANCE } from "../../config/ca.ts";
import { MeshwardError } from "../../errors.ts";
import { parseDuration } from "../../util/duration.ts";
import { formatWorkloadId } from "../../spiffe/id.ts";
import { refusedBeforeAnyCost, type AttestationRequest, type AttestedIdentity, type Attestor } from "./attestor.ts";
import { assertRequestMatches } from "./identity-check.ts";
import { precheckJwt, type JwtPrecheckFailure } from "./jwt-precheck.ts";
import type { KubernetesApi } from "./kube-api.ts";

const MAX_TOKEN_LENGTH = 16 * 1024;
export const APP_ID_ANNOTATION = "dapr.io/app-id";
const CONTROL_PLANE_ANNOTATION = "dapr.io/control-plane";
const CONTROL_PLANE_SERVICES = new Set(["operator", "placement", "injector", "sentry", "scheduler"]);

export interface KubernetesAttestorOptions {
  readonly api: KubernetesApi;
  readonly trustDomain: string;
  /** Audiences asked of the TokenReview (the serving SPIFFE ID and dapr.io/sentry by default). */
  readonly audiences: readonly string[];
  readonly appId: "service-account" | "annotation";
  /** Namespace of the Dapr control plane (the serving SPIFFE ID's): control-plane pods are accepted there only. */
  readonly controlPlaneNamespace: string;
  /** Milliseconds tolerated for the token's exp in the local check (default 5 min, as the JWT validator). */
  readonly clockTolerance?: number;
}

/** Why a token was refused before any TokenReview; the caller holds the token, so this tells it nothing new. */
const PRECHECK_REASONS: Record<JwtPrecheckFailure, string> = {
  malformed: "it is not a JWT (three base64url parts, JSON header and payload)",
  "exp-missing": "it carries no exp (only projected, expiring service-account tokens are accepted)",
  expired: "it has expired",
  audience: "it is not for this CA's audiences",
};

/**
 * Dapr's KUBERNETES validator through the Kubernetes API, as Dapr Sentry does it
 * (dapr/dapr pkg/sentry/server/validator/kubernetes/kubernetes.go): a TokenReview with the
 * accepted audiences proves the service account; with `appId: annotation` the pod named by the
 * token is read and its `dapr.io/app-id` annotation (else its name) is the app id, after checking
 * the pod runs under that service account (and is the same pod, by uid, when the review says which).
 * A pod annotated dapr.io/control-plane gets dapr-<service> in the control-plane namespace only.
 */
export function kubernetesAttestor(options: KubernetesAttestorOptions): Attestor {
  const tolerance = options.clockTolerance ?? parseDuration(DEFAULT_JWT_CLOCK_TOLERANCE);
  return {
    name: "kubernetes",
    async attest(request: AttestationRequest): Promise<AttestedIdentity> {
      const token = request.token.trim();
      if (token === "") throw refusedBeforeAnyCost(new MeshwardError("E_TOKEN_MISSING", "no Kubernetes service-account token was sent"));
      if (token.length > MAX_TOKEN_LENGTH) throw refusedBeforeAnyCost(new MeshwardError("E_TOKEN_INVALID", `the token is longer than ${MAX_TOKEN_LENGTH} bytes`));
      // Checked locally first, so that a caller without a credential cannot make the CA send the
      // API server a TokenReview for any string it likes (each one a call under the CA's own
      // priority level). A real projected token passes at no cost; the API server still decides.
      // This refusal gives the caller's signRateLimit share back; from the TokenReview on, every
      // refusal counts against its address (a forged token of the right shape costs a review).
      const failure = precheckJwt(token, { now: request.now, clockToleranceSeconds: tolerance / 1000, audiences: options.audiences });
      if (failure !== undefined) {
        throw refusedBeforeAnyCost(new MeshwardError("E_TOKEN_INVALID", `the service-account token was refused before any TokenReview: ${PRECHECK_REASONS[failure]}`));
      }
      const review = await options.api.reviewToken(token, options.audiences);
      if (review.error) throw new MeshwardError("E_TOKEN_INVALID", `the Kubernetes TokenReview refused the token: ${review.error.slice(0, 300)}`);
      if (review.authenticated !== true) throw new MeshwardError("E_TOKEN_INVALID", "the Kubernetes TokenReview did not authenticate the token");
      // The review names the requested audiences the token is valid for. An empty list means the
      // API server's own audience (Kubernetes TokenReview docs), i.e. a token not meant for this CA.
      if (review.audiences === undefined || !review.audiences.some((a) => options.audiences.includes(a))) {
        throw new MeshwardError("E_TOKEN_AUDIENCE", `the token is not for this CA (accepted audiences: ${options.audiences.join(", ")})`);
      }
      const parts = (review.user?.username ?? "").split(":");
      if (parts.length !== 4 || parts[0] !== "system" || parts[1] !== "serviceaccount" || !parts[2] || !parts[3]) {
        throw new MeshwardError("E_TOKEN_CLAIMS", "the token is not a service-account token (the TokenReview's user is not system:serviceaccount:<namespace>:<name>)");
      }
      const namespace = parts[2];
      const serviceAccount = parts[3];
      let appId = serviceAccount;
      if (options.appId === "annotation") appId = await appIdFromPod(options.api, token, review, namespace, serviceAccount, options.controlPlaneNamespace);
      const spiffeId = formatWorkloadId({ trustDomain: options.trustDomain, namespace, appId });
      assertRequestMatches(request, spiffeId);
      return { spiffeId, allowedDnsNames: [], method: "kubernetes" };
    },
  };
}

async function appIdFromPod(
  api: KubernetesApi,
  token: string,
  review: { user?: { extra?: Readonly<Record<string, readonly string[]>> } },
  namespace: string,
  serviceAccount: string,
  controlPlaneNamespace: string,
): Promise<string> {
  const extra = review.user?.extra ?? {};
  // Bound tokens: the API server names the pod in the review; else the (already reviewed) token's claim.
  let podName = extra["authentication.kubernetes.io/pod-name"]?.[0];
  const podUid = extra["authentication.kubernetes.io/pod-uid"]?.[0];
  if (podName === undefined) {
    try {
      const claims = decodeJwt(token) as { "kubernetes.io"?: { pod?: { name?: unknown } } };
      const name = claims["kubernetes.io"]?.pod?.name;
      if (typeof name === "string") podName = name;
    } catch {
      // not a JWT: no pod claim
    }
  }
  if (podName === undefined || podName === "") {
    throw new MeshwardError("E_TOKEN_CLAIMS", "the token is not bound to a pod (no kubernetes.io pod claim): the annotation mapping needs a projected token");
  }
  const pod = await api.getPod(namespace, podName);
  if (pod === undefined) throw new MeshwardError("E_ATTESTATION_UNTRUSTED", `pod ${namespace}/${podName} named by the token does not exist`);
  if (podUid !== undefined && pod.metadata?.uid !== podUid) {
    throw new MeshwardError("E_ATTESTATION_UNTRUSTED", `pod ${namespace}/${podName} is not the pod the token was issued to (uid differs)`);
  }
  if ((pod.spec?.serviceAccountName ?? "default") !== serviceAccount) {
    throw new MeshwardError("E_ATTESTATION_UNTRUSTED", `pod ${namespace}/${podName} does not run under service account ${serviceAccount}`);
  }
  const annotations = pod.metadata?.annotations ?? {};
  const controlPlane = annotations[CONTROL_PLANE_ANNOTATION];
  if (controlPlane !== undefined) {
    // As Sentry's expectedID: only in the control-plane namespace, only known services, no app id annotation.
    if (namespace !== controlPlaneNamespace || !CONTROL_PLANE_SERVICES.has(controlPlane) || annotations[APP_ID_ANNOTATION] !== undefined) {
      throw new MeshwardError(
        "E_ATTESTATION_UNTRUSTED",
        `pod ${namespace}/${podName} claims to be Dapr control-plane service ${JSON.stringify(controlPlane.slice(0, 64))}; only ${[...CONTROL_PLANE_SERVICES].join(", ")} in namespace ${controlPlaneNamespace}, without ${APP_ID_ANNOTATION}, may`,
      );
    }
    return `dapr-${controlPlane}`;
  }
  return annotations[APP_ID_ANNOTATION] ?? podName;
}
