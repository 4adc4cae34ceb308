import { execFileSync } from "node:child_process";
import { accessSync, constants, existsSync, mkdirSync, mkdtempSync, realpathSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, dirname, isAbsolute, join, relative, resolve, sep } from "node:path";
import { parse, parseAllDocuments, parseDocument } from "yaml";
import { asArray, asText, get, isDict } from "./shape.ts";
import { INPUT_LIMITS, readInputText } from "../util/read-input.ts";

/** The names kustomize accepts for a kustomization file, in the order it looks for them. */
export const KUSTOMIZATION_FILES: readonly string[] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/** The kustomization file at the top of `path` when `path` is a folder that has one; else undefined. */
export function kustomizationIn(path: string): string | undefined {
  try {
    if (!statSync(path).isDirectory()) return undefined;
  } catch {
    return undefined;
  }
  const name = KUSTOMIZATION_FILES.find((each) => existsSync(join(path, each)));
  return name === undefined ? undefined : join(path, name);
}

export type RenderOutcome =
  /** `origins`: objectKey → source file (see renderOrigins); empty unless asked for and found. */
  | { ok: true; text: string; origins: Map<string, string> }
  | { ok: false; reason: "no-kubectl" | "failed"; detail: string }
  | { ok: false; reason: "remote"; detail: string; references: RemoteReference[] };

/** Longest a render may take (a remote base, when allowed, is fetched by kustomize itself). */
const RENDER_TIMEOUT_MS = 120_000;
const MAX_RENDERED_BYTES = 64 * 1024 * 1024;

/** How a remote reference is named in a report: quoted, one line, at most 200 characters. */
function shownReference(reference: RemoteReference): string {
  const text = reference.reference.length > 200 ? `${reference.reference.slice(0, 200)}…` : reference.reference;
  return `${JSON.stringify(text)} (${reference.field} of ${reference.file})`;
}

/**
 * The kubectl binary `kubectl` names: a path (made absolute), or the first executable of that
 * name on PATH; undefined when there is none.
 */
function kubectlBinary(kubectl: string): string | undefined {
  const candidates = kubectl.includes("/") ? [resolve(kubectl)] : (process.env["PATH"] ?? "").split(delimiter).filter((part) => part !== "").map((part) => resolve(part, kubectl));
  return candidates.find((candidate) => {
    try {
      accessSync(candidate, constants.X_OK);
      return statSync(candidate).isFile();
    } catch {
      return false;
    }
  });
}

/** A proxy nobody listens on (port 0 cannot be listened on): every proxied connection is refused. */
const DEAD_PROXY = "http://127.0.0.1:0";

/**
 * Runs `kubectl kustomize -- DIR` (DIR absolute, after `--`: a folder named `--enable-helm` is a
 * folder, never a flag). `offline`: kubectl runs in an environment that cannot reach out even
 * if the remote check (remoteReferences) missed something: PATH is a private folder holding only
 * kubectl (no git, no helm, nothing else to run), HOME a private folder, every HTTP(S) proxy
 * variable points at a closed loopback port with NO_PROXY empty (kustomize's HTTP client then
 * sends every non-loopback fetch there, and it is refused; Go never proxies loopback), and git,
 * were it found, allows no protocol and reads no system or global config. Nothing else of the
 * caller's environment is passed. Not offline (`--kustomize-remote`): the caller's environment.
 */
export function runKustomize(directory: string, kubectl: string, options: { offline: boolean; stderr?: "pipe" | "ignore" }): string {
  const binary = kubectlBinary(kubectl);
  if (binary === undefined) throw Object.assign(new Error(`${kubectl} not found`), { code: "ENOENT" });
  const run = (file: string, env: NodeJS.ProcessEnv): string => execFileSync(file, ["kustomize", "--", resolve(directory)], {
    encoding: "utf8",
    maxBuffer: MAX_RENDERED_BYTES,
    timeout: RENDER_TIMEOUT_MS,
    stdio: ["ignore", "pipe", options.stderr ?? "pipe"],
    env,
  });
  if (!options.offline) return run(binary, process.env);
  const sandbox = mkdtempSync(join(tmpdir(), "meshward-kustomize-offline-"));
  try {
    const bin = join(sandbox, "bin");
    const home = join(sandbox, "home");
    mkdirSync(bin);
    mkdirSync(home);
    symlinkSync(binary, join(bin, "kubectl"));
    return run(join(bin, "kubectl"), {
      PATH: bin,
      HOME: home,
      TMPDIR: tmpdir(),
      LANG: "C",
      HTTP_PROXY: DEAD_PROXY,
      HTTPS_PROXY: DEAD_PROXY,
      ALL_PROXY: DEAD_PROXY,
      http_proxy: DEAD_PROXY,
      https_proxy: DEAD_PROXY,
      all_proxy: DEAD_PROXY,
      NO_PROXY: "",
      no_proxy: "",
      GIT_ALLOW_PROTOCOL: "",
      GIT_CONFIG_NOSYSTEM: "1",
      GIT_CONFIG_GLOBAL: "/dev/null",
      GIT_TERMINAL_PROMPT: "0",
      KUBECONFIG: join(home, "no-kubeconfig"),
    });
  } finally {
    rmSync(sandbox, { recursive: true, force: true });
  }
}

