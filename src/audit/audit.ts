import { isEnvTemplate, loadFile } from "./loaders/index.ts";
import type { WorkloadReference } from "./loaders/index.ts";
import { isLoopbackComponent } from "./rules/helpers.ts";
import { ALL_RULES } from "./rules/index.ts";
import { applySuppressions } from "./suppressions.ts";
import { readFileSync } from "node:fs";
import { consumedBy, kustomizationIn, renderAdvice, renderKustomization, renderedName } from "./kustomize-render.ts";
import type { AuditResult, Corpus, DaprConfiguration, Finding, ParseProblem, Position, Resource, Rule, SkippedFile } from "./types.ts";
import { DEFAULT_MAX_FILE_BYTES, walk } from "./walk.ts";
import type { ReadFile } from "./walk.ts";

export interface AuditOptions {
  /** The rules to run; default: every rule that is not opt-in, plus those named in `enable`. */
  rules?: readonly Rule[];
  /** Opt-in rule ids to run as well, or "all". */
  enable?: readonly string[];
  /** Files over this size are skipped and reported (default 4 MiB). */
  maxFileBytes?: number;
  /** false: a folder with a kustomization file is read file by file, not rendered. */
  renderKustomize?: boolean;
  /** The kubectl binary that renders overlays (default `kubectl` on PATH). */
  kubectl?: string;
  /** Reads standard input for the path `-` (default: file descriptor 0). */
  readStdin?: () => string;
}

export interface LoadedCorpus {
  corpus: Corpus;
  result: AuditResult;
}

/** Loads files already in memory (pure). */
export function loadSources(files: readonly ReadFile[]): LoadedCorpus {
  const resources: Resource[] = [];
  const result: AuditResult = {
    findings: [],
    filesScanned: 0,
    documentsScanned: 0,
    resourcesAudited: 0,
    unknownKinds: {},
    unknownKindFiles: {},
    skipped: [],
    binaryFiles: 0,
    parseErrors: [],
    suppressed: [],
    ignoreProblems: [],
  };
  const references: WorkloadReference[] = [];
  for (const { file, text, format, rendered, rawOnly } of files) {
    if (rawOnly === true) {
      resources.push({ kind: "raw-file", file, text });
      result.filesScanned += 1;
      continue;
    }
    const loaded = loadFile(file, text, format);
    if (rendered !== undefined) {
      for (const resource of loaded.resources) if (resource.kind !== "raw-file") resource.source = { ...resource.source, rendered };
    }
    references.push(...loaded.references);
    result.filesScanned += 1;
    result.documentsScanned += loaded.documents;
    result.parseErrors.push(...loaded.problems);
    resources.push(...loaded.resources);
    for (const [kind, count] of loaded.unknownKinds) {
      result.unknownKinds[kind] = (result.unknownKinds[kind] ?? 0) + count;
      noteFile(result, kind, file);
    }
  }
  // A Rollout's workloadRef: its pod template is the referenced workload's, audited there. One
  // that is not among the files is said in the report (its pod template was not read).
  for (const reference of references) {
    const found = resources.some((resource) => resource.kind === "workload" && resource.workloadKind === reference.kind && resource.name === reference.name
      && (reference.namespace === undefined || resource.namespace === undefined || resource.namespace === reference.namespace));
    if (!found) {
      const label = `${reference.from} (workloadRef ${reference.kind} ${reference.name} not among the files: pod template not read)`;
      result.unknownKinds[label] = (result.unknownKinds[label] ?? 0) + 1;
      noteFile(result, label, reference.file);
    }
  }
  result.resourcesAudited = resources.filter((resource) => resource.kind !== "raw-file").length;
  // Configurations other resources resolve by name (`dapr.io/config`, a sidecar's policy). An
  // inline kustomize patch is a partial document: it is audited, but never stands in for the
  // Configuration it patches.
  const configurations = resources.filter((resource): resource is DaprConfiguration => resource.kind === "dapr-configuration" && resource.source.origin === undefined);
  return { corpus: { resources, configurations }, result };
}

