import { noWorkflowCommands, printable } from "../util/printable.ts";
import { basename, relative, resolve, sep } from "node:path";
import { loadSources, readPaths } from "./audit.ts";
import { microTlsEnabled } from "./rules/micro.ts";
import { validatorNames } from "./rules/mtls.ts";
import { transportRules } from "./rules/transport.ts";
import { productionScore } from "./rules/secrets.ts";
import { MeshwardError } from "../errors.ts";
import { isDaprEnabled, meshwardInjected, meshwardMode, sidecarListenBeyondLoopback } from "./rules/kubernetes.ts";
import { asArray, asText, durationSeconds, get, isDict, isFalsy, isTruthy, lookup } from "./shape.ts";
import type { Corpus, Resource } from "./types.ts";
import { DEFAULT_MAX_FILE_BYTES } from "./walk.ts";

/** One security setting of one environment; a higher rank is stronger. */
export interface PostureValue {
  value: string;
  rank: number;
}

/**
 * One setting of one resource: `label name suffix` (`component statestore (state.redis)`), with
 * the resource's namespace and file (relative to the environment folder) to tell apart resources
 * that share a name.
 */
export interface PostureEntry extends PostureValue {
  aspect: string;
  label: string;
  name: string;
  suffix: string;
  namespace: string | undefined;
  file: string;
}

export type Posture = PostureEntry[];

export type DriftStatus = "same" | "differs" | "weaker";

export interface DriftRow {
  aspect: string;
  subject: string;
  /** One per environment, in the order given; null where the environment lacks it. */
  values: (string | null)[];
  status: DriftStatus;
  /** Environments weaker than the reference on this row. */
  weakerIn: string[];
}

/** How the reference was chosen: `--reference`, a folder named like production, or the last folder given. */
export type ReferenceChoice = "flag" | "name" | "last";

export interface DriftReport {
  environments: string[];
  reference: string;
  referenceBy: ReferenceChoice;
  rows: DriftRow[];
}

const SEP = "\u0000";

function durationRank(value: unknown, fallback: string): PostureValue {
  const text = asText(value) || fallback;
  return { value: text, rank: -(durationSeconds(text) ?? Number.MAX_SAFE_INTEGER) };
}

function accessControlPosture(accessControl: unknown): PostureValue {
  if (!isDict(accessControl)) return { value: "not set (allow all)", rank: 0 };
  const action = asText(accessControl["defaultAction"]).toLowerCase() || "unset";
  const policies = asArray(accessControl["policies"]).length;
  const rank = action === "deny" ? 2 : policies > 0 ? 1 : 0;
  return { value: `default ${action}, ${policies} polic${policies === 1 ? "y" : "ies"}`, rank };
}

/**
 * Extracts the comparable security settings of one environment. `root` is the environment's
 * folder: files are named relative to it (to tell apart resources with one name and no namespace).
 */
export function collectPosture(corpus: Corpus, root?: string): Posture {
  const posture: Posture = [];
  for (const resource of corpus.resources) {
    // Inline kustomize patches are partial documents (the audit reports the values they set):
    // read as whole resources they would override the posture of the base with defaults.
    if (resource.kind === "raw-file" || resource.source.origin !== undefined) continue;
    const namespace = "namespace" in resource && typeof resource.namespace === "string" && resource.namespace !== "" ? resource.namespace : undefined;
    const file = root === undefined ? resource.source.file : relative(resolve(root), resolve(resource.source.file)).split(sep).join("/");
    collectOne(resource, corpus, (aspect, subject, value) => {
      posture.push({ aspect, ...subject, ...value, namespace, file });
    });
  }
  return posture;
}

/** A value that names a connection: a URL, or a keyword string with a host or TLS setting. */
const CONNECTION_VALUE = /:\/\/|(^|[\s;,])(host|hostaddr|server|data source|sslmode|ssl ?mode|ssl|encrypt)\s*=/i;
/** Variables that set TLS for a whole process or client (MW-TLS-006, MW-TLS-009). */
const TLS_SWITCH_NAME = /(^|_)SECURITY_PROTOCOL$|^NODE_TLS_REJECT_UNAUTHORIZED$|^PYTHONHTTPSVERIFY$|^GIT_SSL_NO_VERIFY$|SKIP_(TLS_|SSL_)?VERIF/i;

