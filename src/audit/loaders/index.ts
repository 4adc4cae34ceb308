import { parseEnvFile } from "../env-source.ts";
import { asArray, asText, isDict } from "../shape.ts";
import type { Dict } from "../shape.ts";
import type { ComposeService, ConfigValues, NodePath, ParseProblem, Resource, SourceDocument } from "../types.ts";
import { parseYamlFile } from "../yaml-source.ts";
import { isDaprKind, loadDaprComponent, loadDaprConfiguration, loadDaprHttpEndpoint } from "./dapr.ts";
import { isContainerApp, isContainerAppDaprComponent, loadContainerApp, loadContainerAppDaprComponent, loadContainerAppSecrets } from "./container-apps.ts";
import { isConfigMapKind, isSecretKind, isWorkloadKind, loadConfigValues, loadSecret, loadWorkload, rolloutWorkloadRef } from "./kubernetes.ts";
import { inlinePatches, isKustomization } from "./kustomize.ts";
import { classifyMeshward, loadMeshwardCa, loadMeshwardSidecar } from "./meshward.ts";
import { composeEnvironment, isMicroYamlName, loadMicroEnv, loadMicroSettings, looksLikeMicroEnv } from "./micro.ts";
import type { EnvPair } from "./micro.ts";
import type { Workload } from "../types.ts";

export type FileFormat = "yaml" | "env" | "other";

export interface LoadedFile {
  resources: Resource[];
  documents: number;
  unknownKinds: Map<string, number>;
  problems: ParseProblem[];
  /** Workloads that take their pod template from another document (an Argo Rollout's `workloadRef`): resolved across files by the caller. */
  references: WorkloadReference[];
}

/** A Rollout's `spec.workloadRef`: the workload whose pod template it runs. */
export interface WorkloadReference {
  /** apiVersion/kind name of the referring document, for the report. */
  from: string;
  file: string;
  kind: string;
  name: string;
  namespace: string | undefined;
}

export function formatOf(file: string): FileFormat {
  const name = file.split(/[\\/]/).pop() ?? file;
  if (/\.(ya?ml|json|jsonc)$/i.test(name)) return "yaml";
  if (/^\.env(\..+)?$/i.test(name) || /\.env$/i.test(name)) return "env";
  return "other";
}

/**
 * An env template committed beside (or instead of) the real env file: `.env.example`, `.env.sample`,
 * `.env.template`, `.env.tpl`, `.env.dist`, `.env.defaults` (the dotenv, Laravel and Symfony
 * conventions), `example.env`, `sample.env`, `template.env`. Nothing loads it; its findings are
 * lowered to low by the runner (see docs/audit-rules.md, "Env templates").
 */
export function isEnvTemplate(file: string): boolean {
  const name = file.split(/[\\/]/).pop() ?? file;
  return /^\.env\.(example|sample|template|tpl|dist|defaults?)$/i.test(name) || /^(example|sample|template)\.env$/i.test(name);
}

/** Loads one file's text into the resources the rules know about. Never throws. */
export function loadFile(file: string, text: string, format: FileFormat = formatOf(file)): LoadedFile {
  const loaded: LoadedFile = { resources: [{ kind: "raw-file", file, text }], documents: 0, unknownKinds: new Map(), problems: [], references: [] };
  if (format === "env") {
    const source = parseEnvFile(file, text);
    loaded.documents = 1;
    if (looksLikeMicroEnv(source.data)) loaded.resources.push(loadMicroSettings(source));
    // Every variable is also read like a container's env (connection URLs, inline secrets).
    const env = Object.entries(source.data as Record<string, string>).map(([name, value]) => ({ name, value, hasInlineValue: value !== "", path: [name] }));
    if (env.length > 0) {
      const name = file.split(/[\\/]/).pop() ?? file;
      loaded.resources.push({ kind: "config-values", source, holder: "env-file", name, namespace: undefined, env } satisfies ConfigValues);
    } else if (!looksLikeMicroEnv(source.data)) count(loaded.unknownKinds, "env file without settings");
    return loaded;
  }
  if (format !== "yaml") return loaded;
  const helm = helmTemplateLine(file, text);
  if (helm !== undefined) {
    loaded.problems.push({
      file,
      line: helm,
      column: 1,
      kind: "helm-template",
      message: "Helm template: not YAML until rendered; run `helm template` and audit its output",
    });
    return loaded;
  }
  const yamlText = /\.jsonc?$/i.test(file) ? blankJsonComments(text) : text;
  const parsed = parseYamlFile(file, yamlText);
  loaded.problems.push(...parsed.problems);
  for (const source of parsed.documents) {
    if (source.data === null || source.data === undefined) continue;
    loaded.documents += 1;
    if (isDict(source.data) && isKustomization(file, source.data)) {
      loadKustomization(file, source, source.data, yamlText, loaded);
      continue;
    }
    classify(file, source, source.data, [], loaded);
  }
  return loaded;
}

