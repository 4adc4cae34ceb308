import { isPlaceholder } from "../values.ts";
import { asArray, asDict, asText, get, isDict } from "../shape.ts";
import type { Dict } from "../shape.ts";
import type { ContainerEnvVar, KubernetesSecret, NodePath, SourceDocument, Workload } from "../types.ts";

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
