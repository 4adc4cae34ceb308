import { join, relative } from "node:path";
import { describe, expect, it } from "vitest";
import { auditPaths } from "../../src/audit/audit.ts";

const FIXTURES = join(import.meta.dirname, "fixtures");

/** Exact findings per fixture file, as `RULE-ID@line`, in file order. */
const EXPECTED: Record<string, string[]> = {
  // Every address in these components is on loopback: transport findings are low.
  "quickstart/components/statestore.yaml": ["MW-TLS-001@6"],
  "quickstart/components/pubsub.yaml": ["MW-TLS-001@14"],
  "quickstart/components/binding.yaml": ["MW-SECRET-002@10", "MW-TLS-002@10"],
  "quickstart/config.yaml": ["MW-TLS-012@9", "MW-MTLS-001@11", "MW-MTLS-002@12", "MW-MTLS-003@13"],
  // MW-K8S-003 and MW-K8S-006 are opt-in (issue 19: they fired on every Dapr workload).
  "quickstart/deploy/order-processor.yaml": ["MW-K8S-002@17", "MW-K8S-005@20", "MW-SECRET-005@29"],
  "quickstart/deploy/checkout.yaml": ["MW-K8S-002@15", "MW-K8S-004@17", "MW-K8S-001@18", "MW-K8S-008@19", "MW-K8S-007@21"],
  "helm/rendered.yaml": [
    "MW-SECRET-007@9",
    "MW-TLS-005@39",
    "MW-TLS-006@41",
    "MW-SECRET-002@54",
    "MW-TLS-002@54",
    "MW-ACCESS-001@68",
    "MW-SECRET-005@125",
  ],
  // Legacy forms the CA and sidecar refuse are still analysed, and reported by MW-CONFIG-00x.
  "meshward/ca.yaml": ["MW-MTLS-006@4", "MW-MTLS-007@5", "MW-MTLS-008@6", "MW-CONFIG-002@7", "MW-MTLS-009@10", "MW-MTLS-005@11"],
  "meshward/sidecar.yaml": ["MW-CONFIG-001@1", "MW-SECRET-006@5", "MW-CONFIG-001@9", "MW-ACCESS-002@11", "MW-MTLS-004@12"],
  "meshward/policy.yaml": ["MW-ACCESS-001@7"],
  "meshward/frontend-sidecar.yaml": ["MW-CONFIG-001@5", "MW-ACCESS-003@6"],
  "micro/micro.yaml": ["MW-MICRO-005@4", "MW-MICRO-002@6", "MW-MICRO-004@6", "MW-MICRO-003@8"],
  "micro/service.env": ["MW-MICRO-005@4", "MW-MICRO-001@5"],
  "broken/mixed.yaml": ["MW-TLS-001@14"],
  "broken/odd-shapes.yaml": ["MW-TLS-001@34"],
  "broken/component.json": ["MW-TLS-008@1"],
  // Connection URLs in container env are judged by value, whatever the variable is called;
  // DAPR_HTTP_ENDPOINT is on loopback (low).
  "connection-urls/orders.yaml": [
    "MW-SECRET-005@24", "MW-TLS-002@24",
    "MW-SECRET-005@26", "MW-TLS-007@26",
    "MW-SECRET-005@28", "MW-TLS-007@28",
    "MW-SECRET-005@30", "MW-TLS-008@30",
    "MW-TLS-003@32",
    "MW-TLS-009@34",
    "MW-TLS-007@36",
    "MW-TLS-007@38",
  ],
  // MongoDB certificate checks off inside params/connection strings; Pulsar over pulsar://.
  "connection-urls/stores.yaml": ["MW-TLS-009@22", "MW-TLS-009@38", "MW-TLS-009@50", "MW-TLS-007@62"],
  // Inline patches, reported at the line inside the `patch: |` block (a quoted one at its key).
  "kustomize/overlays/production/kustomization.yaml": ["MW-MTLS-001@16", "MW-MTLS-002@19", "MW-TLS-001@32", "MW-TLS-012@37"],
};

/** Findings lowered to low because every address is on loopback (`FILE@RULE@line`). */
const LOOPBACK_LOW = [
  "connection-urls/orders.yaml@MW-TLS-007@38",
  "quickstart/components/binding.yaml@MW-TLS-002@10",
  "quickstart/components/pubsub.yaml@MW-TLS-001@14",
  "quickstart/components/statestore.yaml@MW-TLS-001@6",
];

const FOLDERS = ["quickstart", "helm", "meshward", "micro", "broken", "connection-urls", "kustomize"];

function byFile(result: ReturnType<typeof auditPaths>): Record<string, string[]> {
  const grouped: Record<string, string[]> = {};
  for (const finding of result.findings) {
    const file = relative(FIXTURES, finding.file);
    (grouped[file] ??= []).push(`${finding.ruleId}@${finding.line}`);
  }
  return grouped;
}