/**
 * A Kustomization: the documents its inline patches stand for are audited (patch files on
 * disk are audited as files); findings point into the Kustomization. A patch is never read
 * as a Kustomization itself.
 */
function loadKustomization(file: string, source: SourceDocument, data: Dict, text: string, loaded: LoadedFile): void {
  const patches = inlinePatches(source, data, text);
  loaded.problems.push(...patches.problems);
  if (patches.untargeted > 0) count(loaded.unknownKinds, "kustomize JSON6902 patch without a target kind", patches.untargeted);
  for (const patch of patches.documents) {
    if (isDict(patch.data) && isKustomization(file, patch.data)) count(loaded.unknownKinds, kindLabel(patch.data));
    else classify(file, patch.source, patch.data, [], loaded);
  }
}

function classify(file: string, source: SourceDocument, data: unknown, base: NodePath, loaded: LoadedFile): void {
  if (!isDict(data)) {
    count(loaded.unknownKinds, "(not a mapping)");
    return;
  }
  const view = base.length === 0 ? source : rebased(source, base);
  if (isDaprKind(data, "Configuration")) {
    loaded.resources.push(loadDaprConfiguration(view, data));
  } else if (isDaprKind(data, "Component")) {
    loaded.resources.push(loadDaprComponent(view, data));
  } else if (isDaprKind(data, "HTTPEndpoint")) {
    loaded.resources.push(loadDaprHttpEndpoint(view, data));
  } else if (rolloutWorkloadRef(data) !== undefined) {
    // Its pod template is the referenced Deployment's, audited as that document.
    const ref = rolloutWorkloadRef(data) ?? { kind: "", name: "" };
    const metadata = isDict(data["metadata"]) ? data["metadata"] : {};
    loaded.references.push({ from: `${kindLabel(data)} ${asText(metadata["name"])}`, file, kind: ref.kind, name: ref.name, namespace: asText(metadata["namespace"]) || undefined });
  } else if (isWorkloadKind(data)) {
    const workload = loadWorkload(view, data);
    loaded.resources.push(workload, ...containerMicroSettings(workload));
  } else if (isSecretKind(data)) {
    loaded.resources.push(loadSecret(view, data), loadConfigValues(view, data));
  } else if (isConfigMapKind(data)) {
    loaded.resources.push(loadConfigValues(view, data));
  } else if (asText(data["kind"]) === "List" && Array.isArray(data["items"])) {
    asArray(data["items"]).forEach((item, index) => classify(file, source, item, [...base, "items", index], loaded));
  } else if (base.length === 0 && isContainerApp(data)) {
    const secrets = loadContainerAppSecrets(source, data);
    loaded.resources.push(loadContainerApp(source, data), ...(secrets === undefined ? [] : [secrets]));
  } else if (base.length === 0 && isContainerAppDaprComponent(data)) {
    const { component, secrets } = loadContainerAppDaprComponent(source, data);
    loaded.resources.push(component, ...(secrets === undefined ? [] : [secrets]));
  } else if (base.length === 0 && isComposeFile(data)) {
    const before = loaded.resources.length;
    for (const [name, service] of Object.entries(data["services"] as Dict)) {
      if (!isDict(service)) continue;
      const pairs = composeEnvironment(service["environment"], ["services", name, "environment"]);
      const settings = loadMicroEnv(source, pairs);
      if (settings !== undefined) loaded.resources.push(settings);
      if (pairs.length > 0) loaded.resources.push({ kind: "compose-service", source, name, env: pairs } satisfies ComposeService);
    }
    if (loaded.resources.length === before) count(loaded.unknownKinds, "docker-compose file without environment settings");
  } else if (base.length === 0 && (isMicroYamlName(file) || isDict(data["micro"]))) {
    loaded.resources.push(loadMicroSettings(isDict(data["micro"]) ? microSection(source, data) : source));
  } else {
    const meshward = classifyMeshward(data);
    if (meshward === "sidecar") loaded.resources.push(loadMeshwardSidecar(view, data));
    else if (meshward === "ca") loaded.resources.push(loadMeshwardCa(view, data));
    else count(loaded.unknownKinds, kindLabel(data));
  }
}

