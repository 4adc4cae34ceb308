import { asArray, asDict, asText, get, isDict } from "../shape.ts";
import type { ComponentMetadataItem, DaprComponent, DaprConfiguration, SourceDocument } from "../types.ts";
import type { Dict } from "../shape.ts";

export function isDaprKind(doc: Dict, kind: string): boolean {
  return asText(doc["kind"]) === kind && asText(doc["apiVersion"]).startsWith("dapr.io/");
}

export function loadDaprConfiguration(source: SourceDocument, doc: Dict): DaprConfiguration {
  return {
    kind: "dapr-configuration",
    source,
    name: asText(get(doc, "metadata", "name")),
    namespace: asText(get(doc, "metadata", "namespace")) || undefined,
    spec: asDict(doc["spec"]),
  };
}

export function loadDaprComponent(source: SourceDocument, doc: Dict): DaprComponent {
  const metadata: ComponentMetadataItem[] = [];
  asArray(get(doc, "spec", "metadata")).forEach((entry, index) => {
    if (!isDict(entry)) return;
    const hasInlineValue = "value" in entry && entry["value"] !== null && typeof entry["value"] !== "object";
    metadata.push({
      name: asText(entry["name"]),
      value: hasInlineValue ? asText(entry["value"]) : "",
      hasInlineValue,
      hasSecretRef: isDict(entry["secretKeyRef"]),
      path: hasInlineValue ? ["spec", "metadata", index, "value"] : ["spec", "metadata", index],
    });
  });
  return {
    kind: "dapr-component",
    source,
    name: asText(get(doc, "metadata", "name")),
    namespace: asText(get(doc, "metadata", "namespace")) || undefined,
    type: asText(get(doc, "spec", "type")),
    metadata,
  };
}