/**
 * Renders a kustomize overlay with `kubectl kustomize -- DIR` (no cluster is contacted).
 * `kubectl` is the binary to run (default: `kubectl` on PATH). An overlay that names a remote
 * base or file, itself, through a plugin config or through a local base (see remoteReferences),
 * is not rendered unless `allowRemote` is true: kustomize would fetch it from the network or run
 * git, and an audit of an untrusted tree must do neither. That refusal happens before kubectl
 * runs, and kubectl then runs offline (see runKustomize) in case the check missed something.
 *
 * `origins`: also find the local file each object comes from (renderOrigins), for an overlay with
 * no remote reference. Done with one render when it can be exact: the annotated one (the overlay
 * as the only resource of a throw-away wrapper kustomization), whose text without the origin
 * annotations (stripOriginAnnotations) is `kubectl kustomize DIR`'s output. Two renders (the
 * plain one, then the annotated one) when a kustomization of the overlay (or a base or component
 * it names) sets a field whose effect depends on being the top level, which the wrapper now is:
 * `buildMetadata` (its own annotations must stay) and `sortOptions` (kustomize orders the output
 * by the top level's sortOptions only, so under the wrapper the objects come out in the legacy
 * order, and finding lines in generated objects would point elsewhere); or when the annotated
 * render fails (an older kubectl without buildMetadata, or a broken overlay: the plain render then
 * gives the error).
 */
export function renderKustomization(directory: string, kubectl = "kubectl", options: { allowRemote?: boolean; origins?: boolean } = {}): RenderOutcome {
  const kustomization = kustomizationIn(directory);
  const remote = kustomization === undefined ? [] : remoteReferences(kustomization);
  if (remote.length > 0 && options.allowRemote !== true) {
    const more = remote.length > 1 ? ` and ${remote.length - 1} more` : "";
    const unchecked = remote.find((reference) => reference.field === "unchecked");
    // Fail closed: a kustomization this check cannot read might name a remote base kustomize reads.
    const detail = unchecked !== undefined
      ? `${unchecked.file} could not be checked for remote bases (${unchecked.reference}), and \`kubectl kustomize\` might fetch from the network (HTTP or git)`
      : `it names a remote base or file, ${shownReference(remote[0] as RemoteReference)}${more}, which \`kubectl kustomize\` would fetch from the network (HTTP or git)`;
    return { ok: false, reason: "remote", references: remote, detail };
  }
  // Origins only for an overlay with nothing remote: a second render would fetch it again.
  const origins = options.origins === true && kustomization !== undefined && remote.length === 0;
  if (origins && !setsTopLevelField(kustomization)) {
    const annotated = renderAnnotated(directory, kubectl);
    if (annotated !== undefined) return { ok: true, text: stripOriginAnnotations(annotated.text), origins: annotated.origins };
  }
  try {
    const text = runKustomize(directory, kubectl, { offline: options.allowRemote !== true });
    return { ok: true, text, origins: origins ? renderOrigins(directory, kubectl) : new Map() };
  } catch (error) {
    const failure = error as NodeJS.ErrnoException & { stderr?: string | Buffer };
    if (failure.code === "ENOENT") return { ok: false, reason: "no-kubectl", detail: `${kubectl} not found` };
    // kustomize's own warnings (`# Warning: 'patchesJson6902' is deprecated…`) come first.
    const lines = String(failure.stderr ?? "").trim().split("\n").filter((line) => line.trim() !== "" && !line.startsWith("# Warning:"));
    // kubectl logs through klog: `E1207 16:27:58.986032   25086 run.go:72] "command failed" err="…"`,
    // or `err=<` followed by indented lines and ` >` for an error of several lines.
    let stderr = lines[0]?.replace(/^[EWIF]\d{4} [\d:.]+\s+\d+ \S+\] /, "");
    if (stderr !== undefined && /err=<$/.test(stderr)) stderr = lines.slice(1).filter((line) => line.trim() !== ">" && line.trim() !== "`").map((line) => line.trim()).join(" ");
    const detail = stderr?.replace(/^"command failed" err=/, "").replace(/^"(.*)"$/, "$1");
    return { ok: false, reason: "failed", detail: detail ?? failure.message.split("\n")[0] ?? String(error) };
  }
}

/** How a rendered object is matched with its source: apiVersion, kind, namespace and name. */
export function objectKey(data: unknown): string | undefined {
  if (!isDict(data)) return undefined;
  const metadata = isDict(data["metadata"]) ? data["metadata"] : {};
  const name = asText(metadata["name"]);
  if (name === "") return undefined;
  return [asText(data["apiVersion"]), asText(data["kind"]), asText(metadata["namespace"]), name].join("|");
}

