import type { AuditResult, Finding, Severity } from "../types.ts";
import { summaryLine } from "./summary.ts";

export interface TextOptions {
  /** ANSI colours; the CLI turns them on only when stdout is a TTY. */
  color: boolean;
}

const SEVERITY_COLOR: Readonly<Record<Severity, string>> = { high: "31;1", medium: "33", low: "36" };

export function renderText(result: AuditResult, options: TextOptions): string {
  const paint = (code: string, text: string): string => (options.color ? `\u001b[${code}m${text}\u001b[0m` : text);
  const lines: string[] = [];
  const byFile = new Map<string, Finding[]>();
  for (const finding of result.findings) byFile.set(finding.file, [...(byFile.get(finding.file) ?? []), finding]);
  for (const [file, findings] of byFile) {
    lines.push(paint("1;4", file));
    for (const finding of findings) {
      const where = `${finding.line}:${finding.column}`.padEnd(8);
      const severity = paint(SEVERITY_COLOR[finding.severity], finding.severity.padEnd(6));
      lines.push(`  ${where} ${severity} ${paint("1", finding.ruleId.padEnd(13))} ${finding.message}`);
      lines.push(`           ${paint("2", "evidence:")} ${finding.evidence}`);
      lines.push(`           ${paint("2", "fix:")} ${finding.fix}`);
    }
    lines.push("");
  }
  if (result.parseErrors.length > 0) {
    lines.push(paint("1", "YAML errors (documents left out, audit continued):"));
    for (const problem of result.parseErrors) lines.push(`  ${problem.file}:${problem.line}:${problem.column}  ${problem.message}`);
    lines.push("");
  }
  if (result.skipped.length > 0) {
    lines.push(paint("1", "Skipped files:"));
    for (const skipped of result.skipped) lines.push(`  ${skipped.file}  ${skipped.reason}: ${skipped.detail}`);
    lines.push("");
  }
  const unknown = Object.entries(result.unknownKinds).sort(([a], [b]) => a.localeCompare(b));
  if (unknown.length > 0) {
    lines.push(paint("2", `Unknown kinds skipped: ${unknown.map(([kind, count]) => `${kind} ×${count}`).join(", ")}`));
  }
  const summary = summaryLine(result);
  lines.push(result.findings.length === 0 ? paint("32", summary) : paint("1", summary));
  return `${lines.join("\n")}\n`;
}