/**
 * The `TLS (env)` row of a workload, compose service, env file, ConfigMap or Secret: the transport
 * rules that read env run on it, as they run on a component for its `TLS` row (no finding ⇢ any,
 * listed; a finding lowered to low on loopback does not count). Only holders with a connection
 * setting get a row. An Azure Container App's ingress has its own row (MW-TLS-015 is left out).
 */
function envTlsPosture(resource: Extract<Resource, { kind: "workload" | "compose-service" | "config-values" }>, corpus: Corpus, subject: Subject, put: (aspect: string, subject: Subject, value: PostureValue) => void): void {
  const connections = resource.env.some((entry) => entry.hasInlineValue && (CONNECTION_VALUE.test(entry.value) || TLS_SWITCH_NAME.test(entry.name)));
  if (!connections) return;
  const weak = transportRules
    .filter((rule) => rule.appliesTo.includes(resource.kind) && rule.id !== "MW-TLS-015")
    .flatMap((rule) => rule.check(resource as never, corpus).filter((hit) => hit.severity !== "low").map(() => rule.id));
  put("TLS (env)", subject, weak.length === 0 ? { value: "no finding", rank: 1 } : { value: `off/weak (${[...new Set(weak)].join(", ")})`, rank: 0 });
}

type Subject = { label: string; name: string; suffix: string };
const subjectOf = (label: string, name: string, suffix = ""): Subject => ({ label, name, suffix });

function collectOne(resource: Resource, corpus: Corpus, put: (aspect: string, subject: Subject, value: PostureValue) => void): void {
  switch (resource.kind) {
    case "dapr-configuration": {
      const subject = subjectOf("Configuration", resource.name);
      const enabled = get(resource.spec, "mtls", "enabled");
      const off = enabled !== undefined && isFalsy(enabled);
      put("mTLS", subject, { value: off ? "off" : "on", rank: off ? 0 : 1 });
      put("workload cert TTL", subject, durationRank(get(resource.spec, "mtls", "workloadCertTTL"), "24h"));
      put("allowed clock skew", subject, durationRank(get(resource.spec, "mtls", "allowedClockSkew"), "15m"));
      put("access policy", subject, accessControlPosture(resource.spec["accessControl"]));
      return;
    }
    case "dapr-component": {
      const weak = transportRules.flatMap((rule) => (rule.appliesTo.includes("dapr-component") ? rule.check(resource as never, corpus).map(() => rule.id) : []));
      const value = weak.length === 0 ? "on" : `off/weak (${[...new Set(weak)].join(", ")})`;
      put("TLS", subjectOf("component", resource.name, ` (${resource.type})`), { value, rank: weak.length === 0 ? 1 : 0 });
      return;
    }
    case "compose-service":
      envTlsPosture(resource, corpus, subjectOf("compose service", resource.name), put);
      return;
    case "config-values":
      envTlsPosture(resource, corpus, subjectOf(resource.holder, resource.name), put);
      return;
    case "workload": {
      const subject = subjectOf(resource.workloadKind, resource.name);
      envTlsPosture(resource, corpus, subject, put);
      if (resource.ingress !== undefined) {
        const plaintext = resource.ingress.allowInsecure;
        put("ingress HTTP", subject, { value: plaintext ? "served (allowInsecure)" : "redirected to HTTPS", rank: plaintext ? 0 : 1 });
      }
      if (meshwardInjected(resource)) {
        const permissive = meshwardMode(resource).value === "permissive";
        put("mTLS", subject, { value: permissive ? "permissive" : "strict", rank: permissive ? 0 : 1 });
      }
      if (!isDaprEnabled(resource)) return;
      const token = (resource.annotations["dapr.io/api-token-secret"] ?? "") !== "";
      put("Dapr API token", subject, { value: token ? "set" : "none", rank: token ? 1 : 0 });
      const listen = resource.annotations["dapr.io/sidecar-listen-addresses"] ?? "127.0.0.1";
      const open = sidecarListenBeyondLoopback(listen).length > 0;
      put("sidecar listen", subject, { value: listen, rank: open ? 0 : 1 });
      put("Dapr config", subject, { value: resource.annotations["dapr.io/config"] || "default", rank: 0 });
      return;
    }
    case "meshward-sidecar": {
      const subject = subjectOf("sidecar", asText(lookup(resource.config, "app-id")?.value) || basename(resource.source.file));
      const permissive = /^permissive$/i.test(asText(lookup(resource.config, "mode")?.value).trim());
      put("mTLS", subject, { value: permissive ? "permissive" : "strict", rank: permissive ? 0 : 1 });
      const policy = lookup(resource.config, "policy");
      put("access policy", subject, { value: policy === undefined ? "none" : "set", rank: policy === undefined ? 0 : 1 });
      return;
    }
    case "meshward-ca": {
      const subject = subjectOf("CA", asText(lookup(resource.config, "trustDomain")?.value) || basename(resource.source.file));
      const fallback = asText(lookup(resource.config, "defaultValidator")?.value).trim().toLowerCase();
      const names = [...new Set([...validatorNames(resource.config).map((validator) => validator.name), ...(fallback === "" ? [] : [fallback])])].sort();
      put("validators", subject, { value: names.join(", ") || "none", rank: names.includes("insecure") ? 0 : 1 });
      put("workload cert TTL", subject, durationRank(lookup(resource.config, "workloadTtl")?.value, "24h"));
      put("allowed clock skew", subject, durationRank(lookup(resource.config, "clockSkew")?.value, "15m"));
      const dev = isTruthy(lookup(resource.config, "allowInsecureDev")?.value);
      put("allowInsecureDev", subject, { value: dev ? "true" : "false", rank: dev ? 0 : 1 });
      return;
    }
    case "micro-settings": {
      const subject = subjectOf("micro", basename(resource.source.file));
      const on = microTlsEnabled(resource);
      put("TLS", subject, { value: on ? "on" : "off", rank: on ? 1 : 0 });
      return;
    }
    default:
      return;
  }
}

