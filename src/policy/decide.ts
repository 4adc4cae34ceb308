/**
 * Access-control decisions with Dapr's `accessControl` semantics.
 *
 * Followed:
 *   - https://docs.dapr.io/operations/configuration/invoke-allowlist/ ("Policy rules",
 *     "Policy priority", scenarios 1-5)
 *   - dapr/dapr pkg/acl/acl.go, pkg/config/trie.go and pkg/acl/acl_test.go (wildcards)
 *   - dapr/dapr#2124 (same appId in two namespaces = two policies), #2725 (multi-segment
 *     operation names), #4202 (several operations, gRPC, in one policy)
 *
 * Semantics implemented, in the order decide() applies them:
 *   1. No accessControl block ⇒ allow everything (rule "no-access-control").
 *   2. A block with no global defaultAction, no app policies and no trustDomain ⇒ the same as
 *      none: allow.
 *   3. No global defaultAction ⇒ the global default is deny when there are app policies, or a
 *      trustDomain without a `policies` list (pkg/acl/acl.go ParseAccessControlSpec: a nil list
 *      is deny); allow for a trustDomain with `policies: []`.
 *   4. Caller unverifiable (no/invalid SPIFFE workload ID) ⇒ global default.
 *   5. App policies are keyed by (appId, namespace, trustDomain); policy trustDomain defaults to
 *      "public". No policy for the caller's appId, or the namespace or trust domain differs
 *      ⇒ the policy is ignored ⇒ global default. The same appId in two namespaces is two
 *      independent policies (#2124).
 *   6. An app policy's defaultAction falls back to the global one.
 *   7. Operations: the request operation (HTTP path or gRPC "/pkg.Service/Method") is
 *      normalised (query dropped, "//" collapsed, "."/".." resolved, %-escapes of unreserved
 *      characters, ":", "@" and the sub-delims but ";" decoded, trailing "/" dropped). Matching
 *      is case-insensitive, for HTTP and gRPC alike: servers that route paths or gRPC methods in
 *      any case (ASP.NET Core, grpc-dotnet on it, Dubbo's Triple) would otherwise run a method a
 *      deny rule names when it is spelt in another case. (Dapr compares gRPC methods
 *      case-sensitively; an allow that now also matches another spelling reaches, on a
 *      case-sensitive server, no method at all.) Globs: see operation.ts (`*` one segment, `**` the rest, `a*` in-segment).
 *   8. Most specific operation wins (but for the path `/`: below): segments compared left to right, literal > in-segment
 *      glob > `*` > `**`; then the longer pattern; then more literal characters; then the
 *      first declared. (Dapr's trie picks the first inserted match; we pick the most specific, and
 *      the sidecar warns where the two differ: dapr-differences.ts.)
 *      An operation whose last segment is a literal or an in-segment glob (`/admin`,
 *      `/files/*.pdf`) also decides the paths below it (`/admin/users`), as in Dapr (acl_trie.go
 *      Search answers with the first node on the way down that holds an operation), ranked for
 *      those paths as its name followed by `/**` (`/admin` deny beside `/**` allow denies
 *      `/admin/users`, declared in either order; `/admin/users` or `/admin/*` named beside it
 *      decide their own paths). (Dapr takes the first one on the way down, the shortest, and only
 *      along the branch its walk took: warned.)
 *      An operation's own path is its own: a trailing `/*` does not match its bare prefix where
 *      that prefix is an operation too (`/a` decides `/a` beside `/a/*`, in either order). In
 *      Dapr's trie (acl_trie.go PutOperationAction, Search) `/a/*` is the `/*` child of `/a`'s
 *      node and Search answers with that node when it holds data.
 *      The path `/` is decided exactly as Dapr does (compileApp's `root`, found with the port of
 *      acl_trie.go, dapr-differences.ts daprTrie): `/`, `/*` and `/**` are siblings under the
 *      trie's root, and Search takes the first of the root's children, in the order they were
 *      made, that matches `/` (findNodeWithWildcard: the node `/`, `/*`, `/**`, or an all-`*`
 *      in-segment glob such as `/***`): the first declared of `/`, `/*` and `/**`. A node that a
 *      longer name made first (`/*` of `/*\/x`) counts in that order too; without data, Search
 *      goes on to its own `/*` child (`/*\/**` decides `/`), else none decides and the app default
 *      does (test/policy/bare-prefix.test.ts, dapr-trie.property.test.ts). A TCP connection is
 *      judged as `/` (tcp.ts).
 *      Its verbs then count as for an exact match (rules 9 and 10), as Dapr's verb check runs on
 *      whatever node Search found.
 *   9. HTTP request (verb given): the chosen operation's action for that verb, else for "*",
 *      else the app default (rule 6) — a verb mismatch does not fall through to a less
 *      specific operation (as in Dapr). Rules without httpVerb apply to gRPC only (Dapr docs:
 *      "httpVerb ... unused for grpc invocation").
 *      HEAD without a rule of its own is denied where the operation denies GET (frameworks
 *      run the GET handler for HEAD; Dapr would apply the "*" rule or the default).
 *  10. gRPC/TCP request (verb "" or "*"): the chosen operation's rule without httpVerb decides.
 *      An operation whose rules all name HTTP verbs does not grant gRPC: it denies when one of
 *      its rules denies, else the app default decides. (Dapr applies such an operation's action
 *      to gRPC whatever its verbs, so a GET-only allow would admit any gRPC method on the path;
 *      meshward is never more permissive than Dapr here.)
 *  11. Operation `action` is required: an operation without one is refused at parse time (Dapr's
 *      CRD requires it, and Dapr's runtime denies such an operation: pkg/acl/acl.go
 *      isActionAllowed("") is false; only the Dapr docs say "allow"). `defaultAction`/`action`
 *      values are case-insensitive and anything other than allow/deny is refused at parse time.
 *
 * Differences from Dapr on purpose (fail closed, never silently): unknown fields, duplicate
 * policies and conflicting duplicate operations are parse errors; `**` only as last segment;
 * HTTP-verb rules do not allow gRPC (rule 10); a GET deny also denies HEAD (rule 9); gRPC
 * methods are matched in any case (rule 7); the most specific operation decides, a covering one
 * ranked as its name followed by `/**` for the paths below it (rule 8), except for the path `/`,
 * decided as in Dapr (rule 8).
 *
 * The operation is the app-side path. Dapr strips `/v1.0/invoke/<app-id>/method` before
 * matching; the meshward sidecar forwards the app's own path, so policies are written
 * against that (`/v1/orders/**`, not `/v1.0/invoke/orders/method/v1/orders/**`).
 */
