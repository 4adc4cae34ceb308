/**
 * What of an access policy a TCP-mode sidecar can apply. A TCP connection has no path and no
 * verb: decide.ts judges it as a call without a verb (like gRPC) to the operation `/`. So an
 * operation whose name does not match `/` (`/admin/**`, `/pkg.Svc/Get`) never decides a
 * connection, and neither does one that matches `/` but only allows HTTP verbs (`/**` with
 * `httpVerb: [GET]`: a verb rule that allows says nothing for a call without a verb; one that
 * denies does deny it). Pure, like the rest of this folder.
 */
import { compileOperation, matchesOperation, PathSegments } from "./operation.ts";
import type { AccessControlConfig, OperationRule } from "./schema.ts";

export const POLICY_OPERATIONS_NEVER_APPLY_TCP = "policy-operations-never-apply-tcp";

export interface TcpInapplicableOperation {
  readonly appId: string;
  readonly namespace: string;
  readonly trustDomain: string;
  /** Index of the app policy in `policies`, and of the operation in its `operations`. */
  readonly policyIndex: number;
  readonly operationIndex: number;
  /** The operation's name as written (normalised). */
  readonly name: string;
  /** `path`: its name never matches `/`; `verbs`: it only allows HTTP verbs. */
  readonly why: "path" | "verbs";
}

/** The operations of `config` that can never decide a TCP-mode connection, in file order. */
export function operationsNeverApplyingToTcp(config: AccessControlConfig): TcpInapplicableOperation[] {
  if (!config.present) return [];
  const root = new PathSegments();
  root.load("/");
  const found: TcpInapplicableOperation[] = [];
  config.policies.forEach((policy, policyIndex) => {
    // Entries with the same normalised name are one operation (decide.ts compileApp).
    const byName = new Map<string, { matchesRoot: boolean; rules: { rule: OperationRule; index: number }[] }>();
    policy.operations.forEach((rule, index) => {
      const pattern = compileOperation(rule.name);
      const entry = byName.get(pattern.name) ?? { matchesRoot: matchesOperation(pattern.segments, root), rules: [] };
      byName.set(pattern.name, entry);
      entry.rules.push({ rule, index });
    });
    for (const [name, { matchesRoot, rules }] of byName) {
      // As compileApp picks the rule for a call without a verb: one without verbs, else a deny.
      const decidesVerbless = rules.some(({ rule }) => rule.httpVerb.length === 0 || rule.action === "deny");
      if (matchesRoot && decidesVerbless) continue;
      for (const { index } of rules) {
        found.push({ appId: policy.appId, namespace: policy.namespace, trustDomain: policy.trustDomain, policyIndex, operationIndex: index, name, why: matchesRoot ? "verbs" : "path" });
      }
    }
  });
  return found;
}

/** One sentence for a person: which operations, and what decides a TCP connection instead. */
export function tcpInapplicableMessage(operations: readonly TcpInapplicableOperation[]): string {
  const listed = operations
    .map((operation) => `${operation.name} (app policy ${operation.appId} in ${operation.namespace}${operation.why === "verbs" ? ", allowed for HTTP verbs only" : ""})`)
    .join(", ");
  return `in TCP mode a connection has no path and no verb: it is judged as the operation / without a verb, so ${operations.length === 1 ? "this operation never applies" : `these ${operations.length} operations never apply`}: ${listed}; the app policy's defaultAction (or an operation on /, /* or /** without verbs) decides instead. Write a TCP-mode sidecar's policy as defaultAction plus, if needed, one /** entry per caller`;
}