/**
 * The reference: the environment whose path names production most plainly, looking at every
 * segment of the path that the environments do not all share (`environments/production/k8s`
 * against `environments/staging/k8s`), a segment that is a production word (`production`, `prod`)
 * before one with a production word in it (`env-prod`), never a negated one (`non-prod`,
 * `pre-prod`); the first of equals. Else the last environment given.
 */
export function chooseReference(paths: readonly string[]): { index: number; by: ReferenceChoice } {
  const segments = paths.map((path) => resolve(path).split(sep).filter((segment) => segment !== ""));
  let shared = 0;
  while (segments.every((each) => shared < each.length - 1 && each[shared] === segments[0]?.[shared])) shared += 1;
  const scores = segments.map((each) => Math.max(0, ...each.slice(shared).map(productionScore)));
  const best = Math.max(...scores);
  if (best > 0) return { index: scores.indexOf(best), by: "name" };
  return { index: paths.length - 1, by: "last" };
}

/** The index of the reference environment (see chooseReference). */
export function referenceIndex(paths: readonly string[]): number {
  return chooseReference(paths).index;
}

/**
 * The row key of each entry. Resources are matched across environments by aspect, kind and name;
 * where one environment holds several resources under that key (`payments/appconfig` and
 * `shop/appconfig`), the key takes their namespace, and where that does not tell them apart,
 * their file too, in every environment alike. Entries that still share a key (two documents of
 * one file) become one row with the weakest value, so no resource hides a weaker one.
 */
function rowKeys(environments: readonly { posture: Posture }[]): Map<PostureEntry, { key: string; subject: string }> {
  const base = (entry: PostureEntry): string => [entry.aspect, entry.label, entry.name, entry.suffix].join(SEP);
  const ambiguous = (qualify: (entry: PostureEntry) => string): Set<string> => {
    const found = new Set<string>();
    for (const environment of environments) {
      const seen = new Map<string, Set<string>>();
      for (const entry of environment.posture) {
        const variants = seen.get(base(entry)) ?? new Set<string>();
        variants.add(qualify(entry));
        seen.set(base(entry), variants);
      }
      for (const [key, variants] of seen) if (variants.size > 1) found.add(key);
    }
    return found;
  };
  const several = ambiguous((entry) => `${entry.namespace ?? ""}${SEP}${entry.file}`);
  const keys = new Map<PostureEntry, { key: string; subject: string }>();
  for (const environment of environments) {
    for (const entry of environment.posture) {
      const qualified = several.has(base(entry));
      // By namespace; and by file too where that does not tell them apart (no namespace, or the
      // same one in two files).
      const withFile = qualified && ambiguousWithinNamespace(environments, entry, base);
      const name = qualified && entry.namespace !== undefined ? `${entry.namespace}/${entry.name}` : entry.name;
      const where = withFile ? ` in ${entry.file}` : "";
      keys.set(entry, { key: [base(entry), qualified ? entry.namespace ?? "" : "", withFile ? entry.file : ""].join(SEP), subject: `${entry.label} ${name}${entry.suffix}${where}` });
    }
  }
  return keys;
}