/** How a finding in a rendered overlay names the object it is in. */
const RENDERED_KIND: Readonly<Record<string, string>> = {
  "dapr-configuration": "Dapr Configuration",
  "dapr-component": "Dapr Component",
  "dapr-httpendpoint": "Dapr HTTPEndpoint",
  "kubernetes-secret": "Secret",
  "config-values": "ConfigMap/Secret",
};

const ENV_TEMPLATE_NOTE = "Lowered to low: an env template (`.env.example` and the like): nothing loads it, but the values are published with the repository; if one is a real credential, rotate it.";

/** Where documents of an unknown kind are: the first three files. */
function noteFile(result: AuditResult, kind: string, file: string): void {
  const files = result.unknownKindFiles[kind] ?? [];
  if (files.length < 3 && !files.includes(file)) files.push(file);
  result.unknownKindFiles[kind] = files;
}

/** The default rule set: every rule that is not opt-in, plus the opt-in rules named (or "all"). */
export function selectRules(enable: readonly string[] = [], rules: readonly Rule[] = ALL_RULES): Rule[] {
  const wanted = new Set(enable.map((id) => id.trim().toUpperCase()));
  return rules.filter((rule) => rule.optIn !== true || wanted.has("ALL") || wanted.has(rule.id));
}

/** Runs the rules over a loaded corpus and returns the findings, sorted by file and position. */
export function runRules(corpus: Corpus, rules: readonly Rule[] = selectRules()): Finding[] {
  const findings: Finding[] = [];
  const byKind = new Map<string, Rule[]>();
  for (const rule of rules) {
    for (const kind of rule.appliesTo) byKind.set(kind, [...(byKind.get(kind) ?? []), rule]);
  }
  for (const resource of corpus.resources) {
    let loopback: boolean | undefined;
    for (const rule of byKind.get(resource.kind) ?? []) {
      let hits;
      try {
        hits = rule.check(resource as never, corpus);
      } catch {
        // A rule must never take the audit down on a shape it did not expect.
        continue;
      }
      for (const hit of hits) {
        // Transport findings on a component whose every address is loopback are low: the
        // traffic never leaves the machine.
        let severity = hit.severity ?? rule.severity;
        let detail = hit.detail;
        if (hit.severity === undefined && rule.family === "tls" && resource.kind === "dapr-component" && severity !== "low") {
          loopback ??= isLoopbackComponent(resource);
          if (loopback) {
            severity = "low";
            detail = [detail, "Lowered to low: every address the component names is on loopback."].filter((part) => part !== undefined).join(" ");
          }
        }
        // An env template (`.env.example`): nothing loads it, so its findings are low, said so.
        if (resource.kind !== "raw-file" && isEnvTemplate(resource.source.file)) {
          if (severity !== "low") detail = [detail, ENV_TEMPLATE_NOTE].filter((part) => part !== undefined).join(" ");
          severity = "low";
        }
        const origin = resource.kind === "raw-file" ? undefined : resource.source.origin;
        if (origin !== undefined) detail = [detail, origin].filter((part) => part !== undefined).join(" ");
        const rendered = resource.kind === "raw-file" ? undefined : resource.source.rendered;
        if (rendered !== undefined) {
          const subject = "name" in resource && resource.name !== "" ? ` (${resource.kind === "workload" ? resource.workloadKind : RENDERED_KIND[resource.kind] ?? resource.kind} ${resource.name})` : "";
          detail = [detail, `In the output of \`kubectl kustomize ${rendered}\`${subject}; the line is that output's.`].filter((part) => part !== undefined).join(" ");
        }
        const file = resource.kind === "raw-file" ? resource.file : resource.source.file;
        const position: Position = hit.position
          ?? (resource.kind === "raw-file" ? { line: 1, column: 1 } : resource.source.locate(hit.path ?? []));
        findings.push({
          ruleId: rule.id,
          severity,
          title: rule.title,
          file,
          line: position.line,
          column: position.column,
          evidence: hit.evidence,
          message: detail === undefined ? rule.title : `${rule.title}. ${detail}`,
          fix: rule.fix,
          document: resource.kind === "raw-file" ? 0 : resource.source.index,
        });
      }
    }
  }
  return findings.sort(compareFindings);
}

