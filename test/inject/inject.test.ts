import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { sidecarConfigSchema, sidecarMemoryBoundKib } from "../../src/config/sidecar.ts";
import { injectManifest } from "../../src/inject/manifest.ts";
import { runCli } from "../helpers/cli.ts";
import { validateK8sObjects } from "../helpers/k8s-schema.ts";

// `meshward inject` as an operator runs it (a real process), on the four kinds of input the
// issue names. Compare: linkerd's `linkerd inject` (linkerd/linkerd2 cli/cmd/inject.go) and
// `istioctl kube-inject`, which also pass non-workload documents through.
const HERE = new URL(".", import.meta.url).pathname;
const FIXTURES = join(HERE, "fixtures");
const GOLDEN = join(HERE, "golden");
const ANCHORS = join(FIXTURES, "trust-anchors.pem");
const INPUTS = ["dapr-quickstart", "cronjob", "list", "multi"] as const;
const ARGS = ["--trust-anchors", ANCHORS, "--image", "meshward:test"];
const OPTIONS = { trustAnchors: readFileSync(ANCHORS, "utf8"), image: "meshward:test", caAddress: "meshward-ca.meshward-system.svc:8443", audience: "meshward" };

const docsOf = (text: string): Record<string, any>[] => parseAllDocuments(text).map((d) => d.toJS() as Record<string, any>);

function podSpecs(object: Record<string, any>): Record<string, any>[] {
  if (object.kind === "List") return (object.items as Record<string, any>[]).flatMap(podSpecs);
  if (object.kind === "Pod") return [object.spec];
  if (object.kind === "CronJob") return [object.spec.jobTemplate.spec.template.spec];
  return object.spec?.template?.spec ? [object.spec.template.spec] : [];
}

describe("meshward inject: golden files", () => {
  for (const name of INPUTS) {
    it(`${name}.yaml: output equals the golden file, validates against the Kubernetes 1.34 schemas, and injecting again changes nothing`, async () => {
      const result = await runCli(["inject", join(FIXTURES, `${name}.yaml`), ...ARGS]);
      expect(result.code, result.stderr).toBe(0);
      const golden = join(GOLDEN, `${name}.yaml`);
      if (process.env.UPDATE_GOLDEN === "1") writeFileSync(golden, result.stdout);
      expect(result.stdout).toBe(readFileSync(golden, "utf8"));
      expect(validateK8sObjects(docsOf(result.stdout))).toBeGreaterThan(0);
      const again = await runCli(["inject", "-", ...ARGS], { input: result.stdout });
      expect(again.code, again.stderr).toBe(0);
      expect(again.stdout).toBe(result.stdout);
    });
  }

  it("the schema check can fail: a sidecar with a misspelt restartPolicy value is refused", () => {
    const out = docsOf(injectManifest(readFileSync(join(FIXTURES, "multi.yaml"), "utf8"), OPTIONS).text);
    const pod = out.find((d) => d.kind === "Pod") as Record<string, any>;
    pod.spec.initContainers[0].ports[0].containerPort = "3501";
    expect(() => validateK8sObjects([pod])).toThrow(/containerPort must be integer/);
  });
});

