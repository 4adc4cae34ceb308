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

/** Compiles a matcher once; the result never throws and never matches an invalid ID. */
export function compileMatcher(matcher: SpiffeIdMatcher): CompiledMatcher {
  if (typeof matcher === "string") {
    const expected = parseSpiffeId(matcher).toString();
    return (id) => id === expected && parseOrUndefined(id) !== undefined;
  }
  if (Array.isArray(matcher)) {
    if (matcher.length === 0) throw new MeshwardError("E_MATCHER_INVALID", "the list of allowed SPIFFE IDs is empty; it would match nobody");
    const allowed = new Set((matcher as readonly string[]).map((m) => parseSpiffeId(m).toString()));
    return (id) => allowed.has(id) && parseOrUndefined(id) !== undefined;
  }
  if (typeof matcher === "function") {
    const predicate = matcher as (id: SpiffeId) => boolean;
    return (id) => {
      const parsed = parseOrUndefined(id);
      if (parsed === undefined) return false;
      try {
        return predicate(parsed) === true;
      } catch {
        return false;
      }
    };
  }
  if (matcher !== null && typeof matcher === "object" && typeof (matcher as { trustDomain?: unknown }).trustDomain === "string") {
    const pattern = matcher as { trustDomain: string; namespace?: string; appId?: string };
    const trustDomain = parseTrustDomain(pattern.trustDomain);
    if (pattern.appId !== undefined && pattern.namespace === undefined) {
      throw new MeshwardError("E_MATCHER_INVALID", "an appId pattern needs its namespace too: { trustDomain, namespace, appId }");
    }
    return (id) => {
      const parsed = parseOrUndefined(id);
      if (parsed === undefined || parsed.trustDomain !== trustDomain) return false;
      if (pattern.namespace === undefined) return true;
      const [ns, namespace, appId, ...extra] = parsed.segments;
      if (ns !== "ns" || namespace !== pattern.namespace || appId === undefined || extra.length > 0) return false;
      return pattern.appId === undefined || appId === pattern.appId;
    };
  }
  throw new MeshwardError(
    "E_MATCHER_INVALID",
    "a SPIFFE ID matcher must be an ID string, a list of IDs, { trustDomain, namespace?, appId? } or a function",
  );
}

/** A short human description for error messages and logs. */
export function describeMatcher(matcher: SpiffeIdMatcher): string {
  if (typeof matcher === "string") return matcher;
  if (Array.isArray(matcher)) return `one of [${(matcher as readonly string[]).join(", ")}]`;
  if (typeof matcher === "function") return `a custom predicate${matcher.name ? ` (${matcher.name})` : ""}`;
  const pattern = matcher as { trustDomain: string; namespace?: string; appId?: string };
  if (pattern.appId !== undefined) return `spiffe://${pattern.trustDomain}/ns/${pattern.namespace}/${pattern.appId}`;
  if (pattern.namespace !== undefined) return `any workload in spiffe://${pattern.trustDomain}/ns/${pattern.namespace}/*`;
  return `any identity in trust domain ${pattern.trustDomain}`;
}
