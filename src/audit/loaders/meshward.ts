import type * as z from "zod";
import { caConfigSchema } from "../../config/ca.ts";
import { sidecarConfigSchema } from "../../config/sidecar.ts";
import { asDict, asText, isDict, lookup, normaliseKey } from "../shape.ts";
import type { Dict } from "../shape.ts";
import type { MeshwardCaConfig, MeshwardSidecarConfig, NodePath, SchemaIssue, SourceDocument } from "../types.ts";

/**
 * meshward's own configs are recognised tolerantly (see docs/audit-rules.md), so that a
 * misspelt file is still analysed, and then checked with the very schema the sidecar or CA
 * loads it with (src/config/), so that a file they would refuse is reported as such:
 * - with `apiVersion: meshward.dev/...` (any `meshward` apiVersion) and `kind: Sidecar` /
 *   `SidecarConfig` or `CA` / `CAConfig` / `CertificateAuthority`, the settings are `spec`
 *   (the sidecar and CA do not accept this wrapper: that is reported);
 * - without a kind, a document is a sidecar config when it has `appId` and one of
 *   `inbound`, `outbound`, `app`, `ca`, `mode`, `peers`; and a CA config when it has
 *   `trustDomain` and one of `defaultValidator`, `jwks`, `validators`, `workloadTtl`, `listen`,
 *   `clockSkew`, `allowInsecureDev`, `store`.
 * Keys are recognised in any spelling style (`app-id`, `appId`, `app_id`); the schema check
 * then reports every spelling the component does not read.
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
  if (lookup(doc, "appId") !== undefined && lookup(doc, "inbound", "outbound", "app", "ca", "mode", "peers") !== undefined) {
    return "sidecar";
  }
  if (lookup(doc, "trustDomain") !== undefined
    && lookup(doc, "defaultValidator", "jwks", "validators", "workloadTtl", "listen", "clockSkew", "allowInsecureDev", "store") !== undefined) {
    return "ca";
  }
  return undefined;
}

function settingsOf(doc: Dict): { config: Dict; inSpec: boolean } {
  if (asText(doc["apiVersion"]).includes("meshward") && isDict(doc["spec"])) return { config: asDict(doc["spec"]), inSpec: true };
  return { config: doc, inSpec: false };
}

/** Field names of a zod object schema (unwrapping the refinements around it). */
function fieldNames(schema: z.ZodType): string[] {
  const shape = (schema as unknown as { shape?: Record<string, unknown> }).shape;
  return shape === undefined ? [] : Object.keys(shape);
}

/**
 * Checks `config` with the component's schema. A required field that is missing is not
 * reported (the sidecar and CA take every field from a flag too); everything else is: unknown
 * keys (with the spelling the component reads, when only the style differs), wrong types,
 * values out of range.
 */
export function schemaIssues(schema: z.ZodType, config: Dict, wrapped: boolean, component: string): SchemaIssue[] {
  const issues: SchemaIssue[] = [];
  if (wrapped) {
    issues.push({ path: [], message: `the ${component} reads its settings at the top level of the file; an apiVersion/kind/spec wrapper is refused` });
  }
  const result = schema.safeParse(config);
  if (result.success) return issues;
  const known = new Map(fieldNames(schema).map((name) => [normaliseKey(name), name]));
  for (const issue of result.error.issues) {
    const path: NodePath = issue.path.filter((segment): segment is string | number => typeof segment !== "symbol");
    if (issue.code === "invalid_type" && /received undefined/.test(issue.message)) continue;
    // A field required only in some shapes (the sidecar's `app` unless it is outbound only) says "required …".
    if (issue.code === "custom" && /^required\b/.test(issue.message)) continue;
    // A listener off loopback is reported by MW-ACCESS-004, which says why it matters.
    if (issue.code === "custom" && / is not loopback: /.test(issue.message)) continue;
    if (issue.code === "unrecognized_keys") {
      for (const key of issue.keys) {
        const meant = path.length === 0 ? known.get(normaliseKey(key)) : undefined;
        const hint = meant !== undefined && meant !== key ? `; the ${component} reads \`${meant}\`` : "";
        issues.push({ path: [...path, key], message: `unknown key \`${key}\`${hint}` });
      }
      continue;
    }
    const field = path.length === 0 ? "(file)" : path.join(".");
    issues.push({ path, message: `${field}: ${issue.message}` });
  }
  return issues;
}

export function loadMeshwardSidecar(source: SourceDocument, doc: Dict): MeshwardSidecarConfig {
  const { config, inSpec } = settingsOf(doc);
  return {
    kind: "meshward-sidecar",
    source: inSpec ? prefixed(source, "spec") : source,
    config,
    schemaIssues: schemaIssues(sidecarConfigSchema, config, inSpec, "sidecar"),
  };
}

export function loadMeshwardCa(source: SourceDocument, doc: Dict): MeshwardCaConfig {
  const { config, inSpec } = settingsOf(doc);
  return {
    kind: "meshward-ca",
    source: inSpec ? prefixed(source, "spec") : source,
    config,
    schemaIssues: schemaIssues(caConfigSchema, config, inSpec, "CA"),
  };
}

function prefixed(source: SourceDocument, key: string): SourceDocument {
  return { ...source, locate: (path) => source.locate([key, ...path]) };
}
