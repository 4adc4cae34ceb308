import { loadFile } from "./loaders/index.ts";
import { ALL_RULES } from "./rules/index.ts";
import type { AuditResult, Corpus, DaprConfiguration, Finding, Position, Resource, Rule } from "./types.ts";
import { DEFAULT_MAX_FILE_BYTES, walk } from "./walk.ts";
import type { ReadFile } from "./walk.ts";

export interface AuditOptions {
  rules?: readonly Rule[];
  /** Files over this size are skipped and reported (default 4 MiB). */
  maxFileBytes?: number;
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
    skipped: [],
    parseErrors: [],
  };
  for (const { file, text } of files) {
    const loaded = loadFile(file, text);
    result.filesScanned += 1;
    result.documentsScanned += loaded.documents;
    result.parseErrors.push(...loaded.problems);
    resources.push(...loaded.resources);
    for (const [kind, count] of loaded.unknownKinds) result.unknownKinds[kind] = (result.unknownKinds[kind] ?? 0) + count;
  }
  result.resourcesAudited = resources.filter((resource) => resource.kind !== "raw-file").length;
  const configurations = resources.filter((resource): resource is DaprConfiguration => resource.kind === "dapr-configuration");
  return { corpus: { resources, configurations }, result };
}

/** Runs the rules over a loaded corpus and returns the findings, sorted by file and position. */
export function runRules(corpus: Corpus, rules: readonly Rule[] = ALL_RULES): Finding[] {
  const findings: Finding[] = [];
  const byKind = new Map<string, Rule[]>();
  for (const rule of rules) {
    for (const kind of rule.appliesTo) byKind.set(kind, [...(byKind.get(kind) ?? []), rule]);
  }
  for (const resource of corpus.resources) {
    for (const rule of byKind.get(resource.kind) ?? []) {
      let hits;
      try {
        hits = rule.check(resource as never, corpus);
      } catch {
        // A rule must never take the audit down on a shape it did not expect.
        continue;
      }
      for (const hit of hits) {
        const file = resource.kind === "raw-file" ? resource.file : resource.source.file;
        const position: Position = hit.position
          ?? (resource.kind === "raw-file" ? { line: 1, column: 1 } : resource.source.locate(hit.path ?? []));
        findings.push({
          ruleId: rule.id,
          severity: rule.severity,
          title: rule.title,
          file,
          line: position.line,
          column: position.column,
          evidence: hit.evidence,
          message: hit.detail === undefined ? rule.title : `${rule.title}. ${hit.detail}`,
          fix: rule.fix,
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
  result.findings = runRules(corpus, options.rules);
  return result;
}

/** Audits files and folders on disk (recursively); the only I/O is reading them. */
export function auditPaths(paths: readonly string[], options: AuditOptions = {}): AuditResult {
  const walked = walk(paths, options.maxFileBytes ?? DEFAULT_MAX_FILE_BYTES);
  const result = auditSources(walked.files, options);
  result.skipped.push(...walked.skipped);
  return result;
}