import type { AccessControlConfig, Action, AppPolicy, OperationRule } from "./schema.ts";
import {
  barePrefixName,
  compareSpecificity,
  compileOperation,
  belowPattern,
  coversBelow,
  lowerName,
  matchesOperation,
  normaliseOperation,
  operationNames,
  PathSegments,
  type OperationPattern,
} from "./operation.ts";
import { daprTrie, daprTrieSearch } from "./dapr-differences.ts";

export interface Caller {
  readonly trustDomain: string;
  readonly namespace: string;
  readonly appId: string;
}

export interface AccessRequest {
  /** Undefined when the caller's identity could not be verified. */
  readonly caller: Caller | undefined;
  /** HTTP path ("/v1/orders/123") or gRPC method ("/pkg.Service/Method"). */
  readonly operation: string;
  /** HTTP method; "" or "*" for gRPC and TCP. */
  readonly verb: string;
}

export interface Decision {
  readonly allowed: boolean;
  /** Stable, metric-friendly name of the rule that decided. */
  readonly rule: string;
  readonly reason: string;
  /**
   * Another HTTP method on the same operation would be decided otherwise: a request that makes
   * the app run another method (a `_method` field in a POST body) could get past this decision.
   */
  readonly verbSensitive?: boolean;
}

/** An operation entry of an app policy that matches a request (explain). */
export interface MatchedOperation {
  /** The entry's normalised name as written. */
  readonly name: string;
  /** Matched as a path below its name (rule 8), not as the name itself. */
  readonly below: boolean;
}

/** decide()'s answer, with what led to it (for warnings and audits, not the hot path). */
export interface Explanation {
  /** What decide() answers for the same request. */
  readonly decision: Decision;
  /**
   * What decided: a rule of an operation entry, the app policy's default (its defaultAction, or
   * the global one it falls back to) or the global default (no app policy for the caller, or no
   * access control at all).
   */
  readonly by: "operation" | "app-default" | "global-default";
  /** Index in `policies` of the app policy that matched the caller, if one did. */
  readonly policyIndex?: number;
  /**
   * The app policy's operation entries that match the request, in the order decide() tries them
   * (most specific first; for the path `/`, only the one Dapr's trie takes, rule 8). decide() stops
   * at the first: its rule for the request decides, or the app default when it has none (an entry
   * with only HTTP-verb allows, for a call without a verb).
   */
  readonly matched: readonly MatchedOperation[];
  /** Index in the app policy's `operations` of the rule whose action decided (`by: operation`). */
  readonly ruleIndex?: number;
}

