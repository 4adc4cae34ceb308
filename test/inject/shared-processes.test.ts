import { join } from "node:path";
import jsonPatch from "fast-json-patch";
import { describe, expect, it } from "vitest";
import { parseAllDocuments, stringify } from "yaml";
import { runCli } from "../helpers/cli.ts";
import { validateK8sObjects } from "../helpers/k8s-schema.ts";
import { useTestWebhook, type ReviewAnswer } from "../helpers/webhook.ts";

// The sidecar's token (in its mount namespace, /proc/<pid>/root/...) and private key (its memory)
// are readable through /proc by any process that sees the sidecar's processes and has its UID
// (a root container gets it by setuid(10001) with the runtime's default capabilities) or
// CAP_SYS_PTRACE. A pod with shareProcessNamespace or hostPID lets its containers see them; a
// privileged container reaches the node's disk, where the kubelet keeps the token. The injector
// refuses to inject such pods (E_INJECT_INVALID), in the webhook (over real HTTPS) and in
// `meshward inject` (a real process), and warns (does not refuse) about a container that adds
// CAP_SYS_PTRACE. Every Pod below is checked against Kubernetes' OpenAPI schema first, and the
// patched Pods of the controls after.

const UID = "5a5a5a5a-0000-0000-0000-000000000001";
const ANCHORS = join(new URL(".", import.meta.url).pathname, "fixtures", "trust-anchors.pem");
const ARGS = ["--trust-anchors", ANCHORS, "--image", "meshward:test"];

type Answer = ReviewAnswer;

/** A Pod that asks for the sidecar, with `spec` merged into its spec and `app` into its one container. */
const pod = (spec: Record<string, unknown> = {}, app: Record<string, unknown> = {}, annotations: Record<string, string> = { "meshward.io/inject": "true", "meshward.io/app-port": "8080", "meshward.io/config": "orders-policy" }) => ({
  apiVersion: "v1",
  kind: "Pod",
  metadata: { name: "orders-1", namespace: "shop", annotations },
  spec: { serviceAccountName: "orders", containers: [{ name: "app", image: "app:1", ...app }], ...spec },
});

const review = (object: unknown) => ({
  apiVersion: "admission.k8s.io/v1",
  kind: "AdmissionReview",
  request: {
    uid: UID,
    kind: { group: "", version: "v1", kind: "Pod" },
    resource: { group: "", version: "v1", resource: "pods" },
    requestKind: { group: "", version: "v1", kind: "Pod" },
    requestResource: { group: "", version: "v1", resource: "pods" },
    name: "orders-1",
    namespace: "shop",
    operation: "CREATE",
    userInfo: { username: "system:serviceaccount:kube-system:replicaset-controller" },
    object,
    oldObject: null,
    dryRun: false,
    options: { kind: "CreateOptions", apiVersion: "meta.k8s.io/v1" },
  },
});

const setup = { name: "setup", image: "setup:1" };