describe("fixture corpus", () => {
  const result = auditPaths(FOLDERS.map((folder) => join(FIXTURES, folder)));

  it("yields exactly the expected findings for every file", () => {
    expect(byFile(result)).toEqual(EXPECTED);
  });

  it("gives env URL, MongoDB and kustomize findings their severity", () => {
    const severities = result.findings
      .filter((finding) => /connection-urls|kustomize/.test(finding.file))
      .map((finding) => `${relative(FIXTURES, finding.file)}@${finding.ruleId}@${finding.line}:${finding.severity}`)
      .filter((entry) => !entry.endsWith(":high"));
    expect(severities).toEqual([
      "connection-urls/orders.yaml@MW-TLS-003@32:medium",
      "connection-urls/orders.yaml@MW-TLS-009@34:medium",
      "connection-urls/orders.yaml@MW-TLS-007@38:low",
      "connection-urls/stores.yaml@MW-TLS-009@50:medium",
      "kustomize/overlays/production/kustomization.yaml@MW-MTLS-002@19:medium",
      "kustomize/overlays/production/kustomization.yaml@MW-TLS-012@37:low",
    ]);
  });

  it("lowers transport findings to low when every address is loopback, and says why", () => {
    const lowered = result.findings
      .filter((finding) => finding.severity === "low" && finding.ruleId.startsWith("MW-TLS-0") && finding.ruleId !== "MW-TLS-012")
      .map((finding) => `${relative(FIXTURES, finding.file)}@${finding.ruleId}@${finding.line}`);
    expect(lowered).toEqual(LOOPBACK_LOW);
    for (const finding of result.findings.filter((each) => LOOPBACK_LOW.includes(`${relative(FIXTURES, each.file)}@${each.ruleId}@${each.line}`))) {
      expect(finding.message).toMatch(/loopback/);
    }
    // The same rule stays high on a cluster address (helm/rendered.yaml: pg.db.svc).
    expect(result.findings.find((finding) => finding.ruleId === "MW-TLS-002" && finding.file.endsWith("rendered.yaml"))?.severity).toBe("high");
  });

  it("runs opt-in rules only when enabled", () => {
    const enabled = auditPaths([join(FIXTURES, "quickstart")], { enable: ["MW-K8S-003"] });
    const ids = enabled.findings.filter((finding) => finding.file.endsWith("order-processor.yaml")).map((finding) => `${finding.ruleId}@${finding.line}`);
    expect(ids).toEqual(["MW-K8S-003@16", "MW-K8S-002@17", "MW-K8S-005@20", "MW-SECRET-005@29"]);
    const all = auditPaths([join(FIXTURES, "quickstart")], { enable: ["all"] });
    expect(all.findings.filter((finding) => finding.ruleId === "MW-K8S-006").length).toBe(1);
  });

  it("reports broken YAML with file:line and keeps auditing the rest of the file", () => {
    expect(result.parseErrors.filter((problem) => problem.kind !== "kustomize").map((problem) => `${relative(FIXTURES, problem.file)}:${problem.line}:${problem.column}`)).toEqual(["broken/mixed.yaml:5:1"]);
    expect(result.parseErrors[0]?.message).toMatch(/same column/);
  });

  it("tries to render the overlay deeper in the tree; it does not render (its patch has no target), so its files are audited one by one", () => {
    const overlays = result.parseErrors.filter((problem) => problem.kind === "kustomize");
    expect(overlays.map((problem) => relative(FIXTURES, problem.file))).toEqual(["kustomize/overlays/production/kustomization.yaml"]);
    expect(overlays[0]?.message).toMatch(/failed: no resource matches strategic merge patch/);
  });

  it("skips and counts unknown kinds and non-mapping documents", () => {
    expect(result.unknownKinds).toEqual({ "v1/Service": 1, "(not a mapping)": 2 });
    expect(result.skipped).toEqual([]);
  });

  it("finds nothing in the secure variants", () => {
    // secure/kustomization.yaml is not a renderable overlay (its patches target documents kept
    // elsewhere): read file by file, as its inline patches are the point.
    const secure = auditPaths([join(FIXTURES, "secure")], { renderKustomize: false });
    expect(secure.parseErrors).toEqual([]);
    expect(secure.findings).toEqual([]);
    // 8 components, 1 Configuration, 1 Deployment, 1 CA, 1 sidecar, micro.yaml, service.env
    // (its micro settings, and its variables read like a container's env), and the 2 documents
    // of kustomization.yaml's inline patches (the CA and sidecar files use the schema the CA and
    // sidecar load: no MW-CONFIG finding).
    expect(secure.resourcesAudited).toBe(17);
    expect(secure.unknownKinds).toEqual({});
  });

  it("points at the column of the offending key", () => {
    const finding = result.findings.find((candidate) => candidate.ruleId === "MW-K8S-001");
    expect(finding).toMatchObject({ line: 18, column: 9, evidence: "dapr.io/sidecar-listen-addresses: 0.0.0.0" });
  });

  it("does not resolve dapr.io/config to a same-named Configuration in an unrelated folder", () => {
    // secure/config.yaml defines `appconfig`, but it is not in order-processor's folder tree.
    const apart = auditPaths([join(FIXTURES, "quickstart", "deploy"), join(FIXTURES, "secure")]);
    const order = apart.findings.filter((finding) => finding.file.endsWith("order-processor.yaml"));
    expect(order.map((finding) => finding.ruleId)).toEqual(["MW-K8S-002", "MW-K8S-004", "MW-SECRET-005"]);
    expect(order.find((finding) => finding.ruleId === "MW-K8S-004")?.message).toMatch(/A Configuration named appconfig exists in .*secure\/config\.yaml, outside this workload's folder or namespace/);
  });

  it("resolves dapr.io/config to the nearest Configuration with the same name", () => {
    // quickstart/ and secure/ both define `appconfig`; only the quickstart one has mTLS off.
    const both = auditPaths([join(FIXTURES, "secure"), join(FIXTURES, "quickstart")]);
    const k8s005 = both.findings.filter((finding) => finding.ruleId === "MW-K8S-005").map((finding) => relative(FIXTURES, finding.file));
    expect(k8s005).toEqual(["quickstart/deploy/order-processor.yaml"]);
  });
});
