import { describe, expect, it } from "vitest";
import { modelFor, validateK8sObjects } from "../helpers/k8s-schema.ts";
import { useTestWebhook, type ReviewAnswer } from "../helpers/webhook.ts";
import { podUpdateReview } from "../helpers/injected-pod.ts";

// `kubectl debug` adds an ephemeral container through the pods/ephemeralcontainers subresource
// (UPDATE); the container may mount any volume of the pod. The injector refuses one that mounts
// the sidecar's token volume or targets the sidecar, over real HTTPS, in both shapes the API
// server has sent: the whole Pod (Kubernetes ≥ 1.22, kubernetes/kubernetes#101034) and the old
// EphemeralContainers kind (1.16–1.21). The Pods below are checked against Kubernetes' OpenAPI schema.

type Answer = ReviewAnswer;

const UID = "0e0e0e0e-0000-0000-0000-000000000001";

/** An injected pod as the API server holds it (what `meshward inject` made of orders). */
const injectedPod = (ephemeralContainers?: unknown[]) => ({
  apiVersion: "v1",
  kind: "Pod",
  metadata: { name: "orders-7d9f", namespace: "shop", uid: "5b7c", annotations: { "meshward.io/inject": "true", "meshward.io/app-port": "8080", "meshward.io/injected": "true" } },
  spec: {
    serviceAccountName: "orders",
    initContainers: [{ name: "meshward", image: "meshward:test", restartPolicy: "Always", volumeMounts: [{ name: "meshward-token", mountPath: "/var/run/secrets/meshward.io/token", readOnly: true }] }],
    containers: [{ name: "app", image: "app:1", volumeMounts: [{ name: "data", mountPath: "/data" }] }],
    volumes: [
      { name: "data", emptyDir: {} },
      { name: "meshward-token", projected: { sources: [{ serviceAccountToken: { path: "token", audience: "meshward", expirationSeconds: 3600 } }] } },
    ],
    ...(ephemeralContainers === undefined ? {} : { ephemeralContainers }),
  },
});

/** What `kubectl debug -it orders-7d9f --image=busybox --target=app` adds. */
const debugShell = (extra: Record<string, unknown> = {}) => ({ name: "debugger-x1", image: "busybox", stdin: true, tty: true, targetContainerName: "app", terminationMessagePolicy: "File", ...extra });
const tokenMount = { name: "meshward-token", mountPath: "/t", readOnly: true };

/** An AdmissionReview v1 for an UPDATE of pods/ephemeralcontainers, as k8s.io/api/admission/v1 has it. */
const review = (shape: "Pod" | "EphemeralContainers", added: unknown[], old: unknown[] = [], request: Record<string, unknown> = {}) => {
  const object = (list: unknown[]) =>
    shape === "Pod" ? injectedPod(list) : { apiVersion: "v1", kind: "EphemeralContainers", metadata: { name: "orders-7d9f", namespace: "shop" }, ephemeralContainers: list };
  return podUpdateReview(UID, object(old), object([...old, ...added]), { subResource: "ephemeralcontainers", kind: shape, request });
};

