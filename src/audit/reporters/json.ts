import type { AuditResult } from "../types.ts";
import { countBySeverity, helmTemplates, kustomizeProblems, summaryByRule, summaryLine, unknownKindCount, unparsedFiles, yamlErrors } from "./summary.ts";

export const JSON_REPORT_VERSION = 1;

export function renderJson(result: AuditResult): string {
  const report = {
    version: JSON_REPORT_VERSION,
    summary: {
      findings: result.findings.length,
      bySeverity: countBySeverity(result.findings),
      filesScanned: result.filesScanned,
      documentsScanned: result.documentsScanned,
      resourcesAudited: result.resourcesAudited,
      unknownKindDocuments: unknownKindCount(result),
      filesSkipped: result.skipped.length,
      binaryFiles: result.binaryFiles,
      parseErrors: yamlErrors(result).length,
      helmTemplates: helmTemplates(result).length,
      kustomizeNotRendered: kustomizeProblems(result).length,
      unparsedFiles: unparsedFiles(result).length,
      byRule: summaryByRule(result.findings),
      suppressed: result.suppressed.length,
      ignoreProblems: result.ignoreProblems.length,
      text: summaryLine(result),
    },
    findings: result.findings,
    suppressed: result.suppressed,
    ignoreProblems: result.ignoreProblems,
    parseErrors: result.parseErrors,
    skipped: result.skipped,
    unknownKinds: result.unknownKinds,
    unknownKindFiles: result.unknownKindFiles,
  };
  return `${JSON.stringify(report, null, 2)}\n`;
}