/**
 * The local file each object of a rendered overlay comes from (objectKey → absolute path), read
 * from kustomize's `config.kubernetes.io/origin` annotation: the overlay is rendered as the only
 * resource of a throw-away kustomization with `buildMetadata: [originAnnotations]` (the overlay's
 * own files are not touched). Objects from a remote base or a generator have no local origin.
 * Empty when that render fails.
 */
export function renderOrigins(directory: string, kubectl = "kubectl"): Map<string, string> {
  return renderAnnotated(directory, kubectl)?.origins ?? new Map();
}

/**
 * The overlay rendered with origin annotations (see renderOrigins): the text, and the origin of
 * each object; undefined when that render fails. Offline always: it is run only for an overlay
 * the remote check passed.
 */
function renderAnnotated(directory: string, kubectl: string): { text: string; origins: Map<string, string> } | undefined {
  const origins = new Map<string, string>();
  const wrapper = mkdtempSync(join(tmpdir(), "meshward-audit-origin-"));
  try {
    writeFileSync(join(wrapper, "kustomization.yaml"), `resources:\n  - ${JSON.stringify(relative(wrapper, resolve(directory)))}\nbuildMetadata: [originAnnotations]\n`);
    const text = runKustomize(wrapper, kubectl, { offline: true, stderr: "ignore" });
    for (const document of parseAllDocuments(text, { logLevel: "silent" })) {
      const data: unknown = "toJS" in document ? document.toJS() : undefined;
      const key = objectKey(data);
      const annotation = asText((get(data, "metadata", "annotations") as Record<string, unknown> | undefined)?.[ORIGIN_ANNOTATION]);
      if (key === undefined || annotation === "") continue;
      const origin: unknown = parse(annotation, { logLevel: "silent" });
      if (!isDict(origin) || origin["repo"] !== undefined || typeof origin["path"] !== "string") continue;
      origins.set(key, resolve(wrapper, origin["path"]));
    }
    return { text, origins };
  } catch {
    return undefined;
  } finally {
    rmSync(wrapper, { recursive: true, force: true });
  }
}

/**
 * Whether the overlay or a local base or component it names sets a field the wrapper of the single
 * render would change the effect of: `buildMetadata` (its own annotations in the output) or
 * `sortOptions` (the output order, which kustomize takes from the top-level kustomization only).
 * Any kustomization of the tree counts, not only the overlay's: erring towards the exact two renders.
 */
function setsTopLevelField(kustomization: string): boolean {
  let found = false;
  eachKustomization(kustomization, (_file, doc) => {
    if (fieldValues(doc, "buildMetadata").length > 0 || fieldValues(doc, "sortOptions").length > 0) found = true;
  });
  return found;
}

const ORIGIN_ANNOTATION = "config.kubernetes.io/origin";

function indentOf(line: string): number {
  return /^ */.exec(line)?.[0].length ?? 0;
}

/**
 * The text of a render made with `buildMetadata: [originAnnotations]` without the annotations
 * that adds: each top-level object's `metadata.annotations` entry `config.kubernetes.io/origin`
 * (a block scalar, so its lines are the key's and the more indented ones after it), and the
 * `annotations:` key when that entry was its only one. kustomize writes each object in one
 * layout (two-space indentation, `metadata:` at column 0), so removing those lines gives the
 * same objects in the same layout as `kubectl kustomize DIR`. That is its output byte for byte
 * only when the wrapper changes nothing else: not when the overlay's kustomizations set
 * buildMetadata (their own annotations) or sortOptions (the wrapper's top level orders the
 * objects in the legacy order instead); such an overlay is rendered plainly: see renderKustomization.
 */
export function stripOriginAnnotations(text: string): string {
  const lines = text.split("\n");
  const out: string[] = [];
  for (let index = 0; index < lines.length; index += 1) {
    const line = lines[index] ?? "";
    if (!line.startsWith(`    ${ORIGIN_ANNOTATION}:`) || !underTopLevelAnnotations(out)) {
      out.push(line);
      continue;
    }
    let next = index + 1;
    while (next < lines.length && (lines[next] ?? "").trim() !== "" && indentOf(lines[next] ?? "") > 4) next += 1;
    const following = lines[next] ?? "";
    if (out[out.length - 1] === "  annotations:" && indentOf(following) <= 2) out.pop();
    index = next - 1;
  }
  return out.join("\n");
}

/** Whether the next line would be an entry of the top-level `metadata.annotations` of the current object. */
function underTopLevelAnnotations(out: readonly string[]): boolean {
  let index = out.length - 1;
  while (index >= 0 && indentOf(out[index] ?? "") >= 4) index -= 1;
  if (out[index] !== "  annotations:") return false;
  index -= 1;
  while (index >= 0 && indentOf(out[index] ?? "") >= 2) index -= 1;
  return out[index] === "metadata:";
}

