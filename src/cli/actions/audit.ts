// What `meshward audit` does; what it accepts (its flags, its help) is ../audit.ts.
import { auditPaths } from "../../audit/audit.ts";
import { driftPaths, renderDriftJson, renderDriftText } from "../../audit/drift.ts";
import { renderJson } from "../../audit/reporters/json.ts";
import { renderSarif } from "../../audit/reporters/sarif.ts";
import { unparsedFiles } from "../../audit/reporters/summary.ts";
import { safeForLog } from "../../util/printable.ts";
import { renderText } from "../../audit/reporters/text.ts";
import { ALL_RULES } from "../../audit/rules/index.ts";
import { renderRulesMarkdown } from "../../audit/rules-doc.ts";
import { SEVERITY_RANK } from "../../audit/types.ts";
import type { Severity } from "../../audit/types.ts";
import { MeshwardError } from "../../errors.ts";
import { packageVersion } from "../../util/package-files.ts";
import { relative } from "node:path";

/** Exit code when findings at or above `--fail-on` exist (or drift is weaker than the reference). */
export const EXIT_FINDINGS = 1;

function parseSize(value: string): number {
  const bytes = Number(value);
  if (!Number.isInteger(bytes) || bytes <= 0) {
    throw new MeshwardError("E_AUDIT_USAGE", `--max-file-size must be a positive number of bytes, got "${value}"`);
  }
  return bytes;
}

/** `--enable` ids, comma-separated or repeated; unknown ids and rules that are not opt-in are usage errors. */
function parseEnable(values: readonly string[]): string[] {
  const ids = values.flatMap((value) => value.split(",")).map((id) => id.trim().toUpperCase()).filter((id) => id !== "");
  const optIn = ALL_RULES.filter((rule) => rule.optIn === true).map((rule) => rule.id);
  for (const id of ids) {
    if (id === "ALL" || optIn.includes(id)) continue;
    const known = ALL_RULES.some((rule) => rule.id === id);
    throw new MeshwardError("E_AUDIT_USAGE", known
      ? `--enable ${id}: that rule always runs; opt-in rules are ${optIn.join(", ")}`
      : `--enable ${id}: no such rule; opt-in rules are ${optIn.join(", ")} (or all)`);
  }
  return ids;
}

/**
 * One short line on stderr per kustomize overlay about to be rendered, when stderr is a terminal
 * (rendering runs `kubectl kustomize` twice per overlay: seconds with nothing printed on a loaded
 * machine). Never on stdout, never when stderr is a pipe or a file.
 */
export function overlayProgress(stream: { isTTY?: boolean; write(text: string): unknown } = process.stderr): ((directory: string) => void) | undefined {
  if (stream.isTTY !== true) return undefined;
  return (directory) => {
    const shown = relative(process.cwd(), directory);
    stream.write(`meshward audit: rendering ${safeForLog(shown === "" ? "." : shown)} (kubectl kustomize)\n`);
  };
}

function progress(): { onRender?: (directory: string) => void } {
  const onRender = overlayProgress();
  return onRender === undefined ? {} : { onRender };
}

function useColor(flag: boolean | undefined): boolean {
  if (flag === false || process.env["NO_COLOR"] !== undefined) return false;
  return process.stdout.isTTY === true;
}

export interface ScanOptions {
  format: string;
  failOn: string;
  failOnUnparsed?: boolean;
  enable: string[];
  maxFileSize: string;
  kustomize?: boolean;
  kustomizeRemote?: boolean;
  color?: boolean;
}

export function auditScan(paths: string[], options: ScanOptions): void {
  const enable = parseEnable(options.enable);
  const result = auditPaths(paths, { maxFileBytes: parseSize(options.maxFileSize), enable, renderKustomize: options.kustomize !== false, kustomizeRemote: options.kustomizeRemote === true, ...progress() });
  const missing = result.skipped.filter((skipped) => paths.includes(skipped.file) && skipped.detail === "does not exist");
  if (missing.length === paths.length) {
    throw new MeshwardError("E_AUDIT_NOT_FOUND", `nothing to audit: ${missing.map((skipped) => skipped.file).join(", ")} not found`);
  }
  if (options.format === "json") process.stdout.write(renderJson(result));
  else if (options.format === "sarif") process.stdout.write(renderSarif(result, { rules: ALL_RULES, toolVersion: packageVersion() }));
  else process.stdout.write(renderText(result, { color: useColor(options.color) }));
  if (options.failOn !== "none") {
    const threshold = SEVERITY_RANK[options.failOn as Severity];
    if (result.findings.some((finding) => SEVERITY_RANK[finding.severity] >= threshold)) process.exitCode = EXIT_FINDINGS;
  }
  if (options.failOnUnparsed === true) {
    const unparsed = unparsedFiles(result);
    if (unparsed.length > 0) {
      process.stderr.write(`meshward: --fail-on-unparsed: ${unparsed.length} file${unparsed.length === 1 ? "" : "s"} could not be read as configuration: ${safeForLog(unparsed.slice(0, 5).join(", "))}${unparsed.length > 5 ? ", …" : ""}\n`);
      process.exitCode = EXIT_FINDINGS;
    }
  }
}

export interface DriftOptions {
  format: string;
  failOn: string;
  reference?: string;
  kustomize?: boolean;
  kustomizeRemote?: boolean;
  color?: boolean;
}

export function auditDrift(envs: string[], options: DriftOptions): void {
  const report = driftPaths(envs, undefined, { ...(options.reference === undefined ? {} : { reference: options.reference }), renderKustomize: options.kustomize !== false, kustomizeRemote: options.kustomizeRemote === true, ...progress() });
  process.stdout.write(options.format === "json" ? renderDriftJson(report) : renderDriftText(report, { color: useColor(options.color) }));
  const failing = options.failOn === "weaker"
    ? report.rows.some((row) => row.status === "weaker")
    : options.failOn === "differs" && report.rows.some((row) => row.status !== "same");
  if (failing) process.exitCode = EXIT_FINDINGS;
}

export function auditRules(options: { format: string }): void {
  if (options.format === "markdown") {
    process.stdout.write(renderRulesMarkdown(ALL_RULES));
  } else if (options.format === "json") {
    const rules = ALL_RULES.map(({ id, family, severity, title, why, fix, optIn }) => ({ id, family, severity, optIn: optIn === true, title, why, fix }));
    process.stdout.write(`${JSON.stringify(rules, null, 2)}\n`);
  } else {
    process.stdout.write(ALL_RULES.map((rule) => `${rule.id.padEnd(14)} ${rule.severity.padEnd(7)} ${rule.title}${rule.optIn === true ? " (opt-in: --enable " + rule.id + ")" : ""}\n`).join(""));
  }
}
