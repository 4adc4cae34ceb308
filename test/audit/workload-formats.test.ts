import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { auditPaths, auditSources, loadSources } from "../../src/audit/audit.ts";
import { collectPosture, compareEnvironments, driftPaths } from "../../src/audit/drift.ts";
import { renderText } from "../../src/audit/reporters/text.ts";

// Workload formats whose pod templates the audit reads besides the core kinds: Argo Rollouts,
// Knative Serving, OpenShift DeploymentConfig, Azure Container Apps (az containerapp --yaml).
const FIXTURES = join(import.meta.dirname, "fixtures");
const BAD = join(FIXTURES, "workload-formats");
const CLEAN = join(FIXTURES, "workload-formats-clean");

function findingsOf(file: string): string[] {
  return auditPaths([join(BAD, file)]).findings.map((finding) => `${finding.ruleId}@${finding.line}:${finding.column}`);
}

describe("workload formats: the container/env and Dapr annotation rules see their pod templates", () => {
  it("Argo Rollout: spec.template like a Deployment; a workloadRef's Deployment is audited as itself", () => {
    expect(findingsOf("rollout.yaml")).toEqual([
      "MW-K8S-002@22:9", // dapr.io/enabled, no API token
      "MW-K8S-001@25:9", // sidecar-listen-addresses 0.0.0.0
      "MW-SECRET-005@32:15", // password in ORDERS_DB_URL
      "MW-TLS-002@32:15", // sslmode=disable
      "MW-TLS-008@75:15", // the referenced Deployment's mongodb:// without TLS
    ]);
  });

  it("Knative Service (serving.knative.dev): revision template annotations and env; a core v1 Service is not a workload", () => {
    expect(findingsOf("knative-service.yaml")).toEqual(["MW-K8S-002@12:9", "MW-K8S-008@15:9", "MW-SECRET-005@22:15", "MW-TLS-007@22:15"]);
    const result = auditPaths([join(BAD, "knative-service.yaml")]);
    expect(result.unknownKinds).toEqual({ "v1/Service": 1 });
  });

  it("OpenShift DeploymentConfig", () => {
    expect(findingsOf("deploymentconfig.yaml")).toEqual(["MW-SECRET-005@21:15"]);
  });

  it("Azure Container App: ingress allowInsecure, inline secret value, container env (secretRef is not inline)", () => {
    const result = auditPaths([join(BAD, "containerapp.yaml")]);
    expect(result.findings.map((finding) => `${finding.ruleId}@${finding.line}:${finding.column}:${finding.severity}`)).toEqual([
      "MW-TLS-015@13:7:high", // allowInsecure: true on an external ingress
      "MW-SECRET-008@16:9:medium", // orders-db-password value (the keyVaultUrl one is not reported)
      "MW-SECRET-005@33:13:high", // Password= in ORDERS_DB
      "MW-TLS-014@33:13:high", // Encrypt=false
    ]);
    expect(result.unknownKinds).toEqual({});
  });

  it("an internal Container App ingress with allowInsecure is medium; a placeholder secret value is not reported", () => {
    const text = "name: orders\nproperties:\n  configuration:\n    ingress:\n      external: false\n      allowInsecure: true\n    secrets:\n      - name: db\n        value: <DB-PASSWORD>\n  template:\n    containers:\n      - name: orders\n        image: orders:1\n";
    const result = auditSources([{ file: "orders.yaml", text }]);
    expect(result.findings.map((finding) => `${finding.ruleId}@${finding.line}:${finding.severity}`)).toEqual(["MW-TLS-015@6:medium"]);
  });

  it("the secure form of every format yields no finding and no unknown kind", () => {
    const result = auditPaths([CLEAN]);
    expect(result.findings).toEqual([]);
    expect(result.unknownKinds).toEqual({});
    expect(result.resourcesAudited).toBe(4);
  });
});