/** The kustomization file's content, or undefined when it cannot be read as a YAML map. */
function readKustomization(kustomization: string): Record<string, unknown> | undefined {
  try {
    // `merge`: `<<: *anchor` keys are merged, as kustomize's YAML reader does (else a `resources`
    // list brought in by a merge key would go unseen here and still be fetched there).
    // A document with errors is not read at all (`parse` with logLevel silent would give what it could).
    if (!isLocalFile(kustomization)) return undefined;
    const parsed = parseDocument(readInputText(kustomization, { what: "kustomization", maxBytes: INPUT_LIMITS.config, pipes: false }), { logLevel: "silent", merge: true });
    if (parsed.errors.length > 0) return undefined;
    const doc: unknown = parsed.toJS();
    return isDict(doc) ? doc : doc === null || doc === undefined ? {} : undefined;
  } catch {
    return undefined;
  }
}

/** Fields whose entries may be a kustomization folder (a base, a component, a plugin config folder). */
const TARGET_FIELDS = ["resources", "bases", "components", "transformers", "generators", "validators"];
/** Fields whose entries are plugin configs: a file, inline YAML, or a folder whose output is read as plugin configs. */
const PLUGIN_FIELDS = ["transformers", "generators", "validators"];
/** Fields whose entries are files (kustomize loads each; an http(s) URL is fetched). */
const FILE_FIELDS = ["crds", "patchesStrategicMerge", "configurations"];

/**
 * A field name as kustomize matches it: its YAML is read through Go's encoding/json, which
 * matches field names without regard to case (Unicode simple folding: `ſ` is an `s`, the Kelvin
 * sign `K` a `k`), so `RESOURCES:` and `reſources:` are `resources`.
 */
function folded(name: string): string {
  return name.replace(/\u017f/g, "s").replace(/\u212a/g, "k").toLowerCase();
}

/** Every value of `dict` under a key kustomize reads as `name` (several when keys differ in case only). */
function fieldValues(dict: Record<string, unknown>, name: string): unknown[] {
  const wanted = folded(name);
  return Object.entries(dict).filter(([key]) => folded(key) === wanted).map(([, value]) => value);
}

/** The entries of list field `name` (of every key kustomize reads as `name`). */
function listField(dict: Record<string, unknown>, name: string): unknown[] {
  return fieldValues(dict, name).flatMap((value) => asArray(value));
}

/** Every path-like entry of a kustomization, with the field it is in (inline YAML text left out). */
function namedEntries(doc: Record<string, unknown>): { field: string; entry: string }[] {
  const entries: { field: string; entry: string }[] = [];
  const add = (field: string, value: unknown): void => {
    const text = asText(value).trim();
    // Inline YAML text (an inline patch, an inline plugin config) is not a path.
    if (text === "" || text.includes("\n")) return;
    entries.push({ field, entry: text });
  };
  for (const field of [...TARGET_FIELDS, ...FILE_FIELDS]) listField(doc, field).forEach((value) => add(field, value));
  for (const field of ["patches", "patchesJson6902", "replacements"]) listField(doc, field).forEach((entry) => isDict(entry) && fieldValues(entry, "path").forEach((path) => add(`${field}[].path`, path)));
  for (const openapi of fieldValues(doc, "openapi")) if (isDict(openapi)) fieldValues(openapi, "path").forEach((path) => add("openapi.path", path));
  for (const field of ["configMapGenerator", "secretGenerator"]) {
    for (const generator of listField(doc, field)) if (isDict(generator)) generatorEntries(generator, `${field}[]`).forEach(({ field: where, value }) => add(where, value));
  }
  return entries;
}

/** The files a ConfigMap/Secret generator reads (`files` entries may be `key=path`). */
function generatorEntries(generator: Record<string, unknown>, prefix: string): { field: string; value: unknown }[] {
  return [
    ...listField(generator, "files").map((value) => ({ field: `${prefix}.files`, value: asText(value).replace(/^[^=/]+=/, "") })),
    ...listField(generator, "envs").map((value) => ({ field: `${prefix}.envs`, value })),
    ...fieldValues(generator, "env").map((value) => ({ field: `${prefix}.env`, value })),
  ];
}

/**
 * The builtin plugins kustomize configures from a `transformers`/`generators`/`validators`
 * entry (`apiVersion: builtin`), each with the fields it reads (besides apiVersion, kind and
 * metadata) and which of them name a file kustomize loads (an http(s) URL there is fetched).
 * HelmChartInflationGenerator is not here: it runs helm, which pulls charts.
 */
