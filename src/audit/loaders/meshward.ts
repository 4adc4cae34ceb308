import { asDict, asText, isDict, lookup } from "../shape.ts";
import type { Dict } from "../shape.ts";
import type { MeshwardCaConfig, MeshwardSidecarConfig, SourceDocument } from "../types.ts";

/**
 * meshward's own configs are read tolerantly (see docs/audit-rules.md):
 * - with `apiVersion: meshward.dev/...` (any `meshward` apiVersion) and `kind: Sidecar` /
 *   `SidecarConfig` or `CA` / `CAConfig` / `CertificateAuthority`, the settings are `spec`;
 * - without a kind, a document is a sidecar config when it has `app-id` and one of
 *   `inbound`, `outbound`, `app`, `ca`, `mode`, `peers`; and a CA config when it has
 *   `trustDomain` and one of `validators`, `workloadTtl`, `listen`, `clockSkew`,
 *   `allowInsecureDev`.
 * Keys match in any spelling style (`app-id`, `appId`, `app_id`).
 */
export function classifyMeshward(doc: Dict): "sidecar" | "ca" | undefined {
  const apiVersion = asText(doc["apiVersion"]);
  const kind = asText(doc["kind"]).toLowerCase();
  if (apiVersion.includes("meshward")) {
    if (kind === "sidecar" || kind === "sidecarconfig") return "sidecar";
    if (kind === "ca" || kind === "caconfig" || kind === "certificateauthority") return "ca";
    return undefined;
  }
  if ("kind" in doc) return undefined;
  if (lookup(doc, "app-id") !== undefined && lookup(doc, "inbound", "outbound", "app", "ca", "mode", "peers") !== undefined) {
    return "sidecar";
  }
  if (lookup(doc, "trustDomain") !== undefined && lookup(doc, "validators", "workloadTtl", "listen", "clockSkew", "allowInsecureDev") !== undefined) {
    return "ca";
  }
  return undefined;
}

function settingsOf(doc: Dict): { config: Dict; inSpec: boolean } {
  if (asText(doc["apiVersion"]).includes("meshward") && isDict(doc["spec"])) return { config: asDict(doc["spec"]), inSpec: true };
  return { config: doc, inSpec: false };
}

export function loadMeshwardSidecar(source: SourceDocument, doc: Dict): MeshwardSidecarConfig {
  const { config, inSpec } = settingsOf(doc);
  return { kind: "meshward-sidecar", source: inSpec ? prefixed(source, "spec") : source, config };
}

export function loadMeshwardCa(source: SourceDocument, doc: Dict): MeshwardCaConfig {
  const { config, inSpec } = settingsOf(doc);
  return { kind: "meshward-ca", source: inSpec ? prefixed(source, "spec") : source, config };
}

function prefixed(source: SourceDocument, key: string): SourceDocument {
  return { ...source, locate: (path) => source.locate([key, ...path]) };
}
