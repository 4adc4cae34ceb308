import { Option } from "commander";
import type { Command } from "commander";
import { DEFAULT_MAX_FILE_BYTES } from "../audit/walk.ts";
import { MeshwardError } from "../errors.ts";
import type { DriftOptions, ScanOptions } from "./actions/audit.ts";

// The command as `--help` shows it; what it does is in ./actions/audit.ts, loaded when it runs.
const actions = () => import("./actions/audit.ts");

export function registerAuditCommand(program: Command): void {
  // `audit PATH...` is the default subcommand `scan`, so that `drift` and `rules` can have
  // their own --format/--fail-on without the parent command claiming them.
  const audit = program
    .command("audit")
    .description("find insecure communication settings in Dapr, Kubernetes, micro and meshward configs")
    // One line per subcommand, each naming all its options (test/audit/help-usage.test.ts checks it).
    .addHelpText("after", [
      "",
      "Usage: meshward audit [scan] PATH... [--format text|json|sarif] [--fail-on high|medium|low|none] [--fail-on-unparsed] [--enable IDS] [--max-file-size BYTES] [--no-kustomize] [--kustomize-remote] [--no-color]",
      "       meshward audit drift ENV ENV... [--format text|json] [--fail-on weaker|differs|none] [--reference DIR] [--no-kustomize] [--kustomize-remote] [--no-color]",
      "       meshward audit rules [--format text|json|markdown]",
      "A folder literally named scan, drift or rules: write ./drift.",
    ].join("\n"));

  audit
    .command("scan", { isDefault: true })
    .description("audit files and folders (the default: `meshward audit PATH...`)")
    .argument("[paths...]", "files or folders to audit (folders recursively; a folder with a kustomization.yaml as rendered by `kubectl kustomize`; - for YAML on stdin)")
    .addOption(new Option("-f, --format <format>", "report format").choices(["text", "json", "sarif"]).default("text"))
    .addOption(new Option("--fail-on <severity>", "exit 1 when a finding of this severity or higher exists").choices(["high", "medium", "low", "none"]).default("none"))
    .option("--fail-on-unparsed", "exit 1 when a file could not be read as configuration (YAML errors, Helm templates, unreadable or too-large files)")
    .addOption(new Option("--enable <ids>", "also run opt-in rules (comma-separated ids, repeatable, or all)").argParser((value: string, previous: string[]) => [...previous, value]).default([], "none"))
    .option("--max-file-size <bytes>", "skip (and report) files larger than this", String(DEFAULT_MAX_FILE_BYTES))
    .option("--no-kustomize", "read a folder with a kustomization.yaml file by file instead of rendering it with `kubectl kustomize`")
    .option("--kustomize-remote", "render an overlay that names a remote base or file (kustomize then fetches it with git or HTTP); by default such an overlay is read file by file and reported")
    .option("--no-color", "never colour the text report (colour is used only on a terminal)")
    .action(async (paths: string[], options: ScanOptions) => {
      // Checked before the auditor loads: a bare `meshward audit` answers at once.
      if (paths.length === 0) throw new MeshwardError("E_AUDIT_USAGE", "give at least one file or folder to audit, e.g. `meshward audit deploy/`");
      (await actions()).auditScan(paths, options);
    });

  audit
    .command("drift")
    .description("compare the security posture of environments; the reference is --reference, else the folder named like production, else the last")
    .argument("<envs...>", "one folder per environment, e.g. staging/ production/")
    .addOption(new Option("-f, --format <format>", "report format").choices(["text", "json"]).default("text"))
    .addOption(new Option("--fail-on <what>", "exit 1 when an environment is weaker than the reference, or when any differ").choices(["weaker", "differs", "none"]).default("none"))
    .option("--reference <dir>", "the environment the others are compared with (one of the folders given)")
    .option("--no-kustomize", "read an environment folder with a kustomization.yaml file by file instead of rendering it")
    .option("--kustomize-remote", "render an overlay that names a remote base or file (kustomize then fetches it with git or HTTP); by default drift refuses it")
    .option("--no-color", "never colour the table")
    .action(async (envs: string[], options: DriftOptions) => {
      if (envs.length < 2) throw new MeshwardError("E_AUDIT_USAGE", "drift needs at least two environment folders, e.g. `meshward audit drift staging/ production/`");
      (await actions()).auditDrift(envs, options);
    });

  audit
    .command("rules")
    .description("list every audit rule")
    .addOption(new Option("-f, --format <format>", "output format").choices(["text", "json", "markdown"]).default("text"))
    .action(async (options: { format: string }) => (await actions()).auditRules(options));
}
