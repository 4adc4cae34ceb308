import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { auditSources, loadSources } from "../../src/audit/audit.ts";
import { collectPosture, compareEnvironments } from "../../src/audit/drift.ts";

// Precision gaps of fix-audit, on the fixtures in fixtures/precision-gaps/.

const FIXTURES = join(import.meta.dirname, "fixtures", "precision-gaps");
const findings = (name: string): string[] => {
  const file = join(FIXTURES, name);
  return auditSources([{ file, text: readFileSync(file, "utf8") }]).findings.map((finding) => `${finding.ruleId}@${finding.line}:${finding.severity} ${finding.evidence}`);
};

describe("dapr.io/sidecar-listen-addresses beyond loopback (listen.yaml)", () => {
  it("MW-K8S-001 reports the pod IP ($(POD_IP), a literal address, an env reference) and all interfaces; loopback (127.0.0.0/8, ::1, localhost) is quiet", () => {
    expect(findings("listen.yaml")).toEqual([
      "MW-K8S-001@13:high dapr.io/sidecar-listen-addresses: $(POD_IP)",
      "MW-K8S-001@30:high dapr.io/sidecar-listen-addresses: 10.244.1.17",
      "MW-K8S-001@47:high dapr.io/sidecar-listen-addresses: ${POD_IP}",
      "MW-K8S-001@64:high dapr.io/sidecar-listen-addresses: 127.0.0.1,$(POD_IP)",
      "MW-K8S-001@81:high dapr.io/sidecar-listen-addresses: 0.0.0.0",
    ]);
  });

  it("drift ranks a pod-IP listen address weaker than loopback, as the scan does", () => {
    const text = readFileSync(join(FIXTURES, "listen.yaml"), "utf8").split("\n---\n");
    const only = (name: string): string => text.find((document) => document.includes(`name: ${name}\n`))?.replace(`name: ${name}\n`, "name: orders\n") ?? "";
    const rows = compareEnvironments([["staging", only("pod-ip-ref")], ["production", only("loopback-8")]].map(([name, yaml]) => {
      const { corpus } = loadSources([{ file: "deploy.yaml", text: yaml ?? "" }]);
      return { name: name ?? "", posture: collectPosture(corpus) };
    })).rows.filter((row) => row.aspect === "sidecar listen").map((row) => `${row.status} ${JSON.stringify(row.values)}`);
    expect(rows).toEqual(['weaker ["$(POD_IP)","127.0.0.2"]']);
  });
});