export interface AccessPolicy {
  decide(request: AccessRequest): Decision;
  /** decide(), with what decided and the entries the request matched (same code path as decide). */
  explain(request: AccessRequest): Explanation;
  /** True when no access control is configured (everything allowed). */
  readonly allowsAll: boolean;
  /** The callers the app policies are for (appId, namespace, trust domain), in file order. */
  readonly appPolicies: readonly Caller[];
}

interface CompiledOperation {
  readonly pattern: OperationPattern;
  /** The entry that decides the paths below its name (rule 8), ranked as `pattern`. */
  readonly below: boolean;
  /** False: a trailing `/*` that does not match its bare prefix, an operation of its own (rule 8). */
  readonly bare: boolean;
  readonly verbDecisions: ReadonlyMap<string, Decision>;
  /** For a verb without a rule of its own: the "*" rule, else the app default. */
  readonly otherVerbDecision: Decision;
  /** Undefined: the operation has only HTTP-verb allows, and gRPC gets the app default. */
  readonly grpcDecision: Decision | undefined;
}

interface CompiledApp {
  readonly policyIndex: number;
  readonly defaultDecision: Decision;
  /** The index in the app policy's `operations` of the rule each operation decision was made from. */
  readonly ruleIndexOf: ReadonlyMap<Decision, number>;
  readonly operations: readonly CompiledOperation[];
  /** The operation that decides the path `/` (rule 8: the one Dapr's trie takes), or undefined for none. */
  readonly root: CompiledOperation | undefined;
}

function decision(allowed: boolean, rule: string, reason: string): Decision {
  return Object.freeze({ allowed, rule, reason });
}

const ALLOW_ALL = decision(true, "no-access-control", "no access control is configured: every caller is allowed");

export function compilePolicy(config: AccessControlConfig | undefined): AccessPolicy {
  if (config === undefined || !config.present || (config.defaultAction === undefined && config.impliedDefaultAction === undefined && config.policies.length === 0)) {
    return { allowsAll: true, appPolicies: [], decide: () => ALLOW_ALL, explain: () => ({ decision: ALLOW_ALL, by: "global-default", matched: [] }) };
  }

  const globalAction: Action = config.defaultAction ?? config.impliedDefaultAction ?? (config.policies.length > 0 ? "deny" : "allow");
  const globalOrigin =
    config.defaultAction !== undefined
      ? "global defaultAction"
      : config.policies.length > 0
        ? "implicit global default (app policies exist)"
        : `implicit global default (a trustDomain and ${globalAction === "deny" ? "no policies list" : "an empty policies list"}, as in Dapr)`;
  const globalFor = (why: string) => decision(globalAction === "allow", "global-default", `${why}: ${globalOrigin} ${globalAction}`);
  const unverified = globalFor("the caller's identity could not be verified");
  const noPolicy = globalFor("no app policy for the caller");
  const nsMismatch = globalFor("an app policy exists for the caller's app id but not for its namespace");
  const tdMismatch = globalFor("an app policy exists for the caller's app id and namespace but not for its trust domain");

  // appId -> namespace -> trustDomain -> app: nested maps so that lookups do not build keys.
  const apps = new Map<string, Map<string, Map<string, CompiledApp>>>();
  for (const [policyIndex, policy] of config.policies.entries()) {
    let byNamespace = apps.get(policy.appId);
    if (!byNamespace) apps.set(policy.appId, (byNamespace = new Map()));
    let byTrustDomain = byNamespace.get(policy.namespace);
    if (!byTrustDomain) byNamespace.set(policy.namespace, (byTrustDomain = new Map()));
    byTrustDomain.set(policy.trustDomain, compileApp(policy, policyIndex, globalAction));
  }

  const path = new PathSegments();
  /** The caller's compiled app policy, or the global decision when none applies. */
  const appFor = (caller: Caller | undefined): CompiledApp | Decision => {
    if (caller === undefined) return unverified;
    const byNamespace = apps.get(caller.appId);
    if (byNamespace === undefined) return noPolicy;
    const byTrustDomain = byNamespace.get(caller.namespace);
    if (byTrustDomain === undefined) return nsMismatch;
    return byTrustDomain.get(caller.trustDomain) ?? tdMismatch;
  };
  const loadPath = (operation: unknown) => path.load(normaliseOperation(typeof operation === "string" ? operation : "").toLowerCase());
  /** The index of the first of `app`'s operations from `from` on that matches the loaded path, or -1. */
  const firstMatch = (app: CompiledApp, from: number): number => {
    const operations = app.operations;
    for (let i = from; i < operations.length; i++) if (matchesOperation(operations[i]!.pattern.segments, path, operations[i]!.bare)) return i;
    return -1;
  };
  /** The decision once decide() has stopped at `candidate` (or found none). */
  const decideAt = (app: CompiledApp, candidate: CompiledOperation | undefined, verb: string): Decision => {
    if (candidate === undefined) return app.defaultDecision;
    if (verb === "" || verb === "*") return candidate.grpcDecision ?? app.defaultDecision;
    return candidate.verbDecisions.get(upperVerb(verb)) ?? candidate.otherVerbDecision;
  };

  return {
    allowsAll: false,
    appPolicies: config.policies.map((p) => ({ appId: p.appId, namespace: p.namespace, trustDomain: p.trustDomain })),
    decide(request: AccessRequest): Decision {
      const app = appFor(request.caller);
      if (!("operations" in app)) return app;
      if (app.operations.length === 0) return app.defaultDecision;
      loadPath(request.operation);
      // The path `/` (a TCP connection's too): the operation Dapr's trie takes for it (rule 8).
      if (path.count === 0) return decideAt(app, app.root, request.verb);
      // Most specific first (compileApp sorts them, the paths below a covering operation's name
      // ranked as its name followed by `/**`): the first that matches decides, else the app default.
      return decideAt(app, app.operations[firstMatch(app, 0)], request.verb);
    },
    explain(request: AccessRequest): Explanation {
      const app = appFor(request.caller);
      if (!("operations" in app)) return { decision: app, by: "global-default", matched: [] };
      loadPath(request.operation);
      const matched: CompiledOperation[] = [];
      if (path.count === 0) {
        if (app.root !== undefined) matched.push(app.root);
      } else {
        for (let i = firstMatch(app, 0); i !== -1; i = firstMatch(app, i + 1)) matched.push(app.operations[i]!);
      }
      const decision = decideAt(app, matched[0], request.verb);
      const ruleIndex = decision.rule === app.defaultDecision.rule ? undefined : app.ruleIndexOf.get(decision);
      return {
        decision,
        by: ruleIndex === undefined ? "app-default" : "operation",
        policyIndex: app.policyIndex,
        matched: matched.map((operation) => ({ name: operation.pattern.name, below: operation.below })),
        ...(ruleIndex === undefined ? {} : { ruleIndex }),
      };
    },
  };
}

