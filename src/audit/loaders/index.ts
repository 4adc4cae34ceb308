import { parseEnvFile } from "../env-source.ts";
import { asArray, asText, isDict } from "../shape.ts";
import type { Dict } from "../shape.ts";
import type { NodePath, ParseProblem, Resource, SourceDocument } from "../types.ts";
import { parseYamlFile } from "../yaml-source.ts";
import { isDaprKind, loadDaprComponent, loadDaprConfiguration } from "./dapr.ts";
import { isSecretKind, isWorkloadKind, loadSecret, loadWorkload } from "./kubernetes.ts";
import { classifyMeshward, loadMeshwardCa, loadMeshwardSidecar } from "./meshward.ts";
import { isMicroYamlName, loadMicroSettings, looksLikeMicroEnv } from "./micro.ts";

export type FileFormat = "yaml" | "env" | "other";

export interface LoadedFile {
  resources: Resource[];
  documents: number;
  unknownKinds: Map<string, number>;
  problems: ParseProblem[];
}

export function formatOf(file: string): FileFormat {
  const name = file.split(/[\\/]/).pop() ?? file;
  if (/\.(ya?ml|json)$/i.test(name)) return "yaml";
  if (/^\.env(\..+)?$/i.test(name) || /\.env$/i.test(name)) return "env";
  return "other";
}

/** Loads one file's text into the resources the rules know about. Never throws. */
export function loadFile(file: string, text: string): LoadedFile {
  const loaded: LoadedFile = { resources: [{ kind: "raw-file", file, text }], documents: 0, unknownKinds: new Map(), problems: [] };
  const format = formatOf(file);
  if (format === "env") {
    const source = parseEnvFile(file, text);
    loaded.documents = 1;
    if (looksLikeMicroEnv(source.data)) loaded.resources.push(loadMicroSettings(source));
    else count(loaded.unknownKinds, "env file without MICRO_* settings");
    return loaded;
  }
  if (format !== "yaml") return loaded;
  const parsed = parseYamlFile(file, text);
  loaded.problems.push(...parsed.problems);
  for (const source of parsed.documents) {
    if (source.data === null || source.data === undefined) continue;
    loaded.documents += 1;
    classify(file, source, source.data, [], loaded);
  }
  return loaded;
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
  } else if (isWorkloadKind(data)) {
    loaded.resources.push(loadWorkload(view, data));
  } else if (isSecretKind(data)) {
    loaded.resources.push(loadSecret(view, data));
  } else if (asText(data["kind"]) === "List" && Array.isArray(data["items"])) {
    asArray(data["items"]).forEach((item, index) => classify(file, source, item, [...base, "items", index], loaded));
  } else if (base.length === 0 && (isMicroYamlName(file) || isDict(data["micro"]))) {
    loaded.resources.push(loadMicroSettings(isDict(data["micro"]) ? microSection(source, data) : source));
  } else {
    const meshward = classifyMeshward(data);
    if (meshward === "sidecar") loaded.resources.push(loadMeshwardSidecar(view, data));
    else if (meshward === "ca") loaded.resources.push(loadMeshwardCa(view, data));
    else count(loaded.unknownKinds, kindLabel(data));
  }
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

function count(map: Map<string, number>, key: string): void {
  map.set(key, (map.get(key) ?? 0) + 1);
}