describe("meshward inject: what the sidecar gets", () => {
  const out = docsOf(injectManifest(readFileSync(join(FIXTURES, "multi.yaml"), "utf8"), OPTIONS).text);
  const pod = out.find((d) => d.kind === "Pod") as Record<string, any>;
  const sidecar = pod.spec.initContainers[0] as Record<string, any>;

  it("is a native sidecar (initContainer, restartPolicy Always) with probes, resources, non-root, read-only root fs, no capabilities", () => {
    expect(sidecar.name).toBe("meshward");
    expect(sidecar.restartPolicy).toBe("Always");
    expect(pod.spec.containers.map((c: { name: string }) => c.name)).toEqual(["app"]);
    expect(sidecar.readinessProbe.httpGet).toEqual({ path: "/readyz", port: "mw-status" });
    expect(sidecar.livenessProbe.httpGet).toEqual({ path: "/healthz", port: "mw-status" });
    expect(sidecar.startupProbe.httpGet.path).toBe("/readyz");
    expect(Object.keys(sidecar.resources.requests).sort()).toEqual(["cpu", "memory"]);
    expect(Object.keys(sidecar.resources.limits).sort()).toEqual(["cpu", "memory"]);
    expect(sidecar.securityContext).toMatchObject({ runAsNonRoot: true, readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: { drop: ["ALL"] } });
    expect(sidecar.securityContext.runAsUser).toBeGreaterThan(0);
  });

  it("its memory limit holds what the sidecar's default caps let callers fill (every listener full, every app connection held, the held-request budget full)", () => {
    const limit = /^(\d+)Mi$/.exec(sidecar.resources.limits.memory as string);
    expect(limit).not.toBeNull();
    // The caps the injected sidecar runs with: its args set none, so the config's defaults.
    expect(sidecar.args).not.toContain("--max-connections");
    expect(sidecar.args).not.toContain("--max-held-request-bytes");
    const limits = sidecarConfigSchema.parse({ appId: "orders", ca: "ca:1", app: "127.0.0.1:8080" }).limits;
    expect(sidecarMemoryBoundKib(limits.maxConnections, limits.maxHeldRequestBytes)).toBeLessThanOrEqual(Number(limit![1]) * 1024);
  });

  it("mounts the token volume into the sidecar only, read-only, with the kubelet's default mode (a 0400/0440 defaultMode would be root's alone)", () => {
    const mounts = (c: Record<string, any>) => (c.volumeMounts ?? []) as { name: string; mountPath: string; readOnly?: boolean }[];
    const holders = [...pod.spec.initContainers, ...pod.spec.containers].filter((c: Record<string, any>) => mounts(c).some((m) => m.name === "meshward-token"));
    expect(holders.map((c: { name: string }) => c.name)).toEqual(["meshward"]);
    expect(mounts(sidecar).find((m) => m.name === "meshward-token")).toEqual({ name: "meshward-token", mountPath: "/var/run/secrets/meshward.io/token", readOnly: true });
    expect(sidecar.args[sidecar.args.indexOf("--token-file") + 1]).toBe("/var/run/secrets/meshward.io/token/token");
    // Without fsGroup or one runAsUser for every container the kubelet writes the token with the
    // volume's defaultMode, owned by root: the sidecar (uid 10001) reads it through "others".
    const volume = pod.spec.volumes.find((v: { name: string }) => v.name === "meshward-token");
    expect(volume.projected.defaultMode).toBeUndefined();
    expect(validateK8sObjects([pod])).toBe(1);
  });

  it("gets a projected token with the CA's audience, the trust anchors and the policy ConfigMap", () => {
    const token = pod.spec.volumes.find((v: { name: string }) => v.name === "meshward-token");
    expect(token.projected.sources[0].serviceAccountToken).toEqual({ path: "token", audience: "meshward", expirationSeconds: 3600 });
    expect(sidecar.env.find((e: { name: string }) => e.name === "MESHWARD_TRUST_ANCHORS").value).toBe(OPTIONS.trustAnchors);
    const policy = pod.spec.volumes.find((v: { name: string }) => v.name === "meshward-policy");
    expect(policy.configMap).toEqual({ name: "orders-policy", items: [{ key: "config.yaml", path: "config.yaml" }] });
    expect(sidecar.args).toEqual(expect.arrayContaining(["--policy", "/etc/meshward/policy/config.yaml", "--validator", "kubernetes", "--app", "127.0.0.1:8080", "--no-status-page"]));
    // The other volume stays where it was.
    expect(pod.spec.volumes[0]).toEqual({ name: "scratch", emptyDir: {} });
    // A different audience reaches the token (the CA's jwks.audience).
    const other = docsOf(injectManifest(readFileSync(join(FIXTURES, "multi.yaml"), "utf8"), { ...OPTIONS, audience: "meshward-ca.prod" }).text);
    const otherPod = other.find((d) => d.kind === "Pod") as Record<string, any>;
    expect(otherPod.spec.volumes.find((v: { name: string }) => v.name === "meshward-token").projected.sources[0].serviceAccountToken.audience).toBe("meshward-ca.prod");
  });

  it("reads Dapr's annotations: dapr.io/app-id, app-port and config, and moves the pod off the shared default account", () => {
    const docs = docsOf(injectManifest(readFileSync(join(FIXTURES, "dapr-quickstart.yaml"), "utf8"), OPTIONS).text);
    const spec = podSpecs(docs[1] as Record<string, any>)[0] as Record<string, any>;
    expect(spec.serviceAccountName).toBe("nodeapp");
    expect(spec.initContainers[0].args).toEqual(expect.arrayContaining(["--app-id", "nodeapp", "--app", "127.0.0.1:3000", "--policy", "/etc/meshward/policy/config.yaml"]));
    expect(spec.volumes.find((v: { name: string }) => v.name === "meshward-policy").configMap.name).toBe("appconfig");
  });

  it("meshward.io/inject: \"false\" wins over dapr.io/enabled, and documents without the annotation pass through byte for byte", () => {
    const listOut = docsOf(injectManifest(readFileSync(join(FIXTURES, "list.yaml"), "utf8"), OPTIONS).text)[0] as Record<string, any>;
    const daemonSet = listOut.items.find((i: { kind: string }) => i.kind === "DaemonSet");
    expect(daemonSet.spec.template.spec.initContainers).toBeUndefined();
    const input = readFileSync(join(FIXTURES, "multi.yaml"), "utf8");
    const output = injectManifest(input, OPTIONS).text;
    const segments = input.split(/^---\n/m);
    for (const index of [0, 1, 3, 5]) expect(output).toContain(segments[index]);
    expect(segments[2] && output.includes(segments[2])).toBe(false);
  });

  it("JSON in (kubectl get -o json), JSON out, injected the same way; again changes nothing", () => {
    const yamlOut = docsOf(injectManifest(readFileSync(join(FIXTURES, "list.yaml"), "utf8"), OPTIONS).text)[0];
    const json = JSON.stringify(docsOf(readFileSync(join(FIXTURES, "list.yaml"), "utf8"))[0], null, 2);
    const out = injectManifest(json, OPTIONS).text;
    expect(JSON.parse(out)).toEqual(yamlOut);
    expect(injectManifest(out, OPTIONS).text).toBe(out);
  });

  it("the meshward.io/mode label (what the Prometheus relabelling reads) sets the sidecar's --mode", () => {
    const text = readFileSync(join(FIXTURES, "multi.yaml"), "utf8").replace("labels: { app: orders }", "labels: { app: orders, meshward.io/mode: permissive }");
    const result = injectManifest(text, OPTIONS);
    const pod = docsOf(result.text).find((d) => d.kind === "Pod") as Record<string, any>;
    const args = pod.spec.initContainers[0].args as string[];
    expect(args[args.indexOf("--mode") + 1]).toBe("permissive");
    expect(result.notes.join("\n")).toMatch(/permissive: plaintext is accepted/);
    const strict = docsOf(injectManifest(readFileSync(join(FIXTURES, "multi.yaml"), "utf8"), OPTIONS).text).find((d) => d.kind === "Pod") as Record<string, any>;
    expect(strict.spec.initContainers[0].args[strict.spec.initContainers[0].args.indexOf("--mode") + 1]).toBe("strict");
  });

  it("meshward.io/outbound-allowed-hosts gives the sidecar one --outbound-allowed-host per name, which its own config schema accepts", () => {
    const text = readFileSync(join(FIXTURES, "multi.yaml"), "utf8").replace("    meshward.io/config: orders-policy\n", "    meshward.io/config: orders-policy\n    meshward.io/outbound-allowed-hosts: \"api.shop.example, *.corp.example\"\n");
    const pod = docsOf(injectManifest(text, OPTIONS).text).find((d) => d.kind === "Pod") as Record<string, any>;
    const args = pod.spec.initContainers[0].args as string[];
    const hosts = args.flatMap((arg, i) => (arg === "--outbound-allowed-host" ? [args[i + 1]!] : []));
    expect(hosts).toEqual(["api.shop.example", "*.corp.example"]);
    expect(sidecarConfigSchema.parse({ appId: "orders", ca: "ca:8443", outbound: "127.0.0.1:3500", outboundAllowedHosts: hosts }).outboundAllowedHosts).toEqual(hosts);
    const without = docsOf(injectManifest(readFileSync(join(FIXTURES, "multi.yaml"), "utf8"), OPTIONS).text).find((d) => d.kind === "Pod") as Record<string, any>;
    expect(without.spec.initContainers[0].args).not.toContain("--outbound-allowed-host");
  });

  it("meshward.io/escaped-slashes and meshward.io/headers-with-underscores give the sidecar its --escaped-slashes and --headers-with-underscores, which its own config schema accepts; absent, neither flag (the sidecar's reject)", () => {
    const text = readFileSync(join(FIXTURES, "multi.yaml"), "utf8").replace("    meshward.io/config: orders-policy\n", "    meshward.io/config: orders-policy\n    meshward.io/escaped-slashes: unescape\n    meshward.io/headers-with-underscores: drop\n");
    const pod = docsOf(injectManifest(text, OPTIONS).text).find((d) => d.kind === "Pod") as Record<string, any>;
    const args = pod.spec.initContainers[0].args as string[];
    const flag = (name: string) => args[args.indexOf(name) + 1];
    expect([flag("--escaped-slashes"), flag("--headers-with-underscores")]).toEqual(["unescape", "drop"]);
    const parsed = sidecarConfigSchema.parse({ appId: "orders", ca: "ca:8443", app: flag("--app"), escapedSlashes: flag("--escaped-slashes"), headersWithUnderscores: flag("--headers-with-underscores") });
    expect([parsed.escapedSlashes, parsed.headersWithUnderscores]).toEqual(["unescape", "drop"]);
    const without = docsOf(injectManifest(readFileSync(join(FIXTURES, "multi.yaml"), "utf8"), OPTIONS).text).find((d) => d.kind === "Pod") as Record<string, any>;
    expect(without.spec.initContainers[0].args).not.toContain("--escaped-slashes");
    expect(without.spec.initContainers[0].args).not.toContain("--headers-with-underscores");
  });

  it("a manifest with nothing to inject comes out byte for byte", () => {
    const text = "# just a service\napiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec:\n  ports: [{port: 1}]\n...\n";
    expect(injectManifest(text, OPTIONS).text).toBe(text);
  });

  it("reads dapr.io/enabled as Dapr does (utils.IsTruthy: y, yes, true, t, on, 1 in any case; anything else false), meshward.io/inject strictly", () => {
    const deployment = (enabled: string) =>
      `apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata:\n      labels: {app: web}\n      annotations: {dapr.io/enabled: ${JSON.stringify(enabled)}, dapr.io/app-port: "80"}\n    spec:\n      serviceAccountName: web\n      containers: [{name: web, image: web}]\n`;
    const injected = (enabled: string) => (podSpecs(docsOf(injectManifest(deployment(enabled), OPTIONS).text)[0]!)[0]!.initContainers ?? []).length === 1;
    for (const enabled of ["true", "True", "1", "yes", "Y", "t", "on", " ON "]) expect(injected(enabled), enabled).toBe(true);
    for (const enabled of ["false", "0", "no", "off", "", "enabled", "2"]) expect(injected(enabled), enabled).toBe(false);
  });

  it("an empty initContainers: or volumes: key (null) is no list, as the API server reads it", async () => {
    const input = `apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata:\n      labels: {app: web}\n      annotations: {meshward.io/inject: "true", meshward.io/app-port: "80"}\n    spec:\n      serviceAccountName: web\n      initContainers:\n      volumes:\n      containers: [{name: web, image: web}]\n`;
    const result = await runCli(["inject", ...ARGS], { input });
    expect(result.stderr).not.toMatch(/\n\s+at /);
    expect(result.code).toBe(0);
    const spec = podSpecs(docsOf(result.stdout)[0]!)[0]!;
    expect(spec.initContainers.map((c: { name: string }) => c.name)).toEqual(["meshward"]);
    expect(spec.volumes.map((v: { name: string }) => v.name).sort()).toEqual(["meshward-token"]);
  });

  it("re-injecting after an annotation changed replaces the sidecar instead of adding a second one", () => {
    const once = injectManifest(readFileSync(join(FIXTURES, "multi.yaml"), "utf8"), OPTIONS).text;
    const twice = injectManifest(once.replace('meshward.io/app-port: "8080"', 'meshward.io/app-port: "8181"'), OPTIONS).text;
    const pod = docsOf(twice).find((d) => d.kind === "Pod") as Record<string, any>;
    expect(pod.spec.initContainers).toHaveLength(1);
    expect(pod.spec.volumes.filter((v: { name: string }) => v.name.startsWith("meshward-"))).toHaveLength(2);
    expect(pod.spec.initContainers[0].args).toContain("127.0.0.1:8181");
  });
});

