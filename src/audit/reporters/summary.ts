import type { AuditResult, Finding, Severity } from "../types.ts";

export function countBySeverity(findings: readonly Finding[]): Record<Severity, number> {
  const counts: Record<Severity, number> = { high: 0, medium: 0, low: 0 };
  for (const finding of findings) counts[finding.severity] += 1;
  return counts;
}

export function unknownKindCount(result: AuditResult): number {
  return Object.values(result.unknownKinds).reduce((sum, count) => sum + count, 0);
}

export function summaryLine(result: AuditResult): string {
  const counts = countBySeverity(result.findings);
  const files = new Set(result.findings.map((finding) => finding.file)).size;
  const parts = [
    `${result.findings.length} finding${result.findings.length === 1 ? "" : "s"} (${counts.high} high, ${counts.medium} medium, ${counts.low} low) in ${files} file${files === 1 ? "" : "s"}`,
    `${result.filesScanned} files scanned`,
    `${result.resourcesAudited} resources audited`,
    `${unknownKindCount(result)} documents of unknown kinds skipped`,
  ];
  if (result.skipped.length > 0) parts.push(`${result.skipped.length} files skipped`);
  if (result.parseErrors.length > 0) parts.push(`${result.parseErrors.length} YAML errors`);
  return parts.join(", ");
}
