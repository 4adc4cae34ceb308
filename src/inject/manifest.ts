import { Composer, CST, isMap, isSeq, Parser, type Document } from "yaml";
import { MeshwardError } from "../errors.ts";
import { injectPod, type PodLike } from "./pod.ts";
import type { InjectOptions } from "./settings.ts";
import { findExcessiveNesting, MAX_NESTING_DEPTH } from "../util/yaml-depth.ts";

/** Kind → path from the object to its pod template ([] for a Pod itself). */
const POD_TEMPLATE_PATHS: Readonly<Record<string, readonly string[]>> = {
  Pod: [],
  Deployment: ["spec", "template"],
  StatefulSet: ["spec", "template"],
  DaemonSet: ["spec", "template"],
  ReplicaSet: ["spec", "template"],
  ReplicationController: ["spec", "template"],
  Job: ["spec", "template"],
  CronJob: ["spec", "jobTemplate", "spec", "template"],
};

export interface InjectResult {
  /** The manifest with sidecars injected; byte for byte the input when nothing was injected. */
  readonly text: string;
  /** "Deployment shop/orders" for every pod template injected. */
  readonly injected: readonly string[];
  readonly notes: readonly string[];
}

interface ObjectLike {
  apiVersion?: unknown;
  kind?: unknown;
  metadata?: { name?: unknown; namespace?: unknown };
  items?: unknown;
  [key: string]: unknown;
}

/**
 * Injects into one Kubernetes object (Deployment, StatefulSet, DaemonSet, ReplicaSet,
 * ReplicationController, Job, CronJob, Pod, or a List of them); returns the new object, or
 * undefined when nothing in it asks for a sidecar. Pure.
 */
export function injectObject(object: unknown, options: InjectOptions, where: string, namespace?: string): { object: unknown; injected: string[]; notes: string[] } | undefined {
  if (object === null || typeof object !== "object" || Array.isArray(object)) return undefined;
  const obj = object as ObjectLike;
  const kind = typeof obj.kind === "string" ? obj.kind : "";
  if (Array.isArray(obj.items) && (kind === "List" || kind.endsWith("List"))) {
    let changed = false;
    const injected: string[] = [];
    const notes: string[] = [];
    const items = obj.items.map((item: unknown, index: number) => {
      const result = injectObject(item, options, `${where} items[${index}]`, namespace);
      if (result === undefined) return item;
      changed = true;
      injected.push(...result.injected);
      notes.push(...result.notes);
      return result.object;
    });
    return changed ? { object: { ...obj, items }, injected, notes } : undefined;
  }
  const path = POD_TEMPLATE_PATHS[kind];
  if (path === undefined) return undefined;
  const name = typeof obj.metadata?.name === "string" ? obj.metadata.name : undefined;
  const ns = typeof obj.metadata?.namespace === "string" ? obj.metadata.namespace : namespace;
  const label = `${kind} ${ns === undefined ? "" : `${ns}/`}${name ?? "(unnamed)"}`;
  const template = getPath(obj, path);
  if (template === undefined) return undefined;
  if (typeof template !== "object" || template === null || Array.isArray(template)) {
    throw new MeshwardError("E_INJECT_INVALID", `${where}: ${label}: ${path.join(".")} is not an object`);
  }
  const result = injectPod(template as PodLike, options, `${where}: ${label}`, name);
  if (result === undefined) return undefined;
  return { object: setPath(obj, path, result.pod), injected: [label], notes: [...result.notes] };
}

/**
 * `meshward inject`: every document of a YAML (or JSON) manifest, multi-document files
 * included. Documents that ask for no sidecar are copied byte for byte from the input; an
 * injected document keeps its comments outside the parts injection changes.
 */
