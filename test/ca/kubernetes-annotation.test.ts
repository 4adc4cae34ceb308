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

/** A JWT of the projected token's shape (unsigned: the in-memory API, like the real one, decides). */
function jwtShaped(payload: Record<string, unknown>, header: Record<string, unknown> = { alg: "RS256", kid: "k1" }): string {
  const part = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");
  return `${part(header)}.${part(payload)}.c2lnbmF0dXJl`;
}
const TOKEN = jwtShaped({ aud: ["sentry"], exp: Math.floor(Date.now() / 1000) + 3600, sub: "system:serviceaccount:shop:shop-sa" });

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
    return (await attestor.attest({ token: TOKEN, requestedAppId: request.appId ?? "", requestedNamespace: request.namespace ?? "", requestedTrustDomain: "", peer: undefined, now: new Date() })).spiffeId;
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

// A caller without a credential must not be able to make the CA send the API server a TokenReview
// for any string: the token is checked locally first (JWT shape, exp, audience) and refused with
// the code an API-server refusal gets. The in-memory API counts the reviews it is asked for.
describe("KUBERNETES validator: a token that could never pass causes no TokenReview", () => {
  const now = Math.floor(Date.now() / 1000);
  const part = (value: unknown) => Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");
  const garbage: [string, string][] = [
    ["one word", "x"],
    ["three words", "a.b.c"],
    ["two parts", `${part({ alg: "RS256" })}.${part({ aud: "sentry", exp: now + 3600 })}`],
    ["a header that is not JSON", `${part("not json")}.${part({ aud: "sentry", exp: now + 3600 })}.c2ln`],
    ["a payload that is a JSON array", `${part({ alg: "RS256" })}.${part([1])}.c2ln`],
    ["a header without alg", jwtShaped({ aud: "sentry", exp: now + 3600 }, { kid: "k1" })],
    ["not base64url", `${part({ alg: "RS256" })}.${part({ aud: "sentry", exp: now + 3600 })}.c2ln+/==`],
    ["no exp (a legacy secret token)", jwtShaped({ aud: ["sentry"], sub: "system:serviceaccount:shop:shop-sa" })],
    ["an exp that is a string", jwtShaped({ aud: ["sentry"], exp: String(now + 3600) })],
    ["expired beyond the 5 min tolerance", jwtShaped({ aud: ["sentry"], exp: now - 301 })],
    ["another audience", jwtShaped({ aud: ["https://kubernetes.default.svc"], exp: now + 3600 })],
    ["no audience", jwtShaped({ exp: now + 3600 })],
  ];

  function recordingApi(): { api: KubernetesApi; reviews: () => number } {
    let reviews = 0;
    const api = apiWith("cart");
    return {
      api: { ...api, reviewToken: async (token, audiences) => ((reviews += 1), api.reviewToken(token, audiences)) },
      reviews: () => reviews,
    };
  }

  it.each(garbage)("refuses %s with E_TOKEN_INVALID and sends no TokenReview", async (_name, token) => {
    const { api, reviews } = recordingApi();
    const attestor = kubernetesAttestor({ api, trustDomain: TD, audiences: ["sentry"], appId: "annotation", controlPlaneNamespace: "dapr-system" });
    const error = await attestor.attest({ token, requestedAppId: "", requestedNamespace: "", requestedTrustDomain: "", peer: undefined, now: new Date() }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isMeshwardError(error, "E_TOKEN_INVALID")).toBe(true);
    expect((error as Error).message).toMatch(/refused before any TokenReview/);
    expect(reviews()).toBe(0);
  });

  it("a token of the right shape goes to the TokenReview (control): one audience of several, exp within the tolerance", async () => {
    const { api, reviews } = recordingApi();
    const attestor = kubernetesAttestor({ api, trustDomain: TD, audiences: ["spiffe://x/ns/dapr-system/dapr-sentry", "sentry"], appId: "annotation", controlPlaneNamespace: "dapr-system" });
    for (const token of [jwtShaped({ aud: ["other", "sentry"], exp: now + 3600 }), jwtShaped({ aud: "sentry", exp: now - 60 })]) {
      const identity = await attestor.attest({ token, requestedAppId: "", requestedNamespace: "", requestedTrustDomain: "", peer: undefined, now: new Date() });
      expect(identity.spiffeId).toBe(`spiffe://${TD}/ns/shop/cart`);
    }
    expect(reviews()).toBe(2);
  });
});