/** True when some environment has two resources with this entry's key in one namespace. */
function ambiguousWithinNamespace(environments: readonly { posture: Posture }[], entry: PostureEntry, base: (entry: PostureEntry) => string): boolean {
  return environments.some((environment) => {
    const files = new Map<string, Set<string>>();
    for (const other of environment.posture) {
      if (base(other) !== base(entry)) continue;
      const namespace = other.namespace ?? "";
      files.set(namespace, (files.get(namespace) ?? new Set<string>()).add(other.file));
    }
    return [...files.values()].some((set) => set.size > 1);
  });
}

/** Words that name an environment inside a resource name (`statestore-staging`, `prod-appconfig`). */
const ENVIRONMENT_WORDS = new Set(["dev", "devel", "development", "test", "testing", "qa", "uat", "int", "integration", "stage", "staging", "stg", "preprod", "pre-prod", "sandbox", "demo", "prod", "production", "prd", "live"]);

/** The name without an environment word as its first or last `-`/`_`/`.` part, or undefined when it has none. */
function withoutEnvironmentWord(name: string, words: ReadonlySet<string>): string | undefined {
  const parts = name.split(/([-_.])/);
  if (parts.length < 3) return undefined;
  const first = parts[0]?.toLowerCase() ?? "";
  const last = parts[parts.length - 1]?.toLowerCase() ?? "";
  if (words.has(last)) return parts.slice(0, -2).join("");
  if (words.has(first)) return parts.slice(2).join("");
  return undefined;
}

/**
 * Names that carry their environment (`statestore-staging` in staging, `statestore-production`
 * in production) are compared as one resource (`statestore-<env>`): only where the exact name is
 * in no other environment, the stripped name is shared by at least two environments, each of
 * them holds exactly one such resource for it, and no environment holds the stripped name itself.
 * Otherwise the names are left as they are: two rows, never a guess that merges two resources.
 */
export function matchEnvironmentNames<E extends { name: string; posture: Posture }>(environments: readonly E[]): E[] {
  const words = new Set([...ENVIRONMENT_WORDS, ...environments.map((environment) => basename(environment.name).toLowerCase())]);
  const identity = (entry: PostureEntry, name: string): string => [entry.aspect, entry.label, name, entry.suffix, entry.namespace ?? ""].join(SEP);
  const exact = new Map<string, Set<number>>();
  environments.forEach((environment, index) => {
    for (const entry of environment.posture) exact.set(identity(entry, entry.name), (exact.get(identity(entry, entry.name)) ?? new Set()).add(index));
  });
  // Stripped identity → environment index → the raw names that strip to it there.
  const stripped = new Map<string, Map<number, Set<string>>>();
  environments.forEach((environment, index) => {
    for (const entry of environment.posture) {
      if ((exact.get(identity(entry, entry.name))?.size ?? 0) > 1) continue;
      const short = withoutEnvironmentWord(entry.name, words);
      if (short === undefined) continue;
      const byEnvironment = stripped.get(identity(entry, short)) ?? new Map<number, Set<string>>();
      byEnvironment.set(index, (byEnvironment.get(index) ?? new Set()).add(entry.name));
      stripped.set(identity(entry, short), byEnvironment);
    }
  });
  return environments.map((environment, index) => ({
    ...environment,
    posture: environment.posture.map((entry) => {
      if ((exact.get(identity(entry, entry.name))?.size ?? 0) > 1) return entry;
      const short = withoutEnvironmentWord(entry.name, words);
      const byEnvironment = short === undefined ? undefined : stripped.get(identity(entry, short));
      if (short === undefined || byEnvironment === undefined || byEnvironment.size < 2 || [...byEnvironment.values()].some((names) => names.size !== 1)) return entry;
      // An unsuffixed resource of that name elsewhere would be a second, different row: leave both.
      if (exact.has(identity(entry, short))) return entry;
      const suffixed = entry.name.toLowerCase().startsWith(short.toLowerCase());
      return { ...entry, name: suffixed ? `${short}-<env>` : `<env>-${short}` };
    }),
  }));
}

