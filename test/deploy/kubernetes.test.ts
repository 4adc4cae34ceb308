import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { parseAllDocuments, parse as parseYaml, stringify } from "yaml";
import { caConfigSchema } from "../../src/config/ca.ts";
import { parseYamlConfig } from "../../src/config/load.ts";
import { injectManifest } from "../../src/inject/manifest.ts";
import { validateK8sObjects } from "../helpers/k8s-schema.ts";

// deploy/kubernetes as an operator renders it: `kubectl kustomize` (Debian's kubectl, which
// renders offline) of each overlay and of the example app, then checked against the
// Kubernetes 1.34 OpenAPI schemas, the real CLI's flags and `meshward audit`.
const ROOT = new URL("../../", import.meta.url).pathname;
const K8S_DIR = join(ROOT, "deploy/kubernetes");
const BIN = join(ROOT, "bin/meshward.js");
const CLUSTER_SCOPED = new Set(["Namespace", "ClusterRoleBinding", "ClusterRole", "MutatingWebhookConfiguration"]);

type Doc = Record<string, any>;

function kustomize(dir: string): { text: string; docs: Doc[] } {
  const result = spawnSync("kubectl", ["kustomize", join(K8S_DIR, dir)], { encoding: "utf8", timeout: 60_000 });
  expect(result.status, result.stderr).toBe(0);
  const docs = parseAllDocuments(result.stdout).map((d) => {
    if (d.errors.length > 0) throw new Error(`${dir}: ${d.errors[0]?.message}`);
    return d.toJS() as Doc;
  });
  return { text: result.stdout, docs };
}

const rendered = { single: kustomize("overlays/single"), ha: kustomize("overlays/ha") };
const example = kustomize("examples/orders");
const anchors = readFileSync(join(ROOT, "test/inject/fixtures/trust-anchors.pem"), "utf8");
const injectedExample = injectManifest(example.text, { trustAnchors: anchors, image: "meshward:0.1.0", caAddress: "meshward-ca.meshward-system.svc:8443", audience: "meshward" }).text;

const find = (docs: Doc[], kind: string, name: string): Doc => {
  const doc = docs.find((d) => d.kind === kind && d.metadata?.name === name);
  if (doc === undefined) throw new Error(`no ${kind} ${name}`);
  return doc;
};
const container = (deployment: Doc, name: string): Doc => (deployment.spec.template.spec.containers as Doc[]).find((c) => c.name === name) as Doc;

/** The real CLI's --help text for a command. */
function help(args: string[]): string {
  const result = spawnSync(process.execPath, [BIN, ...args, "--help"], { encoding: "utf8", timeout: 30_000 });
  expect(result.status, result.stderr).toBe(0);
  return result.stdout;
}

