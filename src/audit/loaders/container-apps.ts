import { asArray, asDict, asText, get, isDict, isTruthy } from "../shape.ts";
import type { Dict } from "../shape.ts";
import type { ConfigValues, ContainerEnvVar, SourceDocument, Workload } from "../types.ts";
import { containerEnv } from "./kubernetes.ts";

/**
 * Azure Container Apps, as the YAML of `az containerapp create --yaml` (and `az containerapp
 * show -o yaml`, `az containerapp job create --yaml`): no apiVersion/kind, a `properties` map
 * with `configuration` (`ingress`, `secrets`, `dapr`) and `template` (`containers`,
 * `initContainers`, each with `env` entries of `name` and `value` or `secretRef`). Schema:
 * learn.microsoft.com/azure/container-apps/azure-resource-manager-api-spec.
 */
export function isContainerApp(doc: Dict): boolean {
  if ("kind" in doc || "apiVersion" in doc) return false;
  if (/^Microsoft\.App\/(containerApps|jobs)$/i.test(asText(doc["type"]))) return true;
  const template = get(doc, "properties", "template");
  return isDict(template) && Array.isArray(template["containers"]);
}

/** The app as a workload: its containers' env, and its ingress. Dapr settings are not pod annotations: the Dapr annotation rules do not apply. */
export function loadContainerApp(source: SourceDocument, doc: Dict): Workload {
  const template = asDict(get(doc, "properties", "template"));
  const podSpecPath = ["properties", "template"];
  const ingress = get(doc, "properties", "configuration", "ingress");
  const job = /\/jobs$/i.test(asText(doc["type"])) || get(doc, "properties", "configuration", "triggerType") !== undefined;
  return {
    kind: "workload",
    source,
    workloadKind: job ? "ContainerAppJob" : "ContainerApp",
    name: asText(doc["name"]) || (source.file.split(/[\\/]/).pop() ?? source.file),
    namespace: undefined,
    annotations: {},
    annotationsPath: ["properties", "configuration"],
    labels: {},
    labelsPath: ["properties", "configuration"],
    podSpec: template,
    podSpecPath,
    env: containerEnv(template, podSpecPath),
    ...(isDict(ingress)
      ? {
        ingress: {
          path: ["properties", "configuration", "ingress"],
          allowInsecure: isTruthy(ingress["allowInsecure"]),
          external: isTruthy(ingress["external"]),
          transport: asText(ingress["transport"]).toLowerCase() || "auto",
          clientCertificateMode: asText(ingress["clientCertificateMode"]).toLowerCase() || "ignore",
        },
      }
      : {}),
  };
}

/**
 * `properties.configuration.secrets` entries with an inline `value` (not a `keyVaultUrl`
 * reference), read like a Secret's values: the connection-string rules judge them, and
 * MW-SECRET-008 reports the value kept in the file.
 */
export function loadContainerAppSecrets(source: SourceDocument, doc: Dict): ConfigValues | undefined {
  const env: ContainerEnvVar[] = [];
  asArray(get(doc, "properties", "configuration", "secrets")).forEach((entry, index) => {
    if (!isDict(entry)) return;
    const value = entry["value"];
    if (value === undefined || value === null || isDict(value) || Array.isArray(value)) return;
    env.push({ name: asText(entry["name"]), value: asText(value), hasInlineValue: true, path: ["properties", "configuration", "secrets", index, "value"] });
  });
  if (env.length === 0) return undefined;
  return { kind: "config-values", source, holder: "ContainerApp", name: asText(doc["name"]) || (source.file.split(/[\\/]/).pop() ?? source.file), namespace: undefined, env };
}