describe("meshward inject: refusals are clear errors, never a stack trace", () => {
  const deployment = (annotations: Record<string, string>, spec = "") =>
    `apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata:\n      labels: {app: web}\n      annotations: ${JSON.stringify(annotations)}\n    spec:\n${spec}      containers: [{name: web, image: web}]\n`;
  const cases: [string, string, RegExp][] = [
    ["no app port", deployment({ "meshward.io/inject": "true" }), /meshward\.io\/app-port.*\[E_INJECT_ANNOTATION\]/s],
    ["a port that is not a number", deployment({ "meshward.io/inject": "true", "meshward.io/app-port": "80x" }), /must be a port number.*\[E_INJECT_ANNOTATION\]/s],
    ["the sidecar's own port", deployment({ "meshward.io/inject": "true", "meshward.io/app-port": "3501" }), /sidecar's own ports/],
    ["an unknown protocol", deployment({ "meshward.io/inject": "true", "meshward.io/app-port": "80", "meshward.io/protocol": "udp" }), /http or tcp/],
    ["inject neither true nor false", deployment({ "meshward.io/inject": "yes", "meshward.io/app-port": "80" }), /"true" or "false"/],
    ["an app id that differs from the ServiceAccount", deployment({ "meshward.io/inject": "true", "meshward.io/app-port": "80", "meshward.io/app-id": "web" }, "      serviceAccountName: other\n"), /\[E_INJECT_APP_ID_MISMATCH\]/],
    ["hostNetwork", deployment({ "meshward.io/inject": "true", "meshward.io/app-port": "80" }, "      hostNetwork: true\n"), /hostNetwork/],
    ["an app id that is not a DNS label", deployment({ "meshward.io/inject": "true", "meshward.io/app-port": "80", "meshward.io/app-id": "Web_1" }), /not a DNS label/],
    ["a mode that is neither strict nor permissive", deployment({ "meshward.io/inject": "true", "meshward.io/app-port": "80", "meshward.io/mode": "off" }), /strict or permissive/],
    ["an outbound allowed host with a scheme and port", deployment({ "meshward.io/inject": "true", "meshward.io/app-port": "80", "meshward.io/outbound-allowed-hosts": "api.shop.example, http://gw:8080" }), /outbound-allowed-hosts: "http:\/\/gw:8080": give a host name only.*\[E_INJECT_ANNOTATION\]/s],
    ["headers-with-underscores that is not an action", deployment({ "meshward.io/inject": "true", "meshward.io/app-port": "80", "meshward.io/headers-with-underscores": "ignore" }), /meshward\.io\/headers-with-underscores must be reject, drop or allow, got "ignore".*\[E_INJECT_ANNOTATION\]/s],
    ["escaped-slashes that is not an action", deployment({ "meshward.io/inject": "true", "meshward.io/app-port": "80", "meshward.io/escaped-slashes": "decode" }), /meshward\.io\/escaped-slashes must be reject, unescape or keep, got "decode".*\[E_INJECT_ANNOTATION\]/s],
    ["broken YAML", "kind: Deployment\nmetadata: {name: [\n", /\[E_INJECT_INVALID\]/],
  ];
  for (const [what, input, message] of cases) {
    it(what, async () => {
      const result = await runCli(["inject", ...ARGS], { input });
      expect(result.code).toBe(1);
      expect(result.stdout).toBe("");
      expect(result.stderr).toMatch(message);
      expect(result.stderr).not.toMatch(/\n\s+at /);
    });
  }

  it("names the sidecar uses, taken by the pod's own containers or volumes, are refused instead of replaced", async () => {
    const annotations = JSON.stringify({ "meshward.io/inject": "true", "meshward.io/app-port": "80" });
    const pod = (spec: string) =>
      `apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: shop\n  annotations: ${annotations}\nspec:\n  serviceAccountName: web\n${spec}`;
    const cases: [string, RegExp][] = [
      ["  containers: [{name: web, image: web}, {name: meshward, image: mine}]\n", /a container is already named "meshward".*\[E_INJECT_INVALID\]/s],
      ["  initContainers: [{name: meshward, image: mine}]\n  containers: [{name: web, image: web}]\n", /init container meshward.*\[E_INJECT_INVALID\]/s],
      ["  containers: [{name: web, image: web}]\n  volumes: [{name: meshward-token, emptyDir: {}}]\n", /volume meshward-token.*\[E_INJECT_INVALID\]/s],
    ];
    for (const [spec, message] of cases) {
      const result = await runCli(["inject", ...ARGS], { input: pod(spec) });
      expect(result.code).toBe(1);
      expect(result.stdout).toBe("");
      expect(result.stderr).toMatch(message);
      expect(result.stderr).not.toMatch(/\n\s+at /);
    }
    // The same pod without those names is injected.
    const ok = await runCli(["inject", ...ARGS], { input: pod("  containers: [{name: web, image: web}]\n") });
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/name: meshward\b/);
  });

  it("a container of the pod that mounts the sidecar's token volume is refused (only the sidecar may read the token)", async () => {
    const annotations = JSON.stringify({ "meshward.io/inject": "true", "meshward.io/app-port": "80" });
    const pod = (spec: string, extra = annotations) =>
      `apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: shop\n  annotations: ${extra}\nspec:\n  serviceAccountName: web\n${spec}`;
    const mount = "volumeMounts: [{name: meshward-token, mountPath: /token, readOnly: true}]";
    const cases: [string, RegExp][] = [
      [`  containers: [{name: web, image: web, ${mount}}]\n`, /container "web" mounts volume meshward-token, the sidecar's service-account token.*remove that volumeMount.*\[E_INJECT_INVALID\]/s],
      [`  initContainers: [{name: setup, image: setup, ${mount}}]\n  containers: [{name: web, image: web}]\n`, /init container "setup" mounts volume meshward-token.*\[E_INJECT_INVALID\]/s],
    ];
    for (const [spec, message] of cases) {
      const result = await runCli(["inject", ...ARGS], { input: pod(spec) });
      expect(result.code, result.stdout).toBe(1);
      expect(result.stdout).toBe("");
      expect(result.stderr).toMatch(message);
    }
    // An injected pod to which such a mount was added later is refused when injected again.
    const injected = await runCli(["inject", ...ARGS], { input: pod("  containers: [{name: web, image: web}]\n") });
    expect(injected.code, injected.stderr).toBe(0);
    const doc = docsOf(injected.stdout)[0] as Record<string, any>;
    doc.spec.containers[0].volumeMounts = [{ name: "meshward-token", mountPath: "/token" }];
    const again = await runCli(["inject", ...ARGS], { input: JSON.stringify(doc) });
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/container "web" mounts volume meshward-token.*\[E_INJECT_INVALID\]/s);
  });

  it("a trust anchors file that is not PEM is refused before anything is read", async () => {
    const result = await runCli(["inject", join(FIXTURES, "cronjob.yaml"), "--trust-anchors", join(FIXTURES, "cronjob.yaml")]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/\[E_BUNDLE_INVALID\]/);
  });
});
