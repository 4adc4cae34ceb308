import { isEnvTemplate, loadFile } from "./loaders/index.ts";
import type { WorkloadReference } from "./loaders/index.ts";
import { isLoopbackComponent } from "./rules/helpers.ts";
import { ALL_RULES } from "./rules/index.ts";
import { applySuppressions } from "./suppressions.ts";
import { existsSync, readFileSync, realpathSync } from "node:fs";
import { homedir } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import { readInputText } from "../util/read-input.ts";
import { KUSTOMIZATION_FILES, consumedBy, isComponent, isInside, outsideReferences, resourceFilesOf, kustomizationIn, namedKustomizationFolders, objectKey, renderAdvice, renderKustomization, renderedName } from "./kustomize-render.ts";
import type { AuditResult, Corpus, DaprConfiguration, Finding, NodePath, ParseProblem, Position, Resource, Rule, SkippedFile, SourceDocument } from "./types.ts";
import { parseYamlFile } from "./yaml-source.ts";
import { asText, get } from "./shape.ts";
import { DEFAULT_MAX_FILE_BYTES, walk } from "./walk.ts";
import type { OriginText, ReadFile } from "./walk.ts";

export interface AuditOptions {
  /** The rules to run; default: every rule that is not opt-in, plus those named in `enable`. */
  rules?: readonly Rule[];
  /** Opt-in rule ids to run as well, or "all". */
  enable?: readonly string[];
  /** Files over this size are skipped and reported (default 4 MiB). */
  maxFileBytes?: number;
  /** false: a folder with a kustomization file is read file by file, not rendered. */
  renderKustomize?: boolean;
  /** true: render an overlay that names a remote base or file (kustomize fetches it; off by default). */
  kustomizeRemote?: boolean;
  /** The kubectl binary that renders overlays (default `kubectl` on PATH). */
  kubectl?: string;
  /** Reads standard input for the path `-` (default: file descriptor 0). */
  readStdin?: () => string;
  /** Called as each kustomize overlay is about to be rendered (the CLI's progress line). */
  onRender?: (directory: string) => void;
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
  const sourceDocuments = new Map<string, SourceDocument[]>();
  for (const { file, text, format, rendered, rawOnly, origins } of files) {
    if (rawOnly === true) {
      resources.push({ kind: "raw-file", file, text });
      result.filesScanned += 1;
      continue;
    }
    const loaded = loadFile(file, text, format);
    if (rendered !== undefined) {
      for (const resource of loaded.resources) {
        if (resource.kind === "raw-file") continue;
        const key = objectKey(resource.source.data);
        const origin = key === undefined ? undefined : origins?.get(key);
        const document = origin === undefined || origin.untrusted !== undefined ? undefined : originDocument(origin, resource.source.data, sourceDocuments);
        const data = resource.source.data;
        let memo: { resource: Resource | undefined } | undefined;
        const unpatched = (): Resource | undefined => (memo ??= { resource: document === undefined ? undefined : unpatchedResource(file, format, document.data, data) }).resource;
        const renderedFrom = origin === undefined ? undefined : { file: origin.file, document, unpatched, ...(origin.untrusted === undefined ? {} : { untrusted: origin.untrusted }) };
        resource.source = { ...resource.source, rendered, ...(renderedFrom === undefined ? {} : { renderedFrom }) };
      }
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

/**
 * The document of a source file a rendered object comes from: the one of the same kind and name
 * (kustomize may have prefixed or suffixed the name), else the only one of that kind.
 */
function originDocument(origin: { file: string; text: string }, rendered: unknown, cache: Map<string, SourceDocument[]>): SourceDocument | undefined {
  let documents = cache.get(origin.file);
  if (documents === undefined) {
    documents = parseYamlFile(origin.file, origin.text).documents;
    cache.set(origin.file, documents);
  }
  const kind = asText(get(rendered, "kind"));
  const name = asText(get(rendered, "metadata", "name"));
  const sameKind = documents.filter((document) => asText(get(document.data, "kind")) === kind);
  const named = sameKind.filter((document) => {
    const own = asText(get(document.data, "metadata", "name"));
    return own !== "" && (own === name || name.includes(own));
  });
  const exact = named.filter((document) => asText(get(document.data, "metadata", "name")) === name);
  if (exact.length === 1) return exact[0];
  if (named.length === 1) return named[0];
  return sameKind.length === 1 ? sameKind[0] : undefined;
}

/**
 * A source object with only what kustomize's identity and label transformers set taken from the
 * rendered one (see `body`), loaded as if it were in the rendered output (same file, so the rules
 * resolve cross-references the same way).
 */
function unpatchedResource(file: string, format: ReadFile["format"], source: unknown, rendered: unknown): Resource | undefined {
  if (source === null || typeof source !== "object" || rendered === null || typeof rendered !== "object") return undefined;
  const copy = structuredClone(source) as Record<string, unknown>;
  copy["metadata"] = structuredClone(get(rendered, "metadata"));
  const setIn = (keys: readonly string[], value: unknown): void => {
    const parent = keys.slice(0, -1).reduce<unknown>((node, key) => (node !== null && typeof node === "object" ? (node as Record<string, unknown>)[key] : undefined), copy);
    if (value !== undefined && parent !== null && typeof parent === "object") (parent as Record<string, unknown>)[keys[keys.length - 1] ?? ""] = structuredClone(value);
  };
  setIn(["spec", "template", "metadata", "labels"], get(rendered, "spec", "template", "metadata", "labels"));
  setIn(["spec", "selector", "matchLabels"], get(rendered, "spec", "selector", "matchLabels"));
  try {
    const found = loadFile(file, JSON.stringify(copy), format).resources.filter((resource) => resource.kind !== "raw-file");
    return found.length === 1 ? found[0] : undefined;
  } catch {
    return undefined;
  }
}

/** Whether `rule` finds the same thing (path and evidence) in the unpatched source object (`unpatchedResource`). */
function sourceHasHit(rule: Rule, resource: Resource | undefined, corpus: Corpus, path: NodePath, evidence: string): boolean {
  if (resource === undefined || resource.kind === "raw-file" || !rule.appliesTo.includes(resource.kind)) return false;
  try {
    return rule.check(resource as never, corpus).some((hit) => hit.position === undefined && canonical(hit.path ?? []) === canonical(path) && hit.evidence === evidence);
  } catch {
    return false;
  }
}

/**
 * How a finding at `path` of a rendered document relates to its source document: `undefined` when
 * the value at `path` is not the source's (the overlay sets or changes it); otherwise whether the
 * overlay changed anything in the object beyond its name, namespace, labels and annotations (what
 * namespace, namePrefix, commonLabels and commonAnnotations set), such as a patch elsewhere in it.
 */
function sameValueAt(rendered: unknown, source: unknown, path: NodePath): { objectChanged: boolean } | undefined {
  const at = (data: unknown): unknown => path.reduce<unknown>((node, key) => (node !== null && typeof node === "object" ? (node as Record<string | number, unknown>)[key] : undefined), data);
  const value = at(rendered);
  if (value === undefined || path.length === 0 || canonical(value) !== canonical(at(source))) return undefined;
  return { objectChanged: canonical(body(rendered)) !== canonical(body(source)) };
}

/**
 * The sentence of a finding traced to a source file: the overlays that render it, and which of them
 * change the object (a patch elsewhere in it) though not the value.
 */
function renderedFromSentence(overlays: readonly string[], changed: readonly string[], subject: string): string {
  const command = (overlay: string): string => `\`kubectl kustomize ${overlay}\``;
  const sentence = `Rendered from this file by ${overlays.map(command).join(", ")}${subject}.`;
  if (changed.length === 0) return sentence;
  const who = changed.length === overlays.length
    ? (overlays.length === 1 ? "The overlay changes" : "The overlays change")
    : `${changed.length === 1 ? "Overlay" : "Overlays"} ${changed.join(", ")} ${changed.length === 1 ? "changes" : "change"}`;
  return `${sentence} ${who} this object, but not this value.`;
}

/** JSON with map keys sorted: kustomize writes an object's keys in its own order. */
function canonical(value: unknown): string {
  return JSON.stringify(value, (_key, node: unknown) =>
    node !== null && typeof node === "object" && !Array.isArray(node) ? Object.fromEntries(Object.entries(node as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : node);
}

/** An object without what kustomize's identity and label transformers change. */
function body(data: unknown): unknown {
  if (data === null || typeof data !== "object") return data;
  const copy = structuredClone(data) as Record<string, unknown>;
  delete copy["metadata"];
  const spec = copy["spec"];
  if (spec !== null && typeof spec === "object") {
    const template = (spec as Record<string, unknown>)["template"];
    const templateMetadata = template !== null && typeof template === "object" ? (template as Record<string, unknown>)["metadata"] : undefined;
    if (templateMetadata !== null && typeof templateMetadata === "object") delete (templateMetadata as Record<string, unknown>)["labels"];
    const selector = (spec as Record<string, unknown>)["selector"];
    if (selector !== null && typeof selector === "object") delete (selector as Record<string, unknown>)["matchLabels"];
  }
  return copy;
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
  const tracedFindings = new Map<string, { finding: Finding; overlays: string[]; changed: string[]; detail: string | undefined; subject: string }>();
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
        let file = resource.kind === "raw-file" ? resource.file : resource.source.file;
        let position: Position = hit.position
          ?? (resource.kind === "raw-file" ? { line: 1, column: 1 } : resource.source.locate(hit.path ?? []));
        let document = resource.kind === "raw-file" ? 0 : resource.source.index;
        let traced: { key: string; detail: string | undefined; subject: string; objectChanged: boolean } | undefined;
        if (rendered !== undefined && resource.kind !== "raw-file") {
          const subject = "name" in resource && resource.name !== "" ? ` (${resource.kind === "workload" ? resource.workloadKind : RENDERED_KIND[resource.kind] ?? resource.kind} ${resource.name})` : "";
          const from = resource.source.renderedFrom;
          const source = from?.document;
          const same = source !== undefined && hit.position === undefined ? sameValueAt(resource.source.data, source.data, hit.path ?? []) : undefined;
          // A patch elsewhere in the object may be why the value is a finding (a TLS flag it
          // removed): the finding is the source's own only when the rule finds it there too.
          const own = same !== undefined && (!same.objectChanged || sourceHasHit(rule, from?.unpatched?.(), corpus, hit.path ?? [], hit.evidence));
          if (source !== undefined && same !== undefined && own) {
            // The value is the source file's own: the finding points there, even when a patch
            // changed something else in the object (said so).
            file = source.file;
            position = source.locate(hit.path ?? []);
            document = source.index;
            traced = { key: [rule.id, file, position.line, position.column, hit.evidence].join("\u0000"), detail, subject, objectChanged: same.objectChanged };
            detail = [detail, renderedFromSentence([rendered], same.objectChanged ? [rendered] : [], subject)].filter((part) => part !== undefined).join(" ");
          } else {
            const why = from === undefined ? ""
              : source !== undefined && same !== undefined ? `: the object comes from ${from.file}, where this value is the same (line ${source.locate(hit.path ?? []).line}), but it is a finding only with the overlay's changes elsewhere in the object`
              : source !== undefined && hit.position === undefined ? `: the object comes from ${from.file}, but the overlay sets or changes this value`
              : from.untrusted !== undefined ? ` (${from.untrusted} ${from.file})` : ` (the object comes from ${from.file})`;
            detail = [detail, `In the output of \`kubectl kustomize ${rendered}\`${subject}; the line is that output's${why}.`].filter((part) => part !== undefined).join(" ");
          }
        }
        // One finding for a base file's line that several overlays render, naming each overlay.
        const seen = traced === undefined ? undefined : tracedFindings.get(traced.key);
        if (seen !== undefined && traced !== undefined && rendered !== undefined) {
          if (!seen.overlays.includes(rendered)) seen.overlays.push(rendered);
          if (traced.objectChanged && !seen.changed.includes(rendered)) seen.changed.push(rendered);
          const merged = [seen.detail, renderedFromSentence(seen.overlays, seen.changed, seen.subject)].filter((part) => part !== undefined).join(" ");
          seen.finding.message = `${rule.title}. ${merged}`;
          continue;
        }
        const finding: Finding = {
          ruleId: rule.id,
          severity,
          title: rule.title,
          file,
          line: position.line,
          column: position.column,
          evidence: hit.evidence,
          message: detail === undefined ? rule.title : `${rule.title}. ${detail}`,
          fix: rule.fix,
          document,
        };
        findings.push(finding);
        if (traced !== undefined && rendered !== undefined) tracedFindings.set(traced.key, { finding, overlays: [rendered], changed: traced.objectChanged ? [rendered] : [], detail: traced.detail, subject: traced.subject });
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

/** The folders among the walked files whose kustomization file (the one kustomize reads there) was read. */
function overlayFolders(files: readonly ReadFile[], given: readonly string[]): { directory: string; kustomization: string }[] {
  const found: { directory: string; kustomization: string }[] = [];
  const givenFiles = new Set(given.map((path) => resolve(path)));
  for (const { file } of files) {
    // A kustomization file given by itself is read as the file it is.
    if (!KUSTOMIZATION_FILES.includes(basename(file)) || givenFiles.has(resolve(file))) continue;
    const directory = dirname(file);
    if (kustomizationIn(directory) === file) found.push({ directory, kustomization: file });
  }
  return found;
}

function realPath(path: string): string {
  try {
    return realpathSync(path);
  } catch {
    return resolve(path);
  }
}

/** What the text of a file naming kustomize's origin annotation looks like (`config.kubernetes.io/origin`, or `~1origin` in a JSON pointer). */
const ORIGIN_MENTION = /kubernetes\.io(?:\/|~1|\\\/)origin/i;

/**
 * The local source file (and its text) of each object of a rendered overlay (`origins`, from
 * renderKustomization: empty for an overlay with remote bases), to point findings there. The
 * annotation is output of the overlay, which a patch or transformer can set to anything (review
 * audit finding 1): an origin is trusted only when it names a regular file inside the audit root
 * that the overlay loads as a resource (resourceFilesOf: the files kustomize annotates itself),
 * and only when none of the other files the overlay consumes (its kustomizations, patch files)
 * mentions the annotation. Its text is the walked file's, or read through the bounded reader
 * (a regular file, at most `maxFileBytes`); nothing else is ever opened. An origin that fails is
 * attributed to the overlay's kustomization, with the reason in each finding's message.
 */
function originTexts(origins: ReadonlyMap<string, string>, overlay: { kustomization: string; root: string; covers: (file: string) => boolean }, walked: ReadonlyMap<string, ReadFile>, maxFileBytes: number): Map<string, OriginText> {
  const texts = new Map<string, OriginText>();
  if (origins.size === 0) return texts;
  const resources = resourceFilesOf(overlay.kustomization);
  const forgedIn = [...walked.entries()].find(([real, file]) => !resources.has(real) && overlay.covers(file.file) && ORIGIN_MENTION.test(file.text))?.[1].file;
  const read = new Map<string, string | undefined>();
  for (const [key, file] of origins) {
    let real: string | undefined;
    try {
      real = realpathSync(file);
    } catch {
      real = undefined;
    }
    let why: string | undefined;
    if (forgedIn !== undefined) why = `${forgedIn}, a file of the overlay, sets kustomize's origin annotation itself`;
    else if (real === undefined || !isInside(real, overlay.root)) why = `it is outside the audited folder ${overlay.root}`;
    else if (!resources.has(real)) why = "it is not a resource file the overlay loads";
    let text: string | undefined;
    if (why === undefined && real !== undefined) {
      if (!read.has(real)) {
        let content = walked.get(real)?.text;
        if (content === undefined) {
          try {
            content = readInputText(real, { what: "kustomize resource file", maxBytes: maxFileBytes, pipes: false });
          } catch {
            content = undefined;
          }
        }
        read.set(real, content);
      }
      text = read.get(real);
      if (text === undefined) why = "it could not be read as a regular file within the size limit";
    }
    texts.set(key, why === undefined && text !== undefined
      ? { file, text }
      : { file: overlay.kustomization, text: "", untrusted: `its \`config.kubernetes.io/origin\` annotation names ${JSON.stringify(file.slice(0, 300))}, not trusted (${why ?? "unreadable"}): attributed to the overlay` });
  }
  return texts;
}

/**
 * The folder an overlay may read from: the path given on the command line that holds it, widened to
 * the git work tree around that path when there is one (an overlay of a repository names bases
 * elsewhere in it: `meshward audit deploy/overlays/prod` with `../../base`), but never to the home
 * folder or `/` (a home folder kept in git).
 */
function auditRoot(directory: string, given: readonly string[]): string {
  const real = realPath(directory);
  const holder = given.map((path) => realPath(path)).filter((path) => isInside(real, path)).sort((a, b) => a.length - b.length)[0] ?? real;
  const stop = new Set([realPath(homedir()), "/"]);
  for (let folder = holder; !stop.has(folder); folder = dirname(folder)) {
    if (existsSync(join(folder, ".git"))) return folder;
    if (dirname(folder) === folder) break;
  }
  return holder;
}

/**
 * Reads what the paths hold: files and folders (recursively), `-` for standard input (YAML),
 * and every folder among them with a kustomization file as the overlay it is — rendered with
 * `kubectl kustomize` (the files it consumes then only checked for private keys). A folder
 * another kustomization of the tree names (a base, a component) is not rendered on its own: it
 * is in the output of each overlay that names it. When kubectl is missing, the render fails, or
 * the overlay names a remote base (not fetched unless `kustomizeRemote`), its files are read one
 * by one and the overlay is reported.
 */
export function readPaths(paths: readonly string[], options: AuditOptions = {}): ReadPaths {
  const read: ReadPaths = { files: [], skipped: [], binaryFiles: 0, problems: [], rendered: [] };
  const maxFileBytes = options.maxFileBytes ?? DEFAULT_MAX_FILE_BYTES;
  const plain: string[] = [];
  for (const path of paths) {
    if (path === "-") read.files.push({ file: "<stdin>", text: (options.readStdin ?? (() => readFileSync(0, "utf8")))(), format: "yaml" });
    else plain.push(path);
  }
  if (plain.length === 0) return read;
  const walked = walk(plain, maxFileBytes);
  read.skipped.push(...walked.skipped);
  read.binaryFiles += walked.binaryFiles;
  const overlays = options.renderKustomize === false ? [] : overlayFolders(walked.files, plain);
  // Bases and components named by another kustomization of the tree are rendered as part of it.
  const named = new Set(overlays.flatMap(({ kustomization }) => namedKustomizationFolders(kustomization)));
  const consumed: ((file: string) => boolean)[] = [];
  const walkedByReal = new Map(walked.files.map((file) => [realPath(file.file), file] as const));
  for (const { directory, kustomization } of overlays) {
    if (named.has(realPath(directory)) || isComponent(kustomization)) continue;
    const root = auditRoot(directory, plain);
    const outside = outsideReferences(kustomization, root);
    if (outside.length > 0) {
      const first = outside[0] as { file: string; field: string; reference: string };
      const more = outside.length > 1 ? ` and ${outside.length - 1} more` : "";
      read.problems.push({
        file: kustomization,
        line: 1,
        column: 1,
        kind: "kustomize",
        message: `kustomize overlay not rendered (it names ${JSON.stringify(first.reference.slice(0, 200))} (${first.field} of ${first.file})${more}, outside the audited folder ${root}: not read; audit a folder that holds both); its files were audited one by one`,
      });
      continue;
    }
    options.onRender?.(directory);
    const outcome = renderKustomization(directory, options.kubectl, { allowRemote: options.kustomizeRemote === true, origins: true });
    if (!outcome.ok) {
      read.problems.push({
        file: kustomization,
        line: 1,
        column: 1,
        kind: "kustomize",
        message: outcome.reason === "no-kubectl"
          ? `kustomize overlay not rendered (kubectl is not on PATH): its bases and patches were not applied, its files were audited one by one; ${renderAdvice(directory)}`
          : outcome.reason === "remote"
            ? `kustomize overlay not rendered (${outcome.detail}; not fetched: pass --kustomize-remote to allow it); its files were audited one by one`
            : `kustomize overlay not rendered (\`kubectl kustomize ${directory}\` failed: ${outcome.detail}); its files were audited one by one`,
      });
      continue;
    }
    read.rendered.push(directory);
    const covers = consumedBy(kustomization, directory);
    read.files.push({ file: renderedName(directory), text: outcome.text, format: "yaml", rendered: directory, origins: originTexts(outcome.origins, { kustomization, root, covers }, walkedByReal, maxFileBytes) });
    consumed.push(covers);
  }
  // The files an overlay renders are audited in its output (private keys still checked in
  // each); the files beside it that it does not name are audited as files.
  read.files.push(...walked.files.map((file) => (consumed.some((covers) => covers(file.file)) ? { ...file, rawOnly: true } : file)));
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