const BUILTIN_PLUGINS: Record<string, { fields: string[]; files?: (config: Record<string, unknown>) => { field: string; value: unknown }[] }> = {
  AnnotationsTransformer: { fields: ["annotations", "fieldSpecs"] },
  LabelTransformer: { fields: ["labels", "fieldSpecs"] },
  NamespaceTransformer: { fields: ["fieldSpecs", "skipExisting", "unsetOnly", "setRoleBindingSubjects"] },
  ImageTagTransformer: { fields: ["imageTag", "fieldSpecs"] },
  PrefixSuffixTransformer: { fields: ["prefix", "suffix", "fieldSpecs"] },
  PrefixTransformer: { fields: ["prefix", "fieldSpecs"] },
  SuffixTransformer: { fields: ["suffix", "fieldSpecs"] },
  ReplicaCountTransformer: { fields: ["replica", "fieldSpecs"] },
  HashTransformer: { fields: [] },
  SortOrderTransformer: { fields: ["sortOptions"] },
  ValueAddTransformer: { fields: ["value", "targets"] },
  IAMPolicyGenerator: { fields: ["cloud", "kubernetesService", "serviceAccount"] },
  PatchTransformer: { fields: ["path", "patch", "target", "options"], files: (config) => fieldValues(config, "path").map((value) => ({ field: "path", value })) },
  PatchJson6902Transformer: { fields: ["path", "jsonOp", "target"], files: (config) => fieldValues(config, "path").map((value) => ({ field: "path", value })) },
  // Each `paths` entry is read as patch content first, then as a file.
  PatchStrategicMergeTransformer: { fields: ["paths", "patches"], files: (config) => listField(config, "paths").map((value) => ({ field: "paths", value })) },
  ReplacementTransformer: { fields: ["replacements"], files: (config) => listField(config, "replacements").flatMap((entry) => (isDict(entry) ? fieldValues(entry, "path").map((value) => ({ field: "replacements[].path", value })) : [])) },
  ConfigMapGenerator: { fields: ["name", "namespace", "behavior", "literals", "files", "envs", "env", "options"], files: (config) => generatorEntries(config, "") },
  SecretGenerator: { fields: ["name", "namespace", "behavior", "literals", "files", "envs", "env", "options", "type"], files: (config) => generatorEntries(config, "") },
};

/**
 * The file entries of the plugin configs a kustomization names in `transformers`, `generators`
 * and `validators` (inline YAML, a local file, a YAML map), and what could not be checked: a
 * config that is not a builtin plugin listed in BUILTIN_PLUGINS, a field such a plugin does
 * not have, a HelmChartInflationGenerator, a config file that cannot be read, a plugin config
 * folder (its rendered output is what kustomize configures plugins from). Fail closed: each of
 * those keeps the overlay from being rendered.
 */
function pluginEntries(doc: Record<string, unknown>, directory: string): { entries: { field: string; entry: string }[]; unchecked: string[] } {
  const entries: { field: string; entry: string }[] = [];
  const unchecked: string[] = [];
  const check = (config: unknown, where: string): void => {
    if (config === null || config === undefined) return;
    if (!isDict(config)) {
      unchecked.push(`${where}: not a plugin config map`);
      return;
    }
    const apiVersion = asText(fieldValues(config, "apiVersion")[0]);
    const kind = asText(fieldValues(config, "kind")[0]);
    const plugin = Object.hasOwn(BUILTIN_PLUGINS, kind) ? BUILTIN_PLUGINS[kind] : undefined;
    if (apiVersion !== "builtin" || plugin === undefined || fieldValues(config, "apiVersion").length !== 1 || fieldValues(config, "kind").length !== 1) {
      unchecked.push(`${where}: ${JSON.stringify(`${apiVersion}/${kind}`.slice(0, 100))} is not a builtin plugin this check reads`);
      return;
    }
    const known = new Set(["apiVersion", "kind", "metadata", ...plugin.fields].map(folded));
    const unknown = Object.keys(config).find((key) => !known.has(folded(key)));
    if (unknown !== undefined) {
      unchecked.push(`${where}: field ${JSON.stringify(unknown.slice(0, 100))} of ${kind} is not one this check reads`);
      return;
    }
    for (const { field, value } of plugin.files?.(config) ?? []) {
      const text = asText(value).trim();
      if (text !== "" && !text.includes("\n")) entries.push({ field: `${where} ${kind}.${field.replace(/^\./, "")}`, entry: text });
    }
  };
  const documents = (text: string, where: string): void => {
    for (const document of parseAllDocuments(text, { logLevel: "silent", merge: true })) {
      if (!("toJS" in document) || document.errors.length > 0) {
        unchecked.push(`${where}: not readable as YAML`);
        return;
      }
      check(document.toJS(), where);
    }
  };
  for (const field of PLUGIN_FIELDS) {
    for (const value of listField(doc, field)) {
      if (isDict(value)) {
        check(value, `${field} entry`);
        continue;
      }
      const text = asText(value);
      if (text.trim() === "") continue;
      // kustomize reads an entry as inline plugin configs whenever it parses as YAML objects
      // (one line of flow style `{apiVersion: builtin, …}` too), and as a path otherwise.
      const inline = text.includes("\n") ? "yes" : parsesAsObjects(text);
      if (inline !== "no") {
        if (inline === "unreadable") unchecked.push(`${field} entry ${JSON.stringify(text.trim().slice(0, 100))}: neither a path nor YAML this check reads`);
        else documents(text, `inline ${field} entry`);
        continue;
      }
      const entry = text.trim();
      // A remote entry is reported as such (namedEntries).
      if (isRemoteEntry(entry, directory)) continue;
      const where = `${field} entry ${JSON.stringify(entry.slice(0, 100))}`;
      const path = resolve(directory, entry);
      let stats;
      try {
        stats = statSync(path);
      } catch {
        continue; // kustomize fails on a missing file: nothing to fetch.
      }
      if (stats.isDirectory()) {
        unchecked.push(`${where}: a plugin config folder, whose output this check does not read`);
        continue;
      }
      let content: string;
      try {
        // A regular file only, and bounded: a FIFO the repository holds there would hang the
        // audit, a link to /dev/zero fill its memory (review audit, "not covered").
        content = readInputText(path, { what: "kustomize plugin config", maxBytes: INPUT_LIMITS.config, pipes: false });
      } catch {
        unchecked.push(`${where}: not readable (a regular file of at most ${INPUT_LIMITS.config / (1024 * 1024)} MiB)`);
        continue;
      }
      documents(content, where);
    }
  }
  return { entries, unchecked };
}

