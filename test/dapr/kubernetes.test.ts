import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { SignJWT, generateKeyPair } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli, startCli, type LongRunning } from "../helpers/cli.ts";
import { buildGoCheck, daprCsr, daprdToken, SentryCallError, signCertificate } from "./daprd-client.ts";

// Dapr's KUBERNETES validator through the Kubernetes API, as Sentry does it
// (dapr/dapr pkg/sentry/server/validator/kubernetes/kubernetes.go): a TokenReview with the audiences
// Sentry accepts (its SPIFFE ID, which dapr/dapr pkg/injector/patcher/sidecar_volumes.go projects the
// token for, and the legacy dapr.io/sentry), then a read of the pod the token is bound to, whose
// dapr.io/app-id annotation is the app id. No Kubernetes cluster runs on this machine, so a loopback
// HTTPS server answers with API objects in the API's own shape (fixtures/kube/README.md) and records
// what the CA asked; the CA is a real `meshward ca serve` process and the client sends what daprd sends.
const SENTRY_ID = "spiffe://public/ns/dapr-system/dapr-sentry";
const FIXTURES = fileURLToPath(new URL("./fixtures/kube/", import.meta.url));
const fixture = (name: string) => JSON.parse(readFileSync(join(FIXTURES, name), "utf8"));

interface Recorded {
  method: string;
  path: string;
  authorization: string | undefined;
  body: { spec?: { token?: string; audiences?: string[] } } | undefined;
}

