import { isPlaceholder } from "../values.ts";
import { asArray, asDict, asText, get, isDict } from "../shape.ts";
import type { Dict } from "../shape.ts";
import type { ConfigValues, ContainerEnvVar, KubernetesSecret, NodePath, SourceDocument, Workload } from "../types.ts";

const TEMPLATE_PATHS: Readonly<Record<string, readonly string[]>> = {
  Pod: [],
  Deployment: ["spec", "template"],
  StatefulSet: ["spec", "template"],
  DaemonSet: ["spec", "template"],
  ReplicaSet: ["spec", "template"],
  Job: ["spec", "template"],
  CronJob: ["spec", "jobTemplate", "spec", "template"],
};

/**
 * Workload kinds of other API groups whose pod template the audit reads, by API group and kind.
 * The group decides: a Knative `Service` (serving.knative.dev) holds a pod template, a core `v1`
 * Service does not; a Knative `Configuration` is not a Dapr one (dapr.io).
 */
const GROUP_TEMPLATE_PATHS: Readonly<Record<string, Readonly<Record<string, readonly string[]>>>> = {
  // Argo Rollouts: `spec.template` like a Deployment (or `spec.workloadRef` to a Deployment).
  "argoproj.io": { Rollout: ["spec", "template"] },
  // Knative Serving: `spec.template` is a revision template (`metadata.annotations`, `spec.containers`).
  "serving.knative.dev": { Service: ["spec", "template"], Configuration: ["spec", "template"] },
  // OpenShift.
  "apps.openshift.io": { DeploymentConfig: ["spec", "template"] },
};

/** How drift names workload kinds whose kind alone is ambiguous (a Knative Service is not a core Service). */
const WORKLOAD_LABELS: Readonly<Record<string, string>> = {
  "serving.knative.dev/Service": "Knative Service",
  "serving.knative.dev/Configuration": "Knative Configuration",
};

function apiGroup(doc: Dict): string {
  const apiVersion = asText(doc["apiVersion"]);
  const slash = apiVersion.indexOf("/");
  return slash < 0 ? "" : apiVersion.slice(0, slash);
}

/** Where the pod template of a workload document is (`[]`: the document is the pod), or undefined when it is not a workload the audit reads. */
export function templatePathOf(doc: Dict): readonly string[] | undefined {
  if (typeof doc["apiVersion"] !== "string") return undefined;
  const kind = asText(doc["kind"]);
  const byGroup = GROUP_TEMPLATE_PATHS[apiGroup(doc)];
  if (byGroup !== undefined) return Object.hasOwn(byGroup, kind) ? byGroup[kind] : undefined;
  if (asText(doc["apiVersion"]).includes("dapr.io")) return undefined;
  return Object.hasOwn(TEMPLATE_PATHS, kind) ? TEMPLATE_PATHS[kind] : undefined;
}

export function isWorkloadKind(doc: Dict): boolean {
  return templatePathOf(doc) !== undefined;
}

/**
 * An Argo Rollout that takes its pod template from another workload (`spec.workloadRef`, no
 * `spec.template`): the kind and name it points at. Undefined for any other document.
 */
export function rolloutWorkloadRef(doc: Dict): { kind: string; name: string } | undefined {
  if (apiGroup(doc) !== "argoproj.io" || asText(doc["kind"]) !== "Rollout" || isDict(get(doc, "spec", "template"))) return undefined;
  const ref = get(doc, "spec", "workloadRef");
  if (!isDict(ref)) return undefined;
  return { kind: asText(ref["kind"]) || "Deployment", name: asText(ref["name"]) };
}

export function isConfigMapKind(doc: Dict): boolean {
  return asText(doc["kind"]) === "ConfigMap" && asText(doc["apiVersion"]) === "v1";
}

export function isSecretKind(doc: Dict): boolean {
  return asText(doc["kind"]) === "Secret" && asText(doc["apiVersion"]) === "v1";
}

export function loadWorkload(source: SourceDocument, doc: Dict, base: NodePath = []): Workload {
  const kind = asText(doc["kind"]);
  const templatePath = templatePathOf(doc) ?? [];
  const template = templatePath.length === 0 ? doc : get(doc, ...templatePath);
  const annotations: Record<string, string> = {};
  for (const [key, value] of Object.entries(asDict(get(template, "metadata", "annotations")))) {
    annotations[key] = asText(value);
  }
  const labels: Record<string, string> = {};
  for (const [key, value] of Object.entries(asDict(get(template, "metadata", "labels")))) {
    labels[key] = asText(value);
  }
  const podSpec = asDict(get(template, "spec"));
  const podSpecPath = [...base, ...templatePath, "spec"];
  const env = containerEnv(podSpec, podSpecPath);
  return {
    kind: "workload",
    source,
    workloadKind: WORKLOAD_LABELS[`${apiGroup(doc)}/${kind}`] ?? kind,
    name: asText(get(doc, "metadata", "name")),
    namespace: asText(get(doc, "metadata", "namespace")) || undefined,
    annotations,
    annotationsPath: [...base, ...templatePath, "metadata", "annotations"],
    labels,
    labelsPath: [...base, ...templatePath, "metadata", "labels"],
    podSpec,
    podSpecPath,
    env,
  };
}

