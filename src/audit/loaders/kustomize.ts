import { asArray, asText, isDict } from "../shape.ts";
import type { Dict } from "../shape.ts";
import type { NodePath, ParseProblem, Position, SourceDocument } from "../types.ts";
import { parseYamlFile } from "../yaml-source.ts";

/**
 * Kustomize inline patches. Patch files on disk are audited like any file; a patch written
 * inline in a Kustomization (`patches[].patch`, `patchesJson6902[].patch`, a YAML string in
 * `patchesStrategicMerge`) is text inside a string, so it is parsed here and handed back as
 * documents whose findings point into the Kustomization (its file, document and the line of
 * the patch text when the patch is a literal block, `patch: |`).
 */

export function isKustomization(file: string, doc: Dict): boolean {
  const kind = asText(doc["kind"]);
  const apiVersion = asText(doc["apiVersion"]);
  if (apiVersion.startsWith("kustomize.config.k8s.io/")) return kind === "Kustomization" || kind === "Component";
  // `kustomization.yaml` without apiVersion/kind is the common form.
  return kind === "" && apiVersion === "" && /(^|[\\/])kustomization\.ya?ml$/i.test(file);
}

/** One document an inline patch stands for: a strategic-merge document, or one built from JSON6902 operations. */
export interface PatchDocument {
  source: SourceDocument;
  data: unknown;
}

export interface InlinePatches {
  documents: PatchDocument[];
  problems: ParseProblem[];
  /** Patches whose target kind is unknown (a JSON6902 patch selected by labels only). */
  untargeted: number;
}

/** Kinds a JSON6902 target may name without a group, and the apiVersion the audit reads them under. */
const DEFAULT_API_VERSION: Readonly<Record<string, string>> = {
  Configuration: "dapr.io/v1alpha1",
  Component: "dapr.io/v1alpha1",
  HTTPEndpoint: "dapr.io/v1alpha1",
  Deployment: "apps/v1",
  StatefulSet: "apps/v1",
  DaemonSet: "apps/v1",
  ReplicaSet: "apps/v1",
  Job: "batch/v1",
  CronJob: "batch/v1",
  Pod: "v1",
  Secret: "v1",
};

/** Largest number of JSON6902 operations read from one patch (a hostile file cannot make the audit loop). */
const MAX_OPERATIONS = 1_000;

export function inlinePatches(kustomization: SourceDocument, doc: Dict, text: string): InlinePatches {
  const found: InlinePatches = { documents: [], problems: [], untargeted: 0 };
  for (const field of ["patches", "patchesJson6902"]) {
    asArray(doc[field]).forEach((entry, index) => {
      if (!isDict(entry) || typeof entry["patch"] !== "string") return;
      readPatch(kustomization, text, entry["patch"], [field, index, "patch"], `${field}[${index}]`, entry["target"], found);
    });
  }
  asArray(doc["patchesStrategicMerge"]).forEach((entry, index) => {
    // An entry is a file path unless it is YAML text (several lines, or a flow mapping).
    if (typeof entry !== "string" || !(/\n/.test(entry.trim()) || entry.trim().startsWith("{"))) return;
    readPatch(kustomization, text, entry, ["patchesStrategicMerge", index], `patchesStrategicMerge[${index}]`, undefined, found);
  });
  return found;
}

function readPatch(outer: SourceDocument, text: string, patch: string, path: NodePath, label: string, target: unknown, found: InlinePatches): void {
  const toOuter = patchPositions(outer, text, patch, path);
  const parsed = parseYamlFile(outer.file, patch);
  for (const problem of parsed.problems) {
    const at = toOuter({ line: problem.line, column: problem.column });
    found.problems.push({ ...problem, line: at.line, column: at.column, message: `inline kustomize patch (${label}): ${problem.message}` });
  }
  for (const inner of parsed.documents) {
    if (Array.isArray(inner.data)) {
      const built = fromOperations(inner, target);
      if (built === undefined) {
        found.untargeted += 1;
        continue;
      }
      const removed = built.removed.map((each) => ({ path: each.path, at: toOuter(inner.locate([each.op])) }));
      found.documents.push({
        data: built.data,
        source: { file: outer.file, index: outer.index, data: built.data, locate: (p) => toOuter(built.locate(p)), origin: `Set by an inline kustomize patch (${label}, JSON6902 on ${built.subject}).`, ...(removed.length > 0 ? { removed } : {}) },
      });
    } else if (inner.data !== null && inner.data !== undefined) {
      found.documents.push({
        data: inner.data,
        source: { file: outer.file, index: outer.index, data: inner.data, locate: (p) => toOuter(inner.locate(p)), origin: `Set by an inline kustomize patch (${label}).` },
      });
    }
  }
}

/**
 * Maps a position inside the patch text to the Kustomization file. A literal block
 * (`patch: |`, `|-`, `|+`) holds the text line for line at one indentation, so positions map
 * exactly; any other form (quoted, folded) maps to the patch key itself.
 */
