import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { validateJsonSchema } from "./json-schema-lite.ts";

const ROOT = join(import.meta.dirname, "..", "..");
const FIXTURES = "test/audit/fixtures";

/** Runs the real CLI as a child process (killed by spawnSync's timeout if it hangs). */
function meshward(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const run = spawnSync(process.execPath, ["bin/meshward.js", ...args], {
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
    expect(run.stdout).toContain(`${FIXTURES}/quickstart/config.yaml\n  11:5`);
    expect(run.stdout.trimEnd().split("\n").pop()).toMatch(/^17 findings \(8 high, 7 medium, 2 low\) in 6 files, 6 files scanned/);
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