describe("KUBERNETES validator: TokenReview + pod annotation (kubernetes.appId: annotation)", () => {
  let work: string;
  let goCheck: string;
  let api: Server;
  let ca: (LongRunning & { match: RegExpMatchArray }) | undefined;
  let address: string;
  let anchors: string;
  const recorded: Recorded[] = [];
  const tokens = new Map<string, { audiences: string[]; review: object }>();
  const pods = new Map<string, object>();
  let forbidden = false;
  /** Answer authenticated reviews without status.audiences (the API server's own audience). */
  let omitAudiences = false;
  const caServiceAccountToken = "ca-sa-token-for-tests";

  const podOf = (changes: (pod: Record<string, any>) => void) => {
    const pod = fixture("pod-orders.json");
    changes(pod);
    return pod;
  };

  const projectedToken = async (options: { audience: string; podName: string; podUid: string; serviceAccount?: string; namespace?: string }) => {
    const ns = options.namespace ?? "default";
    const { privateKey } = await generateKeyPair("ES256");
    const now = Math.floor(Date.now() / 1000);
    const token = await new SignJWT({
      "kubernetes.io": { namespace: ns, pod: { name: options.podName, uid: options.podUid }, serviceaccount: { name: options.serviceAccount ?? "orders-sa", uid: "4e1f5c43-6ab8-4b9f-9d3a-1f0e2a7d9c11" } },
    })
      .setProtectedHeader({ alg: "ES256", kid: "test" })
      .setIssuer("https://kubernetes.default.svc.cluster.local")
      .setSubject(`system:serviceaccount:${ns}:${options.serviceAccount ?? "orders-sa"}`)
      .setAudience([options.audience])
      .setIssuedAt(now)
      .setExpirationTime(now + 7200)
      .sign(privateKey);
    const review = fixture("tokenreview-orders.json");
    review.status.user.extra["authentication.kubernetes.io/pod-name"] = [options.podName];
    review.status.user.extra["authentication.kubernetes.io/pod-uid"] = [options.podUid];
    review.status.user.username = `system:serviceaccount:${ns}:${options.serviceAccount ?? "orders-sa"}`;
    tokens.set(token, { audiences: [options.audience], review });
    return token;
  };

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "meshward-k8s-"));
    goCheck = await buildGoCheck();
    execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", join(work, "api.key"), "-out", join(work, "api.crt"), "-days", "1", "-subj", "/CN=kube-apiserver", "-addext", "subjectAltName=IP:127.0.0.1"]);
    writeFileSync(join(work, "sa-token"), `${caServiceAccountToken}\n`);
    api = createServer({ key: readFileSync(join(work, "api.key")), cert: readFileSync(join(work, "api.crt")) }, (req, res) => {
      let raw = "";
      req.on("data", (d) => (raw += d));
      req.on("end", () => {
        const body = raw === "" ? undefined : JSON.parse(raw);
        recorded.push({ method: req.method ?? "", path: req.url ?? "", authorization: req.headers.authorization, body });
        const reply = (status: number, object: object) => {
          res.writeHead(status, { "content-type": "application/json" });
          res.end(JSON.stringify(object));
        };
        if (req.headers.authorization !== `Bearer ${caServiceAccountToken}`) return reply(401, { kind: "Status", apiVersion: "v1", status: "Failure", message: "Unauthorized", reason: "Unauthorized", code: 401 });
        if (req.method === "POST" && req.url === "/apis/authentication.k8s.io/v1/tokenreviews") {
          if (forbidden) return reply(403, fixture("status-forbidden.json"));
          const known = tokens.get(body?.spec?.token ?? "");
          const requested: string[] = body?.spec?.audiences ?? [];
          const matched = known?.audiences.filter((a) => requested.includes(a)) ?? [];
          if (known === undefined || matched.length === 0) {
            // What the API server answers for a token of another audience (or an unknown one).
            return reply(201, { kind: "TokenReview", apiVersion: "authentication.k8s.io/v1", metadata: {}, spec: body.spec, status: { user: {}, error: `[invalid bearer token, token audiences ${JSON.stringify(known?.audiences ?? [])} is invalid for the target audiences ${JSON.stringify(requested)}]` } });
          }
          const review = structuredClone(known.review) as { spec: object; status: { audiences: unknown } };
          review.spec = body.spec;
          review.status.audiences = matched;
          if (omitAudiences) delete (review.status as { audiences?: unknown }).audiences;
          return reply(201, review);
        }
        const m = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)$/.exec(req.url ?? "");
        if (req.method === "GET" && m) {
          const pod = pods.get(`${m[1]}/${m[2]}`);
          if (pod === undefined) return reply(404, JSON.parse(JSON.stringify(fixture("status-not-found.json")).replaceAll("{{name}}", m[2] as string)));
          return reply(200, pod);
        }
        reply(404, { kind: "Status", code: 404 });
      });
    });
    await new Promise<void>((resolve) => api.listen(0, "127.0.0.1", resolve));
    const apiPort = (api.address() as AddressInfo).port;

    const dir = join(work, "ca");
    expect((await runCli(["ca", "init", "--trust-domain", "public", "--dir", dir, "--key-type", "ed25519"])).code).toBe(0);
    anchors = readFileSync(join(dir, "bundle.pem"), "utf8");
    writeFileSync(
      join(work, "ca.yaml"),
      [
        `servingSpiffeId: ${SENTRY_ID}`,
        "kubernetes:",
        "  appId: annotation",
        `  apiServer: https://127.0.0.1:${apiPort}`,
        `  tokenFile: ${join(work, "sa-token")}`,
        `  caFile: ${join(work, "api.crt")}`,
        "",
      ].join("\n"),
    );
    ca = await startCli(["ca", "serve", "--dir", dir, "--listen", "127.0.0.1:0", "--config", join(work, "ca.yaml")], /listening on (\S+) as (\S+)/);
    address = ca.match[1] as string;
  }, 240_000);

  afterAll(async () => {
    await ca?.stop();
    await new Promise<void>((resolve) => (api ? api.close(() => resolve()) : resolve()));
    rmSync(work, { recursive: true, force: true });
  });

  const ask = async (token: string, appId: string, namespace = "default", trustDomain?: string) => {
    const { csrPem } = await daprCsr(goCheck, "ed25519");
    // daprd in Kubernetes mode without DAPR_SENTRY_TOKEN_FILE: the projected token, KUBERNETES.
    return signCertificate({ address, trustAnchorsPem: anchors, sentryId: SENTRY_ID, namespace, csrPem, appId, ...daprdToken({ kubernetesMode: true, kubernetesToken: token }), ...(trustDomain ? { trustDomain } : {}) });
  };
  const refusal = async (promise: Promise<unknown>) => {
    try {
      await promise;
    } catch (error) {
      if (error instanceof SentryCallError) return error.details;
      throw error;
    }
    throw new Error("signed a request that should be refused");
  };

  it("takes the app id from the pod's dapr.io/app-id annotation, after a TokenReview with Sentry's audiences", async () => {
    const pod = fixture("pod-orders.json");
    pods.set("default/orders-7d9f8b6c5-x2k4p", pod);
    const token = await projectedToken({ audience: SENTRY_ID, podName: pod.metadata.name, podUid: pod.metadata.uid });
    recorded.length = 0;
    const identity = await ask(token, "orders");
    expect(identity.spiffeId).toBe("spiffe://public/ns/default/orders");
    expect(identity.chain[0]!.subjectAltName).toBe("URI:spiffe://public/ns/default/orders"); // an app: no DNS name
    const review = recorded.find((r) => r.path.endsWith("/tokenreviews"));
    expect(review?.authorization).toBe(`Bearer ${caServiceAccountToken}`);
    expect(review?.body?.spec?.audiences).toEqual([SENTRY_ID, "dapr.io/sentry"]);
    expect(recorded.some((r) => r.method === "GET" && r.path === "/api/v1/namespaces/default/pods/orders-7d9f8b6c5-x2k4p")).toBe(true);
    // The service-account name is not the app id here.
    expect(await refusal(ask(token, "orders-sa"))).toMatch(/E_IDENTITY_MISMATCH/);
  }, 60_000);

  it("accepts the legacy dapr.io/sentry audience and refuses any other", async () => {
    const pod = fixture("pod-orders.json");
    const legacy = await projectedToken({ audience: "dapr.io/sentry", podName: pod.metadata.name, podUid: pod.metadata.uid });
    expect((await ask(legacy, "orders")).spiffeId).toBe("spiffe://public/ns/default/orders");
    const other = await projectedToken({ audience: "https://kubernetes.default.svc", podName: pod.metadata.name, podUid: pod.metadata.uid });
    // Refused by the CA itself, before any TokenReview: a token that names none of the accepted
    // audiences costs the API server nothing (it would answer "invalid for the target audiences").
    const reviewsBefore = recorded.filter((r) => r.path === "/apis/authentication.k8s.io/v1/tokenreviews").length;
    expect(await refusal(ask(other, "orders"))).toMatch(/E_TOKEN_INVALID.*refused before any TokenReview: it is not for this CA's audiences/);
    expect(recorded.filter((r) => r.path === "/apis/authentication.k8s.io/v1/tokenreviews").length).toBe(reviewsBefore);
    // An authenticated review without status.audiences means the API server's own audience: refused.
    omitAudiences = true;
    try {
      expect(await refusal(ask(legacy, "orders"))).toMatch(/E_TOKEN_AUDIENCE/);
    } finally {
      omitAudiences = false;
    }
  }, 60_000);

  it("uses the pod name without the annotation; refuses a pod under another service account, a recreated pod, a missing pod", async () => {
    const plain = podOf((p) => {
      p.metadata.name = "batch-0";
      p.metadata.uid = "11111111-2222-4333-8444-555555555555";
      delete p.metadata.annotations["dapr.io/app-id"];
    });
    pods.set("default/batch-0", plain);
    const plainToken = await projectedToken({ audience: SENTRY_ID, podName: "batch-0", podUid: plain.metadata.uid });
    expect((await ask(plainToken, "batch-0")).spiffeId).toBe("spiffe://public/ns/default/batch-0");

    const otherSa = podOf((p) => {
      p.metadata.name = "payments-0";
      p.metadata.uid = "22222222-2222-4333-8444-555555555555";
      p.metadata.annotations["dapr.io/app-id"] = "payments";
      p.spec.serviceAccountName = "payments-sa";
    });
    pods.set("default/payments-0", otherSa);
    // A token of orders-sa naming a pod that runs as payments-sa.
    const stolen = await projectedToken({ audience: SENTRY_ID, podName: "payments-0", podUid: otherSa.metadata.uid });
    expect(await refusal(ask(stolen, "payments"))).toMatch(/E_ATTESTATION_UNTRUSTED.*service account orders-sa/);

    const recreated = await projectedToken({ audience: SENTRY_ID, podName: "batch-0", podUid: "33333333-2222-4333-8444-555555555555" });
    expect(await refusal(ask(recreated, "batch-0"))).toMatch(/E_ATTESTATION_UNTRUSTED.*uid differs/);

    const missing = await projectedToken({ audience: SENTRY_ID, podName: "gone-0", podUid: "44444444-2222-4333-8444-555555555555" });
    expect(await refusal(ask(missing, "gone-0"))).toMatch(/E_ATTESTATION_UNTRUSTED.*does not exist/);
  }, 60_000);

  it("control-plane pods get dapr-<service> only in the control-plane namespace; says what RBAC is missing when the API forbids the review", async () => {
    const operatorPod = (namespace: string, name: string, uid: string) =>
      podOf((p) => {
        p.metadata.name = name;
        p.metadata.namespace = namespace;
        p.metadata.uid = uid;
        delete p.metadata.annotations["dapr.io/app-id"];
        p.metadata.annotations["dapr.io/control-plane"] = "operator";
      });
    // As Sentry's expectedID (kubernetes.go): in the control-plane namespace (the serving ID's), dapr-operator.
    const inDefault = operatorPod("default", "dapr-operator-0", "55555555-2222-4333-8444-555555555555");
    pods.set("default/dapr-operator-0", inDefault);
    const token = await projectedToken({ audience: SENTRY_ID, podName: "dapr-operator-0", podUid: inDefault.metadata.uid });
    expect(await refusal(ask(token, "dapr-operator"))).toMatch(/E_ATTESTATION_UNTRUSTED.*only operator, placement, injector, sentry, scheduler in namespace dapr-system/);
    const inControlPlane = operatorPod("dapr-system", "dapr-operator-1", "66666666-2222-4333-8444-555555555555");
    inControlPlane.spec.serviceAccountName = "dapr-operator";
    pods.set("dapr-system/dapr-operator-1", inControlPlane);
    const operatorToken = await projectedToken({ audience: SENTRY_ID, podName: "dapr-operator-1", podUid: inControlPlane.metadata.uid, serviceAccount: "dapr-operator", namespace: "dapr-system" });
    // newRequestFn sends the control plane's trust domain for dapr-operator in the control-plane namespace.
    const operator = await ask(operatorToken, "dapr-operator", "dapr-system", "public");
    expect(operator.spiffeId).toBe("spiffe://public/ns/dapr-system/dapr-operator");
    // And the DNS name Sentry gives the operator (its webhook Service), added by the CA
    // (dapr/dapr pkg/sentry/server/server.go signCertificate); daprd's CSR asks for none.
    expect(operator.chain[0]!.subjectAltName).toBe("URI:spiffe://public/ns/dapr-system/dapr-operator, DNS:dapr-webhook.dapr-system.svc");
    // The injector serves the admission webhook with its certificate (pkg/injector/service/injector.go):
    // the API server calls dapr-sidecar-injector.<ns>.svc and checks that name.
    const injectorPod = podOf((p) => {
      p.metadata.name = "dapr-sidecar-injector-0";
      p.metadata.namespace = "dapr-system";
      p.metadata.uid = "77777777-2222-4333-8444-555555555555";
      p.spec.serviceAccountName = "dapr-injector";
      delete p.metadata.annotations["dapr.io/app-id"];
      p.metadata.annotations["dapr.io/control-plane"] = "injector";
    });
    pods.set("dapr-system/dapr-sidecar-injector-0", injectorPod);
    const injectorToken = await projectedToken({ audience: SENTRY_ID, podName: "dapr-sidecar-injector-0", podUid: injectorPod.metadata.uid, serviceAccount: "dapr-injector", namespace: "dapr-system" });
    const injector = await ask(injectorToken, "dapr-injector", "dapr-system", "public");
    expect(injector.chain[0]!.checkHost("dapr-sidecar-injector.dapr-system.svc")).toBe("dapr-sidecar-injector.dapr-system.svc");

    forbidden = true;
    try {
      const details = await refusal(ask(token, "dapr-operator"));
      expect(details).toMatch(/E_KUBERNETES_UNAVAILABLE.*HTTP 403.*RBAC/);
    } finally {
      forbidden = false;
    }
  }, 60_000);
});
