import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { loadSources } from "../../src/audit/audit.ts";
import { collectPosture, compareEnvironments, driftPaths, referenceIndex, renderDriftText } from "../../src/audit/drift.ts";

const DRIFT = join(import.meta.dirname, "fixtures", "drift");

describe("drift", () => {
  it("flags every setting where staging is weaker than production", () => {
    const report = driftPaths([join(DRIFT, "staging"), join(DRIFT, "production")]);
    expect(report.environments).toEqual(["staging", "production"]);
    expect(report.reference).toBe("production");
    const weaker = report.rows.filter((row) => row.status === "weaker").map((row) => `${row.aspect} | ${row.subject}`);
    expect(weaker).toEqual([
      "TLS | component statestore (state.redis)",
      "access policy | Configuration appconfig",
      "mTLS | Configuration appconfig",
      "mTLS | sidecar orders",
      "validators | CA example.org",
      "workload cert TTL | CA example.org",
      "workload cert TTL | Configuration appconfig",
    ]);
    const mtls = report.rows.find((row) => row.aspect === "mTLS" && row.subject === "Configuration appconfig");
    expect(mtls?.values).toEqual(["off", "on"]);
    expect(report.rows.filter((row) => row.status === "same").length).toBe(report.rows.length - weaker.length);
  });

  it("uses the production-named folder as reference wherever it is, else the last", () => {
    expect(referenceIndex(["production", "staging", "dev"])).toBe(0);
    expect(referenceIndex(["dev", "env-prod", "qa"])).toBe(1);
    expect(referenceIndex(["dev", "staging"])).toBe(1);
    const report = driftPaths([join(DRIFT, "production"), join(DRIFT, "staging")]);
    expect(report.reference).toBe("production");
    expect(report.rows.some((row) => row.status === "weaker" && row.weakerIn[0] === "staging")).toBe(true);
  });

  it("a stronger lower environment is 'differs', not weaker; identical environments agree", () => {
    const same = driftPaths([join(DRIFT, "production"), join(DRIFT, "production")]);
    expect(same.rows.every((row) => row.status === "same")).toBe(true);
    const env = (text: string) => collectPosture(loadSources([{ file: "c.yaml", text }]).corpus);
    const config = (mtls: string) => `apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  mtls:\n    enabled: ${mtls}\n`;
    const stronger = compareEnvironments([{ name: "dev", posture: env(config("true")) }, { name: "prod", posture: env(config("false")) }]);
    expect(stronger.rows.find((row) => row.aspect === "mTLS")?.status).toBe("differs");
  });

  it("an injected workload's meshward.io/mode (annotation, else label) is its mTLS posture", () => {
    const env = (text: string) => collectPosture(loadSources([{ file: "d.yaml", text }]).corpus);
    const deployment = (annotations: string, labels = "") =>
      `apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n    metadata:\n      labels:\n        app: web\n${labels}      annotations:\n        meshward.io/inject: "true"\n${annotations}    spec:\n      containers:\n        - name: web\n          image: web:1\n`;
    const staging = env(deployment("", "        meshward.io/mode: permissive\n"));
    const production = env(deployment(""));
    const report = compareEnvironments([{ name: "staging", posture: staging }, { name: "production", posture: production }]);
    const row = report.rows.find((candidate) => candidate.aspect === "mTLS" && candidate.subject === "Deployment web");
    expect(row?.values).toEqual(["permissive", "strict"]);
    expect(row?.status).toBe("weaker");
    // Not injected (meshward.io/inject: "false"): no meshward posture to compare.
    const off = env(deployment("        meshward.io/mode: permissive\n").replace('meshward.io/inject: "true"', 'meshward.io/inject: "false"'));
    expect(compareEnvironments([{ name: "staging", posture: off }, { name: "production", posture: production }]).rows.find((candidate) => candidate.aspect === "mTLS")?.values).toEqual([null, "strict"]);
  });

  it("renders a table with one column per environment", () => {
    const text = renderDriftText(driftPaths([join(DRIFT, "staging"), join(DRIFT, "production")]), { color: false });
    expect(text.split("\n")[0]).toMatch(/^aspect +subject +staging +production \(reference\) +status$/);
    expect(text).toMatch(/mTLS +Configuration appconfig +off +on +WEAKER in staging/);
    expect(text).toContain("7 weaker than the reference");
  });
});
