import { MeshwardError } from "../errors.ts";
import { parseSpiffeId, parseTrustDomain } from "./id.ts";
import type { SpiffeId } from "./id.ts";

/**
 * Which peer identities are acceptable: one exact ID, a list of IDs, a workload pattern
 * (trust domain, optionally narrowed to a namespace and app id) or a predicate.
 */
export type SpiffeIdMatcher =
  | string
  | readonly string[]
  | { readonly trustDomain: string; readonly namespace?: string; readonly appId?: string }
  | ((id: SpiffeId) => boolean);

export type CompiledMatcher = (id: string) => boolean;

function parseOrUndefined(id: string): SpiffeId | undefined {
  try {
    return parseSpiffeId(id);
  } catch {
    return undefined;
  }
}

/** A matcher as validated and copied once: later changes to the caller's object change nothing. */
export type NormalizedMatcher =
  | { readonly kind: "id"; readonly id: string }
  | { readonly kind: "ids"; readonly ids: readonly string[] }
  | { readonly kind: "pattern"; readonly trustDomain: string; readonly namespace: string | undefined; readonly appId: string | undefined }
  | { readonly kind: "predicate"; readonly predicate: (id: SpiffeId) => boolean };

const PATTERN_KEYS = new Set(["trustDomain", "namespace", "appId"]);

/**
 * Validates a matcher and copies what it says. A pattern object was read on every check: the
 * caller (or anyone holding the object) could widen a policy already compiled, and agents pooled
 * under the pattern's old key checked the new one.
 */
export function normalizeMatcher(matcher: SpiffeIdMatcher): NormalizedMatcher {
  const result = normalizeOnce(matcher);
  normalized.add(result);
  return result;
}

function normalizeOnce(matcher: SpiffeIdMatcher): NormalizedMatcher {
  if (typeof matcher === "string") return Object.freeze({ kind: "id", id: parseSpiffeId(matcher).toString() });
  if (Array.isArray(matcher)) {
    if (matcher.length === 0) throw new MeshwardError("E_MATCHER_INVALID", "the list of allowed SPIFFE IDs is empty; it would match nobody");
    const ids = [...new Set((matcher as readonly unknown[]).map((m) => parseSpiffeId(m as string).toString()))].sort();
    return Object.freeze({ kind: "ids", ids: Object.freeze(ids) });
  }
  if (typeof matcher === "function") return Object.freeze({ kind: "predicate", predicate: matcher as (id: SpiffeId) => boolean });
  if (matcher !== null && typeof matcher === "object" && typeof (matcher as { trustDomain?: unknown }).trustDomain === "string") {
    // A typo (`nameSpace`) would otherwise be ignored and admit the whole trust domain.
    const unknown = Object.keys(matcher).filter((key) => !PATTERN_KEYS.has(key));
    if (unknown.length > 0) {
      throw new MeshwardError("E_USAGE", `unknown key${unknown.length > 1 ? "s" : ""} ${unknown.map((k) => JSON.stringify(k)).join(", ")} in a SPIFFE ID pattern; it takes { trustDomain, namespace?, appId? }`);
    }
    const { trustDomain: rawTrustDomain, namespace, appId } = matcher as { trustDomain: string; namespace?: unknown; appId?: unknown };
    const trustDomain = parseTrustDomain(rawTrustDomain);
    if (appId !== undefined && namespace === undefined) {
      throw new MeshwardError("E_MATCHER_INVALID", "an appId pattern needs its namespace too: { trustDomain, namespace, appId }");
    }
    for (const [name, value] of [["namespace", namespace], ["appId", appId]] as const) {
      if (value !== undefined && (typeof value !== "string" || !isPathSegment(value))) {
        throw new MeshwardError("E_MATCHER_INVALID", `the pattern's ${name} must be one SPIFFE ID path segment (a-z, A-Z, 0-9, '.', '-', '_'), not ${typeof value === "string" ? JSON.stringify(value.slice(0, 64)) : typeof value}`);
      }
    }
    return Object.freeze({ kind: "pattern", trustDomain, namespace: namespace as string | undefined, appId: appId as string | undefined });
  }
  throw new MeshwardError(
    "E_MATCHER_INVALID",
    "a SPIFFE ID matcher must be an ID string, a list of IDs, { trustDomain, namespace?, appId? } or a function",
  );
}

function isPathSegment(value: string): boolean {
  return /^[a-zA-Z0-9._-]+$/.test(value) && value !== "." && value !== "..";
}

/** Compiles a matcher once; the result never throws and never matches an invalid ID. */
export function compileMatcher(matcher: SpiffeIdMatcher | NormalizedMatcher): CompiledMatcher {
  const m = isNormalized(matcher) ? matcher : normalizeMatcher(matcher);
  switch (m.kind) {
    case "id":
      return (id) => id === m.id && parseOrUndefined(id) !== undefined;
    case "ids": {
      const allowed = new Set(m.ids);
      return (id) => allowed.has(id) && parseOrUndefined(id) !== undefined;
    }
    case "predicate":
      return (id) => {
        const parsed = parseOrUndefined(id);
        if (parsed === undefined) return false;
        try {
          return m.predicate(parsed) === true;
        } catch {
          return false;
        }
      };
    case "pattern":
      return (id) => {
        const parsed = parseOrUndefined(id);
        if (parsed === undefined || parsed.trustDomain !== m.trustDomain) return false;
        if (m.namespace === undefined) return true;
        const [ns, namespace, appId, ...extra] = parsed.segments;
        if (ns !== "ns" || namespace !== m.namespace || appId === undefined || extra.length > 0) return false;
        return m.appId === undefined || appId === m.appId;
      };
  }
}

const normalized = new WeakSet<object>();
function isNormalized(matcher: SpiffeIdMatcher | NormalizedMatcher): matcher is NormalizedMatcher {
  return typeof matcher === "object" && matcher !== null && normalized.has(matcher);
}

/** A short human description for error messages and logs. */
export function describeMatcher(matcher: SpiffeIdMatcher | NormalizedMatcher): string {
  const m = isNormalized(matcher) ? matcher : normalizeMatcher(matcher);
  switch (m.kind) {
    case "id":
      return m.id;
    case "ids":
      return `one of [${m.ids.join(", ")}]`;
    case "predicate":
      return `a custom predicate${m.predicate.name ? ` (${m.predicate.name})` : ""}`;
    case "pattern":
      if (m.appId !== undefined) return `spiffe://${m.trustDomain}/ns/${m.namespace}/${m.appId}`;
      if (m.namespace !== undefined) return `any workload in spiffe://${m.trustDomain}/ns/${m.namespace}/*`;
      return `any identity in trust domain ${m.trustDomain}`;
  }
}