/** A docker-compose file: a top-level `services` map whose entries look like containers. */
function isComposeFile(data: Dict): boolean {
  if (!isDict(data["services"]) || "kind" in data) return false;
  return Object.values(data["services"]).some((service) => isDict(service) && ("image" in service || "build" in service || "environment" in service));
}

/** One micro settings resource per container that sets `MICRO_*` variables in `env`. */
function containerMicroSettings(workload: Workload): Resource[] {
  const byContainer = new Map<string, EnvPair[]>();
  for (const entry of workload.env) {
    const container = JSON.stringify(entry.path.slice(0, -3));
    byContainer.set(container, [...(byContainer.get(container) ?? []), { name: entry.name, value: entry.value, path: entry.path }]);
  }
  const resources: Resource[] = [];
  for (const pairs of byContainer.values()) {
    const settings = loadMicroEnv(workload.source, pairs);
    if (settings !== undefined) resources.push(settings);
  }
  return resources;
}

const HELM_DIRECTIVE = /\{\{-?\s*(\.Values|\.Release|\.Chart|\.Capabilities|\.Files|include\s|template\s|toYaml|tpl\s|define\s|if\s|else|range\s|with\s|end\s*-?\}\}|\/\*)/;

/**
 * The line of the first template action when the file is a Helm chart template (under a
 * `templates/` folder with `{{`, or any file with Helm's own directives); else undefined.
 */
export function helmTemplateLine(file: string, text: string): number | undefined {
  const first = text.indexOf("{{");
  if (first < 0) return undefined;
  const inTemplates = /(^|[\\/])templates[\\/]/.test(file);
  const match = HELM_DIRECTIVE.exec(text);
  if (!inTemplates && match === null) return undefined;
  const at = inTemplates ? first : (match?.index ?? first);
  return text.slice(0, at).split("\n").length;
}

/**
 * JSON with comments (tsconfig-style `//` and `/* … *\/`): the comments are replaced by
 * spaces, newlines kept, so positions stay right; strings are left alone.
 */
export function blankJsonComments(text: string): string {
  if (!text.includes("//") && !text.includes("/*")) return text;
  let out = "";
  let index = 0;
  while (index < text.length) {
    const char = text[index] ?? "";
    if (char === '"') {
      let end = index + 1;
      while (end < text.length && text[end] !== '"' && text[end] !== "\n") end += text[end] === "\\" ? 2 : 1;
      out += text.slice(index, end + 1);
      index = end + 1;
    } else if (char === "/" && text[index + 1] === "/") {
      let end = text.indexOf("\n", index);
      if (end < 0) end = text.length;
      out += " ".repeat(end - index);
      index = end;
    } else if (char === "/" && text[index + 1] === "*") {
      let end = text.indexOf("*/", index + 2);
      end = end < 0 ? text.length : end + 2;
      out += text.slice(index, end).replace(/[^\n]/g, " ");
      index = end;
    } else {
      out += char;
      index += 1;
    }
  }
  return out;
}

function microSection(source: SourceDocument, data: Dict): SourceDocument {
  return { ...source, data: data["micro"], locate: (path) => source.locate(["micro", ...path]) };
}

function rebased(source: SourceDocument, base: NodePath): SourceDocument {
  return { ...source, locate: (path) => source.locate([...base, ...path]) };
}

function kindLabel(data: Dict): string {
  const apiVersion = asText(data["apiVersion"]);
  const kind = asText(data["kind"]);
  if (kind === "" && apiVersion === "") return "(no kind)";
  return `${apiVersion || "?"}/${kind || "?"}`;
}

function count(map: Map<string, number>, key: string, by = 1): void {
  map.set(key, (map.get(key) ?? 0) + by);
}