describe("what is not read is said", () => {
  it("a Rollout whose workloadRef names a Deployment not among the files is reported with where it is", () => {
    const result = auditPaths([join(BAD, "rollout.yaml")]);
    const label = "argoproj.io/v1alpha1/Rollout search (workloadRef Deployment search not among the files: pod template not read)";
    expect(result.unknownKinds).toEqual({ [label]: 1 });
    expect(renderText(result, { color: false })).toContain(`${label} ×1 (in ${join(BAD, "rollout.yaml")})`);
  });

  it("an unknown kind is listed with the file it is in", () => {
    const result = auditSources([{ file: "deploy/workflow.yaml", text: "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata:\n  name: nightly\nspec:\n  entrypoint: main\n" }]);
    expect(result.unknownKinds).toEqual({ "argoproj.io/v1alpha1/Workflow": 1 });
    expect(renderText(result, { color: false })).toContain("Unknown kinds skipped:\n  argoproj.io/v1alpha1/Workflow ×1 (in deploy/workflow.yaml)\n");
  });

  it("several unknown kinds: one a line under a heading, not one long line (review newuser2 L5)", () => {
    const kinds = ["policy/v1/PodDisruptionBudget", "networking.k8s.io/v1/NetworkPolicy", "rbac.authorization.k8s.io/v1/ClusterRole"];
    const result = auditSources(kinds.map((kind, index) => {
      const slash = kind.lastIndexOf("/");
      return { file: `deploy/extra-${index}.yaml`, text: `apiVersion: ${kind.slice(0, slash)}\nkind: ${kind.slice(slash + 1)}\nmetadata:\n  name: x\n` };
    }));
    const text = renderText(result, { color: false });
    expect(text).toContain("Unknown kinds skipped:\n  networking.k8s.io/v1/NetworkPolicy ×1 (in deploy/extra-1.yaml)\n  policy/v1/PodDisruptionBudget ×1 (in deploy/extra-0.yaml)\n  rbac.authorization.k8s.io/v1/ClusterRole ×1 (in deploy/extra-2.yaml)\n");
    expect(text.split("\n")[0]).toBe("Unknown kinds skipped:");
  });
});

describe("drift sees these formats as workloads", () => {
  it("a Dapr-enabled Rollout and Knative Service, and a Container App's ingress, are compared", () => {
    const staging = collectPosture(loadSources([
      { file: "staging/rollout.yaml", text: rollout("0.0.0.0") },
      { file: "staging/app.yaml", text: containerApp(true) },
    ]).corpus, "staging");
    const production = collectPosture(loadSources([
      { file: "production/rollout.yaml", text: rollout("127.0.0.1") },
      { file: "production/app.yaml", text: containerApp(false) },
    ]).corpus, "production");
    const report = compareEnvironments([{ name: "staging", posture: staging }, { name: "production", posture: production }]);
    const rows = report.rows.map((row) => `${row.aspect} | ${row.subject} | ${row.values.join(" / ")} | ${row.status}`);
    expect(rows).toContain("sidecar listen | Rollout checkout | 0.0.0.0 / 127.0.0.1 | weaker");
    expect(rows).toContain("ingress HTTP | ContainerApp orders | served (allowInsecure) / redirected to HTTPS | weaker");
  });

  it("drift between two folders of Knative Services", () => {
    const report = driftPaths([join(BAD), join(CLEAN)], undefined, { reference: CLEAN });
    const row = report.rows.find((each) => each.subject === "Knative Service thumbnailer" && each.aspect === "Dapr API token");
    expect(row?.values).toEqual(["none", null]);
  });
});

function rollout(listen: string): string {
  return `apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata:
  name: checkout
spec:
  template:
    metadata:
      annotations:
        dapr.io/enabled: "true"
        dapr.io/app-id: checkout
        dapr.io/api-token-secret: dapr-api-token
        dapr.io/sidecar-listen-addresses: "${listen}"
    spec:
      containers:
        - name: checkout
          image: checkout:1
`;
}

function containerApp(allowInsecure: boolean): string {
  return `name: orders
type: Microsoft.App/containerApps
properties:
  configuration:
    ingress:
      external: true
      allowInsecure: ${allowInsecure}
  template:
    containers:
      - name: orders
        image: orders:1
`;
}