/** The env of every container and init container of a pod spec, each with the path to its value (or name). */
export function containerEnv(podSpec: Dict, podSpecPath: NodePath): ContainerEnvVar[] {
  const env: ContainerEnvVar[] = [];
  for (const listName of ["containers", "initContainers"]) {
    asArray(podSpec[listName]).forEach((container, ci) => {
      asArray(get(container, "env")).forEach((entry, ei) => {
        if (!isDict(entry)) return;
        const hasInlineValue = entry["value"] !== undefined && entry["value"] !== null && !isDict(entry["value"]);
        env.push({
          name: asText(entry["name"]),
          value: hasInlineValue ? asText(entry["value"]) : "",
          hasInlineValue,
          path: [...podSpecPath, listName, ci, "env", ei, hasInlineValue ? "value" : "name"],
        });
      });
      for (const field of ["command", "args"]) {
        asArray(get(container, field)).forEach((element, ai) => {
          const url = argumentUrl(element);
          // `value` past the element keeps the env path's shape (the container is `path.slice(0, -3)`); it locates the element.
          if (url !== undefined) env.push({ name: `${field}[${ai}]`, value: url, hasInlineValue: true, path: [...podSpecPath, listName, ci, field, ai, "value"] });
        });
      }
    });
  }
  return env;
}

/** Schemes of databases and brokers: a container argument with one is an address the container dials. */
const DIALLED_SCHEMES = /^(jdbc:)?(postgres|postgresql|mysql|mariadb|mongodb|mongodb\+srv|redis|rediss|amqp|amqps|sqlserver|nats|mqtt|mqtts|kafka)(\+[a-z0-9]+)?:\/\//i;

/**
 * A container `args`/`command` element that is a database or broker URL, or a `--flag=URL` whose
 * value is one (review-auditprec L3): read like an env value. `http://` arguments (external URLs,
 * identifiers such as `--web.external-url`) and shell strings (`sh -c "…"`) are not read.
 */
function argumentUrl(element: unknown): string | undefined {
  if (typeof element !== "string") return undefined;
  const text = element.trim();
  const value = /^--?[A-Za-z0-9][\w.-]*=/.test(text) ? text.slice(text.indexOf("=") + 1) : text;
  return DIALLED_SCHEMES.test(value) && !/\s/.test(value) ? value : undefined;
}

export function loadSecret(source: SourceDocument, doc: Dict, base: NodePath = []): KubernetesSecret {
  const keys: KubernetesSecret["keys"] = [];
  for (const field of ["data", "stringData"]) {
    for (const [name, value] of Object.entries(asDict(doc[field]))) {
      // An unquoted `{{ … }}` reads as a YAML flow mapping; a quoted one as a string.
      const placeholder = isDict(value) || Array.isArray(value) || /\{\{.*\}\}/s.test(asText(value)) || isPlaceholder(asText(value));
      keys.push({ name, path: [...base, field, name], placeholder });
    }
  }
  return {
    kind: "kubernetes-secret",
    source,
    name: asText(get(doc, "metadata", "name")),
    namespace: asText(get(doc, "metadata", "namespace")) || undefined,
    keys,
  };
}

/** A Secret `data` value decoded from base64, or undefined when it is not base64 of UTF-8 text. */
function decodeBase64Text(value: string): string | undefined {
  const text = value.replace(/\s/g, "");
  if (text === "" || !/^[A-Za-z0-9+/]+={0,2}$/.test(text) || text.length % 4 !== 0) return undefined;
  const decoded = Buffer.from(text, "base64").toString("utf8");
  return decoded.includes("\uFFFD") || /[\u0000-\u0008\u000e-\u001f]/.test(decoded) ? undefined : decoded;
}

/**
 * The values of a ConfigMap (`data`) or Secret (`stringData`, and `data` decoded from base64),
 * each read like a container env variable (connection strings, inline secrets). A value of more
 * than one line is a file kept in the object, not an env value, and a template expression holds
 * nothing: both are left out.
 */
export function loadConfigValues(source: SourceDocument, doc: Dict, base: NodePath = []): ConfigValues {
  const holder = isSecretKind(doc) ? "Secret" : "ConfigMap";
  const env: ContainerEnvVar[] = [];
  const fields = holder === "Secret" ? ["stringData", "data"] : ["data"];
  for (const field of fields) {
    for (const [name, raw] of Object.entries(asDict(doc[field]))) {
      if (isDict(raw) || Array.isArray(raw) || raw === null || raw === undefined) continue;
      const text = asText(raw);
      const value = holder === "Secret" && field === "data" ? decodeBase64Text(text) : text;
      if (value === undefined || /[\r\n]/.test(value.trim()) || /\{\{.*\}\}/s.test(value)) continue;
      env.push({ name, value, hasInlineValue: true, path: [...base, field, name] });
    }
  }
  return {
    kind: "config-values",
    source,
    holder,
    name: asText(get(doc, "metadata", "name")),
    namespace: asText(get(doc, "metadata", "namespace")) || undefined,
    env,
  };
}