const KNOWN_VERBS = new Map(
  ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"].flatMap((v) => [
    [v, v],
    [v.toLowerCase(), v],
  ]),
);

function upperVerb(verb: string): string {
  return KNOWN_VERBS.get(verb) ?? verb.toUpperCase();
}

function compileApp(policy: AppPolicy, policyIndex: number, globalAction: Action): CompiledApp {
  const label = `app:${policy.appId}/${policy.namespace}`;
  const appAction = policy.defaultAction ?? globalAction;
  const defaultDecision = decision(
    appAction === "allow",
    `${label}:default-action`,
    policy.defaultAction === undefined
      ? `app policy ${policy.appId}/${policy.namespace} matched, no operation decided, and it has no defaultAction: global default ${globalAction}`
      : `app policy ${policy.appId}/${policy.namespace} matched and no operation decided: app defaultAction ${appAction}`,
  );

  // Rules with the same (normalised) name merge into one entry with a verb table (Dapr keeps the
  // first entry only; dapr-differences.ts reports a repeat).
  const byName = new Map<string, { pattern: OperationPattern; rules: OperationRule[]; indexes: number[] }>();
  for (const [index, rule] of policy.operations.entries()) {
    const pattern = compileOperation(rule.name);
    const entry = byName.get(pattern.name) ?? { pattern, rules: [], indexes: [] };
    byName.set(pattern.name, entry);
    entry.rules.push(rule);
    entry.indexes.push(index);
  }
  // Where each decision an operation makes comes from (explain): the rule's index in `operations`.
  const ruleIndexOf = new Map<Decision, number>();
  const from = (made: Decision, source: Decision): Decision => {
    const index = ruleIndexOf.get(source);
    if (index !== undefined) ruleIndexOf.set(made, index);
    return made;
  };

  const operations: CompiledOperation[] = [];
  const covering: CompiledOperation[] = [];
  // The path `/` is decided by the operation Dapr's trie takes for it (rule 8), from the names in
  // declaration order (a repeated name's first entry made its node, as in PutOperationAction).
  const rootIndex = daprTrieSearch(daprTrie([...byName.values()].map((entry) => lowerName(entry.pattern))), "/");
  let root: CompiledOperation | undefined;
  const names = operationNames([...byName.values()].map((entry) => entry.pattern));
  for (const { pattern, rules, indexes } of byName.values()) {
    const verbDecisions = new Map<string, Decision>();
    let anyVerbDecision: Decision | undefined;
    for (const [position, rule] of rules.entries()) {
      for (const verb of rule.httpVerb) {
        const made = decision(
          rule.action === "allow",
          `${label}:op:${pattern.name}:${verb}`,
          `operation ${pattern.name} ${verb === "*" ? "with any verb" : `with verb ${verb}`} is ${rule.action === "allow" ? "allowed" : "denied"} by app policy ${policy.appId}/${policy.namespace}`,
        );
        ruleIndexOf.set(made, indexes[position]!);
        if (verb === "*") anyVerbDecision ??= made;
        else if (!verbDecisions.has(verb)) verbDecisions.set(verb, made);
      }
    }
    // HEAD is GET without the body (RFC 9110 §9.3.2) and frameworks run the GET handler for it:
    // a rule that denies GET denies HEAD too, unless a rule names HEAD itself.
    const get = verbDecisions.get("GET");
    if (get !== undefined && !get.allowed && !verbDecisions.has("HEAD")) {
      verbDecisions.set("HEAD", from(decision(false, `${label}:op:${pattern.name}:GET`, `operation ${pattern.name} with verb HEAD is denied by app policy ${policy.appId}/${policy.namespace} (its GET rule denies, and HEAD runs GET's handler)`), get));
    }
    const verbless = rules.findIndex((rule) => rule.httpVerb.length === 0);
    const grpcAt = verbless !== -1 ? verbless : rules.findIndex((rule) => rule.action === "deny");
    const grpcRule = grpcAt === -1 ? undefined : rules[grpcAt];
    const grpcDecision =
      grpcRule === undefined
        ? undefined
        : decision(
            grpcRule.action === "allow",
            `${label}:op:${pattern.name}`,
            `operation ${pattern.name} is ${grpcRule.action === "allow" ? "allowed" : "denied"}${grpcRule.httpVerb.length > 0 ? " (a verb rule that denies also denies gRPC)" : ""} by app policy ${policy.appId}/${policy.namespace}`,
          );
    if (grpcDecision !== undefined) ruleIndexOf.set(grpcDecision, indexes[grpcAt]!);
    const otherVerbDecision = anyVerbDecision ?? defaultDecision;
    const verbsAgree = [...verbDecisions.values()].every((d) => d.allowed === otherVerbDecision.allowed);
    const marked = (d: Decision): Decision => (verbsAgree ? d : from(Object.freeze({ ...d, verbSensitive: true }), d));
    const exact = {
      verbDecisions: new Map([...verbDecisions].map(([verb, d]) => [verb, marked(d)])),
      otherVerbDecision: marked(otherVerbDecision),
      grpcDecision,
    };
    // `/a/*` beside `/a`: the path `/a` is `/a`'s, whatever the order (rule 8).
    const prefix = barePrefixName(pattern);
    const own: CompiledOperation = { pattern, below: false, bare: prefix === undefined || !names.has(prefix), ...exact };
    if (rootIndex === operations.length) root = own;
    operations.push(own);
    // The paths below the name (a last literal or in-segment glob: coversBelow), as in Dapr, with
    // the same rules, ranked as the name followed by `/**` (belowPattern): `/admin` deny beside `/**`
    // allow denies `/admin/users`, whatever the order. Pushed after the declared operations, so an
    // explicit `/admin/**` goes before it (a stable sort keeps ties in this order).
    if (coversBelow(pattern.segments)) {
      const belowOf = (d: Decision): Decision =>
        d === defaultDecision || d.rule === defaultDecision.rule ? d : from(Object.freeze({ ...d, reason: `${d.reason} (for a path below ${pattern.name}: an operation covers the paths below its name, as in Dapr)` }), d);
      covering.push({
        pattern: belowPattern(pattern),
        below: true,
        bare: true,
        verbDecisions: new Map([...exact.verbDecisions].map(([verb, d]) => [verb, belowOf(d)])),
        otherVerbDecision: belowOf(exact.otherVerbDecision),
        grpcDecision: grpcDecision === undefined ? undefined : belowOf(grpcDecision),
      });
    }
  }
  operations.push(...covering);
  // Array.prototype.sort is stable: equal specificity keeps declaration order.
  operations.sort((a, b) => compareSpecificity(a.pattern, b.pattern));
  return { policyIndex, defaultDecision, ruleIndexOf, operations, root };
}
