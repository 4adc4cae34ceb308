/**
 * What of an access policy a TCP-mode sidecar can apply. A TCP connection has no path and no
 * verb: the sidecar asks decide() about TCP_REQUEST (src/proxy/inbound.ts), a call without a verb
 * (like gRPC) to the operation `/`. decide() stops at the operation Dapr's trie takes for the path
 * `/` (decide.ts rule 8: the first declared of `/`, `/*` and `/**`, or rather the first of the
 * trie root's children that matches `/`, which a longer name such as `/*\/x` may have made, and then
 * that node's own `/*` child, or none): its rule for a call without a verb decides (the one
 * without verbs, else its first deny), or the app policy's default when it has only HTTP-verb
 * allows, or when none decides. Every other operation never decides a connection, whatever it
 * says: one on another path (`/admin/**`, `/pkg.Svc/Get`), an HTTP-verb allow, and one on `/` that
 * another entry on `/` shadows (a `/**` deny declared after a GET-only `/` allow protects nothing;
 * declared before it, it decides every connection).
 *
 * What decides is read from the compiled policy (AccessPolicy.explain, the same code path as
 * decide) for each app policy's caller, so this check says what the sidecar does. Pure, like the
 * rest of this folder.
 */
import { compilePolicy, type Explanation } from "./decide.ts";
import { compileOperation, lowerName } from "./operation.ts";
import { daprTrie, daprTrieSearch } from "./dapr-differences.ts";
import type { AccessControlConfig, Action } from "./schema.ts";

export const POLICY_OPERATIONS_NEVER_APPLY_TCP = "policy-operations-never-apply-tcp";

/** What a TCP-mode sidecar asks the policy about each connection (src/proxy/inbound.ts). */
export const TCP_REQUEST = Object.freeze({ operation: "", verb: "" });

/** What decides the connections of an app policy's caller. */
export interface TcpDecider {
  /** `operation`: a rule of the entry `name`; `default`: the app policy's default. */
  readonly kind: "operation" | "default";
  /** The entry decide() stops at (for `default`, when it has no rule for a call without a verb). */
  readonly name?: string;
  /** For `default`: whether the app policy has a defaultAction, or falls back to the global one. */
  readonly global?: boolean;
  /** What it does with every connection of that caller. */
  readonly action: Action;
}

export interface TcpInapplicableOperation {
  readonly appId: string;
  readonly namespace: string;
  readonly trustDomain: string;
  /** Index of the app policy in `policies`, and of the operation in its `operations`. */
  readonly policyIndex: number;
  readonly operationIndex: number;
  /** The operation's name as written (normalised). */
  readonly name: string;
  /** The operation's action: a deny that never applies protects nothing. */
  readonly action: Action;
  /**
   * `path`: its name never matches `/`; `verbs`: it names HTTP verbs, and for a call without a verb
   * its entry has no rule (only HTTP-verb allows) or another rule of the entry decides;
   * `shadowed`: alone it would decide `/`, but another entry (`decidedBy.name`), the one Dapr's trie
   * takes for `/`, is where decide() stops (or none is, and the default decides: `decidedBy.name` unset).
   */
  readonly why: "path" | "verbs" | "shadowed";
  /** What decides this caller's connections instead. */
  readonly decidedBy: TcpDecider;
}

