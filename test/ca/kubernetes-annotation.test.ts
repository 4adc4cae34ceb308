import { describe, expect, it } from "vitest";
import { kubernetesAttestor } from "../../src/ca/attest/kubernetes.ts";
import type { KubernetesApi, PodObject, TokenReviewStatus } from "../../src/ca/attest/kube-api.ts";
import { isMeshwardError } from "../../src/errors.ts";

// The pod's dapr.io/app-id annotation becomes a SPIFFE path segment (dapr/dapr
// pkg/sentry/server/validator/kubernetes/kubernetes.go reads it the same way). Anyone who can
// create a pod in a namespace writes that annotation, so it is attacker input: it must never
// leave its namespace or its segment. The API is an in-memory object here (the TokenReview and
// the pod read): no Kubernetes cluster runs on this machine, and test/dapr/kubernetes.test.ts
// drives the same validator through a real `meshward ca serve` and a loopback API server.
const TD = "kube-annotation.test";

function apiWith(annotation: string | undefined, namespace = "shop"): KubernetesApi {
  const review: TokenReviewStatus = {
    authenticated: true,
    audiences: ["sentry"],
    user: { username: `system:serviceaccount:${namespace}:shop-sa`, extra: { "authentication.kubernetes.io/pod-name": ["cart-0"], "authentication.kubernetes.io/pod-uid": ["uid-1"] } },
  };
  const pod: PodObject = {
    metadata: { name: "cart-0", namespace, uid: "uid-1", annotations: annotation === undefined ? {} : { "dapr.io/app-id": annotation } },
    spec: { serviceAccountName: "shop-sa" },
  };
  return { reviewToken: async () => review, getPod: async () => pod };
}

async function attest(annotation: string | undefined, request: { appId?: string; namespace?: string } = {}) {
  const attestor = kubernetesAttestor({ api: apiWith(annotation), trustDomain: TD, audiences: ["sentry"], appId: "annotation", controlPlaneNamespace: "dapr-system" });
  try {
    return (await attestor.attest({ token: "opaque-token", requestedAppId: request.appId ?? "", requestedNamespace: request.namespace ?? "", requestedTrustDomain: "", peer: undefined, now: new Date() })).spiffeId;
  } catch (error) {
    if (isMeshwardError(error)) return error.code;
    throw error;
  }
}

describe("KUBERNETES validator: the dapr.io/app-id annotation is one SPIFFE segment in the pod's namespace", () => {
  it("uses the annotation, or the pod name without one (control)", async () => {
    expect(await attest("cart")).toBe(`spiffe://${TD}/ns/shop/cart`);
    expect(await attest(undefined)).toBe(`spiffe://${TD}/ns/shop/cart-0`);
  });

  it.each([["../admin"], ["payments/../../ns/dapr-system/dapr-sentry"], ["a/b"], [".."], ["a%2Fb"], [""], ["cart\n"], ["cаrt"]])("refuses the annotation %j", async (annotation) => {
    expect(await attest(annotation)).toBe("E_SPIFFE_ID_INVALID");
  });

  it("an annotation naming a control-plane service stays an app in the pod's namespace, and a request for another namespace is refused", async () => {
    expect(await attest("dapr-sentry")).toBe(`spiffe://${TD}/ns/shop/dapr-sentry`);
    expect(await attest("cart", { namespace: "dapr-system" })).toBe("E_IDENTITY_MISMATCH");
  });
});
