import { describe, expect, it } from "vitest";
import { validateK8sObjects } from "../helpers/k8s-schema.ts";
import { useTestWebhook, type ReviewAnswer } from "../helpers/webhook.ts";
import { injectedPod, plainPod, podUpdateReview, type Pod } from "../helpers/injected-pod.ts";

// A pods UPDATE (`kubectl set image pod/orders-7d9f meshward=…`, `kubectl edit`) may change a running
// pod's container images, the sidecar's included: a new image would run with the workload's token
// mounted. The injector refuses an update that changes, removes or renames the sidecar, changes its
// token volume or adds a mount of it; every other update passes unchanged, unpatched. Over real
// HTTPS; the Pods are checked against Kubernetes' OpenAPI schema.

type Answer = ReviewAnswer;

const UID = "0e0e0e0e-0000-0000-0000-000000000002";


/** An AdmissionReview v1 for an UPDATE of a Pod itself, as k8s.io/api/admission/v1 has it. */
const review = (oldObject: unknown, object: unknown, request: Record<string, unknown> = {}) => podUpdateReview(UID, oldObject, object, { request });

describe("admission webhook: a pods UPDATE never changes the sidecar or reaches its token", () => {
  const { post } = useTestWebhook();

  const refused = async (object: Pod, reason: RegExp, oldObject: Pod = injectedPod()) => {
    expect(validateK8sObjects([oldObject, object])).toBe(2);
    const answer = await post(review(oldObject, object));
    expect(answer.status).toBe(200);
    expect(answer.json.response, String(reason)).toMatchObject({ uid: UID, allowed: false, status: { code: 403 } });
    expect(answer.json.response?.patch).toBeUndefined();
    expect(answer.json.response?.status?.message).toMatch(/^shop\/orders-7d9f: meshward injector: /);
    expect(answer.json.response?.status?.message).toMatch(reason);
    expect(answer.json.response?.status?.message).toMatch(/ \[E_INJECT_SIDECAR_IMMUTABLE\]$/);
  };

  it("refuses changing the sidecar's image (kubectl set image pod/X meshward=…), naming both images (403, E_INJECT_SIDECAR_IMMUTABLE), patches nothing", async () => {
    await refused(
      injectedPod((pod) => (pod.spec.initContainers[0].image = "registry.example/evil:1")),
      /the update changes init container meshward, the sidecar: "image" \(image "meshward:0\.1\.0" → "registry\.example\/evil:1"\); it mounts the workload's service-account token, .*so that the pod is recreated/,
    );
    // Also when the same update drops the injected mark: the stored pod is what says it is injected.
    await refused(injectedPod((pod) => { pod.spec.initContainers[0].image = "evil:1"; delete pod.metadata.annotations; }), /changes init container meshward/);
  });

  it("refuses any other change of the sidecar container, and removing or renaming it", async () => {
    await refused(injectedPod((pod) => (pod.spec.initContainers[0].resources.limits.memory = "8Gi")), /changes init container meshward, the sidecar: "resources";/);
    await refused(injectedPod((pod) => (pod.spec.initContainers[0].args = ["sh", "-c", "cat /var/run/secrets/meshward.io/token/token"])), /: "args";/);
    await refused(injectedPod((pod) => delete pod.spec.initContainers), /removes or renames init container meshward, the sidecar/);
    await refused(injectedPod((pod) => (pod.spec.initContainers[0].name = "meshward-old")), /removes or renames init container meshward/);
    // Marked injected without the init container (kept apart by nothing else): still judged.
    await refused(
      injectedPod((pod) => { delete pod.spec.initContainers; pod.spec.containers[0].volumeMounts.push({ name: "meshward-token", mountPath: "/t" }); }),
      /makes container "app" mount volume meshward-token/,
      injectedPod((pod) => delete pod.spec.initContainers),
    );
  });

  it("refuses changing the token volume or adding a mount of it to another container", async () => {
    await refused(injectedPod((pod) => (pod.spec.volumes[1].projected.sources[0].serviceAccountToken.audience = "elsewhere")), /changes or removes volume meshward-token/);
    await refused(injectedPod((pod) => pod.spec.containers[0].volumeMounts.push({ name: "meshward-token", mountPath: "/t", readOnly: true })), /makes container "app" mount volume meshward-token, the sidecar's service-account token/);
    await refused(injectedPod((pod) => (pod.spec.containers[0].volumeDevices = [{ name: "meshward-token", devicePath: "/dev/t" }])), /makes container "app" mount volume meshward-token/);
    await refused(injectedPod((pod) => pod.spec.initContainers.push({ name: "setup", image: "busybox", volumeMounts: [{ name: "meshward-token", mountPath: "/t" }] })), /makes init container "setup" mount/);
  });

  it("admits every other update unchanged, without a patch: labels, annotations (the injected mark too), app images, tolerations, finalizers, dryRun", async () => {
    const updates: Pod[] = [
      injectedPod((pod) => (pod.metadata.labels.version = "v2")),
      injectedPod((pod) => (pod.metadata.annotations["team"] = "shop")),
      injectedPod((pod) => delete pod.metadata.annotations["meshward.io/injected"]),
      injectedPod((pod) => (pod.spec.containers[0].image = "app:2")),
      injectedPod((pod) => (pod.spec.tolerations = [{ key: "node.kubernetes.io/unreachable", operator: "Exists", effect: "NoExecute", tolerationSeconds: 300 }])),
      injectedPod((pod) => (pod.metadata.finalizers = ["example.com/keep"])),
      injectedPod((pod) => (pod.spec.activeDeadlineSeconds = 600)),
      // The same sidecar serialised with its keys in another order is the same sidecar.
      injectedPod((pod) => (pod.spec.initContainers[0] = Object.fromEntries(Object.entries(pod.spec.initContainers[0]).reverse()))),
    ];
    for (const object of updates) {
      expect(validateK8sObjects([object])).toBe(1);
      for (const extra of [{}, { dryRun: true }]) {
        const answer = await post(review(injectedPod(), object, extra));
        expect(answer.status).toBe(200);
        expect(answer.json.response).toEqual({ uid: UID, allowed: true });
      }
    }
    // A pod injected before the token-mount refusal, whose app mounts the token already: its labels still change.
    const old = injectedPod((pod) => pod.spec.containers[0].volumeMounts.push({ name: "meshward-token", mountPath: "/t" }));
    const relabelled = structuredClone(old);
    relabelled.metadata.labels.version = "v2";
    expect((await post(review(old, relabelled))).json.response).toEqual({ uid: UID, allowed: true });
  });

  it("leaves a pod without the sidecar alone, judged on the stored pod (a body that adds a `meshward` init container changes nothing)", async () => {
    for (const object of [plainPod((pod) => (pod.spec.containers[0].image = "app:2")), plainPod((pod) => (pod.metadata.annotations = { "meshward.io/injected": "true" }))]) {
      expect(validateK8sObjects([object])).toBe(1);
      expect((await post(review(plainPod(), object))).json.response).toEqual({ uid: UID, allowed: true });
    }
  });

  it("refuses an update it cannot compare with the stored pod (400, E_ADMISSION_INVALID)", async () => {
    const cases: [unknown, unknown, RegExp][] = [
      [injectedPod(), undefined, /request\.object is not a Pod object/],
      [undefined, injectedPod(), /request\.oldObject is not a Pod object/],
      ["x", injectedPod(), /request\.oldObject is not a Pod object/],
      [{ apiVersion: "v1", kind: "List", items: [injectedPod()] }, injectedPod(), /request\.oldObject is "v1" "List": only one Pod/],
      [{ apiVersion: "v1", kind: "Pod", metadata: {} }, injectedPod(), /request\.oldObject has no spec/],
    ];
    for (const [oldObject, object, reason] of cases) {
      const answer = await post(review(oldObject, object));
      expect(answer.json.response, String(reason)).toMatchObject({ uid: UID, allowed: false, status: { code: 400 } });
      expect(answer.json.response?.status?.message).toMatch(reason);
      expect(answer.json.response?.status?.message).toMatch(/a pod update the injector cannot compare with the stored pod is refused \[E_ADMISSION_INVALID\]$/);
    }
  });

  it("other subresources and a Pod CREATE are as before (the control)", async () => {
    const status = review(injectedPod(), injectedPod((pod) => (pod.spec.initContainers[0].image = "x")), { subResource: "status" });
    expect((await post(status)).json.response).toEqual({ uid: UID, allowed: true });
    const create = review(null, plainPod((pod) => (pod.metadata.annotations = { "meshward.io/inject": "true", "meshward.io/app-port": "8080" })), { operation: "CREATE" });
    expect((await post(create)).json.response).toMatchObject({ uid: UID, allowed: true, patchType: "JSONPatch" });
  });
});
