import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { auditPaths, auditSources } from "../../src/audit/audit.ts";
import { renderJson } from "../../src/audit/reporters/json.ts";
import { findingFingerprints, renderSarif } from "../../src/audit/reporters/sarif.ts";
import { printable, safeForLog } from "../../src/util/printable.ts";
import { renderText } from "../../src/audit/reporters/text.ts";
import { ALL_RULES } from "../../src/audit/rules/index.ts";
import { validateJsonSchema } from "./json-schema-lite.ts";

const FIXTURES = join(import.meta.dirname, "fixtures");
const schema = JSON.parse(readFileSync(join(import.meta.dirname, "sarif-schema-2.1.0.json"), "utf8")) as Record<string, unknown>;
const result = auditPaths([join(FIXTURES, "quickstart"), join(FIXTURES, "broken")].map((path) => path.slice(process.cwd().length + 1)));

describe("SARIF", () => {
  const log = JSON.parse(renderSarif(result, { rules: ALL_RULES, toolVersion: "0.1.0" })) as {
    runs: { results: { ruleId: string; ruleIndex: number; level: string; locations: { physicalLocation: { artifactLocation: { uri: string }; region: { startLine: number } } }[] }[]; tool: { driver: { rules: { id: string }[] } } }[];
  };

  it("is valid against the SARIF 2.1.0 schema", () => {
    expect(validateJsonSchema(schema, log)).toEqual([]);
  });

  it("the validator really rejects invalid logs", () => {
    expect(validateJsonSchema(schema, { ...log, version: "2.0.0" })).not.toEqual([]);
    const broken = structuredClone(log) as unknown as { runs: { results: { level: string }[] }[] };
    const first = broken.runs[0]?.results[0];
    if (first !== undefined) first.level = "fatal";
    expect(validateJsonSchema(schema, broken).join("\n")).toMatch(/level/);
    expect(validateJsonSchema(schema, { version: "2.1.0" })).toEqual(["$: missing required property runs"]);
    expect(validateJsonSchema(schema, { version: "2.1.0", runs: [{ tool: { driver: {} } }] }).join("\n")).toMatch(/name/);
  });

  it("carries every finding with its rule, level and location", () => {
    const run = log.runs[0];
    expect(run?.results.length).toBe(result.findings.length);
    for (const [index, finding] of result.findings.entries()) {
      const sarif = run?.results[index];
      // A finding whose severity differs from its rule's has the sub-rule `<id>/<severity>`.
      const rule = ALL_RULES.find((each) => each.id === finding.ruleId);
      const id = rule?.severity === finding.severity ? finding.ruleId : `${finding.ruleId}/${finding.severity}`;
      expect(sarif?.ruleId).toBe(id);
      expect(run?.tool.driver.rules[sarif?.ruleIndex ?? -1]?.id).toBe(id);
      expect(sarif?.level).toBe({ high: "error", medium: "warning", low: "note" }[finding.severity]);
      expect(sarif?.locations[0]?.physicalLocation.region.startLine).toBe(finding.line);
      expect(sarif?.locations[0]?.physicalLocation.artifactLocation.uri).toBe(finding.file.split("\\").join("/"));
    }
  });

  it("gives every finding its own partialFingerprint, also for identical findings in one multi-document file", () => {
    const component = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: s\nspec:\n  type: state.redis\n  metadata:\n  - name: redisHost\n    value: redis:6379\n";
    // Two identical documents, and the same document twice more in a second file.
    const twice = auditSources([{ file: "multi.yaml", text: `${component}---\n${component}` }, { file: "other.yaml", text: `${component}---\n${component}` }]);
    expect(twice.findings.map((finding) => `${finding.file}:${finding.document}:${finding.ruleId}:${finding.evidence}`)).toEqual([
      "multi.yaml:0:MW-TLS-001:state.redis without enableTLS",
      "multi.yaml:1:MW-TLS-001:state.redis without enableTLS",
      "other.yaml:0:MW-TLS-001:state.redis without enableTLS",
      "other.yaml:1:MW-TLS-001:state.redis without enableTLS",
    ]);
    const sarif = JSON.parse(renderSarif(twice, { rules: ALL_RULES, toolVersion: "0.1.0" })) as { runs: { results: { partialFingerprints: Record<string, string> }[] }[] };
    const prints = sarif.runs[0]?.results.map((each) => each.partialFingerprints["meshwardFinding/v2"]) ?? [];
    expect(prints.length).toBe(4);
    expect(new Set(prints).size).toBe(4);
    expect(validateJsonSchema(schema, sarif)).toEqual([]);
    // Same finding, same document, twice (two list entries): the ordinal keeps them apart.
    const dup = findingFingerprints([twice.findings[0]!, twice.findings[0]!]);
    expect(dup[0]).not.toBe(dup[1]);
    expect(dup[0]?.replace(/:\d+$/, "")).toBe(dup[1]?.replace(/:\d+$/, ""));
    // Stable when the line moves (fingerprints follow content, not position).
    const moved = auditSources([{ file: "multi.yaml", text: `# a comment that moves everything down\n${component}---\n${component}` }]);
    expect(findingFingerprints(moved.findings)).toEqual(findingFingerprints(twice.findings.slice(0, 2)));
  });

  it("fingerprints are unique over the whole fixture corpus", () => {
    const all = auditPaths([join(FIXTURES)], { enable: ["all"] });
    const prints = findingFingerprints(all.findings);
    expect(new Set(prints).size).toBe(prints.length);
    // …and the log of the whole corpus (real-world files, Helm templates, YAML errors) is valid.
    const sarif = JSON.parse(renderSarif(all, { rules: ALL_RULES, toolVersion: "0.1.0" })) as { runs: { results: { partialFingerprints: Record<string, string> }[] }[] };
    expect(validateJsonSchema(schema, sarif)).toEqual([]);
    expect(sarif.runs[0]?.results.map((each) => each.partialFingerprints["meshwardFinding/v2"])).toEqual(prints);
    expect(prints.length).toBeGreaterThan(50);
  });

  it("is valid with no findings and with absolute paths", () => {
    const empty = auditPaths([join(FIXTURES, "secure")]);
    const absolute = auditPaths([join(FIXTURES, "micro")]);
    for (const each of [empty, absolute]) {
      expect(validateJsonSchema(schema, JSON.parse(renderSarif(each, { rules: ALL_RULES, toolVersion: "0.1.0" })))).toEqual([]);
    }
  });
});

