import { asArray, asDict, asText, get, isDict } from "../shape.ts";
import type { ComponentMetadataItem, DaprComponent, DaprConfiguration, DaprHttpEndpoint, NodePath, SourceDocument } from "../types.ts";
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

/** `name`/`value`/`secretKeyRef` entries (component metadata, HTTPEndpoint headers). */
function nameValueItems(list: unknown, base: NodePath): ComponentMetadataItem[] {
  const items: ComponentMetadataItem[] = [];
  asArray(list).forEach((entry, index) => {
    if (!isDict(entry)) return;
    const hasInlineValue = "value" in entry && entry["value"] !== null && typeof entry["value"] !== "object";
    items.push({
      name: asText(entry["name"]),
      value: hasInlineValue ? asText(entry["value"]) : "",
      hasInlineValue,
      hasSecretRef: isDict(entry["secretKeyRef"]),
      path: hasInlineValue ? [...base, index, "value"] : [...base, index],
    });
  });
  return items;
}

export function loadDaprHttpEndpoint(source: SourceDocument, doc: Dict): DaprHttpEndpoint {
  const metadata = nameValueItems(get(doc, "spec", "headers"), ["spec", "headers"]);
  // clientTLS.privateKey: { value | secretKeyRef } is a secret like any header value.
  const privateKey = get(doc, "spec", "clientTLS", "privateKey");
  if (isDict(privateKey) && "value" in privateKey && typeof privateKey["value"] !== "object") {
    metadata.push({ name: "clientTLS.privateKey", value: asText(privateKey["value"]), hasInlineValue: true, hasSecretRef: false, path: ["spec", "clientTLS", "privateKey", "value"] });
  }
  return {
    kind: "dapr-httpendpoint",
    source,
    name: asText(get(doc, "metadata", "name")),
    namespace: asText(get(doc, "metadata", "namespace")) || undefined,
    baseUrl: asText(get(doc, "spec", "baseUrl")),
    metadata,
  };
}

export function loadDaprComponent(source: SourceDocument, doc: Dict): DaprComponent {
  const metadata = nameValueItems(get(doc, "spec", "metadata"), ["spec", "metadata"]);
  return {
    kind: "dapr-component",
    source,
    name: asText(get(doc, "metadata", "name")),
    namespace: asText(get(doc, "metadata", "namespace")) || undefined,
    type: asText(get(doc, "spec", "type")),
    metadata,
  };
}