export function injectManifest(text: string, options: InjectOptions, file = "-"): InjectResult {
  // Refused before any parser sees it: deep enough nesting exhausts the parser's stack.
  const tooDeep = findExcessiveNesting(text);
  if (tooDeep !== undefined) {
    throw new MeshwardError("E_INJECT_INVALID", `${file}:${tooDeep.line}:${tooDeep.column}: nested more than ${MAX_NESTING_DEPTH} levels deep; no Kubernetes manifest nests like this`);
  }
  // JSON in (kubectl get -o json), JSON out.
  if (/^\s*[{[]/.test(text)) {
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined; // YAML flow style: read as YAML below
    }
    if (json !== undefined) {
      const result = injectObject(json, options, `${file} document 1`);
      if (result === undefined) return { text, injected: [], notes: [] };
      return { text: `${JSON.stringify(result.object, null, 2)}\n`, injected: result.injected, notes: result.notes };
    }
  }
  const tokens = [...new Parser().parse(text)];
  const composer = new Composer({ prettyErrors: false, uniqueKeys: true });
  const injected: string[] = [];
  const notes: string[] = [];
  const pieces: string[] = [];
  let changed = false;
  let index = 0;
  const emit = (doc: Document.Parsed, source: string) => {
    index += 1;
    const where = `${file} document ${index}`;
    if (doc.errors.length > 0) throw new MeshwardError("E_INJECT_INVALID", `${where}: ${doc.errors[0]!.message.split("\n")[0]}`);
    const result = injectObject(doc.toJS({ maxAliasCount: 100 }), options, where);
    if (result === undefined) {
      pieces.push(source);
      return;
    }
    injected.push(...result.injected);
    notes.push(...result.notes);
    const before = doc.toString();
    replaceChanged(doc, [], doc.toJS() as unknown, result.object);
    const after = doc.toString();
    if (after === before) pieces.push(source);
    else {
      changed = true;
      pieces.push(after);
    }
  };
  // One segment of source text per document: its directives, the document and its "..." end.
  const segments: string[] = [];
  let current = "";
  let hasDocument = false;
  for (const token of tokens) {
    if (token.type === "document" && hasDocument) {
      segments.push(current);
      current = "";
      hasDocument = false;
    }
    if (token.type === "document") hasDocument = true;
    current += CST.stringify(token);
  }
  const docs = [...composer.compose(tokens)];
  if (hasDocument || current !== "") segments.push(current);
  if (segments.length !== docs.length) throw new MeshwardError("E_INJECT_INVALID", `${file}: cannot split the input into YAML documents`);
  docs.forEach((doc, i) => emit(doc, segments[i] as string));
  return { text: changed ? pieces.join("") : text, injected, notes };
}

/** Replaces only the nodes whose value changed, so comments and styles elsewhere survive. */
function replaceChanged(doc: Document, path: (string | number)[], before: unknown, after: unknown): void {
  if (sameJson(before, after)) return;
  const node = path.length === 0 ? doc.contents : doc.getIn(path, true);
  if (isPlainObject(before) && isPlainObject(after) && isMap(node)) {
    for (const key of Object.keys(before)) if (!(key in after)) doc.deleteIn([...path, key]);
    for (const [key, value] of Object.entries(after)) {
      if (key in before) replaceChanged(doc, [...path, key], before[key], value);
      else doc.setIn([...path, key], doc.createNode(value));
    }
    return;
  }
  if (Array.isArray(before) && Array.isArray(after) && isSeq(node) && before.length === after.length) {
    after.forEach((value, index) => replaceChanged(doc, [...path, index], before[index], value));
    return;
  }
  if (path.length === 0) doc.contents = doc.createNode(after) as typeof doc.contents;
  else doc.setIn(path, doc.createNode(after));
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

function getPath(object: unknown, path: readonly string[]): unknown {
  let value: unknown = object;
  for (const key of path) {
    if (!isPlainObject(value)) return undefined;
    value = value[key];
  }
  return value;
}

function setPath(object: Record<string, unknown>, path: readonly string[], value: unknown): Record<string, unknown> {
  if (path.length === 0) return value as Record<string, unknown>;
  const [head, ...rest] = path as [string, ...string[]];
  return { ...object, [head]: setPath((object[head] ?? {}) as Record<string, unknown>, rest, value) };
}