const scratch = mkdtempSync(join(tmpdir(), "meshward-k8s-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe("deploy/kubernetes: kustomize overlays single and ha", () => {
  for (const [name, { docs }] of Object.entries(rendered)) {
    it(`${name}: renders, every object validates against the Kubernetes 1.34 schemas, namespaced objects name their namespace`, () => {
      expect(validateK8sObjects(docs)).toBe(docs.length);
      for (const doc of docs) {
        expect(doc.metadata?.name, `${doc.kind}`).toBeTruthy();
        if (!CLUSTER_SCOPED.has(doc.kind)) expect(doc.metadata?.namespace, `${doc.kind} ${doc.metadata?.name}`).toBe("meshward-system");
      }
      // both overlays run the injector with its webhook
      expect(find(docs, "MutatingWebhookConfiguration", "meshward-injector")).toBeDefined();
      expect(container(find(docs, "Deployment", "meshward-injector"), "injector").args[0]).toBe("injector");
    });
  }

  it("the schema check refuses a broken object (negative control)", () => {
    const broken = structuredClone(find(rendered.ha.docs, "Deployment", "meshward-ca"));
    broken.spec.replicas = "3";
    expect(() => validateK8sObjects([broken])).toThrow(/replicas must be integer/);
  });

  it("the CA's ca.yaml passes the real CA config schema and finds signing keys by OIDC discovery (no JWKS ConfigMap)", () => {
    const text = find(rendered.single.docs, "ConfigMap", "meshward-ca-config").data["ca.yaml"] as string;
    const config = parseYamlConfig(text, caConfigSchema, "ca.yaml");
    expect(config.listen).toBe("0.0.0.0:8443");
    expect(config.jwks?.kubernetes?.apiServer).toBe("https://kubernetes.default.svc");
    expect(config.jwks?.jwksFile).toBeUndefined();
    expect(config.dnsNames).toContain("meshward-ca.meshward-system.svc");
    for (const { docs } of Object.values(rendered)) expect(docs.some((d) => d.kind === "ConfigMap" && /jwks/.test(d.metadata.name))).toBe(false);
    // The CA's token for discovery: the API server audience, the cluster CA, and the built-in role.
    const ca = find(rendered.single.docs, "Deployment", "meshward-ca");
    const access = (ca.spec.template.spec.volumes as Doc[]).find((v) => v.name === "kube-api-access") as Doc;
    expect(access.projected.sources[0].serviceAccountToken.audience).toBeUndefined();
    expect(find(rendered.single.docs, "ClusterRoleBinding", "meshward-ca-issuer-discovery").roleRef.name).toBe("system:service-account-issuer-discovery");
  });

  it("single: one replica, Recreate, the CA directory and SQLite on a ReadWriteOnce volume, filled from a Secret", () => {
    const ca = find(rendered.single.docs, "Deployment", "meshward-ca");
    expect(ca.spec.replicas).toBe(1);
    expect(ca.spec.strategy.type).toBe("Recreate");
    expect(container(ca, "ca").args).toEqual(expect.arrayContaining(["--dir", "/var/lib/meshward/ca", "--store", "sqlite:/var/lib/meshward/ca/ca.db"]));
    expect(find(rendered.single.docs, "PersistentVolumeClaim", "meshward-ca-data").spec.accessModes).toEqual(["ReadWriteOnce"]);
    const init = ca.spec.template.spec.initContainers[0] as Doc;
    expect(init.command.join(" ")).toMatch(/install -m 0600/);
    // The CA directory must be writable by the CA's user only (E_CA_DIR_UNSAFE): created 0700, and
    // the kubelet must not make it group-writable at every start (fsGroup applied to the root only).
    expect(init.command.join(" ")).toMatch(/mkdir -p -m 0700 \/var\/lib\/meshward\/ca/);
    expect(ca.spec.template.spec.securityContext.fsGroupChangePolicy).toBe("OnRootMismatch");
  });

  it("ha: 3 replicas, store URL from a Secret, CA directory from a Secret, PDB, anti-affinity, NetworkPolicy", () => {
    const docs = rendered.ha.docs;
    const ca = find(docs, "Deployment", "meshward-ca");
    expect(ca.spec.replicas).toBe(3);
    const args = container(ca, "ca").args as string[];
    expect(args.slice(args.indexOf("--store"), args.indexOf("--store") + 2)).toEqual(["--store", "$(MESHWARD_STORE_URL)"]);
    expect(args.slice(args.indexOf("--dir"), args.indexOf("--dir") + 2)).toEqual(["--dir", "/etc/meshward/ca"]);
    const env = container(ca, "ca").env as Doc[];
    expect(env.find((e) => e.name === "MESHWARD_STORE_URL")?.valueFrom.secretKeyRef).toEqual({ name: "meshward-ca-store", key: "url" });
    const volume = (ca.spec.template.spec.volumes as Doc[]).find((v) => v.name === "ca-dir") as Doc;
    expect(volume.secret.secretName).toBe("meshward-ca-dir");
    expect((container(ca, "ca").volumeMounts as Doc[]).find((m) => m.name === "ca-dir")).toMatchObject({ mountPath: "/etc/meshward/ca", readOnly: true });
    // The store's CA (review k8s2, MEDIUM-1: with verify-full and nowhere to put sslrootcert, the
    // replicas trusted public roots only and stopped at start against an in-cluster PostgreSQL).
    const storeCa = (ca.spec.template.spec.volumes as Doc[]).find((v) => v.name === "store-ca") as Doc;
    expect(storeCa.secret).toMatchObject({ secretName: "meshward-ca-store", items: [{ key: "ca.crt", path: "ca.crt" }], optional: true });
    const storeMount = (container(ca, "ca").volumeMounts as Doc[]).find((m) => m.name === "store-ca") as Doc;
    expect(storeMount).toMatchObject({ readOnly: true });
    // The URL the docs and the overlay's comment give names that file.
    const guide = readFileSync(join(ROOT, "docs/kubernetes.md"), "utf8");
    const urls = [...guide.matchAll(/url='(postgres:\/\/[^']+)'/g), ...readFileSync(join(K8S_DIR, "overlays/ha/kustomization.yaml"), "utf8").matchAll(/key url: (postgres:\/\/\S+)/g)].map((m) => new URL(m[1]!));
    expect(urls).toHaveLength(2);
    for (const url of urls) {
      expect(url.searchParams.get("sslmode")).toBe("verify-full");
      expect(url.searchParams.get("sslrootcert")).toBe(`${storeMount.mountPath}/ca.crt`);
    }
    expect(guide).toContain("--from-file=ca.crt=");
    expect(find(docs, "PodDisruptionBudget", "meshward-ca").spec.minAvailable).toBe(2);
    expect(ca.spec.template.spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey).toBe("kubernetes.io/hostname");
    expect(find(docs, "NetworkPolicy", "default-deny").spec.policyTypes).toEqual(["Ingress", "Egress"]);
    expect(find(docs, "Deployment", "meshward-injector").spec.replicas).toBe(2);
  });

  // The API server's own port, not the Service's 443: NetworkPolicies match after the
  // `kubernetes` Service is translated to its endpoint (kubeadm/kind/k3s 6443, minikube 8443,
  // managed clusters 443). A port missing here fails OIDC discovery and the caBundle silently.
  const apiServerRule = (policy: Doc): Doc => {
    const rules = (policy.spec.egress as Doc[]).filter((r) => r.to === undefined && (r.ports as Doc[]).some((p) => p.port === 443));
    expect(rules, policy.metadata.name).toHaveLength(1);
    return rules[0]!;
  };
  const tcpPorts = (rule: Doc): number[] => (rule.ports as Doc[]).filter((p) => p.protocol === "TCP").map((p) => p.port as number);

  it("ha: the CA and the injector may reach the API server on 443, 6443 and 8443 (minikube)", () => {
    for (const name of ["meshward-ca", "meshward-injector"]) {
      expect(tcpPorts(apiServerRule(find(rendered.ha.docs, "NetworkPolicy", name))), name).toEqual(expect.arrayContaining([443, 6443, 8443]));
    }
  });

  it("ha: docs/kubernetes.md's command finds the API server's port and its overlay adds that port to both policies' API server rule", () => {
    const guide = readFileSync(join(ROOT, "docs/kubernetes.md"), "utf8");
    expect(guide).toContain("kubectl get endpoints kubernetes -n default -o jsonpath='{.subsets[*].ports[*].port}'");
    const block = /<!-- api-server-port-overlay -->\n```yaml\n([^`]+)```/.exec(guide)?.[1];
    expect(block).toBeDefined();
    // The documented overlay, with its resources pointing at this checkout's overlays/ha.
    const overlay = parseYaml(block!) as Doc;
    expect(overlay.resources).toHaveLength(1);
    const dir = mkdtempSync(join(scratch, "overlay-"));
    overlay.resources = [relative(dir, join(K8S_DIR, "overlays/ha"))]; // kustomize refuses absolute roots
    writeFileSync(join(dir, "kustomization.yaml"), stringify(overlay));
    const result = spawnSync("kubectl", ["kustomize", dir], { encoding: "utf8", timeout: 60_000 });
    expect(result.status, result.stderr).toBe(0);
    const docs = parseAllDocuments(result.stdout).map((d) => d.toJS() as Doc);
    expect(validateK8sObjects(docs)).toBe(docs.length);
    for (const name of ["meshward-ca", "meshward-injector"]) {
      const policy = find(docs, "NetworkPolicy", name);
      expect(tcpPorts(apiServerRule(policy)), name).toEqual(expect.arrayContaining([443, 6443, 8443, 16443]));
      // only that rule changed: the others are as the ha overlay renders them
      const before = find(rendered.ha.docs, "NetworkPolicy", name).spec.egress as Doc[];
      const after = policy.spec.egress as Doc[];
      expect(after).toHaveLength(before.length);
      for (const [i, rule] of after.entries()) if (rule !== apiServerRule(policy)) expect(rule, `${name} egress[${i}]`).toEqual(before[i]);
    }
  });

  it("the webhook: AdmissionReview v1, failurePolicy Fail, opted-in namespaces only, never its own namespace", () => {
    const webhook = find(rendered.single.docs, "MutatingWebhookConfiguration", "meshward-injector").webhooks[0] as Doc;
    expect(webhook.admissionReviewVersions).toEqual(["v1"]);
    expect(webhook.failurePolicy).toBe("Fail");
    expect(webhook.sideEffects).toBe("None");
    expect(webhook.clientConfig.service).toEqual({ name: "meshward-injector", namespace: "meshward-system", path: "/mutate", port: 443 });
    const excluded = (webhook.namespaceSelector.matchExpressions as Doc[]).find((e) => e.key === "kubernetes.io/metadata.name") as Doc;
    expect(excluded.operator).toBe("NotIn");
    expect(excluded.values).toContain("meshward-system");
    const injector = container(find(rendered.single.docs, "Deployment", "meshward-injector"), "injector");
    expect(injector.args).toEqual(expect.arrayContaining(["--namespace", "$(POD_NAMESPACE)"]));
    expect((injector.env as Doc[])[0]?.valueFrom.fieldRef.fieldPath).toBe("metadata.namespace");
    // It keeps this webhook's caBundle current, with rights on that one object only.
    const args = injector.args as string[];
    expect(args[args.indexOf("--webhook-config") + 1]).toBe("meshward-injector");
    const role = find(rendered.single.docs, "ClusterRole", "meshward-injector");
    expect(role.rules).toEqual([{ apiGroups: ["admissionregistration.k8s.io"], resources: ["mutatingwebhookconfigurations"], resourceNames: ["meshward-injector"], verbs: ["get", "patch"] }]);
    expect(find(rendered.single.docs, "ClusterRoleBinding", "meshward-injector").subjects).toEqual([{ kind: "ServiceAccount", name: "meshward-injector", namespace: "meshward-system" }]);
  });

  // kubectl debug adds ephemeral containers through pods/ephemeralcontainers (UPDATE); the
  // injector must see them to refuse one that mounts the sidecar's token (webhook-ephemeral.test.ts).
  // kubectl set image changes a running pod's images, the sidecar's too (a pods UPDATE): the second
  // webhook sends those of injected pods to the injector (webhook-pod-update.test.ts).
  for (const [name, { docs }] of Object.entries(rendered)) {
    it(`${name}: the webhook also receives UPDATE of pods/ephemeralcontainers, under the same failurePolicy and namespaceSelector`, () => {
      const config = find(docs, "MutatingWebhookConfiguration", "meshward-injector");
      expect(validateK8sObjects([config])).toBe(1);
      expect(config.webhooks).toHaveLength(2);
      const webhook = config.webhooks[0] as Doc;
      expect(webhook.rules).toEqual([
        { operations: ["CREATE"], apiGroups: [""], apiVersions: ["v1"], resources: ["pods"], scope: "Namespaced" },
        { operations: ["UPDATE"], apiGroups: [""], apiVersions: ["v1"], resources: ["pods/ephemeralcontainers"], scope: "Namespaced" },
      ]);
      expect(webhook.failurePolicy).toBe("Fail");
      expect(webhook.matchPolicy).toBe("Equivalent");
      expect(webhook.matchConditions).toBeUndefined();
    });

    it(`${name}: a second webhook receives UPDATE of pods (kubectl set image) only for pods stored with the sidecar whose sidecar or token differs, same service, failurePolicy and namespaceSelector`, () => {
      const config = find(docs, "MutatingWebhookConfiguration", "meshward-injector");
      const [create, guard] = config.webhooks as [Doc, Doc];
      expect(guard.name).toBe("sidecar-guard.meshward.io");
      expect(guard.rules).toEqual([{ operations: ["UPDATE"], apiGroups: [""], apiVersions: ["v1"], resources: ["pods"], scope: "Namespaced" }]);
      for (const key of ["admissionReviewVersions", "sideEffects", "failurePolicy", "matchPolicy", "reinvocationPolicy", "timeoutSeconds", "clientConfig", "namespaceSelector"]) expect(guard[key], key).toEqual(create[key]);
      expect(guard.failurePolicy).toBe("Fail");
      // The conditions read the stored pod (oldObject): the injected mark or the sidecar init container,
      // and compare the sidecar and the token volume with the update; every field they read is guarded by has().
      const conditions = guard.matchConditions as { name: string; expression: string }[];
      expect(conditions.map((condition) => condition.name)).toEqual(["stored-pod-has-sidecar", "sidecar-or-token-differs"]);
      const [stored, differs] = conditions.map((condition) => condition.expression);
      expect(stored).toMatch(/oldObject\.metadata\.annotations\['meshward\.io\/injected'\] == 'true'/);
      expect(stored).toMatch(/oldObject\.spec\.initContainers\.exists\(c, c\.name == 'meshward'\)/);
      expect(stored).not.toMatch(/(^|[^d])object\./);
      for (const name of ["initContainers", "volumes", "ephemeralContainers", "containers"]) expect(differs, name).toContain(`has(object.spec.${name})`);
      expect(differs).toContain("m.name == 'meshward-token'");
      for (const expression of [stored!, differs!]) {
        for (const match of expression.matchAll(/\b(old)?[oO]bject\.(metadata\.annotations|spec\.\w+)/g)) expect(expression, match[0]).toContain(`has(${match[0]})`);
      }
    });
  }

  it("every flag the manifests pass exists in the CLI's --help (ca serve, injector, the injected sidecar)", () => {
    const sidecar = (parseAllDocuments(injectedExample).map((d) => d.toJS() as Doc).find((d) => d.kind === "Deployment") as Doc).spec.template.spec.initContainers[0] as Doc;
    const cases: [string[], string[]][] = [
      [container(find(rendered.ha.docs, "Deployment", "meshward-ca"), "ca").args, ["ca", "serve"]],
      [container(find(rendered.single.docs, "Deployment", "meshward-ca"), "ca").args, ["ca", "serve"]],
      [container(find(rendered.single.docs, "Deployment", "meshward-injector"), "injector").args, ["injector"]],
      [sidecar.args, ["sidecar"]],
    ];
    for (const [args, command] of cases) {
      expect(args.slice(0, command.length)).toEqual(command);
      const text = help(command);
      const flags = args.filter((a) => a.startsWith("--"));
      expect(flags.length).toBeGreaterThan(2);
      for (const flag of flags) expect(text, `${command.join(" ")} ${flag}`).toMatch(new RegExp(`(^|[\\s,])${flag}[\\s<]`, "m"));
    }
    // negative control: a made-up flag is not found by the same check
    expect(help(["ca", "serve"])).not.toMatch(/(^|[\s,])--no-such-flag[\s<]/m);
  });

  it("docs/kubernetes.md's sidecar command line has the flags the injector writes (review k8s2, LOW-1)", () => {
    const sidecar = (parseAllDocuments(injectedExample).map((d) => d.toJS() as Doc).find((d) => d.kind === "Deployment") as Doc).spec.template.spec.initContainers[0] as Doc;
    const line = /\*\*What the sidecar gets:\*\* the command line\n`(meshward sidecar [^`]+)`/.exec(readFileSync(join(ROOT, "docs/kubernetes.md"), "utf8"))?.[1];
    expect(line).toBeDefined();
    const documented = new Set(line!.split(" ").filter((word) => /^\[?--/.test(word)).map((word) => word.replace(/^\[/, "")));
    const injected = new Set((sidecar.args as string[]).filter((a) => a.startsWith("--")));
    for (const flag of injected) expect(documented, flag).toContain(flag);
    // What the example's annotations leave out is documented as optional ([--flag …]).
    const optional = [...documented].filter((flag) => !injected.has(flag));
    for (const flag of optional) expect(line).toContain(`[${flag} `);
  });

  it("meshward audit of the rendered overlays and the injected example reports nothing of medium or higher severity", () => {
    const files = [
      ["single.yaml", rendered.single.text],
      ["ha.yaml", rendered.ha.text],
      ["orders.yaml", injectedExample],
    ].map(([name, text]) => {
      const file = join(scratch, name as string);
      writeFileSync(file, text as string);
      return file;
    });
    const result = spawnSync(process.execPath, [BIN, "audit", ...files, "--format", "json", "--fail-on", "medium"], { encoding: "utf8", timeout: 60_000 });
    expect(result.status, result.stdout + result.stderr).toBe(0);
    const report = JSON.parse(result.stdout) as { findings: { severity: string; ruleId?: string }[] };
    expect(report.findings.filter((f) => f.severity !== "low")).toEqual([]);
    // negative control: the same command does fail on a manifest with a medium finding
    const bad = join(scratch, "bad.yaml");
    writeFileSync(bad, `${rendered.single.text}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x, namespace: shop}\nspec:\n  selector: {matchLabels: {app: x}}\n  template:\n    metadata:\n      labels: {app: x}\n      annotations: {dapr.io/enabled: "true", dapr.io/app-id: x, dapr.io/sidecar-listen-addresses: 0.0.0.0}\n    spec:\n      containers: [{name: x, image: x}]\n`);
    expect(spawnSync(process.execPath, [BIN, "audit", bad, "--fail-on", "medium"], { encoding: "utf8", timeout: 60_000 }).status).toBe(1);
  });
});

/** `kubectl kustomize` of a kustomization written to a scratch directory (paths relative to deploy/kubernetes). */
function kustomizeWith(kustomization: Doc): Doc[] {
  const dir = mkdtempSync(join(scratch, "with-"));
  const rebase = (path: string) => relative(dir, join(K8S_DIR, path)); // kustomize refuses absolute roots
  writeFileSync(join(dir, "kustomization.yaml"), stringify({ ...kustomization, resources: (kustomization.resources as string[]).map(rebase), ...(kustomization.components ? { components: (kustomization.components as string[]).map(rebase) } : {}) }));
  const result = spawnSync("kubectl", ["kustomize", dir], { encoding: "utf8", timeout: 60_000 });
  expect(result.status, result.stderr).toBe(0);
  return parseAllDocuments(result.stdout).map((d) => d.toJS() as Doc);
}

describe("deploy/kubernetes/components/dapr-trust-bundle (optional: the CA keeps Dapr's dapr-trust-bundle ConfigMap)", () => {
  const withComponent = {
    single: kustomizeWith({ resources: ["overlays/single"], components: ["components/dapr-trust-bundle"] }),
    ha: kustomizeWith({ resources: ["overlays/ha"], components: ["components/dapr-trust-bundle"] }),
  };

  it("is not in the overlays themselves: without it nothing refers to Dapr's namespace (Dapr may not be installed)", () => {
    for (const [name, { docs, text }] of Object.entries(rendered)) {
      expect(docs.filter((d) => d.metadata?.namespace === "dapr-system"), name).toEqual([]);
      expect(text, name).not.toContain("--dapr-trust-bundle-namespace");
    }
  });

  for (const [name, docs] of Object.entries(withComponent)) {
    it(`${name} + component: validates; a Role in dapr-system limited to get/update of configmaps/dapr-trust-bundle plus create, bound to the CA's ServiceAccount; the CA gets the flag`, () => {
      expect(validateK8sObjects(docs)).toBe(docs.length);
      // Only the Role and RoleBinding are added; everything else renders as the overlay does.
      const added = docs.filter((d) => !rendered[name as "single" | "ha"].docs.some((o) => o.kind === d.kind && o.metadata?.name === d.metadata?.name));
      expect(added.map((d) => `${d.kind} ${d.metadata.namespace}/${d.metadata.name}`).sort()).toEqual(["Role dapr-system/meshward-ca-dapr-trust-bundle", "RoleBinding dapr-system/meshward-ca-dapr-trust-bundle"]);
      expect(docs.some((d) => d.kind === "ClusterRole" && /dapr/.test(d.metadata.name))).toBe(false);
      const role = find(docs, "Role", "meshward-ca-dapr-trust-bundle");
      expect(role.rules).toEqual([
        { apiGroups: [""], resources: ["configmaps"], resourceNames: ["dapr-trust-bundle"], verbs: ["get", "update"] },
        { apiGroups: [""], resources: ["configmaps"], verbs: ["create"] },
      ]);
      expect(role.metadata.labels).toEqual({ "app.kubernetes.io/part-of": "meshward" });
      const binding = find(docs, "RoleBinding", "meshward-ca-dapr-trust-bundle");
      expect(binding.roleRef).toEqual({ apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: role.metadata.name });
      const account = find(docs, "ServiceAccount", "meshward-ca");
      const ca = find(docs, "Deployment", "meshward-ca");
      expect(ca.spec.template.spec.serviceAccountName).toBe(account.metadata.name);
      expect(binding.subjects).toEqual([{ kind: "ServiceAccount", name: account.metadata.name, namespace: account.metadata.namespace }]);
      const args = container(ca, "ca").args as string[];
      expect(args.slice(args.indexOf("--dapr-trust-bundle-namespace"), args.indexOf("--dapr-trust-bundle-namespace") + 2)).toEqual(["--dapr-trust-bundle-namespace", "$(MESHWARD_DAPR_NAMESPACE)"]);
      expect((container(ca, "ca").env as Doc[]).find((e) => e.name === "MESHWARD_DAPR_NAMESPACE")?.value).toBe(role.metadata.namespace);
      // The rest of the CA's args are the overlay's, and the flag is the CLI's.
      expect(args.filter((a) => a !== "--dapr-trust-bundle-namespace" && a !== "$(MESHWARD_DAPR_NAMESPACE)")).toEqual(container(find(rendered[name as "single" | "ha"].docs, "Deployment", "meshward-ca"), "ca").args);
      // The token and CA file the CA reads by default are mounted (daprTrustBundle.tokenFile, caFile).
      expect((container(ca, "ca").volumeMounts as Doc[]).find((m) => m.name === "kube-api-access")?.mountPath).toBe("/var/run/secrets/kubernetes.io/serviceaccount");
    });
  }

  it("the flag it passes is in 'ca serve --help'; the rbac comment says why create is not limited by name", () => {
    expect(help(["ca", "serve"])).toMatch(/(^|[\s,])--dapr-trust-bundle-namespace[\s<]/m);
    const rbac = readFileSync(join(K8S_DIR, "components/dapr-trust-bundle/rbac.yaml"), "utf8");
    expect(rbac).toMatch(/create cannot be limited by resourceNames/);
  });

  it("docs/kubernetes.md's kustomization for another Dapr namespace moves the Role, the RoleBinding and the CA's setting together", () => {
    const guide = readFileSync(join(ROOT, "docs/kubernetes.md"), "utf8");
    const block = /<!-- dapr-namespace-overlay -->\n```yaml\n([^`]+)```/.exec(guide)?.[1];
    expect(block).toBeDefined();
    const documented = parseYaml(block!) as Doc;
    // Its resources and components point at a checkout (../meshward/deploy/kubernetes/…): rebased onto this one.
    const strip = (path: string) => path.replace(/^.*deploy\/kubernetes\//, "");
    const docs = kustomizeWith({ ...documented, resources: (documented.resources as string[]).map(strip), components: (documented.components as string[]).map(strip) });
    expect(validateK8sObjects(docs)).toBe(docs.length);
    expect(find(docs, "Role", "meshward-ca-dapr-trust-bundle").metadata.namespace).toBe("dapr");
    expect(find(docs, "RoleBinding", "meshward-ca-dapr-trust-bundle").metadata.namespace).toBe("dapr");
    expect((container(find(docs, "Deployment", "meshward-ca"), "ca").env as Doc[]).filter((e) => e.name === "MESHWARD_DAPR_NAMESPACE").map((e) => e.value)).toEqual(["dapr"]);
    expect(docs.filter((d) => d.metadata?.namespace === "dapr-system")).toEqual([]);
  });
});

describe("deploy/kubernetes/examples/orders", () => {
  const docs = parseAllDocuments(injectedExample).map((d) => d.toJS() as Doc);

  it("has its Namespace (opted in to injection), an access policy, and validates once injected", () => {
    const namespace = find(docs, "Namespace", "shop");
    expect(namespace.metadata.labels["meshward.io/injection"]).toBe("enabled");
    expect(find(docs, "ConfigMap", "orders-policy").data["config.yaml"]).toMatch(/defaultAction: deny/);
    expect(validateK8sObjects(docs)).toBe(docs.length);
  });

  it("its injected sidecar needs no status token (status page off), loads the policy, and pods keep the meshward.io/mode label", () => {
    const deployment = find(docs, "Deployment", "orders");
    const args = deployment.spec.template.spec.initContainers[0].args as string[];
    expect(args).toEqual(expect.arrayContaining(["--status", "0.0.0.0:9090", "--no-status-page", "--policy", "/etc/meshward/policy/config.yaml"]));
    expect(deployment.spec.template.metadata.labels["meshward.io/mode"]).toBe("strict");
  });

  it("the example scrape config passes promtool check config and keeps the injected sidecar's status port", () => {
    const scrape = parseYaml(readFileSync(join(ROOT, "deploy/prometheus/scrape-config.example.yaml"), "utf8")) as { scrape_configs: Record<string, unknown>[] };
    const alerts = readFileSync(join(ROOT, "deploy/prometheus/alerts.yaml"), "utf8");
    const sidecarJob = scrape.scrape_configs.find((j) => j.job_name === "meshward-sidecar") as { relabel_configs: { target_label?: string; replacement?: string; regex?: string; action?: string }[] };
    const modeRule = sidecarJob.relabel_configs.find((r) => r.target_label === "meshward_mode");
    expect(modeRule?.replacement).toBe("permissive");
    const keep = sidecarJob.relabel_configs.find((r) => r.action === "keep");
    const statusPort = (find(docs, "Deployment", "orders").spec.template.spec.initContainers[0].ports as Doc[]).find((p) => p.containerPort === 9090) as Doc;
    expect(keep?.regex).toBe(statusPort.name);
    expect(alerts).toContain('meshward_mode!="permissive"');
    expect(alerts).toContain('job=~"meshward-ca.*"');
    expect(scrape.scrape_configs.some((j) => String(j.job_name).startsWith("meshward-ca"))).toBe(true);
    // The injector job keeps the injector Deployment's webhook port, by its pod label and port name.
    expect(alerts).toContain('job=~"meshward-injector.*"');
    const injectorJob = scrape.scrape_configs.find((j) => String(j.job_name).startsWith("meshward-injector")) as { relabel_configs: { regex?: string; action?: string }[]; tls_config: { server_name: string } };
    const injector = find(rendered.single.docs, "Deployment", "meshward-injector");
    const webhookPort = (injector.spec.template.spec.containers[0].ports as Doc[])[0] as Doc;
    expect(injectorJob.relabel_configs.find((r) => r.action === "keep")?.regex).toBe(`${injector.spec.template.metadata.labels["app.kubernetes.io/name"]};${webhookPort.name}`);
    expect(injectorJob.tls_config.server_name).toBe(`${find(rendered.single.docs, "Service", "meshward-injector").metadata.name}.meshward-system.svc`);
    // The CA job keeps every CA replica's API port the same way (review: through the Service a
    // scrape reached one replica of three, and a replica that was down went unnoticed).
    const caJob = scrape.scrape_configs.find((j) => String(j.job_name).startsWith("meshward-ca")) as { relabel_configs?: { regex?: string; action?: string }[]; kubernetes_sd_configs?: { role: string }[]; static_configs?: unknown };
    expect(caJob.static_configs).toBeUndefined();
    expect(caJob.kubernetes_sd_configs?.map((sd) => sd.role)).toEqual(["pod"]);
    for (const overlay of ["single", "ha"] as const) {
      const ca = find(rendered[overlay].docs, "Deployment", "meshward-ca");
      const apiPort = (ca.spec.template.spec.containers[0].ports as Doc[]).find((p) => p.containerPort === 8443) as Doc;
      expect(caJob.relabel_configs?.find((r) => r.action === "keep")?.regex, overlay).toBe(`${ca.spec.template.metadata.labels["app.kubernetes.io/name"]};${apiPort.name}`);
    }

    // Debian's promtool is built without Kubernetes service discovery, so that one block is
    // swapped for a static target; the relabelling, TLS settings and rule file are checked as written.
    const caFile = join(scratch, "bundle.pem");
    writeFileSync(caFile, "");
    const checked = structuredClone(scrape) as { scrape_configs: Record<string, unknown>[]; rule_files?: string[] };
    for (const job of checked.scrape_configs) {
      if (job.kubernetes_sd_configs) {
        delete job.kubernetes_sd_configs;
        job.static_configs = [{ targets: ["127.0.0.1:9090"] }];
      }
      const tls = job.tls_config as { ca_file?: string } | undefined;
      if (tls?.ca_file) tls.ca_file = caFile;
    }
    checked.rule_files = [join(ROOT, "deploy/prometheus/alerts.yaml")];
    const config = join(scratch, "prometheus.yml");
    writeFileSync(config, stringify(checked));
    const result = spawnSync("promtool", ["check", "config", config], { encoding: "utf8", timeout: 30_000 });
    expect(result.stdout + result.stderr).toContain("SUCCESS");
    expect(result.status, result.stdout + result.stderr).toBe(0);
  });
});
