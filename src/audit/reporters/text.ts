import type { AuditResult, Finding, Severity } from "../types.ts";
import { noWorkflowCommands, printable as p } from "../../util/printable.ts";
import { helmTemplates, kustomizeProblems, summaryByRule, summaryLine, yamlErrors } from "./summary.ts";

export interface TextOptions {
  /** ANSI colours; the CLI turns them on only when stdout is a TTY. */
  color: boolean;
}

const SEVERITY_COLOR: Readonly<Record<Severity, string>> = { high: "31;1", medium: "33", low: "36" };

/**
 * Findings grouped by file (position, severity, rule, message, evidence), then one line per
 * rule that fired with its count and its fix (printed once, not per finding), then what could
 * not be read, then the summary line.
 */
export function renderText(result: AuditResult, options: TextOptions): string {
  const paint = (code: string, text: string): string => (options.color ? `\u001b[${code}m${text}\u001b[0m` : text);
  const lines: string[] = [];
  const byFile = new Map<string, Finding[]>();
  for (const finding of result.findings) byFile.set(finding.file, [...(byFile.get(finding.file) ?? []), finding]);
  for (const [file, findings] of byFile) {
    lines.push(paint("1;4", p(file)));
    for (const finding of findings) {
      const where = `${finding.line}:${finding.column}`.padEnd(8);
      const severity = paint(SEVERITY_COLOR[finding.severity], finding.severity.padEnd(6));
      lines.push(`  ${where} ${severity} ${paint("1", p(finding.ruleId).padEnd(13))} ${p(finding.message)}`);
      lines.push(`           ${paint("2", "evidence:")} ${p(finding.evidence)}`);
    }
    lines.push("");
  }
  const rules = summaryByRule(result.findings);
  if (rules.length > 0) {
    lines.push(paint("1", "By rule (count, then how to fix):"));
    for (const rule of rules) {
      const severities = (["high", "medium", "low"] as const).filter((severity) => rule.bySeverity[severity] > 0).map((severity) => `${rule.bySeverity[severity]} ${severity}`).join(", ");
      lines.push(`  ${paint("1", rule.ruleId.padEnd(13))} ${String(rule.count).padStart(4)}  ${p(rule.title)} (${severities})`);
      lines.push(`  ${" ".repeat(13)}       ${paint("2", "fix:")} ${p(rule.fix)}`);
    }
    lines.push("");
  }
  if (result.suppressed.length > 0) {
    lines.push(paint("1", "Suppressed by ignore comments (not counted by --fail-on):"));
    for (const finding of result.suppressed) {
      lines.push(`  ${p(finding.file)}:${finding.line}:${finding.column}  ${p(finding.ruleId)}  ${paint("2", `-- ${p(finding.suppression.reason)}`)} (${finding.suppression.scope === "file" ? "file-wide, " : ""}comment on line ${finding.suppression.line})`);
    }
    lines.push("");
  }
  if (result.ignoreProblems.length > 0) {
    lines.push(paint("1", "Ignore comments not applied:"));
    for (const problem of result.ignoreProblems) lines.push(`  ${p(problem.file)}:${problem.line}:${problem.column}  ${p(problem.message)}`);
    lines.push("");
  }
  const yaml = yamlErrors(result);
  if (yaml.length > 0) {
    lines.push(paint("1", "YAML errors (documents left out, audit continued):"));
    for (const problem of yaml) lines.push(`  ${p(problem.file)}:${problem.line}:${problem.column}  ${p(problem.message)}`);
    lines.push("");
  }
  const helm = helmTemplates(result);
  if (helm.length > 0) {
    lines.push(paint("1", "Helm templates (not YAML until rendered; run `helm template` and audit its output):"));
    for (const problem of helm) lines.push(`  ${p(problem.file)}:${problem.line}`);
    lines.push("");
  }
  const overlays = kustomizeProblems(result);
  if (overlays.length > 0) {
    lines.push(paint("1", "Kustomize overlays not rendered (their files audited one by one):"));
    for (const problem of overlays) lines.push(`  ${p(problem.file)}  ${p(problem.message)}`);
    lines.push("");
  }
  if (result.skipped.length > 0) {
    lines.push(paint("1", "Skipped files:"));
    for (const skipped of result.skipped) lines.push(`  ${p(skipped.file)}  ${skipped.reason}: ${p(skipped.detail)}`);
    lines.push("");
  }
  const unknown = Object.entries(result.unknownKinds).sort(([a], [b]) => a.localeCompare(b));
  if (unknown.length > 0) {
    // One kind a line: a tree with many kinds made this one line of ~1,500 characters (review newuser2 L5).
    lines.push(paint("2", "Unknown kinds skipped:"));
    for (const [kind, count] of unknown) lines.push(paint("2", `  ${p(kind)} ×${count}${where(result.unknownKindFiles[kind])}`));
  }
  const summary = p(summaryLine(result));
  lines.push(result.findings.length === 0 ? paint("32", summary) : paint("1", summary));
  return `${noWorkflowCommands(lines.join("\n"))}\n`;
}

/** " (in a.yaml, b.yaml)": where documents of an unknown kind are (the first three files). */
function where(files: readonly string[] | undefined): string {
  if (files === undefined || files.length === 0) return "";
  return ` (in ${files.map((file) => p(file)).join(", ")})`;
}