describe("text and JSON", () => {
  it("groups by file, ends with a summary line and uses colour only when asked", () => {
    const plain = renderText(result, { color: false });
    expect(plain).not.toContain("\u001b[");
    expect(plain).toMatch(/^test\/audit\/fixtures\/broken\/component\.json\n {2}1:143 +high +MW-TLS-008/m);
    const lastLine = plain.trimEnd().split("\n").pop() ?? "";
    expect(lastLine).toMatch(/^\d+ findings \(\d+ high, \d+ medium, \d+ low\) in \d+ files, \d+ files scanned/);
    expect(lastLine).toContain("1 YAML error");
    expect(lastLine).not.toContain("1 YAML errors");
    // Fix text is printed once per rule (in the summary), not under each finding.
    expect(plain).not.toMatch(/^ +fix: .*\n +fix: /m);
    expect(plain).toContain("By rule (count, then how to fix):");
    expect(plain).toContain("test/audit/fixtures/broken/mixed.yaml:5:1");
    expect(renderText(result, { color: true })).toContain("\u001b[31;1mhigh");
  });

  it("JSON holds findings, summary and problems", () => {
    const json = JSON.parse(renderJson(result)) as { summary: { findings: number; bySeverity: Record<string, number>; parseErrors: number }; findings: unknown[] };
    expect(json.summary.findings).toBe(result.findings.length);
    expect(json.findings).toEqual(result.findings);
    expect(json.summary.parseErrors).toBe(1);
    const total = Object.values(json.summary.bySeverity).reduce((a, b) => a + b, 0);
    expect(total).toBe(result.findings.length);
  });
});

describe("text output from a hostile tree (review audit finding 5)", () => {
  const ESC = "\u001b";
  const hostile = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: orders
spec:
  template:
    spec:
      containers:
        - name: orders
          image: x
          env:
            - name: "X\\n::add-mask::high\\n::error title=meshward::0 findings DB_PASSWORD"
              value: "hunter2hunter2"
            - name: API_TOKEN
              value: "abcdefghijklmnop"   # meshward-audit-ignore MW-SECRET-005 -- ok ${ESC}[1A${ESC}[2K${ESC}]0;owned\u0007
---
apiVersion: v1
kind: "Weird\\n::stop-commands::pwned\\r\\u202e"
metadata:
  name: w
`;
  const hostileResult = auditSources([
    { file: "a.yaml", text: hostile },
    { file: "b\n::warning file=README.md::injected by a file name.yaml", text: "a: [\n" },
    { file: "::error::first.yaml", text: "a: [\n" },
  ]);

  it("no line of the text report is a workflow command, and no control character reaches it (colour off)", () => {
    const text = renderText(hostileResult, { color: false });
    expect(text.split("\n").filter((line) => /^\s*::/.test(line))).toEqual([]);
    expect(text).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202e]/);
    // What they held is still shown, escaped.
    expect(text).toContain("X\\n::add-mask::high\\n::error title=meshward::0 findings DB_PASSWORD");
    expect(text).toContain("-- ok \\u001b[1A\\u001b[2K\\u001b]0;owned\\u0007");
    expect(text).toContain("Weird\\n::stop-commands::pwned\\r\\u202e");
    expect(text).toContain("\\u003a:error::first.yaml");
  });

  it("colour on: only meshward's own colour codes, and still no workflow command", () => {
    const text = renderText(hostileResult, { color: true });
    expect(text.split("\n").filter((line) => /^\s*(?:\u001b\[[0-9;]*m)*::/.test(line))).toEqual([]);
    expect(text.replace(/\u001b\[[0-9;]*m/g, "")).not.toContain(ESC);
  });

  it("JSON keeps the values as they are (JSON-escaped)", () => {
    const json = renderJson(hostileResult);
    expect(json).not.toContain(ESC);
    expect(JSON.stringify(JSON.parse(json))).toContain("X\\n::add-mask::high");
  });

  it("the drift table and CLI lines use the same guard", () => {
    expect(safeForLog("::error::x\n::add-mask::y\u001b[2K")).toBe("\\u003a:error::x\\n::add-mask::y\\u001b[2K");
    expect(safeForLog("one\n::two", { keepNewlines: true })).toBe("one\n\\u003a:two");
    expect(printable("tab\there")).toBe("tab\\there");
  });
});
