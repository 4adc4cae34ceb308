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

export function isWorkloadKind(doc: Dict): boolean {
  return asText(doc["kind"]) in TEMPLATE_PATHS && typeof doc["apiVersion"] === "string" && !asText(doc["apiVersion"]).includes("dapr.io");
}

export function isConfigMapKind(doc: Dict): boolean {
  return asText(doc["kind"]) === "ConfigMap" && asText(doc["apiVersion"]) === "v1";
}

export function isSecretKind(doc: Dict): boolean {
  return asText(doc["kind"]) === "Secret" && asText(doc["apiVersion"]) === "v1";
}

export function loadWorkload(source: SourceDocument, doc: Dict, base: NodePath = []): Workload {
  const kind = asText(doc["kind"]);
  const templatePath = TEMPLATE_PATHS[kind] ?? [];
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
    });
  }
  return {
    kind: "workload",
    source,
    workloadKind: kind,
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
