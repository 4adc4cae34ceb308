import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { validateJsonSchema } from "./json-schema-lite.ts";
import { MESHWARD_BIN } from "../helpers/cli.ts";

const ROOT = join(import.meta.dirname, "..", "..");
const FIXTURES = "test/audit/fixtures";

/** Runs the real CLI (the run's bundle of the current sources, test/helpers/cli.ts) as a child process (killed by spawnSync's timeout if it hangs). */
function meshward(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const run = spawnSync(process.execPath, [MESHWARD_BIN, ...args], {
    cwd: ROOT,
    encoding: "utf8",
    timeout: 60_000,
    env: { ...process.env, NO_COLOR: undefined, FORCE_COLOR: undefined },
  });
  return { code: run.status, stdout: run.stdout, stderr: run.stderr };
}

describe("meshward audit (real process)", () => {
  it("text report without colour when not a TTY; exit 0 without --fail-on", () => {
    const run = meshward("audit", `${FIXTURES}/quickstart`);
    expect(run.code).toBe(0);
    expect(run.stdout).not.toContain("\u001b[");
    expect(run.stdout).toContain(`${FIXTURES}/quickstart/config.yaml\n  9:7`);
    expect(run.stdout.trimEnd().split("\n").pop()).toMatch(/^16 findings \(5 high, 7 medium, 4 low\) in 6 files, 6 files scanned/);
  });

  it("counts in the summary line are singular for exactly one (review newuser L7: \"1 files scanned\")", () => {
    const run = meshward("audit", `${FIXTURES}/secure/sidecar.yaml`);
    expect(run.code, run.stderr).toBe(0);
    const summary = run.stdout.trimEnd().split("\n").pop() ?? "";
    expect(summary).toMatch(/^0 findings \(0 high, 0 medium, 0 low\) in 0 files, 1 file scanned, \d+ resources? audited, 0 documents of unknown kinds skipped$/);
    expect(summary).not.toMatch(/\b1 (files|resources|documents|YAML errors)\b/);
  });

  it("prints each rule's fix once, in a per-rule summary", () => {
    const run = meshward("audit", `${FIXTURES}/quickstart`);
    // MW-K8S-002 fires on both workloads; its fix text appears once, in the summary.
    const fix = "Create a Secret with a random token and set `dapr.io/api-token-secret` to its name";
    expect(run.stdout.split(fix).length - 1).toBe(1);
    expect(run.stdout).toMatch(/By rule \(count, then how to fix\):\n {2}MW-K8S-002 +2 {2}Dapr sidecar API without an API token \(2 medium\)\n +fix: Create a Secret/);
    const json = JSON.parse(meshward("audit", `${FIXTURES}/quickstart`, "--format", "json").stdout) as { summary: { byRule: { ruleId: string; count: number; fix: string }[] } };
    expect(json.summary.byRule[0]).toMatchObject({ ruleId: "MW-K8S-002", count: 2 });
    expect(json.summary.byRule.reduce((sum, rule) => sum + rule.count, 0)).toBe(16);
  });

  it("--enable runs opt-in rules; an unknown or always-on id is a usage error", () => {
    const run = meshward("audit", `${FIXTURES}/quickstart`, "--enable", "MW-K8S-003,mw-k8s-006", "--format", "json");
    const ids = (JSON.parse(run.stdout) as { findings: { ruleId: string }[] }).findings.map((finding) => finding.ruleId);
    expect(ids.filter((id) => id === "MW-K8S-003").length).toBe(1);
    expect(ids.filter((id) => id === "MW-K8S-006").length).toBe(1);
    const unknown = meshward("audit", `${FIXTURES}/quickstart`, "--enable", "MW-K8S-099");
    expect(unknown.code).toBe(2); // a usage error
    expect(unknown.stderr).toMatch(/--enable MW-K8S-099: no such rule; opt-in rules are MW-K8S-003, MW-K8S-006 \(or all\) \[E_AUDIT_USAGE\]/);
    expect(meshward("audit", `${FIXTURES}/quickstart`, "--enable", "MW-TLS-001").stderr).toMatch(/that rule always runs/);
  });

  it("--fail-on-unparsed fails a gate on YAML errors and Helm templates, and only then", () => {
    // broken/ has a YAML error and no finding at --fail-on high is needed to fail.
    const broken = meshward("audit", `${FIXTURES}/broken`, "--fail-on-unparsed");
    expect(broken.code).toBe(1);
    expect(broken.stderr).toMatch(/--fail-on-unparsed: 1 file could not be read as configuration: .*broken\/mixed\.yaml/);
    expect(meshward("audit", `${FIXTURES}/broken`).code).toBe(0);
    const helm = meshward("audit", `${FIXTURES}/helm-chart`, "--fail-on-unparsed");
    expect(helm.code).toBe(1);
    expect(helm.stdout).toContain("Helm templates (not YAML until rendered; run `helm template` and audit its output):");
    // secure/ holds a kustomization.yaml that does not render: --no-kustomize reads it file by file.
    expect(meshward("audit", `${FIXTURES}/secure`, "--no-kustomize", "--fail-on-unparsed").code).toBe(0);
    const overlay = meshward("audit", `${FIXTURES}/secure`, "--fail-on-unparsed");
    expect(overlay.code).toBe(1);
    expect(overlay.stdout).toContain("Kustomize overlays not rendered (their files audited one by one):");
  });

  it("--fail-on sets the exit code by severity threshold", () => {
    // frontend-sidecar.yaml has exactly one finding, a medium one.
    expect(meshward("audit", `${FIXTURES}/meshward/frontend-sidecar.yaml`, "--fail-on", "high").code).toBe(0);
    expect(meshward("audit", `${FIXTURES}/meshward/frontend-sidecar.yaml`, "--fail-on", "medium").code).toBe(1);
    expect(meshward("audit", `${FIXTURES}/secure`, "--fail-on", "low").code).toBe(0);
  });

  it("--format json and --format sarif are machine-readable; SARIF passes the schema", () => {
    const json = JSON.parse(meshward("audit", `${FIXTURES}/helm`, "--format", "json").stdout) as { findings: { ruleId: string; line: number }[] };
    expect(json.findings.map((finding) => `${finding.ruleId}@${finding.line}`)).toContain("MW-TLS-005@39");
    const sarifRun = meshward("audit", `${FIXTURES}/helm`, `${FIXTURES}/broken`, "--format", "sarif", "--fail-on", "high");
    expect(sarifRun.code).toBe(1);
    const schema = JSON.parse(readFileSync(join(import.meta.dirname, "sarif-schema-2.1.0.json"), "utf8")) as Record<string, unknown>;
    expect(validateJsonSchema(schema, JSON.parse(sarifRun.stdout))).toEqual([]);
  });

  it("usage errors: bad --format exits 2; missing path is a MeshwardError", () => {
    const bad = meshward("audit", FIXTURES, "--format", "xml");
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/xml/);
    const missing = meshward("audit", "no/such/dir");
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^meshward: nothing to audit: no\/such\/dir not found \[E_AUDIT_NOT_FOUND\]/);
  });

  it("drift: table and JSON, --fail-on weaker", () => {
    const table = meshward("audit", "drift", `${FIXTURES}/drift/staging`, `${FIXTURES}/drift/production`, "--fail-on", "weaker");
    expect(table.code).toBe(1);
    expect(table.stdout).toMatch(/mTLS +sidecar orders +permissive +strict +WEAKER in staging/);
    const json = JSON.parse(meshward("audit", "drift", `${FIXTURES}/drift/production`, `${FIXTURES}/drift/production`, "--format", "json", "--fail-on", "differs").stdout) as { reference: string; rows: { status: string }[] };
    expect(json.rows.every((row) => row.status === "same")).toBe(true);
  });

  it("rules lists every rule", () => {
    const run = meshward("audit", "rules", "--format", "json");
    const rules = JSON.parse(run.stdout) as { id: string }[];
    expect(rules.length).toBeGreaterThanOrEqual(30);
    expect(rules.map((rule) => rule.id)).toContain("MW-MICRO-003");
  });
});