describe("admission webhook: ephemeral containers (pods/ephemeralcontainers) never reach the sidecar's token", () => {
  const { post } = useTestWebhook();

  /** The review's objects are real API objects: Pods against the Pod schema, old-shape containers against EphemeralContainer's. */
  const checkSchema = (body: ReturnType<typeof review>) => {
    for (const object of [body.request.object, body.request.oldObject] as Record<string, any>[]) {
      if (object.kind === "Pod") expect(validateK8sObjects([object])).toBe(1);
      else for (const container of object.ephemeralContainers as unknown[]) new (modelFor("v1", "EphemeralContainer") as new (d: unknown) => { validate(): void })(container).validate();
    }
  };

  for (const shape of ["Pod", "EphemeralContainers"] as const) {
    it(`${shape}: refuses a debug container that mounts meshward-token (403, E_INJECT_EPHEMERAL_DENIED), patches nothing`, async () => {
      for (const container of [
        debugShell({ volumeMounts: [tokenMount] }),
        debugShell({ targetContainerName: undefined, volumeMounts: [{ name: "data", mountPath: "/data" }, { ...tokenMount, subPath: "token" }] }),
      ]) {
        const body = review(shape, [container]);
        checkSchema(body);
        const answer = await post(body);
        expect(answer.status).toBe(200);
        expect(answer.json.response).toMatchObject({ uid: UID, allowed: false, status: { code: 403 } });
        expect(answer.json.response?.patch).toBeUndefined();
        expect(answer.json.response?.status?.message).toMatch(/^shop\/orders-7d9f: meshward injector: ephemeral container "debugger-x1" mounts volume meshward-token, the sidecar's service-account token: .*debug without that volumeMount \[E_INJECT_EPHEMERAL_DENIED\]$/);
      }
    });

    it(`${shape}: refuses a debug container that targets the sidecar (its process namespace reaches the token and key)`, async () => {
      const body = review(shape, [debugShell({ targetContainerName: "meshward" })]);
      checkSchema(body);
      const answer = await post(body);
      expect(answer.json.response).toMatchObject({ uid: UID, allowed: false, status: { code: 403 } });
      expect(answer.json.response?.status?.message).toMatch(/ephemeral container "debugger-x1" targets container meshward, the sidecar: .*--target=<app>.*\[E_INJECT_EPHEMERAL_DENIED\]$/);
    });

    it(`${shape}: refuses a privileged debug container (kubectl debug --profile=sysadmin) in a pod with the sidecar; --profile=general is allowed`, async () => {
      const sysadmin = review(shape, [debugShell({ securityContext: { privileged: true } })]);
      checkSchema(sysadmin);
      const answer = await post(sysadmin);
      expect(answer.json.response).toMatchObject({ uid: UID, allowed: false, status: { code: 403 } });
      expect(answer.json.response?.status?.message).toMatch(/ephemeral container "debugger-x1" is privileged \(kubectl debug --profile=sysadmin\): it has every capability and the node's devices, where the kubelet keeps the sidecar's token; debug with --profile=general or netadmin instead \[E_INJECT_EPHEMERAL_DENIED\]$/);
      // What --profile=general and --profile=netadmin set: capabilities, not privileged.
      for (const securityContext of [{ capabilities: { add: ["SYS_PTRACE"] } }, { privileged: false, capabilities: { add: ["NET_ADMIN", "NET_RAW"] } }]) {
        const body = review(shape, [debugShell({ securityContext })]);
        checkSchema(body);
        expect((await post(body)).json.response).toEqual({ uid: UID, allowed: true });
      }
    });

    it(`${shape}: allows a debug shell without those mounts unchanged (no patch), also next to an older one`, async () => {
      const bodies = [
        review(shape, [debugShell()]),
        review(shape, [debugShell({ name: "debugger-x2", targetContainerName: undefined, volumeMounts: [{ name: "data", mountPath: "/data", readOnly: true }] })]),
        // One added before this rule existed is the API server's (immutable) history, not judged again.
        review(shape, [debugShell({ name: "debugger-x3" })], [debugShell({ volumeMounts: [tokenMount] })]),
      ];
      for (const body of bodies) {
        checkSchema(body);
        const answer = await post(body);
        expect(answer.status).toBe(200);
        expect(answer.json.response).toEqual({ uid: UID, allowed: true });
      }
    });
  }

  it("a privileged debug container in a pod without the sidecar is not the injector's business; either marker of the sidecar is enough", async () => {
    const privileged = debugShell({ securityContext: { privileged: true } });
    const body = review("Pod", [privileged]);
    const plain = structuredClone(body);
    for (const object of [plain.request.object, plain.request.oldObject] as Record<string, any>[]) {
      delete object.metadata.annotations;
      delete object.spec.initContainers;
      object.spec.volumes = object.spec.volumes.filter((volume: { name: string }) => volume.name !== "meshward-token");
    }
    checkSchema(plain);
    expect((await post(plain)).json.response).toEqual({ uid: UID, allowed: true });
    // The stored pod (oldObject) marked injected without the sidecar container, or with the sidecar container without the mark: refused.
    const marked = structuredClone(plain);
    for (const object of [marked.request.object, marked.request.oldObject] as Record<string, any>[]) object.metadata.annotations = { "meshward.io/injected": "true" };
    const withSidecar = structuredClone(body);
    for (const object of [withSidecar.request.object, withSidecar.request.oldObject] as Record<string, any>[]) delete object.metadata.annotations;
    for (const one of [marked, withSidecar]) {
      checkSchema(one);
      expect((await post(one)).json.response).toMatchObject({ allowed: false, status: { code: 403 } });
    }
  });

  it("judges the pod from oldObject (the stored pod), not from the body the client sent: a body without the sidecar does not make an injected pod plain", async () => {
    // What a client gets with a JSON patch that removes the mark and the init container and adds a
    // privileged debug container: the API server keeps only spec.ephemeralContainers of that body,
    // and only after the mutating webhooks have run, so the stored pod keeps its sidecar.
    const privileged = debugShell({ securityContext: { privileged: true } });
    const spoofed = review("Pod", [privileged]);
    const body = spoofed.request.object as Record<string, any>;
    delete body.metadata.annotations;
    delete body.spec.initContainers;
    checkSchema(spoofed);
    const answer = await post(spoofed);
    expect(answer.json.response).toMatchObject({ uid: UID, allowed: false, status: { code: 403 } });
    expect(answer.json.response?.status?.message).toMatch(/ephemeral container "debugger-x1" is privileged .*\[E_INJECT_EPHEMERAL_DENIED\]$/);
    // The other way round: a body that claims the sidecar in a pod stored without it is not the injector's business.
    const plainStored = review("Pod", [privileged]);
    const stored = plainStored.request.oldObject as Record<string, any>;
    delete stored.metadata.annotations;
    delete stored.spec.initContainers;
    stored.spec.volumes = stored.spec.volumes.filter((volume: { name: string }) => volume.name !== "meshward-token");
    checkSchema(plainStored);
    expect((await post(plainStored)).json.response).toEqual({ uid: UID, allowed: true });
  });

  it("refuses any new debug container in an injected pod whose containers share processes (shareProcessNamespace or hostPID, injected before injection refused them), whatever it targets", async () => {
    for (const field of ["shareProcessNamespace", "hostPID"] as const) {
      for (const container of [debugShell(), debugShell({ targetContainerName: undefined, securityContext: { runAsUser: 10001 } })]) {
        const body = review("Pod", [container]);
        for (const object of [body.request.object, body.request.oldObject] as Record<string, any>[]) object.spec[field] = true;
        checkSchema(body);
        const answer = await post(body);
        expect(answer.json.response, field).toMatchObject({ uid: UID, allowed: false, status: { code: 403 } });
        expect(answer.json.response?.patch).toBeUndefined();
        expect(answer.json.response?.status?.message).toMatch(
          new RegExp(`^shop/orders-7d9f: meshward injector: ephemeral container "debugger-x1" would join a pod whose spec\\.${field} is true: .*through /proc.*kubectl debug --target=<app> \\[E_INJECT_EPHEMERAL_DENIED\\]$`),
        );
        // Read from the stored pod only: a body without the field changes nothing.
        const spoofed = structuredClone(body);
        delete (spoofed.request.object as Record<string, any>).spec[field];
        expect((await post(spoofed)).json.response, field).toMatchObject({ allowed: false, status: { code: 403 } });
      }
      // The same pod without the sidecar: not the injector's business. With the fields false: allowed.
      const plain = review("Pod", [debugShell()]);
      for (const object of [plain.request.object, plain.request.oldObject] as Record<string, any>[]) {
        object.spec[field] = true;
        delete object.metadata.annotations;
        delete object.spec.initContainers;
        object.spec.volumes = object.spec.volumes.filter((volume: { name: string }) => volume.name !== "meshward-token");
      }
      checkSchema(plain);
      expect((await post(plain)).json.response, field).toEqual({ uid: UID, allowed: true });
      const off = review("Pod", [debugShell()]);
      for (const object of [off.request.object, off.request.oldObject] as Record<string, any>[]) object.spec[field] = false;
      checkSchema(off);
      expect((await post(off)).json.response, field).toEqual({ uid: UID, allowed: true });
    }
  });

  it("judges every ephemeral container, and takes the pod as injected and sharing processes, when oldObject is missing or unreadable (fail closed)", async () => {
    for (const oldObject of [undefined, null, { apiVersion: "v1", kind: "Pod" }, "x"]) {
      const body = review("Pod", [], [debugShell({ volumeMounts: [tokenMount] })]);
      const answer = await post({ ...body, request: { ...body.request, oldObject } });
      expect(answer.json.response, JSON.stringify(oldObject)).toMatchObject({ allowed: false, status: { code: 403 } });
      expect(answer.json.response?.status?.message).toMatch(/E_INJECT_EPHEMERAL_DENIED/);
      // A harmless debug shell too: without the stored pod, whether it shares processes with the sidecar cannot be told.
      const shell = review("Pod", [debugShell()]);
      const refused = await post({ ...shell, request: { ...shell.request, oldObject } });
      expect(refused.json.response, JSON.stringify(oldObject)).toMatchObject({ allowed: false, status: { code: 400 } });
      expect(refused.json.response?.status?.message).toMatch(/request\.oldObject \(the stored pod\) .*cannot be told; an ephemeral container the injector cannot read is refused \[E_ADMISSION_INVALID\]$/);
    }
  });

  it("refuses what it cannot read, with a message saying what (400, E_ADMISSION_INVALID)", async () => {
    const base = review("Pod", [debugShell()]);
    const withRequest = (change: Record<string, unknown>) => ({ ...base, request: { ...base.request, ...change } });
    const pod = injectedPod([debugShell()]);
    const cases: [unknown, RegExp][] = [
      [withRequest({ object: undefined }), /request\.object is not a Pod object/],
      [withRequest({ object: [pod] }), /request\.object is not a Pod object/],
      [withRequest({ object: { ...pod, kind: "EphemeralContainers" } }), /request\.object is "v1" "EphemeralContainers", not the v1 Pod that request\.kind names/],
      [withRequest({ object: { apiVersion: "v1", kind: "List", items: [pod] } }), /"v1" "List", not the v1 Pod/],
      [withRequest({ object: { ...pod, spec: undefined } }), /request\.object has no spec/],
      [withRequest({ object: { ...pod, spec: { ...pod.spec, ephemeralContainers: { name: "d" } } } }), /spec\.ephemeralContainers is not a list/],
      [withRequest({ object: injectedPod(["debugger"]) }), /an ephemeral container is not an object/],
      [withRequest({ object: injectedPod([{ image: "busybox" }]) }), /ephemeral container "" has no name/],
      [withRequest({ object: injectedPod([debugShell({ volumeMounts: { name: "meshward-token" } })]) }), /"debugger-x1": volumeMounts is not a list/],
      [withRequest({ object: injectedPod([debugShell({ volumeMounts: [{ mountPath: "/t" }] })]) }), /an entry of volumeMounts has no volume name/],
      [withRequest({ object: injectedPod([debugShell({ targetContainerName: ["meshward"] })]) }), /targetContainerName is not a string/],
      [withRequest({ object: injectedPod([debugShell({ securityContext: "privileged" })]) }), /"debugger-x1": securityContext is not an object/],
      [withRequest({ object: injectedPod([debugShell({ securityContext: { privileged: "true" } })]) }), /"debugger-x1": securityContext\.privileged is not a boolean/],
      [withRequest({ kind: { group: "", version: "v1", kind: "Binding" } }), /review of kind "Binding", not a v1 Pod .* or EphemeralContainers/],
      [withRequest({ kind: { group: "apps", version: "v1", kind: "Pod" } }), /review of kind "Pod", not a v1 Pod/],
      [withRequest({ resource: { group: "", version: "v1", resource: "nodes" } }), /request\.resource is "\/nodes\/ephemeralcontainers", not pods\/ephemeralcontainers/],
      [withRequest({ kind: { group: "", version: "v1", kind: "EphemeralContainers" }, subResource: undefined }), /request\.resource is "\/pods\/", not pods\/ephemeralcontainers/],
    ];
    for (const [body, reason] of cases) {
      const answer = await post(body);
      expect(answer.status).toBe(200);
      expect(answer.json.response, String(reason)).toMatchObject({ uid: UID, allowed: false, status: { code: 400 } });
      expect(answer.json.response?.patch).toBeUndefined();
      expect(answer.json.response?.status?.message).toMatch(reason);
      expect(answer.json.response?.status?.message).toMatch(/an ephemeral container the injector cannot read is refused \[E_ADMISSION_INVALID\]$/);
    }
  });

  it("still injects a Pod CREATE and leaves other subresources alone (the control)", async () => {
    const create = review("Pod", []);
    const pod = { apiVersion: "v1", kind: "Pod", metadata: { name: "p", namespace: "shop", annotations: { "meshward.io/inject": "true", "meshward.io/app-port": "8080" } }, spec: { serviceAccountName: "orders", containers: [{ name: "app", image: "app:1" }] } };
    const created = await post({ ...create, request: { ...create.request, operation: "CREATE", subResource: undefined, requestSubResource: undefined, object: pod, oldObject: null } });
    expect(created.json.response).toMatchObject({ allowed: true, patchType: "JSONPatch" });
    const status = await post({ ...create, request: { ...create.request, subResource: "status" } });
    expect(status.json.response).toEqual({ uid: UID, allowed: true });
  });
});
