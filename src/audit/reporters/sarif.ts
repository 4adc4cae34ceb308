import { createHash } from "node:crypto";
import { isAbsolute } from "node:path";
import { pathToFileURL } from "node:url";
import type { AuditResult, Finding, Rule, Severity, SuppressedFinding } from "../types.ts";

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

/**
 * One fingerprint per finding, unique in the run and stable when lines move: a hash of rule,
 * file, document index and evidence, then the finding's ordinal among findings with the same
 * hash (two identical findings in one document get `:0` and `:1`). GitHub code scanning
 * merges results that share a fingerprint, so each must be distinct.
 */
export function findingFingerprints(findings: readonly Finding[]): string[] {
  const seen = new Map<string, number>();
  return findings.map((finding) => {
    const hash = createHash("sha256").update([finding.ruleId, finding.file, String(finding.document), finding.evidence].join("\u0000")).digest("hex").slice(0, 32);
    const ordinal = seen.get(hash) ?? 0;
    seen.set(hash, ordinal + 1);
    return `${hash}:${ordinal}`;
  });
}

/** A SARIF 2.1.0 log with one run; relative paths are relative to `%SRCROOT%` (the cwd). */
export function renderSarif(result: AuditResult, options: SarifOptions): string {
  // Suppressed findings are results too (with `suppressions`), fingerprinted with the rest so an
  // alert keeps its identity when an ignore comment is added or removed.
  const fingerprints = findingFingerprints([...result.findings, ...result.suppressed]);
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
                message: { text: problem.kind === "helm-template" ? problem.message : `YAML error: ${problem.message}` },
                locations: [location(problem.file, problem.line, problem.column)],
              })),
              ...result.ignoreProblems.map((problem) => ({
                level: "warning",
                message: { text: problem.message },
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
        results: [...result.findings, ...result.suppressed].map((finding, index) => ({
          ruleId: finding.ruleId,
          ...(ruleIndex.has(finding.ruleId) ? { ruleIndex: ruleIndex.get(finding.ruleId) } : {}),
          level: LEVEL[finding.severity],
          message: { text: `${finding.message} (${finding.evidence}). Fix: ${finding.fix}` },
          locations: [location(finding.file, finding.line, finding.column)],
          partialFingerprints: { "meshwardFinding/v2": fingerprints[index] },
          // SARIF §3.35: accepted in source; code scanning shows such an alert as dismissed.
          ...("suppression" in finding ? { suppressions: [{ kind: "inSource", status: "accepted", justification: (finding as SuppressedFinding).suppression.reason }] } : {}),
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