/**
 * Whether a one-line `transformers`/`generators`/`validators` entry is YAML objects (inline
 * plugin configs, as kustomize reads it), a scalar (a path), or YAML this check cannot parse
 * while it looks like flow-style YAML (`{`, `[`, `: `), which is not guessed at.
 */
function parsesAsObjects(text: string): "yes" | "no" | "unreadable" {
  const documents = parseAllDocuments(text, { logLevel: "silent" });
  if (!Array.isArray(documents)) return "no";
  if (documents.some((document) => document.errors.length > 0)) return /[{[]|: /.test(text) ? "unreadable" : "no";
  return documents.some((document) => {
    const value: unknown = document.toJS();
    return value !== null && typeof value === "object";
  }) ? "yes" : "no";
}

/**
 * Whether `entry` of a kustomization in `directory` is remote: something kustomize would fetch
 * (an http(s) URL) or clone with git (`github.com/org/repo//dir?ref=…`, `git@host:…`,
 * `git::…`, `ssh://`, `file://`, `gh:`). An entry with a URL scheme, a `user@host:`/`user@host/`
 * prefix, a `github.com/` prefix or a `?ref=` (`version`, `timeout`, `submodules`) query is
 * remote whatever exists locally: kustomize fetches an http(s) entry before looking for a file,
 * and tries a git clone before a local folder. An entry whose first segment looks like a host
 * (`gitlab.com/org/repo`), which kustomize v5 reads as a local path but older versions cloned,
 * is remote unless a local path of that name exists.
 *
 * `field`: the kustomization field the entry is in. A field whose entries kustomize only loads as
 * files (patch and replacement paths, generator files, crds, configurations, openapi, a plugin
 * config's file) goes through FileLoader.Load, which fetches an http(s) URL and otherwise reads the
 * local file, never cloning (api/internal/loader/fileloader.go): there a git-like name that is a
 * local file (`github.com/acme/patches/replicas.yaml` in a vendored tree) is local. The fields
 * whose entries may be a kustomization folder (TARGET_FIELDS: resources, bases, components and
 * plugin config entries) go through FileLoader.New, which tries a git clone first for whatever
 * git.NewRepoSpecFromURL accepts and never falls back to a local folder: a folder there stays
 * remote whatever exists locally. A `resources` (or `bases`, which kustomize merges into
 * resources) entry is first read as a file, though (accumulateResources: accumulateFile, through
 * FileLoader.Load), and goes to FileLoader.New only when that fails: a local file of a git-like
 * name that loads as resources (loadsAsResources) is local; one that does not stays remote.
 * (A file that loads but then clashes with another resource's id also goes to FileLoader.New;
 * the offline render, with no git to run and no way out, stops that clone.)
 */
export function isRemoteEntry(entry: string, directory: string, field?: string): boolean {
  if (/^\.\.?\//.test(entry) || isAbsolute(entry)) return false;
  if (field !== undefined && !/^https?:/i.test(entry)) {
    const path = resolve(directory, entry);
    if (!TARGET_FIELDS.includes(field) && isLocalFile(path)) return false;
    if (FILE_FIRST_FIELDS.includes(field) && loadsAsResources(path)) return false;
  }
  if (/^[a-z][a-z0-9+.-]*:/i.test(entry) || /^[^/\s:@]+@[^/\s:]+[:/]/.test(entry) || /^github\.com[/:]/i.test(folded(entry)) || /\?(?:.*&)?(?:ref|version|timeout|submodules)=/i.test(entry)) return true;
  if (!/^[^/]*[^/.][^/]*\.[^/]+\//.test(entry)) return false;
  return !existsSync(resolve(directory, entry));
}

/** Fields whose entries kustomize reads as a file first (accumulateResources), before FileLoader.New. */
const FILE_FIRST_FIELDS = ["resources", "bases"];

/**
 * Whether `path` is a local regular file that kustomize's accumulateFile would load: YAML whose
 * documents are each empty, or a map with a `kind` and a `metadata.name` (a `…List` kind: `items`,
 * each such a map). Anything else (unreadable, malformed, a list or a scalar at the top, a map
 * without kind or name: kubectl kustomize v5.5 answers "missing Resource metadata", "missing
 * metadata.name", "missing kind") fails there, and the entry goes on to FileLoader.New.
 */
function loadsAsResources(path: string): boolean {
  if (!isLocalFile(path)) return false;
  let text: string;
  try {
    text = readInputText(path, { what: "kustomize resource file", maxBytes: INPUT_LIMITS.config, pipes: false });
  } catch {
    return false;
  }
  const documents = parseAllDocuments(text, { logLevel: "silent" });
  if (!Array.isArray(documents)) return false;
  return documents.every((document) => {
    if (document.errors.length > 0) return false;
    const value: unknown = document.toJS();
    return value === null || value === undefined || isLoadableResource(value);
  });
}

function isLoadableResource(value: unknown): boolean {
  if (!isDict(value) || typeof value["kind"] !== "string" || value["kind"] === "") return false;
  const items = value["items"];
  if (value["kind"].endsWith("List") && Array.isArray(items)) return items.every((item) => isLoadableResource(item));
  const metadata = value["metadata"];
  return isDict(metadata) && typeof metadata["name"] === "string" && metadata["name"] !== "";
}

function isLocalFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/** The local kustomization folders a kustomization names (its bases and components), as kustomization files. */
function localTargets(doc: Record<string, unknown>, directory: string): string[] {
  const found: string[] = [];
  for (const { field, entry } of namedEntries(doc)) {
    if (!TARGET_FIELDS.includes(field) || isRemoteEntry(entry, directory)) continue;
    const kustomization = kustomizationIn(resolve(directory, entry));
    if (kustomization !== undefined) found.push(kustomization);
  }
  return found;
}

/** At most this many kustomization files are read following one overlay's bases. */
const MAX_KUSTOMIZATIONS = 500;

/** Visits the kustomization and, transitively, the local kustomizations it names (each once). */
function eachKustomization(kustomization: string, visit: (file: string, doc: Record<string, unknown>, directory: string) => void, unchecked: (file: string, why: string) => void = () => undefined, root?: string): void {
  const seen = new Set<string>();
  const queue = [kustomization];
  while (queue.length > 0) {
    const file = queue.shift() ?? "";
    if (seen.size >= MAX_KUSTOMIZATIONS) {
      unchecked(file, `more than ${MAX_KUSTOMIZATIONS} kustomization files`);
      return;
    }
    let real: string;
    try {
      real = realpathSync(file);
    } catch {
      continue;
    }
    if (seen.has(real)) continue;
    // Never read a kustomization outside `root` (outsideReferences reports it instead).
    if (root !== undefined && !isInside(real, root)) continue;
    seen.add(real);
    const doc = readKustomization(file);
    if (doc === undefined) {
      unchecked(file, "not readable as a YAML map");
      continue;
    }
    const directory = dirname(file);
    visit(file, doc, directory);
    queue.push(...localTargets(doc, directory));
  }
}

export interface RemoteReference {
  /** The kustomization file that names it (the overlay's own, or one of a local base). */
  file: string;
  /** The field it is in (`resources`, `components`, `patches[].path`, …); `unchecked`: the file could not be checked, `reference` says why. */
  field: string;
  reference: string;
}

/**
 * The remote references of an overlay, its own and those of the local bases and components it
 * names (transitively): what `kubectl kustomize` would fetch from the network or clone with git.
 * Read before rendering, so that an audit of an untrusted tree fetches nothing and runs no git.
 */
export function remoteReferences(kustomization: string): RemoteReference[] {
  const found: RemoteReference[] = [];
  eachKustomization(kustomization, (file, doc, directory) => {
    const plugins = pluginEntries(doc, directory);
    for (const why of plugins.unchecked) found.push({ file, field: "unchecked", reference: why });
    for (const { field, entry } of [...namedEntries(doc), ...plugins.entries]) if (isRemoteEntry(entry, directory, field)) found.push({ file, field, reference: entry });
  }, (file, why) => found.push({ file, field: "unchecked", reference: why }));
  return found;
}

/**
 * The local entries of an overlay (its own, and those of the local bases and components it names,
 * transitively) that lead outside `root` (a real path): `../../other-checkout/prod`, an absolute
 * path, a symbolic link out. kubectl kustomize renders such a base, and the audit would then
 * quote another tree's hosts, users and tokens (review audit finding 6): the overlay is not
 * rendered. Kustomizations outside `root` are never read.
 */
export function outsideReferences(kustomization: string, root: string): RemoteReference[] {
  const found: RemoteReference[] = [];
  eachKustomization(kustomization, (file, doc, directory) => {
    for (const { field, entry } of [...namedEntries(doc), ...pluginEntries(doc, directory).entries]) {
      if (isRemoteEntry(entry, directory, field)) continue;
      const path = resolve(directory, entry);
      let real: string;
      try {
        real = realpathSync(path);
      } catch {
        continue; // A missing path: nothing to read there, kustomize fails on it.
      }
      if (!isInside(real, root)) found.push({ file, field, reference: entry });
    }
  }, () => undefined, root);
  return found;
}

/** Whether the kustomization is a `kind: Component` (applied by the overlays that name it, never built alone). */
export function isComponent(kustomization: string): boolean {
  return readKustomization(kustomization)?.["kind"] === "Component";
}

/** The local kustomization folders `kustomization` names directly (resolved, real paths). */
export function namedKustomizationFolders(kustomization: string): string[] {
  const doc = readKustomization(kustomization);
  if (doc === undefined) return [];
  return localTargets(doc, dirname(kustomization)).flatMap((file) => {
    try {
      return [realpathSync(dirname(file))];
    } catch {
      return [];
    }
  });
}

/**
 * Whether the kustomization in `directory` consumes `file` (a resource, patch, component or
 * generator file it names, or any file under a folder it names that is not a kustomization
 * folder, and so on through the local bases and components it names: of those, what their own
 * kustomizations name): such a file is audited in the rendered output. Files it does not name (a
 * sidecar config, an .env file kept beside it, a file in a base folder the base does not list)
 * are audited as files.
 */
export function consumedBy(kustomization: string, directory: string): (file: string) => boolean {
  const named: string[] = [kustomization];
  eachKustomization(kustomization, (file, doc, folder) => {
    named.push(file);
    for (const { field, entry } of [...namedEntries(doc), ...pluginEntries(doc, folder).entries]) {
      // Remote resources are not files of this tree.
      if (isRemoteEntry(entry, folder, field)) continue;
      const path = resolve(folder, entry);
      // A kustomization folder (a base, a component) consumes what its own kustomization names,
      // visited here in turn, not every file under it: a file it does not list is audited as a
      // file (review audit finding 2: an overlay naming ../app hid app/'s unlisted files).
      if (TARGET_FIELDS.includes(field) && kustomizationIn(path) !== undefined) continue;
      named.push(path);
    }
  });
  const roots = named.map((path) => resolve(path));
  return (file) => {
    const path = resolve(file);
    return roots.some((root) => path === root || (!relative(root, path).startsWith("..") && path.startsWith(root + sep)));
  };
}

/**
 * The regular files a kustomization loads as resources (file entries of `resources` and `bases`,
 * through the local bases and components it names), as real paths: the only files kustomize
 * writes a `config.kubernetes.io/origin` annotation for (accumulateFile). An origin naming any
 * other file did not come from kustomize (a patch or transformer of the overlay set it).
 */
export function resourceFilesOf(kustomization: string): Set<string> {
  const files = new Set<string>();
  eachKustomization(kustomization, (_file, doc, folder) => {
    for (const field of FILE_FIRST_FIELDS) {
      for (const value of listField(doc, field)) {
        const entry = asText(value).trim();
        if (entry === "" || entry.includes("\n") || isRemoteEntry(entry, folder, field)) continue;
        const path = resolve(folder, entry);
        if (!isLocalFile(path)) continue;
        try {
          files.add(realpathSync(path));
        } catch {
          // Gone since: not a file kustomize loaded.
        }
      }
    }
  });
  return files;
}

/** Whether `path` is `root` or under it (both real paths). */
export function isInside(path: string, root: string): boolean {
  return path === root || path.startsWith(root.endsWith(sep) ? root : root + sep);
}

/** The name findings in a rendered overlay are reported under: the overlay folder, then how it was rendered. */
export function renderedName(directory: string): string {
  return join(directory, "(kubectl kustomize)");
}

/** How to audit an overlay when it could not be rendered here. */
export function renderAdvice(directory: string): string {
  return `audit the rendered output instead: \`kubectl kustomize ${shellWord(directory)} | meshward audit -\``;
}

/**
 * A path as a word to paste into a POSIX shell: `./` before a relative path that starts with `-`
 * (a folder named `--enable-helm` is no flag), single quotes around anything but plain characters
 * (a folder named `$(…)` runs nothing).
 */
function shellWord(path: string): string {
  const word = path.startsWith("-") ? `./${path}` : path;
  return /^[\w./@%+=:,-]+$/.test(word) ? word : `'${word.replace(/'/g, "'\\''")}'`;
}