export function compareEnvironments(given: readonly { name: string; posture: Posture }[], chosen?: { index: number; by: ReferenceChoice }): DriftReport {
  const environments = matchEnvironmentNames(given);
  const names = environments.map((environment) => environment.name);
  const { index: reference, by: referenceBy } = chosen ?? chooseReference(names);
  const keyOf = rowKeys(environments);
  const subjects = new Map<string, { aspect: string; subject: string }>();
  // Per environment, per row key: the weakest value (and how many resources gave one).
  const tables = environments.map((environment) => {
    const table = new Map<string, { value: PostureValue; count: number; values: Set<string> }>();
    for (const entry of environment.posture) {
      const { key, subject } = keyOf.get(entry) ?? { key: "", subject: "" };
      subjects.set(key, { aspect: entry.aspect, subject });
      const held = table.get(key);
      const value = { value: entry.value, rank: entry.rank };
      if (held === undefined) table.set(key, { value, count: 1, values: new Set([entry.value]) });
      else table.set(key, { value: entry.rank < held.value.rank ? value : held.value, count: held.count + 1, values: held.values.add(entry.value) });
    }
    return new Map([...table].map(([key, held]) => [key, held.values.size > 1 ? { value: `${held.value.value} (weakest of ${held.count})`, rank: held.value.rank } : held.value]));
  });
  const rows: DriftRow[] = [];
  const ordered = [...subjects].sort(([, a], [, b]) => (a.aspect === b.aspect ? (a.subject < b.subject ? -1 : a.subject > b.subject ? 1 : 0) : a.aspect < b.aspect ? -1 : 1));
  for (const [key, { aspect, subject }] of ordered) {
    const entries = tables.map((table) => table.get(key));
    const referenceEntry = entries[reference];
    const weakerIn = referenceEntry === undefined
      ? []
      : environments.filter((_, index) => index !== reference && entries[index] !== undefined && (entries[index]?.rank ?? 0) < referenceEntry.rank).map((environment) => environment.name);
    const values = entries.map((entry) => entry?.value ?? null);
    const differs = new Set(values.map((value) => value ?? "\u0001missing")).size > 1;
    rows.push({ aspect, subject, values, status: weakerIn.length > 0 ? "weaker" : differs ? "differs" : "same", weakerIn });
  }
  return { environments: names, reference: names[reference] ?? "", referenceBy, rows };
}

/**
 * Drift between environment folders read from disk. `reference` names the reference environment
 * (one of `directories`, as given or by its displayed name). An environment folder that does not
 * exist or cannot be read, and one with nothing to compare, are refused (E_AUDIT_NOT_FOUND,
 * E_AUDIT_NOTHING_TO_COMPARE): a comparison with it would say nothing and pass.
 */