function patchPositions(outer: SourceDocument, text: string, patch: string, path: NodePath): (inner: Position) => Position {
  const key = outer.locate(path);
  const lines = text.split("\n").map((line) => line.replace(/\r$/, ""));
  const header = lines[key.line - 1] ?? "";
  if (!/(^|[\s:-])\|[-+1-9]{0,2}\s*(#.*)?$/.test(header)) return () => key;
  const patchLines = patch.replace(/\n+$/, "").split("\n");
  const first = lines.slice(key.line).find((line) => line.trim() !== "") ?? "";
  const indent = first.length - first.trimStart().length;
  const body = lines.slice(key.line, key.line + patchLines.length).map((line) => (line.trim() === "" ? "" : line.slice(indent)));
  if (indent === 0 || body.join("\n") !== patchLines.join("\n")) return () => key;
  return (inner) => ({ line: key.line + inner.line, column: inner.column + indent });
}

interface BuiltDocument {
  data: Dict;
  subject: string;
  /** The paths `remove` operations take away (op: the operation's index in the patch). */
  removed: { path: NodePath; op: number }[];
  locate(path: NodePath): Position;
}

/**
 * A JSON6902 patch (`- op: replace, path: /spec/mtls/enabled, value: false`) read as the
 * document its `add`/`replace` operations write, under the target's kind and name, so the
 * rules judge the values it sets. Paths in that document point at the operation's `value`.
 * `remove` operations are kept as the paths they take away (a rule judges removing access control).
 */
function fromOperations(inner: SourceDocument, target: unknown): BuiltDocument | undefined {
  const kind = isDict(target) ? asText(target["kind"]) : "";
  if (kind === "") return undefined;
  const group = isDict(target) ? asText(target["group"]) : "";
  const version = isDict(target) ? asText(target["version"]) : "";
  const apiVersion = group !== ""
    ? `${group}/${version || (group.startsWith("dapr.io") ? "v1alpha1" : "v1")}`
    : DEFAULT_API_VERSION[kind] ?? (version || "v1");
  const name = isDict(target) ? asText(target["name"]) : "";
  const namespace = isDict(target) ? asText(target["namespace"]) : "";
  const data: Dict = { apiVersion, kind, metadata: { name, ...(namespace === "" ? {} : { namespace }) } };
  const written: { path: NodePath; op: number }[] = [];
  const arrayIndexes = new Map<string, number>();
  const removed: { path: NodePath; op: number }[] = [];
  asArray(inner.data).slice(0, MAX_OPERATIONS).forEach((operation, op) => {
    if (!isDict(operation)) return;
    const verb = asText(operation["op"]);
    const pointer = asText(operation["path"]);
    if (!pointer.startsWith("/")) return;
    const segments = pointer.slice(1).split("/").map((segment) => segment.replace(/~1/g, "/").replace(/~0/g, "~"));
    if (segments.some((segment) => segment === "__proto__" || segment === "constructor" || segment === "prototype")) return;
    if (verb === "remove") {
      removed.push({ path: segments.map((segment) => (/^\d+$/.test(segment) ? Number(segment) : segment)), op });
      return;
    }
    if (!["add", "replace"].includes(verb) || !("value" in operation)) return;
    const path = write(data, segments, operation["value"], arrayIndexes);
    if (path !== undefined) written.push({ path, op });
  });
  if (written.length === 0 && removed.length === 0) return undefined;
  return {
    data,
    removed,
    subject: `${kind} ${name || "(any name)"}`,
    locate(path) {
      // The operation that wrote the longest prefix of the path (the last one wins a tie).
      let best: { path: NodePath; op: number } | undefined;
      for (const each of written) {
        const prefix = each.path.length <= path.length && each.path.every((segment, index) => String(segment) === String(path[index]));
        if (prefix && (best === undefined || each.path.length >= best.path.length)) best = each;
      }
      if (best !== undefined) return inner.locate([best.op, "value", ...path.slice(best.path.length)]);
      // A path above what was written (`spec.mtls` for `/spec/mtls/enabled`): the first operation under it.
      const under = written.find((each) => path.every((segment, index) => String(segment) === String(each.path[index])));
      return inner.locate(under === undefined ? [] : [under.op]);
    },
  };
}

/**
 * Writes `value` at `segments` in `data`, creating maps and lists on the way. List indexes
 * are appended in order (one per distinct index written), never used as sizes, so
 * `/spec/metadata/999999` cannot make a huge sparse list. Returns the path actually written.
 */
function write(data: Dict, segments: string[], value: unknown, arrayIndexes: Map<string, number>): NodePath | undefined {
  let current: unknown = data;
  const path: (string | number)[] = [];
  for (const [index, segment] of segments.entries()) {
    const last = index === segments.length - 1;
    const nextIsIndex = !last && /^(\d+|-)$/.test(segments[index + 1] ?? "");
    const fresh = (): unknown => (last ? value : nextIsIndex ? [] : {});
    if (Array.isArray(current)) {
      if (!/^(\d+|-)$/.test(segment)) return undefined;
      const key = `${JSON.stringify(path)}#${segment}`;
      let at = segment === "-" ? undefined : arrayIndexes.get(key);
      if (at === undefined) {
        at = current.length;
        current.push(fresh());
        if (segment !== "-") arrayIndexes.set(key, at);
      } else if (last) {
        current[at] = value;
      }
      path.push(at);
      current = current[at];
    } else if (isDict(current)) {
      const existing = current[segment];
      if (last || !(isDict(existing) || Array.isArray(existing))) current[segment] = fresh();
      path.push(segment);
      current = current[segment];
    } else {
      return undefined;
    }
  }
  return path;
}
