import type { AuditResult, Finding, ParseProblem, Severity } from "../types.ts";

export function countBySeverity(findings: readonly Finding[]): Record<Severity, number> {
  const counts: Record<Severity, number> = { high: 0, medium: 0, low: 0 };
  for (const finding of findings) counts[finding.severity] += 1;
  return counts;
}

export interface RuleSummary {
  ruleId: string;
  title: string;
  count: number;
  bySeverity: Record<Severity, number>;
  fix: string;
}

/** One entry per rule that fired, most findings first, then by id. */
export function summaryByRule(findings: readonly Finding[]): RuleSummary[] {
  const byRule = new Map<string, RuleSummary>();
  for (const finding of findings) {
    let entry = byRule.get(finding.ruleId);
    if (entry === undefined) {
      entry = { ruleId: finding.ruleId, title: finding.title, count: 0, bySeverity: { high: 0, medium: 0, low: 0 }, fix: finding.fix };
      byRule.set(finding.ruleId, entry);
    }
    entry.count += 1;
    entry.bySeverity[finding.severity] += 1;
  }
  return [...byRule.values()].sort((a, b) => b.count - a.count || a.ruleId.localeCompare(b.ruleId));
}

export function unknownKindCount(result: AuditResult): number {
  return Object.values(result.unknownKinds).reduce((sum, count) => sum + count, 0);
}

export function helmTemplates(result: AuditResult): ParseProblem[] {
  return result.parseErrors.filter((problem) => problem.kind === "helm-template");
}

export function yamlErrors(result: AuditResult): ParseProblem[] {
  return result.parseErrors.filter((problem) => problem.kind === undefined || problem.kind === "yaml");
}

/** Kustomize overlays that could not be rendered (their files were audited one by one). */
export function kustomizeProblems(result: AuditResult): ParseProblem[] {
  return result.parseErrors.filter((problem) => problem.kind === "kustomize");
}

/**
 * Files the audit could not read as configuration: YAML errors (per file), Helm templates,
 * and files skipped as unreadable or too large. `--fail-on-unparsed` fails on any.
 */
export function unparsedFiles(result: AuditResult): string[] {
  const files = new Set<string>();
  for (const problem of result.parseErrors) files.add(problem.file);
  for (const skipped of result.skipped) if (skipped.reason === "unreadable" || skipped.reason === "too-large") files.add(skipped.file);
  return [...files].sort();
}

/** "1 file", "2 files": the count and the noun, singular for exactly one (review newuser L7: "1 files scanned"). */
function counted(count: number, singular: string, plural = `${singular}s`): string {
  return `${count} ${count === 1 ? singular : plural}`;
}

export function summaryLine(result: AuditResult): string {
  const counts = countBySeverity(result.findings);
  const files = new Set(result.findings.map((finding) => finding.file)).size;
  const parts = [
    `${counted(result.findings.length, "finding")} (${counts.high} high, ${counts.medium} medium, ${counts.low} low) in ${counted(files, "file")}`,
    `${counted(result.filesScanned, "file")} scanned`,
    `${counted(result.resourcesAudited, "resource")} audited`,
    `${counted(unknownKindCount(result), "document")} of unknown kinds skipped`,
  ];
  if (result.suppressed.length > 0) parts.push(`${result.suppressed.length} suppressed by ignore comments`);
  if (result.ignoreProblems.length > 0) parts.push(`${counted(result.ignoreProblems.length, "ignore comment")} not applied`);
  if (result.skipped.length > 0) parts.push(`${counted(result.skipped.length, "file")} skipped`);
  if (result.binaryFiles > 0) parts.push(`${counted(result.binaryFiles, "binary file")} not read`);
  const helm = helmTemplates(result).length;
  if (helm > 0) parts.push(`${counted(helm, "Helm template")} not audited`);
  const overlays = kustomizeProblems(result).length;
  if (overlays > 0) parts.push(`${counted(overlays, "kustomize overlay")} not rendered`);
  const yaml = yamlErrors(result).length;
  if (yaml > 0) parts.push(`${counted(yaml, "YAML error")}`);
  return parts.join(", ");
}
