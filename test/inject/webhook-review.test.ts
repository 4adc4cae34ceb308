import { request } from "node:https";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { WebhookServer } from "../../src/inject/webhook-server.ts";
import { createTestPki, type TestPki } from "../helpers/openssl-pki.ts";
import { startTestWebhook, type WebhookLimits } from "../helpers/webhook.ts";

// What the webhook answers to AdmissionReviews the API server never sends but any pod that
// reaches port 8443 can (the webhook asks for no client certificate). Over real HTTPS.

interface Answer {
  status: number;
  bytes: number;
  json: { response?: { uid: string; allowed: boolean; patch?: string; patchType?: string; status?: { code: number; message: string } }; code?: string };
}

const UID = "0f0f0f0f-0000-0000-0000-000000000001";

const annotatedPod = (name: string, extra: Record<string, unknown> = {}) => ({
  apiVersion: "v1",
  kind: "Pod",
  metadata: { name, namespace: "shop", annotations: { "meshward.io/inject": "true", "meshward.io/app-port": "8080" } },
  spec: { serviceAccountName: "orders", containers: [{ name: "app", image: "app:1" }], ...extra },
});

const review = (object: unknown, request: Record<string, unknown> = {}) => ({
  apiVersion: "admission.k8s.io/v1",
  kind: "AdmissionReview",
  request: {
    uid: UID,
    kind: { group: "", version: "v1", kind: "Pod" },
    resource: { group: "", version: "v1", resource: "pods" },
    namespace: "shop",
    operation: "CREATE",
    object,
    ...request,
  },
});

describe("admission webhook: one Pod per review, and a bounded answer", () => {
  let pki: TestPki;
  const servers: WebhookServer[] = [];

  beforeAll(() => {
    pki = createTestPki();
  });
  afterAll(async () => {
    for (const server of servers) await server.close();
    pki?.cleanup();
  });

  const start = async (limits: WebhookLimits = {}) => (await startTestWebhook(pki, servers, limits)).port;

  const post = (port: number, body: unknown): Promise<Answer> =>
    new Promise((resolve, reject) => {
      const req = request({ host: "127.0.0.1", port, path: "/mutate", method: "POST", ca: pki.root.certPem, servername: "localhost", headers: { "content-type": "application/json" } }, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (chunk: Buffer) => chunks.push(chunk));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          resolve({ status: res.statusCode ?? 0, bytes: text.length, json: JSON.parse(text) });
        });
      });
      req.on("error", reject);
      req.end(JSON.stringify(body));
    });

  // Found by review: request.kind was checked, but injection followed request.object's own kind,
  // so a List of 28k annotated pods in one 4 MiB review got every item injected (a 94 MiB answer).
  it("denies a Pod review whose object is a List (or any other kind, or not v1) instead of injecting its items", async () => {
    const port = await start();
    const items = Array.from({ length: 200 }, (_, i) => annotatedPod(`p${i}`));
    const objects: unknown[] = [
      { apiVersion: "v1", kind: "List", items },
      { kind: "PodList", items },
      { apiVersion: "apps/v1", kind: "Deployment", metadata: { name: "d" }, spec: { template: annotatedPod("t") } },
      { ...annotatedPod("wrong-version"), apiVersion: "v2" },
      { ...annotatedPod("no-kind"), kind: undefined },
      [annotatedPod("in-an-array")],
    ];
    for (const object of objects) {
      const answer = await post(port, review(object));
      expect(answer.status).toBe(200);
      expect(answer.json.response, JSON.stringify(object).slice(0, 80)).toMatchObject({ uid: UID, allowed: false, status: { code: 400 } });
      expect(answer.json.response?.patch).toBeUndefined();
      expect(answer.json.response?.status?.message).toMatch(/only one Pod|not a Pod object/);
      expect(answer.bytes).toBeLessThan(2_000);
    }
    // A Pod review whose resource is not pods is refused too; the same pod as a real Pod review is injected (the control).
    const otherResource = await post(port, review(annotatedPod("x"), { resource: { group: "apps", version: "v1", resource: "deployments" } }));
    expect(otherResource.json.response).toMatchObject({ allowed: false, status: { code: 400 } });
    expect(otherResource.json.response?.status?.message).toMatch(/request\.resource/);
    const control = await post(port, review(annotatedPod("x")));
    expect(control.json.response).toMatchObject({ allowed: true, patchType: "JSONPatch" });
  }, 30_000);

  it("denies a review whose patch would exceed maxPatchBytes instead of building and sending it", async () => {
    const port = await start({ maxPatchBytes: 100_000 });
    // A legitimate-looking pod whose init container alone is 150 kB: its whole initContainers array is in the patch.
    const big = annotatedPod("big", { initContainers: [{ name: "setup", image: "busybox", args: ["x".repeat(150_000)] }] });
    const answer = await post(port, review(big));
    expect(answer.status).toBe(200);
    expect(answer.json.response).toMatchObject({ uid: UID, allowed: false, status: { code: 400 } });
    expect(answer.json.response?.status?.message).toMatch(/patch would be \d+ bytes, over the injector's limit of 100000.*E_ADMISSION_TOO_LARGE/);
    expect(answer.bytes).toBeLessThan(2_000);
    // Under the limit the same pod is injected.
    const small = annotatedPod("small", { initContainers: [{ name: "setup", image: "busybox", args: ["x".repeat(50_000)] }] });
    expect((await post(port, review(small))).json.response).toMatchObject({ allowed: true, patchType: "JSONPatch" });
  }, 30_000);

  // Found by review: only an app-port annotation on a sidecar port was refused; a pod whose own
  // containers declare 9090 (the Prometheus convention) or 3501 was injected and crash-looped.
  it("denies a pod whose containers or init containers declare a sidecar TCP port, naming the container and the port", async () => {
    const port = await start();
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ containers: [{ name: "app", image: "app:1", ports: [{ name: "metrics", containerPort: 9090 }] }] }, /container "app" declares containerPort 9090.*mw-status.*3500, 3501, 9090 are fixed/],
      [{ containers: [{ name: "app", image: "app:1", ports: [{ containerPort: 8080 }, { containerPort: 3501, protocol: "TCP" }] }] }, /container "app" declares containerPort 3501.*mw-mtls/],
      [{ containers: [{ name: "app", image: "app:1" }], initContainers: [{ name: "proxy", image: "p:1", restartPolicy: "Always", ports: [{ containerPort: 3500 }] }] }, /init container "proxy" declares containerPort 3500/],
    ];
    for (const [spec, reason] of cases) {
      const answer = await post(port, review(annotatedPod("clash", spec)));
      expect(answer.json.response).toMatchObject({ uid: UID, allowed: false, status: { code: 400 } });
      expect(answer.json.response?.status?.message).toMatch(reason);
      expect(answer.json.response?.status?.message).toMatch(/E_INJECT_INVALID/);
    }
    // UDP 9090 and a hostPort 9090 onto another containerPort bind nothing the sidecar binds: injected.
    const fine = annotatedPod("fine", { containers: [{ name: "app", image: "app:1", ports: [{ containerPort: 9090, protocol: "UDP" }, { containerPort: 8080, hostPort: 9090 }] }] });
    expect((await post(port, review(fine))).json.response).toMatchObject({ allowed: true, patchType: "JSONPatch" });
  }, 30_000);
});
