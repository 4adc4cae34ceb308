import { isAbsolute } from "node:path";
import { pathToFileURL } from "node:url";
import type { AuditResult, Rule, Severity } from "../types.ts";

const LEVEL: Readonly<Record<Severity, "error" | "warning" | "note">> = { high: "error", medium: "warning", low: "note" };
/** GitHub code scanning maps `security-severity` to its own high/medium/low. */
const SECURITY_SEVERITY: Readonly<Record<Severity, string>> = { high: "8.0", medium: "5.5", low: "3.0" };

export interface SarifOptions {
  rules: readonly Rule[];
  toolVersion: string;
}

function artifactUri(file: string): string {
  if (isAbsolute(file)) return pathToFileURL(file).href;
  return file.split(/[\\/]/).filter((part) => part !== "." && part !== "").map(encodeURIComponent).join("/");
}

/** A SARIF 2.1.0 log with one run; relative paths are relative to `%SRCROOT%` (the cwd). */
export function renderSarif(result: AuditResult, options: SarifOptions): string {
  const ruleIndex = new Map(options.rules.map((rule, index) => [rule.id, index]));
  const log = {
    $schema: "https://json.schemastore.org/sarif-2.1.0.json",
    version: "2.1.0",
    runs: [
      {
        tool: {
          driver: {
            name: "meshward",
            version: options.toolVersion,
            informationUri: "https://github.com/meshward/meshward/blob/main/docs/audit-rules.md",
            rules: options.rules.map((rule) => ({
              id: rule.id,
              name: rule.id.replace(/-/g, ""),
              shortDescription: { text: rule.title },
              fullDescription: { text: rule.why },
              help: { text: `${rule.why}\nFix: ${rule.fix}`, markdown: `${rule.why}\n\n**Fix:** ${rule.fix}` },
              defaultConfiguration: { level: LEVEL[rule.severity] },
              properties: { tags: ["security", rule.family], "security-severity": SECURITY_SEVERITY[rule.severity], precision: "high" },
            })),
          },
        },
        invocations: [
          {
            executionSuccessful: true,
            toolExecutionNotifications: [
              ...result.parseErrors.map((problem) => ({
                level: "warning",
                message: { text: `YAML error: ${problem.message}` },
                locations: [location(problem.file, problem.line, problem.column)],
              })),
              ...result.skipped.map((skipped) => ({
                level: "note",
                message: { text: `Skipped (${skipped.reason}): ${skipped.detail}` },
                locations: [{ physicalLocation: { artifactLocation: artifactLocation(skipped.file) } }],
              })),
            ],
          },
        ],
        results: result.findings.map((finding) => ({
          ruleId: finding.ruleId,
          ...(ruleIndex.has(finding.ruleId) ? { ruleIndex: ruleIndex.get(finding.ruleId) } : {}),
          level: LEVEL[finding.severity],
          message: { text: `${finding.message} (${finding.evidence}). Fix: ${finding.fix}` },
          locations: [location(finding.file, finding.line, finding.column)],
          partialFingerprints: { "meshwardFinding/v1": `${finding.ruleId}:${finding.file}:${finding.evidence}` },
        })),
        columnKind: "unicodeCodePoints",
      },
    ],
  };
  return `${JSON.stringify(log, null, 2)}\n`;
}

function artifactLocation(file: string): { uri: string; uriBaseId?: string } {
  const uri = artifactUri(file);
  return isAbsolute(file) ? { uri } : { uri, uriBaseId: "%SRCROOT%" };
}

function location(file: string, line: number, column: number): object {
  return { physicalLocation: { artifactLocation: artifactLocation(file), region: { startLine: Math.max(1, line), startColumn: Math.max(1, column) } } };
}