export function driftPaths(directories: readonly string[], maxFileBytes = DEFAULT_MAX_FILE_BYTES, options: { reference?: string; kubectl?: string; renderKustomize?: boolean; kustomizeRemote?: boolean; onRender?: (directory: string) => void } = {}): DriftReport {
  const short = directories.map((directory) => basename(resolve(directory)));
  const names = new Set(short).size === short.length ? short : [...directories];
  let chosen: { index: number; by: ReferenceChoice } | undefined;
  if (options.reference !== undefined) {
    const wanted = options.reference;
    const index = directories.findIndex((directory, at) => resolve(directory) === resolve(wanted) || names[at] === wanted);
    if (index < 0) throw new MeshwardError("E_AUDIT_USAGE", `--reference ${wanted}: not one of the environments given (${directories.join(", ")})`);
    chosen = { index, by: "flag" };
  }
  const missing: string[] = [];
  const empty: string[] = [];
  const unrendered: string[] = [];
  const environments = directories.map((directory, index) => {
    // A folder with a kustomization file is the overlay it renders to (`kubectl kustomize`).
    const read = readPaths([directory], { maxFileBytes, ...(options.kubectl === undefined ? {} : { kubectl: options.kubectl }), ...(options.renderKustomize === undefined ? {} : { renderKustomize: options.renderKustomize }), ...(options.kustomizeRemote === undefined ? {} : { kustomizeRemote: options.kustomizeRemote }), ...(options.onRender === undefined ? {} : { onRender: options.onRender }) });
    const root = read.skipped.find((skipped) => skipped.file === directory);
    if (root !== undefined) missing.push(`${directory} (${root.detail})`);
    for (const problem of read.problems) unrendered.push(`${directory}: ${problem.message.replace(/; its files were audited one by one/, "")}`);
    const { corpus } = loadSources(read.files);
    const posture = collectPosture(corpus, directory);
    if (root === undefined && posture.length === 0 && read.problems.length === 0) {
      const overlay = corpus.resources.some((resource) => resource.kind !== "raw-file" && resource.source.origin !== undefined)
        || read.files.some((file) => /(^|[\\/])kustomization\.ya?ml$/i.test(file.file));
      empty.push(overlay ? `${directory} (kustomize patches whose bases are elsewhere: give the overlay folder itself, the one with the kustomization.yaml, so that it is rendered)` : directory);
    }
    return { name: names[index] ?? directory, posture };
  });
  if (missing.length > 0) throw new MeshwardError("E_AUDIT_NOT_FOUND", `drift: environment folder not found: ${missing.join(", ")}`);
  // An overlay read without its bases would be compared as partial documents: refused.
  if (unrendered.length > 0) {
    throw new MeshwardError("E_AUDIT_KUSTOMIZE", `drift: ${unrendered.join("; ")}; or render each environment to a file (\`kubectl kustomize DIR > DIR.yaml\`) and compare the files: \`meshward audit drift staging.yaml production.yaml\``);
  }
  if (empty.length > 0) {
    throw new MeshwardError("E_AUDIT_NOTHING_TO_COMPARE", `drift: nothing to compare in ${empty.join(", ")}: no Dapr Configuration, component or Dapr-enabled workload, meshward sidecar or CA config, or micro settings`);
  }
  return compareEnvironments(environments, chosen ?? chooseReference(directories));
}

const REFERENCE_WHY: Readonly<Record<ReferenceChoice, string>> = {
  flag: "given with --reference",
  name: "named like production",
  last: "the last folder given: none is named like production; name it with --reference",
};

export function renderDriftText(report: DriftReport, options: { color: boolean }): string {
  const paint = (code: string, text: string): string => (options.color ? `\u001b[${code}m${text}\u001b[0m` : text);
  const header = ["aspect", "subject", ...report.environments.map((name) => (name === report.reference ? `${printable(name)} (reference)` : printable(name))), "status"];
  const body = report.rows.map((row) => [printable(row.aspect), printable(row.subject), ...row.values.map((value) => (value === undefined || value === null ? "—" : printable(value))), row.status === "weaker" ? `WEAKER in ${row.weakerIn.map((name) => printable(name)).join(", ")}` : row.status === "differs" ? "differs" : ""]);
  const widths = header.map((_, column) => Math.max(...[header, ...body].map((cells) => (cells[column] ?? "").length)));
  const format = (cells: string[]): string => cells.map((cell, column) => cell.padEnd(widths[column] ?? 0)).join("  ").trimEnd();
  const lines = [paint("1", format(header)), widths.map((width) => "-".repeat(width)).join("  ")];
  report.rows.forEach((row, index) => {
    const line = format(body[index] ?? []);
    lines.push(row.status === "weaker" ? paint("31;1", line) : row.status === "differs" ? paint("33", line) : line);
  });
  const weaker = report.rows.filter((row) => row.status === "weaker").length;
  const differs = report.rows.filter((row) => row.status === "differs").length;
  const settings = `${report.rows.length} setting${report.rows.length === 1 ? "" : "s"}`;
  lines.push("", `${settings} compared across ${report.environments.length} environments (reference: ${printable(report.reference)}, ${REFERENCE_WHY[report.referenceBy]}): ${weaker} weaker than the reference, ${differs} ${differs === 1 ? "differs" : "differ"}.`);
  return `${noWorkflowCommands(lines.join("\n"))}\n`;
}

export function renderDriftJson(report: DriftReport): string {
  return `${JSON.stringify(report, null, 2)}\n`;
}
