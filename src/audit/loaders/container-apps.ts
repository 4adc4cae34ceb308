import { asArray, asDict, asText, get, isDict, isTruthy } from "../shape.ts";
import type { Dict } from "../shape.ts";
import type { ComponentMetadataItem, ConfigValues, ContainerEnvVar, DaprComponent, NodePath, SourceDocument, Workload } from "../types.ts";
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

/** A Dapr component type (`state.redis`, `pubsub.azure.servicebus.topics`, `bindings.postgresql`). */
const COMPONENT_TYPE = /^[a-z][a-z0-9]*(\.[a-z0-9][a-z0-9-]*)+$/i;

/**
 * Where the component's fields are in an Azure Container Apps Dapr component document, or
 * undefined when it is not one. Two forms, schema from learn.microsoft.com/azure/container-apps/dapr-components
 * ("In Azure Container Apps, the above schema is slightly simplified … removing apiVersion, kind, and
 * redundant metadata and spec properties"):
 * - the YAML of `az containerapp env dapr-component set --yaml`: no apiVersion/kind, a top-level
 *   `componentType` (`state.redis`), `version`, `metadata` (a list of `name` with `value` or
 *   `secretRef`), `secrets` (`name` with `value` or `keyVaultUrl`), `scopes`;
 * - the ARM/Bicep resource (`az resource show`): `type: Microsoft.App/managedEnvironments/daprComponents`
 *   with the same fields under `properties`.
 */
function daprComponentBase(doc: Dict): NodePath | undefined {
  if ("kind" in doc || "apiVersion" in doc) return undefined;
  const arm = /^Microsoft\.App\/managedEnvironments\/daprComponents$/i.test(asText(doc["type"]));
  const fields = arm ? get(doc, "properties") : doc;
  if (!isDict(fields) || !COMPONENT_TYPE.test(asText(fields["componentType"]).trim())) return undefined;
  const metadata = fields["metadata"];
  if (metadata !== undefined && metadata !== null && !Array.isArray(metadata)) return undefined;
  return arm ? ["properties"] : [];
}

export function isContainerAppDaprComponent(doc: Dict): boolean {
  return daprComponentBase(doc) !== undefined;
}

/**
 * The component as a Dapr component (its `metadata` read like a Kubernetes component's; an entry
 * with `secretRef` is a reference, like `secretKeyRef`), named by `name` (ARM) or the file name
 * (the CLI takes the name as `--dapr-component-name`), and the inline `value`s of its `secrets`
 * read like an app's secrets (MW-SECRET-008 and the connection-string rules).
 */
export function loadContainerAppDaprComponent(source: SourceDocument, doc: Dict): { component: DaprComponent; secrets: ConfigValues | undefined } {
  const base = daprComponentBase(doc) ?? [];
  const fields = asDict(base.length === 0 ? doc : get(doc, ...base.map(String)));
  const fileName = (source.file.split(/[\\/]/).pop() ?? source.file).replace(/\.(ya?ml|jsonc?)$/i, "");
  const name = asText(doc["name"]) || fileName;
  const metadata: ComponentMetadataItem[] = [];
  asArray(fields["metadata"]).forEach((entry, index) => {
    if (!isDict(entry)) return;
    const hasInlineValue = "value" in entry && entry["value"] !== null && typeof entry["value"] !== "object";
    metadata.push({
      name: asText(entry["name"]),
      value: hasInlineValue ? asText(entry["value"]) : "",
      hasInlineValue,
      hasSecretRef: asText(entry["secretRef"]).trim() !== "" || isDict(entry["secretKeyRef"]),
      path: hasInlineValue ? ["spec", "metadata", index, "value"] : ["spec", "metadata", index],
    });
  });
  const env: ContainerEnvVar[] = [];
  asArray(fields["secrets"]).forEach((entry, index) => {
    if (!isDict(entry)) return;
    const value = entry["value"];
    if (value === undefined || value === null || isDict(value) || Array.isArray(value)) return;
    env.push({ name: asText(entry["name"]), value: asText(value), hasInlineValue: true, path: [...base, "secrets", index, "value"] });
  });
  // Rules point into a component as Kubernetes spells it (`spec.type`, `spec.metadata[i]`): mapped here.
  const view: SourceDocument = {
    ...source,
    locate: (path) => source.locate(path[0] !== "spec" ? path : path[1] === "type" ? [...base, "componentType"] : [...base, ...path.slice(1)]),
  };
  return {
    component: { kind: "dapr-component", source: view, name, namespace: undefined, type: asText(fields["componentType"]).trim(), metadata },
    secrets: env.length === 0 ? undefined : { kind: "config-values", source, holder: "ContainerApp", name, namespace: undefined, env },
  };
}
