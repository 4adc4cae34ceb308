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

/**
 * The SARIF rule id of a finding: the rule's id, or, when the finding's severity differs from the
 * rule's (lowered on loopback, a host-name-only check), the hierarchical sub-rule
 * `<rule id>/<severity>` (SARIF 2.1.0 §3.27.5). GitHub code scanning takes `security-severity`
 * from the rule descriptor only (a result's own `properties` are not read for it), so a finding
 * lowered to low under a high rule would otherwise rank High.
 */
export function sarifRuleId(finding: Finding, rules: readonly Rule[]): string {
  const rule = rules.find((each) => each.id === finding.ruleId);
  return rule === undefined || rule.severity === finding.severity ? finding.ruleId : `${finding.ruleId}/${finding.severity}`;
}

function ruleDescriptor(rule: Rule, severity: Severity = rule.severity): object {
  const variant = severity !== rule.severity;
  return {
    id: variant ? `${rule.id}/${severity}` : rule.id,
    name: `${rule.id.replace(/-/g, "")}${variant ? severity[0]?.toUpperCase() + severity.slice(1) : ""}`,
    shortDescription: { text: variant ? `${rule.title} (${severity})` : rule.title },
    fullDescription: { text: variant ? `${rule.why} (${rule.id} findings whose severity is ${severity}, e.g. on loopback.)` : rule.why },
    help: { text: `${rule.why}\nFix: ${rule.fix}`, markdown: `${rule.why}\n\n**Fix:** ${rule.fix}` },
    defaultConfiguration: { level: LEVEL[severity] },
    properties: { tags: ["security", rule.family], "security-severity": SECURITY_SEVERITY[severity], precision: "high" },
  };
}

/** A SARIF 2.1.0 log with one run; relative paths are relative to `%SRCROOT%` (the cwd). */
export function renderSarif(result: AuditResult, options: SarifOptions): string {
  // Suppressed findings are results too (with `suppressions`), fingerprinted with the rest so an
  // alert keeps its identity when an ignore comment is added or removed.
  const all = [...result.findings, ...result.suppressed];
  const fingerprints = findingFingerprints(all);
  // Every rule, then one sub-rule per (rule, severity) the findings need, in order of first use.
  const descriptors = options.rules.map((rule) => ruleDescriptor(rule));
  const ruleIndex = new Map(options.rules.map((rule, index) => [rule.id, index]));
  const ruleIds = all.map((finding) => sarifRuleId(finding, options.rules));
  for (const [index, finding] of all.entries()) {
    const id = ruleIds[index] ?? finding.ruleId;
    const rule = options.rules.find((each) => each.id === finding.ruleId);
    if (ruleIndex.has(id) || rule === undefined) continue;
    ruleIndex.set(id, descriptors.length);
    descriptors.push(ruleDescriptor(rule, finding.severity));
  }
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
            rules: descriptors,
          },
        },
        invocations: [
          {
            executionSuccessful: true,
            toolExecutionNotifications: [
              ...result.parseErrors.map((problem) => ({
                level: "warning",
                message: { text: problem.kind === "helm-template" || problem.kind === "kustomize" ? problem.message : `YAML error: ${problem.message}` },
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
        results: all.map((finding, index) => ({
          ruleId: ruleIds[index],
          ...(ruleIndex.has(ruleIds[index] ?? "") ? { ruleIndex: ruleIndex.get(ruleIds[index] ?? "") } : {}),
          level: LEVEL[finding.severity],
          // The finding's own severity, for readers of result properties (GitHub reads the rule's).
          properties: { "security-severity": SECURITY_SEVERITY[finding.severity], "meshward/ruleId": finding.ruleId },
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
