/**
 * Where a valid policy means something else to Dapr than to meshward, because of two choices
 * meshward keeps on purpose (decide.ts rules 8 and the merge in compileApp):
 *
 *   - "precedence": when several operations match, meshward picks the most specific one; Dapr's
 *     trie (dapr/dapr pkg/config/acl_trie.go findNodeWithWildcard) walks children in insertion
 *     order and takes the first that matches, so a wildcard declared before a narrower operation
 *     it covers hides the narrower one there.
 *   - "repeated-name": meshward merges the verb tables of entries with the same name; Dapr keeps
 *     only the first entry (acl_trie.go PutOperationAction sets Data only when it is nil; older
 *     versions, a map in pkg/acl/acl.go, kept the last).
 *
 * The precedence check is a sufficient one, not a complete one: it flags a wildcard operation
 * declared before a more specific operation it covers (it matches a path the later one matches,
 * built from the later name), when the two would decide some verb, or gRPC, differently.
 * Pure: the sidecar logs these as warnings at load, `meshward audit` reports them.
 */
import { compareSpecificity, compileOperation, matchesOperation, PathSegments, SegmentKind, type OperationPattern } from "./operation.ts";
import type { AccessControlConfig, Action, OperationRule } from "./schema.ts";

export const POLICY_DIFFERS_FROM_DAPR = "policy-differs-from-dapr";

export interface DaprDifference {
  readonly kind: "precedence" | "repeated-name";
  readonly appId: string;
  readonly namespace: string;
  readonly trustDomain: string;
  /** Index of the app policy in `policies`. */
  readonly policyIndex: number;
  /** The operations involved, as normalised names: [declared first, declared later]. */
  readonly operations: readonly [string, string];
  /** Their indexes in the app policy's `operations` (the first entry of each name). */
  readonly operationIndexes: readonly [number, number];
  /** What differs, for a person. */
  readonly message: string;
}

interface NamedOperation {
  readonly pattern: OperationPattern;
  readonly firstIndex: number;
  readonly rules: OperationRule[];
  readonly indexes: number[];
}

export function daprDifferences(config: AccessControlConfig): DaprDifference[] {
  if (!config.present) return [];
  const globalAction: Action = config.defaultAction ?? config.impliedDefaultAction ?? (config.policies.length > 0 ? "deny" : "allow");
  const found: DaprDifference[] = [];
  config.policies.forEach((policy, policyIndex) => {
    const fallback: Action = policy.defaultAction ?? globalAction;
    const app = `app id ${policy.appId} (namespace ${policy.namespace})`;
    const base = { appId: policy.appId, namespace: policy.namespace, trustDomain: policy.trustDomain, policyIndex };
    const byName = new Map<string, NamedOperation>();
    policy.operations.forEach((rule, index) => {
      const pattern = compileOperation(rule.name);
      const entry = byName.get(pattern.name);
      if (entry === undefined) {
        byName.set(pattern.name, { pattern, firstIndex: index, rules: [rule], indexes: [index] });
        return;
      }
      entry.rules.push(rule);
      entry.indexes.push(index);
    });

    for (const entry of byName.values()) {
      if (entry.rules.length < 2) continue;
      const name = entry.pattern.name;
      found.push({
        ...base,
        kind: "repeated-name",
        operations: [name, name],
        operationIndexes: [entry.indexes[0]!, entry.indexes[1]!],
        message: `${app}: operation ${name} is listed ${entry.rules.length} times (operations[${entry.indexes.join("], [")}]); meshward merges the entries, Dapr uses only the first one and ignores the rest: list the verbs in one entry (httpVerb: [GET, DELETE])`,
      });
    }

    const named = [...byName.values()];
    const path = new PathSegments();
    for (const earlier of named) {
      for (const later of named) {
        if (later.firstIndex <= earlier.firstIndex) continue;
        // meshward picks `later` where both match only when it is more specific.
        if (compareSpecificity(later.pattern, earlier.pattern) >= 0) continue;
        const sample = samplePath(later.pattern);
        path.load(sample);
        if (!matchesOperation(earlier.pattern.segments, path)) continue;
        const differing = differingKey(earlier.rules, later.rules, fallback);
        if (differing === undefined) continue;
        found.push({
          ...base,
          kind: "precedence",
          operations: [earlier.pattern.name, later.pattern.name],
          operationIndexes: [earlier.firstIndex, later.firstIndex],
          message: `${app}: operation ${earlier.pattern.name} (operations[${earlier.firstIndex}]) is declared before ${later.pattern.name} (operations[${later.firstIndex}]), which it covers, and they decide ${differing} differently; for ${sample} meshward uses the more specific ${later.pattern.name}, Dapr the first declared ${earlier.pattern.name}: declare ${later.pattern.name} first to mean the same in both`,
        });
      }
    }
  });
  return found;
}

/** A path the pattern matches: wildcards filled with "x" (lower case, as requests are matched). */
function samplePath(pattern: OperationPattern): string {
  if (pattern.segments.length === 0) return "/";
  return `/${pattern.segments
    .map((segment) => (segment.kind === SegmentKind.Literal ? segment.literal : segment.kind === SegmentKind.Glob ? segment.pieces!.join("x") : "x"))
    .join("/")}`;
}

/** The first verb (or "gRPC") the two sets of entries decide differently, as meshward reads each. */
function differingKey(a: readonly OperationRule[], b: readonly OperationRule[], fallback: Action): string | undefined {
  const verbs = new Set<string>();
  for (const rule of [...a, ...b]) for (const verb of rule.httpVerb) if (verb !== "*") verbs.add(verb);
  const keys = [...[...verbs].sort(), "*"];
  for (const verb of keys) {
    if (httpAction(a, verb, fallback) !== httpAction(b, verb, fallback)) return verb === "*" ? "the other verbs" : verb;
  }
  if (grpcAction(a, fallback) !== grpcAction(b, fallback)) return "gRPC calls";
  return undefined;
}

function httpAction(rules: readonly OperationRule[], verb: string, fallback: Action): Action {
  return rules.find((rule) => rule.httpVerb.includes(verb))?.action ?? rules.find((rule) => rule.httpVerb.includes("*"))?.action ?? fallback;
}

function grpcAction(rules: readonly OperationRule[], fallback: Action): Action {
  return (rules.find((rule) => rule.httpVerb.length === 0) ?? rules.find((rule) => rule.action === "deny"))?.action ?? fallback;
}
