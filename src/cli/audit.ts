import { Option } from "commander";
import type { Command } from "commander";
import { auditPaths } from "../audit/audit.ts";
import { driftPaths, renderDriftJson, renderDriftText } from "../audit/drift.ts";
import { renderJson } from "../audit/reporters/json.ts";
import { renderSarif } from "../audit/reporters/sarif.ts";
import { unparsedFiles } from "../audit/reporters/summary.ts";
import { renderText } from "../audit/reporters/text.ts";
import { ALL_RULES } from "../audit/rules/index.ts";
import { renderRulesMarkdown } from "../audit/rules-doc.ts";
import { SEVERITY_RANK } from "../audit/types.ts";
import type { Severity } from "../audit/types.ts";
import { DEFAULT_MAX_FILE_BYTES } from "../audit/walk.ts";
import { MeshwardError } from "../errors.ts";
import { packageVersion } from "../util/package-files.ts";

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

function useColor(flag: boolean | undefined): boolean {
  if (flag === false || process.env["NO_COLOR"] !== undefined) return false;
  return process.stdout.isTTY === true;
}

export function registerAuditCommand(program: Command): void {
  // `audit PATH...` is the default subcommand `scan`, so that `drift` and `rules` can have
  // their own --format/--fail-on without the parent command claiming them.
  const audit = program
    .command("audit")
    .description("find insecure communication settings in Dapr, Kubernetes, micro and meshward configs")
    .addHelpText("after", "\nUsage: meshward audit [scan] PATH... [--format text|json|sarif] [--fail-on high|medium|low] [--fail-on-unparsed] [--enable IDS]\nA folder literally named scan, drift or rules: write ./drift.");

  audit
    .command("scan", { isDefault: true })
    .description("audit files and folders (the default: `meshward audit PATH...`)")
    .argument("[paths...]", "files or folders to audit (folders recursively)")
    .addOption(new Option("-f, --format <format>", "report format").choices(["text", "json", "sarif"]).default("text"))
    .addOption(new Option("--fail-on <severity>", "exit 1 when a finding of this severity or higher exists").choices(["high", "medium", "low", "none"]).default("none"))
    .option("--fail-on-unparsed", "exit 1 when a file could not be read as configuration (YAML errors, Helm templates, unreadable or too-large files)")
    .addOption(new Option("--enable <ids>", "also run opt-in rules (comma-separated ids, repeatable, or all)").argParser((value: string, previous: string[]) => [...previous, value]).default([], "none"))
    .option("--max-file-size <bytes>", "skip (and report) files larger than this", String(DEFAULT_MAX_FILE_BYTES))
    .option("--no-color", "never colour the text report (colour is used only on a terminal)")
    .action((paths: string[], options: { format: string; failOn: string; failOnUnparsed?: boolean; enable: string[]; maxFileSize: string; color?: boolean }) => {
      if (paths.length === 0) throw new MeshwardError("E_AUDIT_USAGE", "give at least one file or folder to audit, e.g. `meshward audit deploy/`");
      const enable = parseEnable(options.enable);
      const result = auditPaths(paths, { maxFileBytes: parseSize(options.maxFileSize), enable });
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
          process.stderr.write(`meshward: --fail-on-unparsed: ${unparsed.length} file${unparsed.length === 1 ? "" : "s"} could not be read as configuration: ${unparsed.slice(0, 5).join(", ")}${unparsed.length > 5 ? ", …" : ""}\n`);
          process.exitCode = EXIT_FINDINGS;
        }
      }
    });

  audit
    .command("drift")
    .description("compare the security posture of environments; the folder named like production (else the last) is the reference")
    .argument("<envs...>", "one folder per environment, e.g. staging/ production/")
    .addOption(new Option("-f, --format <format>", "report format").choices(["text", "json"]).default("text"))
    .addOption(new Option("--fail-on <what>", "exit 1 when an environment is weaker than the reference, or when any differ").choices(["weaker", "differs", "none"]).default("none"))
    .option("--no-color", "never colour the table")
    .action((envs: string[], options: { format: string; failOn: string; color?: boolean }) => {
      if (envs.length < 2) throw new MeshwardError("E_AUDIT_USAGE", "drift needs at least two environment folders, e.g. `meshward audit drift staging/ production/`");
      const report = driftPaths(envs);
      process.stdout.write(options.format === "json" ? renderDriftJson(report) : renderDriftText(report, { color: useColor(options.color) }));
      const failing = options.failOn === "weaker"
        ? report.rows.some((row) => row.status === "weaker")
        : options.failOn === "differs" && report.rows.some((row) => row.status !== "same");
      if (failing) process.exitCode = EXIT_FINDINGS;
    });

  audit
    .command("rules")
    .description("list every audit rule")
    .addOption(new Option("-f, --format <format>", "output format").choices(["text", "json", "markdown"]).default("text"))
    .action((options: { format: string }) => {
      if (options.format === "markdown") {
        process.stdout.write(renderRulesMarkdown(ALL_RULES));
      } else if (options.format === "json") {
        const rules = ALL_RULES.map(({ id, family, severity, title, why, fix, optIn }) => ({ id, family, severity, optIn: optIn === true, title, why, fix }));
        process.stdout.write(`${JSON.stringify(rules, null, 2)}\n`);
      } else {
        process.stdout.write(ALL_RULES.map((rule) => `${rule.id.padEnd(14)} ${rule.severity.padEnd(7)} ${rule.title}${rule.optIn === true ? " (opt-in: --enable " + rule.id + ")" : ""}\n`).join(""));
      }
    });
}