function compareFindings(a: Finding, b: Finding): number {
  return a.file.localeCompare(b.file) || a.line - b.line || a.column - b.column || a.ruleId.localeCompare(b.ruleId);
}

/** Audits files given in memory (pure): used by tests, the drift view and the docs' examples. */
export function auditSources(files: readonly ReadFile[], options: AuditOptions = {}): AuditResult {
  const { corpus, result } = loadSources(files);
  const rules = options.rules ?? selectRules(options.enable);
  const outcome = applySuppressions(runRules(corpus, rules), files, new Set(ALL_RULES.map((rule) => rule.id)), new Set(rules.map((rule) => rule.id)));
  result.findings = outcome.findings;
  result.suppressed = outcome.suppressed;
  result.ignoreProblems = outcome.problems;
  return result;
}

export interface ReadPaths {
  files: ReadFile[];
  skipped: SkippedFile[];
  binaryFiles: number;
  /** Overlays that could not be rendered (their files are in `files`, read one by one). */
  problems: ParseProblem[];
  /** Overlay folders rendered with `kubectl kustomize`. */
  rendered: string[];
}

/**
 * Reads what the paths hold: files and folders (recursively), `-` for standard input (YAML),
 * and a folder with a kustomization file at its top as the overlay it is — rendered with
 * `kubectl kustomize` (its own files then only checked for private keys); when kubectl is
 * missing or the render fails, its files are read one by one and the overlay is reported.
 */
export function readPaths(paths: readonly string[], options: AuditOptions = {}): ReadPaths {
  const read: ReadPaths = { files: [], skipped: [], binaryFiles: 0, problems: [], rendered: [] };
  const maxFileBytes = options.maxFileBytes ?? DEFAULT_MAX_FILE_BYTES;
  const plain: string[] = [];
  for (const path of paths) {
    if (path === "-") {
      read.files.push({ file: "<stdin>", text: (options.readStdin ?? (() => readFileSync(0, "utf8")))(), format: "yaml" });
      continue;
    }
    const kustomization = options.renderKustomize === false ? undefined : kustomizationIn(path);
    if (kustomization === undefined) {
      plain.push(path);
      continue;
    }
    const outcome = renderKustomization(path, options.kubectl);
    if (!outcome.ok) {
      read.problems.push({
        file: kustomization,
        line: 1,
        column: 1,
        kind: "kustomize",
        message: outcome.reason === "no-kubectl"
          ? `kustomize overlay not rendered (kubectl is not on PATH): its bases and patches were not applied, its files were audited one by one; ${renderAdvice(path)}`
          : `kustomize overlay not rendered (\`kubectl kustomize ${path}\` failed: ${outcome.detail}); its files were audited one by one`,
      });
      plain.push(path);
      continue;
    }
    read.rendered.push(path);
    read.files.push({ file: renderedName(path), text: outcome.text, format: "yaml", rendered: path });
    // The files the overlay renders are audited in its output (private keys still checked in
    // each); the files beside it that it does not name are audited as files.
    const own = walk([path], maxFileBytes);
    const consumed = consumedBy(kustomization, path);
    read.files.push(...own.files.map((file) => (consumed(file.file) ? { ...file, rawOnly: true } : file)));
    read.skipped.push(...own.skipped);
    read.binaryFiles += own.binaryFiles;
  }
  if (plain.length > 0) {
    const walked = walk(plain, maxFileBytes);
    read.files.push(...walked.files);
    read.skipped.push(...walked.skipped);
    read.binaryFiles += walked.binaryFiles;
  }
  return read;
}

/** Audits files and folders on disk (recursively), `-` (standard input) and kustomize overlays (see readPaths). */
export function auditPaths(paths: readonly string[], options: AuditOptions = {}): AuditResult {
  const read = readPaths(paths, options);
  const result = auditSources(read.files, options);
  result.skipped.push(...read.skipped);
  result.binaryFiles += read.binaryFiles;
  result.parseErrors.push(...read.problems);
  return result;
}