/** [what, pod, the reason the refusal gives]. */
const REFUSED: [string, ReturnType<typeof pod>, RegExp][] = [
  ["shareProcessNamespace: true", pod({ shareProcessNamespace: true }), /spec\.shareProcessNamespace is true: its containers could read the sidecar's service-account token and private key through \/proc .*setuid to the sidecar's UID.*remove shareProcessNamespace \(debug with kubectl debug --target=<app>/],
  // The app runs as the sidecar's UID: what an image's USER does without the pod saying so.
  ["shareProcessNamespace with an app as UID 10001", pod({ shareProcessNamespace: true }, { securityContext: { runAsUser: 10001, runAsNonRoot: true, capabilities: { drop: ["ALL"] } } }), /spec\.shareProcessNamespace is true/],
  ["hostPID: true", pod({ hostPID: true }), /spec\.hostPID is true: the pod sees every process of the node, so its containers could read the sidecar's service-account token.*remove hostPID \(Pod Security baseline forbids it\)/],
  ["a privileged container", pod({}, { securityContext: { privileged: true } }), /container "app" has securityContext\.privileged true: a privileged container has every capability and the node's devices, where the kubelet keeps the sidecar's token; remove privileged/],
  ["a privileged init container", pod({ initContainers: [{ ...setup, securityContext: { privileged: true } }] }), /init container "setup" has securityContext\.privileged true/],
  ["a privileged native sidecar of the app", pod({ initContainers: [{ ...setup, restartPolicy: "Always", securityContext: { privileged: true } }] }), /init container "setup" has securityContext\.privileged true/],
];

/** [what, pod, the warnings it gets] : injected, with a warning for each container that adds SYS_PTRACE. */
const WARNED: [string, ReturnType<typeof pod>, RegExp[]][] = [
  ["an app container that adds SYS_PTRACE", pod({}, { securityContext: { capabilities: { add: ["SYS_PTRACE"] } } }), [/^container "app" adds capability SYS_PTRACE \(Pod Security baseline forbids it\), which reads the memory of the processes it sees; injection keeps the sidecar's out of its sight \(no shareProcessNamespace or hostPID\)$/]],
  ["an init container that adds cap_sys_ptrace (as runtimes read it)", pod({ initContainers: [{ ...setup, securityContext: { capabilities: { add: ["NET_ADMIN", "cap_sys_ptrace"] } } }] }), [/^init container "setup" adds capability SYS_PTRACE /]],
  ["a container that adds ALL", pod({}, { securityContext: { capabilities: { add: ["ALL"] } } }), [/^container "app" adds capability ALL \(every capability, SYS_PTRACE included\) \(Pod Security baseline forbids it\)/]],
];

/** Controls: the same fields switched off, and capabilities baseline allows: injected, no warning about them. */
const CONTROLS: [string, ReturnType<typeof pod>][] = [
  ["nothing of the kind", pod()],
  ["shareProcessNamespace: false, hostPID: false", pod({ shareProcessNamespace: false, hostPID: false })],
  ["privileged: false, NET_BIND_SERVICE added, SYS_PTRACE dropped", pod({ initContainers: [{ ...setup, securityContext: { privileged: false } }] }, { securityContext: { privileged: false, capabilities: { add: ["NET_BIND_SERVICE"], drop: ["SYS_PTRACE"] } } })],
];

describe("injection refuses pods whose containers can reach the sidecar's processes", () => {
  const { post } = useTestWebhook();

  /** The patched Pod the API server would store, checked against the schema. */
  const patched = (object: unknown, answer: Answer): Record<string, any> => {
    const ops = JSON.parse(Buffer.from(answer.json.response?.patch ?? "", "base64").toString("utf8"));
    const result = jsonPatch.applyPatch(structuredClone(object), ops, true, false).newDocument as Record<string, any>;
    expect(validateK8sObjects([result])).toBe(1);
    return result;
  };

  describe("webhook (Pod CREATE over HTTPS)", () => {
    for (const [what, object, reason] of REFUSED) {
      it(`denies ${what} (400, E_INJECT_INVALID), no patch`, async () => {
        expect(validateK8sObjects([object])).toBe(1);
        const answer = await post(review(object));
        expect(answer.status).toBe(200);
        expect(answer.json.response).toMatchObject({ uid: UID, allowed: false, status: { code: 400 } });
        expect(answer.json.response?.patch).toBeUndefined();
        expect(answer.json.response?.status?.message).toMatch(/^shop\/orders-1: meshward injector: /);
        expect(answer.json.response?.status?.message).toMatch(reason);
        expect(answer.json.response?.status?.message).toMatch(/or remove meshward\.io\/inject \[E_INJECT_INVALID\]$/);
      });
    }

    for (const [what, object, warnings] of WARNED) {
      it(`injects ${what}, with an admission warning under 256 characters`, async () => {
        expect(validateK8sObjects([object])).toBe(1);
        const answer = await post(review(object));
        expect(answer.json.response).toMatchObject({ uid: UID, allowed: true, patchType: "JSONPatch" });
        const ptrace = (answer.json.response?.warnings ?? []).filter((warning) => /SYS_PTRACE/.test(warning));
        expect(ptrace).toHaveLength(warnings.length);
        warnings.forEach((warning, index) => expect(ptrace[index]).toMatch(warning));
        for (const warning of ptrace) expect(warning.length).toBeLessThanOrEqual(256);
        expect(patched(object, answer).spec.initContainers[0].name).toBe("meshward");
      });
    }

    for (const [what, object] of CONTROLS) {
      it(`injects a pod with ${what}, without a warning about it (the control)`, async () => {
        expect(validateK8sObjects([object])).toBe(1);
        const answer = await post(review(object));
        expect(answer.json.response).toMatchObject({ uid: UID, allowed: true, patchType: "JSONPatch" });
        expect(answer.json.response?.warnings ?? []).toEqual([]);
        const result = patched(object, answer);
        expect(result.spec.initContainers[0].name).toBe("meshward");
        expect(result.spec.initContainers[0].securityContext).toMatchObject({ runAsUser: 10001, capabilities: { drop: ["ALL"] } });
      });
    }

    it("leaves a pod that asks for no sidecar alone, whatever it shares (not the injector's business)", async () => {
      const object = pod({ shareProcessNamespace: true, hostPID: true }, { securityContext: { privileged: true } }, {});
      expect(validateK8sObjects([object])).toBe(1);
      const answer = await post(review(object));
      expect(answer.json.response).toEqual({ uid: UID, allowed: true });
    });
  });

  describe("meshward inject (the CLI as a process)", () => {
    const deployment = (object: ReturnType<typeof pod>) => {
      const { metadata, spec } = object;
      return stringify({
        apiVersion: "apps/v1",
        kind: "Deployment",
        metadata: { name: "orders", namespace: "shop" },
        spec: { selector: { matchLabels: { app: "orders" } }, template: { metadata: { labels: { app: "orders" }, annotations: metadata.annotations }, spec } },
      });
    };

    it("refuses each with the same reason, exit 1, nothing on stdout, no stack trace", async () => {
      for (const [what, object, reason] of REFUSED) {
        for (const input of [stringify(object), deployment(object)]) {
          expect(validateK8sObjects(parseAllDocuments(input).map((doc) => doc.toJS()))).toBe(1);
          const result = await runCli(["inject", ...ARGS], { input });
          expect(result.code, what).toBe(1);
          expect(result.stdout).toBe("");
          expect(result.stderr, what).toMatch(reason);
          expect(result.stderr).toMatch(/\[E_INJECT_INVALID\]/);
          expect(result.stderr).not.toMatch(/\n\s+at /);
        }
      }
    });

    it("injects a container that adds SYS_PTRACE with a note on stderr, and the controls without one", async () => {
      for (const [what, object, warnings] of WARNED) {
        const result = await runCli(["inject", ...ARGS], { input: deployment(object) });
        expect(result.code, result.stderr).toBe(0);
        const notes = result.stderr.split("\n").filter((line) => /SYS_PTRACE/.test(line));
        expect(notes, what).toHaveLength(warnings.length);
        warnings.forEach((warning, index) => expect(notes[index]).toMatch(new RegExp(`^note: stdin document 1: Deployment shop/orders: ${warning.source.slice(1)}`)));
        expect(validateK8sObjects(parseAllDocuments(result.stdout).map((doc) => doc.toJS()))).toBe(1);
      }
      for (const [what, object] of CONTROLS) {
        const result = await runCli(["inject", ...ARGS], { input: deployment(object) });
        expect(result.code, result.stderr).toBe(0);
        expect(result.stderr, what).not.toMatch(/SYS_PTRACE|shareProcessNamespace|hostPID|privileged/);
        expect(result.stderr).toMatch(/injected 1 pod template: /);
        expect(validateK8sObjects(parseAllDocuments(result.stdout).map((doc) => doc.toJS()))).toBe(1);
      }
    });

    it("an injected pod to which shareProcessNamespace was added later is refused when injected again", async () => {
      const injected = await runCli(["inject", ...ARGS], { input: stringify(pod()) });
      expect(injected.code, injected.stderr).toBe(0);
      const doc = parseAllDocuments(injected.stdout)[0]!.toJS() as Record<string, any>;
      doc.spec.shareProcessNamespace = true;
      const again = await runCli(["inject", ...ARGS], { input: JSON.stringify(doc) });
      expect(again.code).toBe(1);
      expect(again.stderr).toMatch(/spec\.shareProcessNamespace is true.*\[E_INJECT_INVALID\]/s);
    });
  });
});