/** The operations of `config` that can never decide a TCP-mode connection, in file order. */
export function operationsNeverApplyingToTcp(config: AccessControlConfig): TcpInapplicableOperation[] {
  if (!config.present) return [];
  const policy = compilePolicy(config);
  const found: TcpInapplicableOperation[] = [];
  config.policies.forEach((app, policyIndex) => {
    if (app.operations.length === 0) return;
    const caller = { appId: app.appId, namespace: app.namespace, trustDomain: app.trustDomain };
    const explained = policy.explain({ caller, ...TCP_REQUEST });
    const decidedBy = deciderOf(explained, app.defaultAction === undefined);
    const reached = explained.matched[0]?.name;
    app.operations.forEach((rule, operationIndex) => {
      if (operationIndex === explained.ruleIndex) return;
      const name = compileOperation(rule.name).name;
      // Another rule of the entry that decides, with the same action: it says what decides.
      if (explained.by === "operation" && name === reached && rule.action === decidedBy.action) return;
      // Only the entry Dapr's trie takes for `/` is matched (decide.ts rule 8); another would decide `/` alone.
      const why = name === reached ? "verbs" : explained.matched.some((matched) => matched.name === name) || decidesRootPathAlone(name) ? "shadowed" : "path";
      found.push({ ...caller, policyIndex, operationIndex, name, action: rule.action, why, decidedBy });
    });
  });
  return found;
}

/** Whether an operation, alone in its app policy, decides the path `/` (a connection's): Dapr's trie takes it (decide.ts rule 8). */
function decidesRootPathAlone(name: string): boolean {
  return daprTrieSearch(daprTrie([lowerName(compileOperation(name))]), "/") !== undefined;
}

function deciderOf(explained: Explanation, inheritsDefault: boolean): TcpDecider {
  const action: Action = explained.decision.allowed ? "allow" : "deny";
  const reached = explained.matched[0]?.name;
  if (explained.by === "operation" && reached !== undefined) return { kind: "operation", name: reached, action };
  return { kind: "default", ...(reached === undefined ? {} : { name: reached }), ...(inheritsDefault ? { global: true } : {}), action };
}

/** What decides, in words: "the operation / (deny)", "the app policy's defaultAction (allow; ...)". */
export function tcpDeciderText(decider: TcpDecider): string {
  if (decider.kind === "operation") return `the operation ${decider.name} (${decider.action})`;
  const notes = [decider.action, ...(decider.global === true ? ["the app policy has none"] : []), ...(decider.name === undefined ? [] : [`${decider.name}, the operation that decides the path /, allows HTTP verbs only`])];
  return `${decider.global === true ? "the global defaultAction" : "the app policy's defaultAction"} (${notes.join("; ")})`;
}

function whyText(operation: TcpInapplicableOperation): string {
  if (operation.why === "path") return "its path is not /";
  if (operation.why === "shadowed") {
    return operation.decidedBy.name === undefined
      ? "shadowed: for the path / Dapr's trie takes the branch of an operation declared before it that starts with a bare '*' and finds none there, so the default decides"
      : `shadowed by ${operation.decidedBy.name}, which decides the path / (as in Dapr, the first declared of the operations on /)`;
  }
  return operation.decidedBy.kind === "operation" ? "HTTP verbs only; another rule of it decides" : "allowed for HTTP verbs only";
}

/** One sentence for a person: which operations, and what decides each caller's connections instead. */
export function tcpInapplicableMessage(operations: readonly TcpInapplicableOperation[]): string {
  const listed = operations.map((operation) => `${operation.name} ${operation.action} (app policy ${operation.appId} in ${operation.namespace}: ${whyText(operation)})`).join(", ");
  const deciders = new Map<number, string>();
  for (const operation of operations) {
    if (!deciders.has(operation.policyIndex)) {
      deciders.set(operation.policyIndex, `for app policy ${operation.appId} in ${operation.namespace}, every connection is ${operation.decidedBy.action === "allow" ? "allowed" : "denied"} by ${tcpDeciderText(operation.decidedBy)}`);
    }
  }
  return `in TCP mode a connection has no path and no verb: it is judged as the operation / without a verb, and only the operation that decides the path / can decide it (as in Dapr, the first declared of the operations on /), so ${operations.length === 1 ? "this operation never applies" : `these ${operations.length} operations never apply`}: ${listed}; ${[...deciders.values()].join("; ")}. Write a TCP-mode sidecar's policy as defaultAction plus, if needed, one /** entry without verbs per caller`;
}
