import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { auditSources } from "../../src/audit/audit.ts";
import { renderJson } from "../../src/audit/reporters/json.ts";
import { renderSarif } from "../../src/audit/reporters/sarif.ts";
import { renderText } from "../../src/audit/reporters/text.ts";
import { ALL_RULES } from "../../src/audit/rules/index.ts";
import { MESHWARD_BIN } from "../helpers/cli.ts";
import { validateJsonSchema } from "./json-schema-lite.ts";

const schema = JSON.parse(readFileSync(join(import.meta.dirname, "sarif-schema-2.1.0.json"), "utf8")) as Record<string, unknown>;

/** A Dapr Configuration with mTLS off (MW-MTLS-001, at `enabled: false`, line 7 plus the lines prepended). */
function configuration(before = "", trailing = ""): string {
  return `${before}apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: appconfig
spec:
  mtls:
    enabled: false${trailing}
`;
}

const MTLS_OFF = "MW-MTLS-001";

function audit(text: string, file = "config.yaml") {
  return auditSources([{ file, text }]);
}

describe("ignore comments (meshward-audit-ignore)", () => {
  it("the finding is reported without a comment (the rule this file relies on fires)", () => {
    const result = audit(configuration());
    expect(result.findings.map((finding) => finding.ruleId)).toContain(MTLS_OFF);
    expect(result.suppressed).toEqual([]);
  });

  it("a trailing comment on the finding's line suppresses it, with its reason", () => {
    const result = audit(configuration("", `  # meshward-audit-ignore ${MTLS_OFF} -- local kind cluster only`));
    expect(result.findings.map((finding) => finding.ruleId)).not.toContain(MTLS_OFF);
    expect(result.suppressed).toHaveLength(1);
    expect(result.suppressed[0]).toMatchObject({ ruleId: MTLS_OFF, line: 7, suppression: { reason: "local kind cluster only", line: 7, scope: "line" } });
    expect(result.ignoreProblems).toEqual([]);
  });

  it("a comment block above the line suppresses it; one further away does not", () => {
    const above = configuration().replace("    enabled: false", `    # meshward-audit-ignore ${MTLS_OFF} -- tests\n    # (second comment line)\n    enabled: false`);
    const suppressed = audit(above);
    expect(suppressed.findings.map((finding) => finding.ruleId)).not.toContain(MTLS_OFF);
    expect(suppressed.suppressed[0]?.suppression.line).toBe(7);

    const far = configuration().replace("  mtls:", `  # meshward-audit-ignore ${MTLS_OFF} -- tests\n  other: 1\n  mtls:`);
    const kept = audit(far);
    expect(kept.findings.map((finding) => finding.ruleId)).toContain(MTLS_OFF);
    expect(kept.ignoreProblems).toHaveLength(1);
    expect(kept.ignoreProblems[0]?.message).toMatch(/covers no finding on line 7/);
  });

  it("another rule's id does not suppress it, and is reported as covering nothing", () => {
    const result = audit(configuration("", "  # meshward-audit-ignore MW-TLS-001 -- not this one"));
    expect(result.findings.map((finding) => finding.ruleId)).toContain(MTLS_OFF);
    expect(result.ignoreProblems.map((problem) => problem.message)).toEqual([expect.stringMatching(/MW-TLS-001 covers no finding/)]);
  });

  it("refuses a directive with no rule, an unknown rule or no reason: the finding stays and the comment is named", () => {
    for (const [comment, message] of [
      ["# meshward-audit-ignore -- everything", /name the rule ids/],
      ["# meshward-audit-ignore MW-MTLS-999 -- typo", /no such rule MW-MTLS-999/],
      [`# meshward-audit-ignore ${MTLS_OFF}`, /give the reason after `--`/],
      [`# meshward-audit-ignore ${MTLS_OFF} --   `, /give the reason/],
    ] as const) {
      const result = audit(configuration("", `  ${comment}`));
      expect(result.findings.map((finding) => finding.ruleId), comment).toContain(MTLS_OFF);
      expect(result.suppressed, comment).toEqual([]);
      expect(result.ignoreProblems, comment).toHaveLength(1);
      expect(result.ignoreProblems[0]?.message, comment).toMatch(message);
      expect(result.ignoreProblems[0]?.message, comment).toMatch(/not applied$/);
      expect(result.ignoreProblems[0]).toMatchObject({ file: "config.yaml", line: 7 });
    }
  });

  it("a file directive covers every finding of its rules in that file, and only that file", () => {
    const text = configuration(`# meshward-audit-ignore-file ${MTLS_OFF}, mw-tls-001 -- fixtures for the demo\n`);
    const result = auditSources([{ file: "a.yaml", text }, { file: "b.yaml", text: configuration() }]);
    expect(result.suppressed.map((finding) => [finding.file, finding.ruleId])).toEqual([["a.yaml", MTLS_OFF]]);
    expect(result.suppressed[0]?.suppression.scope).toBe("file");
    expect(result.findings.filter((finding) => finding.ruleId === MTLS_OFF).map((finding) => finding.file)).toEqual(["b.yaml"]);
  });

  it("a directive for an opt-in rule that did not run is not called stale", () => {
    const optIn = ALL_RULES.find((rule) => rule.optIn === true);
    expect(optIn).toBeDefined();
    const result = audit(configuration(`# meshward-audit-ignore-file ${optIn?.id ?? ""} -- opted out\n`));
    expect(result.ignoreProblems).toEqual([]);
  });

  it("works in .env files and is listed in text, JSON and SARIF (valid, with an inSource suppression)", () => {
    const env = "# meshward-audit-ignore MW-SECRET-001 -- throwaway password of the local compose stack\nDB_PASSWORD=Kx9vQ2mZ7wLp\n";
    const plain = auditSources([{ file: "app/.env", text: env.split("\n").slice(1).join("\n") }]);
    const ruleId = plain.findings[0]?.ruleId;
    expect(ruleId).toBeDefined();
    const result = auditSources([{ file: "app/.env", text: env.replace("MW-SECRET-001", ruleId ?? "") }]);
    expect(result.findings).toEqual([]);
    expect(result.suppressed).toHaveLength(1);

    const text = renderText(result, { color: false });
    expect(text).toContain(`Suppressed by ignore comments (not counted by --fail-on):\n  app/.env:2:`);
    expect(text).toContain("-- throwaway password of the local compose stack (comment on line 1)");
    expect(text).not.toContain("Kx9vQ2mZ7wLp");
    expect(text.trimEnd().split("\n").pop()).toMatch(/^0 findings .*, 1 suppressed by ignore comments/);

    const json = JSON.parse(renderJson(result)) as { summary: { findings: number; suppressed: number }; suppressed: { ruleId: string; suppression: { reason: string } }[] };
    expect(json.summary).toMatchObject({ findings: 0, suppressed: 1 });
    expect(json.suppressed[0]).toMatchObject({ ruleId, suppression: { reason: "throwaway password of the local compose stack" } });

    const sarif = JSON.parse(renderSarif(result, { rules: ALL_RULES, toolVersion: "0.1.0" })) as { runs: { results: { ruleId: string; suppressions?: { kind: string; justification: string }[] }[] }[] };
    expect(validateJsonSchema(schema, sarif)).toEqual([]);
    expect(sarif.runs[0]?.results).toHaveLength(1);
    expect(sarif.runs[0]?.results[0]?.suppressions).toEqual([{ kind: "inSource", status: "accepted", justification: "throwaway password of the local compose stack" }]);
  });
});

describe("meshward audit with ignore comments (real process)", () => {
  const dir = mkdtempSync(join(tmpdir(), "meshward-audit-ignore-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  function run(...args: string[]) {
    const child = spawnSync(process.execPath, [MESHWARD_BIN, "audit", ...args], { encoding: "utf8", timeout: 60_000, env: { ...process.env, NO_COLOR: "1" } });
    return { code: child.status, stdout: child.stdout, stderr: child.stderr };
  }

  it("--fail-on does not count a suppressed finding, and counts it again once the comment goes", () => {
    const file = join(dir, "config.yaml");
    writeFileSync(file, configuration("", `  # meshward-audit-ignore ${MTLS_OFF} -- local only`));
    const suppressed = run(file, "--fail-on", "high", "--format", "json");
    expect(suppressed.stderr).toBe("");
    const report = JSON.parse(suppressed.stdout) as { findings: { ruleId: string; severity: string }[]; suppressed: unknown[] };
    expect(report.suppressed).toHaveLength(1);
    expect(report.findings.some((finding) => finding.severity === "high")).toBe(false);
    expect(suppressed.code).toBe(0);

    writeFileSync(file, configuration());
    const reported = run(file, "--fail-on", "high");
    expect(reported.stdout).toContain(MTLS_OFF);
    expect(reported.code).toBe(1);

    writeFileSync(file, configuration("", "  # meshward-audit-ignore MW-MTLS-0001 -- typo"));
    const typo = run(file, "--fail-on", "high");
    expect(typo.code).toBe(1);
    expect(typo.stdout).toMatch(/Ignore comments not applied:\n {2}.*config\.yaml:7:\d+ {2}meshward-audit-ignore: no such rule MW-MTLS-0001/);
  });
});

describe("the docs' ignore-comment examples (docs/audit-rules.md)", () => {
  const docs = readFileSync(join(import.meta.dirname, "..", "..", "docs", "audit-rules.md"), "utf8");
  const section = docs.slice(docs.indexOf("## Ignoring a finding you have accepted"), docs.indexOf("## Drift between environments"));
  const blocks = [...section.matchAll(/```(yaml|sh)\n([\s\S]*?)```/g)].map((match) => ({ language: match[1], text: match[2] ?? "" }));

  it("each example suppresses the finding it names, which fires without the comment", () => {
    expect(blocks.map((block) => block.language)).toEqual(["yaml", "sh"]);
    const yaml = `apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: appconfig\n${blocks[0]?.text ?? ""}`;
    const env = blocks[1]?.text ?? "";
    for (const [file, text] of [["config.yaml", yaml], [".env", env]] as const) {
      const withComment = auditSources([{ file, text }]);
      expect(withComment.findings, file).toEqual([]);
      expect(withComment.ignoreProblems, file).toEqual([]);
      expect(withComment.suppressed.length, file).toBe(1);
      const withoutComment = auditSources([{ file, text: text.replace(/[ \t]*# meshward-audit-ignore.*$/gm, "") }]);
      expect(withoutComment.findings.map((finding) => finding.ruleId), file).toEqual([withComment.suppressed[0]?.ruleId]);
    }
  });
});

describe("only comments are directives, never a value (review audit finding 4)", () => {
  const CONFIGMAP = (value: string): string => `---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: readme\ndata:\n  readme: ${value}\n`;
  const reported = (result: ReturnType<typeof auditSources>): string[] => result.findings.map((finding) => finding.ruleId).filter((id) => id === MTLS_OFF);

  for (const [what, value] of [
    ["a double-quoted value", `"see //meshward-audit-ignore-file ${MTLS_OFF} -- ok"`],
    ["a single-quoted value", `'x # meshward-audit-ignore-file ${MTLS_OFF} -- ok'`],
    ["a URL in a plain value", `https://x//meshward-audit-ignore-file ${MTLS_OFF} -- ok`],
    ["a plain value with `//` after a space (not a YAML comment)", `see //meshward-audit-ignore-file ${MTLS_OFF} -- ok`],
    ["a block scalar line", `|\n    # meshward-audit-ignore-file ${MTLS_OFF} -- ok\n    more text`],
  ] as const) {
    it(`YAML: ${what} does not suppress`, () => {
      const result = audit(configuration() + CONFIGMAP(value));
      expect(reported(result), what).toEqual([MTLS_OFF]);
      expect(result.suppressed).toEqual([]);
    });
  }

  it("YAML: a real comment in the same file still does", () => {
    expect(reported(audit(configuration() + CONFIGMAP(`plain   # meshward-audit-ignore-file ${MTLS_OFF} -- ok`)))).toEqual([]);
  });

  it("rendered kustomize output (no comments survive kustomize): nothing in it is a directive", () => {
    const text = configuration() + CONFIGMAP(`plain   # meshward-audit-ignore-file ${MTLS_OFF} -- ok`);
    const result = auditSources([{ file: "overlay/(kubectl kustomize)", text, format: "yaml", rendered: "overlay" }]);
    expect(reported(result)).toEqual([MTLS_OFF]);
    expect(result.ignoreProblems).toEqual([]);
  });

  it(".env: a quoted value does not suppress; JSON: a string does not, a // comment does", () => {
    const env = "DB_PASSWORD=Kx9vQ2mZ7wLp\n";
    const ruleId = auditSources([{ file: ".env", text: env }]).findings[0]?.ruleId ?? "";
    const quoted = auditSources([{ file: ".env", text: `NOTE="x # meshward-audit-ignore-file ${ruleId} -- ok"\n${env}` }]);
    expect(quoted.findings.map((finding) => finding.ruleId)).toContain(ruleId);
    const json = (note: string): string => `{\n  ${note}\n  "apiVersion": "dapr.io/v1alpha1",\n  "kind": "Configuration",\n  "metadata": {"name": "appconfig"},\n  "spec": {"mtls": {"enabled": false}}\n}\n`;
    expect(reported(auditSources([{ file: "c.json", text: json(`"note": "// meshward-audit-ignore-file ${MTLS_OFF} -- ok",`) }]))).toEqual([MTLS_OFF]);
    expect(reported(auditSources([{ file: "c.jsonc", text: json(`// meshward-audit-ignore-file ${MTLS_OFF} -- ok`) }]))).toEqual([]);
  });
});
