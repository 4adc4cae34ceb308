import { dirname, resolve } from "node:path";
import { daprDifferences, operationsNeverApplyingToTcp, parseAccessControl, tcpInapplicableMessage, type DaprDifference, type TcpInapplicableOperation } from "../../policy/index.ts";
import { asArray, asDict, asText, get, isDict, lookup } from "../shape.ts";
import type { Corpus, DaprConfiguration, Hit, MeshwardSidecarConfig, NodePath, Rule } from "../types.ts";
import { defineRule, isLoopbackHost } from "./helpers.ts";

const sidecar = (policy: string): string => `appId: orders
namespace: prod
ca: ca.prod.svc:8443
inbound: 0.0.0.0:15006
app: 127.0.0.1:8080
mode: strict
${policy}`;

const POLICY = "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: orders-policy\nspec:\n  accessControl:\n    defaultAction: ACTION\n    trustDomain: prod.example.org\nPOLICIES";

const ACCESS_OPERATIONS = (operations: string): string =>
  `apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: appconfig\nspec:\n  accessControl:\n    defaultAction: deny\n    trustDomain: public\n    policies:\n    - appId: checkout\n      namespace: default\n      defaultAction: deny\n      operations:\n${operations}`;

export interface ResolvedPolicy {
  accessControl: Record<string, unknown>;
  /** Where findings about the policy point: the sidecar's `policy` key or the policy file. */
  locate: { resource: "sidecar"; path: NodePath } | { resource: "configuration"; configuration: DaprConfiguration };
}

/**
 * The sidecar's `policy` is a file path (resolved against the sidecar config's folder and
 * looked up among the scanned Configurations) or, tolerated, an inline Configuration or
 * `accessControl` object. Undefined when the policy file is not among the scanned files.
 */
export function resolveSidecarPolicy(sidecar: MeshwardSidecarConfig, corpus: Corpus): ResolvedPolicy | undefined {
  const entry = lookup(sidecar.config, "policy");
  if (entry === undefined) return undefined;
  if (isDict(entry.value)) {
    const inline = entry.value;
    const accessControl = isDict(get(inline, "spec", "accessControl"))
      ? asDict(get(inline, "spec", "accessControl"))
      : isDict(inline["accessControl"]) ? asDict(inline["accessControl"]) : inline;
    return { accessControl, locate: { resource: "sidecar", path: [entry.key] } };
  }
  const file = asText(entry.value).trim();
  if (file === "") return undefined;
  const wanted = resolve(dirname(sidecar.source.file), file);
  const configuration = corpus.configurations.find((candidate) => resolve(candidate.source.file) === wanted);
  if (configuration === undefined) return undefined;
  return { accessControl: asDict(configuration.spec["accessControl"]), locate: { resource: "configuration", configuration } };
}

function allowsEverything(accessControl: Record<string, unknown>): boolean {
  return /^allow$/i.test(asText(accessControl["defaultAction"]).trim()) && asArray(accessControl["policies"]).length === 0;
}

export const accessRules: Rule[] = [
  defineRule({
    id: "MW-ACCESS-001",
    family: "access",
    severity: "medium",
    title: "Dapr access control allows every caller",
    why: "An `accessControl` block with `defaultAction: allow` and no policies looks like a policy but lets every app in the trust domain call every operation.",
    fix: "Set `defaultAction: deny` and add one policy per calling app id with the operations it needs.",
    example: {
      file: "config.yaml",
      bad: "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: appconfig\nspec:\n  accessControl:\n    defaultAction: allow\n    trustDomain: public\n",
      good: "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: appconfig\nspec:\n  accessControl:\n    defaultAction: deny\n    trustDomain: public\n    policies:\n      - appId: checkout\n        defaultAction: allow\n        namespace: default\n",
    },
    appliesTo: ["dapr-configuration"],
    check(configuration) {
      const accessControl = configuration.spec["accessControl"];
      if (!isDict(accessControl) || !allowsEverything(accessControl)) return [];
      return [{ path: ["spec", "accessControl", "defaultAction"], evidence: "defaultAction: allow, policies: none" }];
    },
  }),
  defineRule({
    id: "MW-ACCESS-002",
    family: "access",
    severity: "high",
    title: "meshward sidecar policy allows every caller",
    why: "A sidecar policy with `defaultAction: allow` and no policies admits any workload with a valid SVID from the trust domain: mTLS proves who is calling but nothing limits what they may call.",
    fix: "Give the sidecar a policy with `defaultAction: deny` and an entry per caller app id.",
    example: {
      file: "sidecar.yaml",
      bad: sidecar("policy: policy.yaml\n"),
      good: sidecar("policy: policy.yaml\n"),
      companion: {
        file: "policy.yaml",
        bad: POLICY.replace("ACTION", "allow").replace("POLICIES", ""),
        good: POLICY.replace("ACTION", "deny").replace("POLICIES", "    policies:\n      - appId: checkout\n        defaultAction: allow\n"),
      },
    },
    appliesTo: ["meshward-sidecar"],
    check(config, corpus) {
      const policy = resolveSidecarPolicy(config, corpus);
      if (policy === undefined || !allowsEverything(policy.accessControl)) return [];
      const hit: Hit = { evidence: "defaultAction: allow, policies: none" };
      if (policy.locate.resource === "sidecar") return [{ ...hit, path: policy.locate.path }];
      const file = policy.locate.configuration.source.file;
      return [{ ...hit, path: [lookup(config.config, "policy")?.key ?? "policy"], detail: `The policy file ${file} allows everything.` }];
    },
  }),
  defineRule({
    id: "MW-ACCESS-003",
    family: "access",
    severity: "medium",
    title: "meshward sidecar has no access policy",
    why: "Without a policy every workload with an SVID from the trust domain may call this app: one compromised service can reach all others.",
    fix: "Set `policy:` to a Configuration file with `accessControl` (default deny, one entry per caller).",
    example: { file: "sidecar.yaml", bad: sidecar(""), good: sidecar("policy: policy.yaml\n") },
    appliesTo: ["meshward-sidecar"],
    check(config) {
      const entry = lookup(config.config, "policy");
      if (entry !== undefined && (isDict(entry.value) || asText(entry.value).trim() !== "")) return [];
      const appId = lookup(config.config, "appId");
      return [{ path: appId === undefined ? [] : [appId.key], evidence: "policy: not set" }];
    },
  }),
  defineRule({
    id: "MW-ACCESS-004",
    family: "access",
    severity: "high",
    title: "meshward sidecar outbound port listens beyond loopback",
    why: "The outbound port (and each `tcpUpstreams` listener) takes plaintext and calls other apps with this workload's certificate. Bound to 0.0.0.0 or a network address, anyone who reaches it calls the mesh as this workload, and the leg to the sidecar crosses the network in clear. The sidecar refuses such a config (`E_CONFIG_INVALID`).",
    fix: "Bind `outbound` and `tcpUpstreams` to 127.0.0.1 (the app and its sidecar share the pod's or host's loopback).",
    example: { file: "sidecar.yaml", bad: sidecar("policy: policy.yaml\noutbound: 0.0.0.0:3500\n"), good: sidecar("policy: policy.yaml\noutbound: 127.0.0.1:3500\n") },
    appliesTo: ["meshward-sidecar"],
    check(config) {
      const hits: Hit[] = [];
      const outbound = lookup(config.config, "outbound");
      if (outbound !== undefined && offLoopback(outbound.value)) hits.push({ path: [outbound.key], evidence: `${outbound.key}: ${asText(outbound.value)}` });
      const tcp = lookup(config.config, "tcpUpstreams");
      for (const [name, value] of Object.entries(asDict(tcp?.value) ?? {})) {
        if (offLoopback(value)) hits.push({ path: [tcp!.key, name], evidence: `${tcp!.key}.${name}: ${asText(value)}` });
      }
      return hits;
    },
  }),
  defineRule({
    id: "MW-ACCESS-005",
    family: "access",
    severity: "medium",
    title: "meshward sidecar outbound answers any Host (DNS rebinding guard off)",
    why: "`outboundAllowedHosts: [\"*\"]` turns off the Host check on the outbound port. A web page in a browser on the same machine can then rebind its DNS name to 127.0.0.1 and call any app in the mesh as this workload.",
    fix: "List only the names your callers really send (a gateway's own host names) in `outboundAllowedHosts`; loopback, IP literals and the routed app id need no entry.",
    example: {
      file: "sidecar.yaml",
      bad: sidecar("policy: policy.yaml\noutbound: 127.0.0.1:3500\noutboundAllowedHosts: [\"*\"]\n"),
      good: sidecar("policy: policy.yaml\noutbound: 127.0.0.1:3500\noutboundAllowedHosts: [api.shop.example]\n"),
    },
    appliesTo: ["meshward-sidecar"],
    check(config) {
      const entry = lookup(config.config, "outboundAllowedHosts");
      if (entry === undefined) return [];
      return asArray(entry.value).flatMap((value, index) => (asText(value).trim() === "*" ? [{ path: [entry.key, index], evidence: `${entry.key}: "*"` }] : []));
    },
  }),
  defineRule({
    id: "MW-ACCESS-006",
    family: "access",
    severity: "high",
    title: "Kustomize patch removes Dapr access control",
    why: "A JSON6902 `remove` of `/spec/accessControl` (or of `/spec`) in an overlay takes the base's policy away: Dapr reads a Configuration without accessControl as no access control, so every app in the trust domain may call every operation in that environment, while the base looks protected.",
    fix: "Patch the policy instead of removing it (replace `defaultAction` or the `policies` an environment needs), or give that environment a Configuration of its own with its own accessControl.",
    example: {
      file: "overlays/staging/kustomization.yaml",
      bad: "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../../base\npatches:\n  - target:\n      group: dapr.io\n      kind: Configuration\n      name: appconfig\n    patch: |-\n      - op: remove\n        path: /spec/accessControl\n",
      good: "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../../base\npatches:\n  - target:\n      group: dapr.io\n      kind: Configuration\n      name: appconfig\n    patch: |-\n      - op: replace\n        path: /spec/accessControl/defaultAction\n        value: deny\n",
    },
    appliesTo: ["dapr-configuration"],
    check(configuration) {
      return (configuration.source.removed ?? [])
        .filter(({ path }) => (path.length === 1 && path[0] === "spec") || (path.length === 2 && path[0] === "spec" && path[1] === "accessControl"))
        .map(({ path, at }): Hit => ({ position: at, evidence: `op: remove, path: /${path.join("/")}` }));
    },
  }),
  defineRule({
    id: "MW-ACCESS-007",
    family: "access",
    severity: "low",
    title: "Access operation hidden in Dapr by a wildcard declared before it",
    why: "When several operations match a request, the meshward sidecar uses the most specific one, Dapr the first declared (pkg/config/acl_trie.go). A wildcard declared before a narrower operation it covers, with a different action or verbs, decides that narrower path in Dapr: the same file allows in one what the other denies. Reported only where Dapr's trie does take the wildcard for that path: not for `/a/**` declared before `/a` (the trie's node `/a` holds `/a`, which decides the path `/a` in Dapr too; what differs below `/a` is MW-ACCESS-010's), nor where a literal node made by an earlier operation comes before the wildcard's.",
    fix: "Declare the more specific operation before the wildcard that covers it; the file then means the same to Dapr and to meshward.",
    example: {
      file: "config.yaml",
      bad: ACCESS_OPERATIONS("      - name: /admin/*\n        httpVerb: [\"*\"]\n        action: deny\n      - name: /admin/health\n        httpVerb: [GET]\n        action: allow\n"),
      good: ACCESS_OPERATIONS("      - name: /admin/health\n        httpVerb: [GET]\n        action: allow\n      - name: /admin/*\n        httpVerb: [\"*\"]\n        action: deny\n"),
    },
    appliesTo: ["dapr-configuration"],
    check(configuration) {
      return differenceHits(configuration, "precedence");
    },
  }),
  defineRule({
    id: "MW-ACCESS-008",
    family: "access",
    severity: "low",
    title: "Access operation name listed more than once",
    why: "The meshward sidecar merges entries with the same operation name; Dapr uses only the first entry (older versions, the last), so a verb granted or denied in a later entry counts in meshward and not in Dapr.",
    fix: "List the operation once, with all its verbs in one entry (`httpVerb: [GET, DELETE]`), or split verbs with different actions into entries with different names.",
    example: {
      file: "config.yaml",
      bad: ACCESS_OPERATIONS("      - name: /orders/**\n        httpVerb: [GET]\n        action: allow\n      - name: /orders/**\n        httpVerb: [DELETE]\n        action: allow\n"),
      good: ACCESS_OPERATIONS("      - name: /orders/**\n        httpVerb: [GET, DELETE]\n        action: allow\n"),
    },
    appliesTo: ["dapr-configuration"],
    check(configuration) {
      return differenceHits(configuration, "repeated-name");
    },
  }),
  defineRule({
    id: "MW-ACCESS-009",
    family: "access",
    severity: "low",
    title: "Overlapping access operations Dapr decides differently",
    why: "Two operations neither of which covers the other can both match a request (`/a/*c` and `/a/bb*` both match `/a/bbc`). The meshward sidecar uses the more specific one; Dapr's trie (pkg/config/acl_trie.go) takes, segment by segment, the first declared branch that matches and never goes back, so it may use the other operation, or none and the default action: the same file allows in one what the other denies. The same holds where a trailing `*` or `**` sits beside a literal branch: with `/orders/*/items` and `/orders/**`, Dapr takes the `/*` branch for `GET /orders/x`, finds nothing there and applies the default action, while the sidecar uses `/orders/**`; with `/a/a` and `/**`, Dapr takes the `/a` branch for `/a/x` and never comes back to `/**`. (For the path `/` the sidecar takes the operation Dapr takes, the first declared of `/`, `/*` and `/**`: nothing to report there.) Every class of paths the two can tell apart is checked, not one path per pair.",
    fix: "Declare first the operation the finding says meshward uses (when both are in-segment globs at the same place, Dapr then takes it too), or add an operation for the paths the two share declared before both, or narrow one so that they no longer overlap. Where Dapr finds none because its trie took another operation's branch, give the operations that meet there the same action, or name the path the finding gives with the action meant.",
    example: {
      file: "config.yaml",
      bad: ACCESS_OPERATIONS("      - name: /files/*.pdf\n        httpVerb: [\"*\"]\n        action: deny\n      - name: /files/public-*\n        httpVerb: [GET]\n        action: allow\n"),
      good: ACCESS_OPERATIONS("      - name: /files/public-*\n        httpVerb: [GET]\n        action: allow\n      - name: /files/*.pdf\n        httpVerb: [\"*\"]\n        action: deny\n"),
    },
    appliesTo: ["dapr-configuration"],
    check(configuration) {
      return differenceHits(configuration, "overlap");
    },
  }),
  defineRule({
    id: "MW-ACCESS-010",
    family: "access",
    severity: "low",
    title: "Access operation that decides the paths below it differently in Dapr",
    why: "An operation whose last segment is a literal or an in-segment glob (`/api`, `/files/*.pdf`) also decides every path below it, in Dapr and in the meshward sidecar. Dapr's trie (pkg/config/acl_trie.go Search) answers with the first such operation on the way down, so `/api` decides `/api/public/x` even beside `/api/public/**`; the sidecar ranks a covering operation for those paths as its name followed by `/**`, so the most specific decides (`/api/public/**` before `/api`). Where the two pick operations with different actions or verbs, the same file allows in one what the other denies.",
    fix: "Give the covering operation and the one below it the same action for the paths they share, or remove the one that should not apply there (in Dapr, `/api` always decides every path below it its trie reaches: to deny only `/api` itself, Dapr has no way to say so).",
    example: {
      file: "config.yaml",
      bad: ACCESS_OPERATIONS("      - name: /api\n        httpVerb: [\"*\"]\n        action: deny\n      - name: /api/public/**\n        httpVerb: [GET]\n        action: allow\n"),
      good: ACCESS_OPERATIONS("      - name: /api/public/**\n        httpVerb: [GET]\n        action: allow\n"),
    },
    appliesTo: ["dapr-configuration"],
    check(configuration) {
      return differenceHits(configuration, "prefix");
    },
  }),
  defineRule({
    id: "MW-ACCESS-011",
    family: "access",
    severity: "low",
    title: "Access operation with a bare '*' before its last segment, which never matches in Dapr",
    why: "Dapr's trie (pkg/config/acl_trie.go findNodeWithWildcard) takes a bare `*` segment only for a path's last segment, so an operation such as `/orders/*/items` decides nothing in Dapr and its paths get the default action; the meshward sidecar matches it (one segment). An allow there grants in meshward what Dapr denies by default.",
    fix: "Name the segment (one operation per value, e.g. `/orders/eu/items`), or use an in-segment glob (`/orders/eu-*/items`) if that is meant, or end the name with `**`; all of these mean the same to Dapr and to meshward.",
    example: {
      file: "config.yaml",
      bad: ACCESS_OPERATIONS("      - name: /orders/*/items\n        httpVerb: [GET]\n        action: allow\n"),
      good: ACCESS_OPERATIONS("      - name: /orders/eu/items\n        httpVerb: [GET]\n        action: allow\n      - name: /orders/us/items\n        httpVerb: [GET]\n        action: allow\n"),
    },
    appliesTo: ["dapr-configuration"],
    check(configuration) {
      return differenceHits(configuration, "never-matches-in-dapr");
    },
  }),
  defineRule({
    id: "MW-ACCESS-012",
    family: "access",
    severity: "medium",
    title: "meshward sidecar in TCP mode with access operations that never apply",
    lowWhen: "every operation that never applies is an allow: connections the file seems to admit are refused, none are opened; medium as soon as one is a deny, which protects nothing",
    why: "A sidecar with `protocol: tcp` pipes bytes and never parses HTTP: it judges each connection once, as the operation `/` without a verb, and stops at the operation that decides the path `/`, as in Dapr the first declared of `/`, `/*` and `/**`: that one decides, or the app policy's defaultAction when it only allows HTTP verbs. Operations on other paths (`/admin/**`, `/pkg.Svc/Get`), allows limited to HTTP verbs, and the other operations on `/` never apply: a deny written for `/admin/**`, or a `/**` or `/*` deny declared after a `/` allow for GET (a health page), protects nothing (declared before it, the deny decides every connection), and the policy reads stricter (or looser) than what the sidecar enforces. The finding names each operation that never applies and, per caller, what decides its connections instead (read from the compiled policy, as the sidecar decides). The sidecar logs `policy-operations-never-apply-tcp` at start.",
    fix: "Use `protocol: http` when the app speaks HTTP or gRPC (the operations then apply), or write a TCP-mode policy as the app policy's defaultAction plus, if needed, one `/**` entry without verbs per caller.",
    example: {
      file: "sidecar.yaml",
      bad: sidecar("policy: policy.yaml\nprotocol: tcp\n"),
      good: sidecar("policy: policy.yaml\nprotocol: tcp\n"),
      companion: {
        file: "policy.yaml",
        bad: POLICY.replace("ACTION", "deny").replace("POLICIES", "    policies:\n      - appId: checkout\n        namespace: prod\n        defaultAction: allow\n        operations:\n          - name: /admin/**\n            httpVerb: [\"*\"]\n            action: deny\n"),
        good: POLICY.replace("ACTION", "deny").replace("POLICIES", "    policies:\n      - appId: checkout\n        namespace: prod\n        defaultAction: allow\n"),
      },
    },
    appliesTo: ["meshward-sidecar"],
    check(config, corpus) {
      const protocol = lookup(config.config, "protocol");
      if (protocol === undefined || asText(protocol.value).trim().toLowerCase() !== "tcp") return [];
      const policy = resolveSidecarPolicy(config, corpus);
      if (policy === undefined) return [];
      let operations: TcpInapplicableOperation[];
      try {
        operations = operationsNeverApplyingToTcp(parseAccessControl({ accessControl: policy.accessControl }));
      } catch {
        // A policy the sidecar refuses is not this rule's to report.
        return [];
      }
      if (operations.length === 0) return [];
      const where = policy.locate.resource === "configuration" ? ` ${policy.locate.configuration.source.file}` : "";
      return [{
        path: [protocol.key],
        evidence: `${protocol.key}: tcp; ${operations.map((operation) => `${operation.appId} ${operation.name}`).join(", ")}`,
        detail: `The policy${where}: ${tcpInapplicableMessage(operations)}.`,
        // Only allows that never apply: connections are refused that the file seems to admit, nothing is opened.
        // A deny that never applies (on another path, or shadowed on /) protects nothing: medium.
        ...(operations.some((operation) => operation.action === "deny") ? {} : { severity: "low" as const }),
      }];
    },
  }),
  defineRule({
    id: "MW-ACCESS-013",
    family: "access",
    severity: "medium",
    title: "meshward sidecar forwards requests app servers read differently (headersWithUnderscores: allow, escapedSlashes: keep)",
    why: "The sidecar judges one canonical request and forwards exactly it; these two settings let through what servers read in more than one way. `headersWithUnderscores: allow` forwards field names holding `_`, which CGI and WSGI servers read as `-` (`X_Forwarded_For` is `X-Forwarded-For` to gunicorn, and a second one beside the sidecar's own reaches the app). `escapedSlashes: keep` forwards `%2F` and `%5C` in paths undecoded: a policy that allows `/files/**` judged `/files/a%2F..%2F..%2Fadmin` as a path below `/files`, an app server that decodes them routes `/admin`.",
    fix: "Leave both at their default, `reject`. For a client you cannot change that sends `_` names, `headersWithUnderscores: drop` removes them; for paths with escaped slashes, `escapedSlashes: unescape` decodes them before the policy judges.",
    example: {
      file: "sidecar.yaml",
      bad: sidecar("policy: policy.yaml\nheadersWithUnderscores: allow\nescapedSlashes: keep\n"),
      good: sidecar("policy: policy.yaml\nheadersWithUnderscores: drop\nescapedSlashes: unescape\n"),
    },
    appliesTo: ["meshward-sidecar"],
    check(config) {
      const hits: Hit[] = [];
      for (const [key, loose] of [["headersWithUnderscores", "allow"], ["escapedSlashes", "keep"]] as const) {
        const entry = lookup(config.config, key);
        if (entry !== undefined && asText(entry.value).trim() === loose) hits.push({ path: [entry.key], evidence: `${entry.key}: ${loose}` });
      }
      return hits;
    },
  }),
];

/**
 * Where a Configuration's accessControl means something else to Dapr than to the meshward
 * sidecar (src/policy/dapr-differences.ts). A block the sidecar would refuse reports nothing here.
 */
function differenceHits(configuration: DaprConfiguration, kind: DaprDifference["kind"]): Hit[] {
  const accessControl = configuration.spec["accessControl"];
  if (!isDict(accessControl)) return [];
  let differences: DaprDifference[];
  try {
    differences = daprDifferences(parseAccessControl({ accessControl }));
  } catch {
    return [];
  }
  return differences
    .filter((difference) => difference.kind === kind)
    .map((difference): Hit => ({
      path: ["spec", "accessControl", "policies", difference.policyIndex, "operations", difference.operationIndexes[1]],
      evidence:
        difference.kind === "repeated-name"
          ? `appId ${difference.appId}: operation ${difference.operations[0]} repeated`
          : difference.kind === "overlap"
            ? `appId ${difference.appId}: ${difference.operations[0]} overlaps ${difference.operations[1]}`
            : difference.kind === "prefix"
              ? `appId ${difference.appId}: ${difference.operations[0]} and ${difference.operations[1]}, one below the other`
              : difference.kind === "never-matches-in-dapr"
                ? `appId ${difference.appId}: ${difference.operations[0]} never matches in Dapr`
                : `appId ${difference.appId}: ${difference.operations[0]} declared before ${difference.operations[1]}`,
      detail: difference.message,
    }));
}

/** A HOST:PORT value that does not name loopback (0.0.0.0, ::, a network address or name). */
function offLoopback(value: unknown): boolean {
  const text = asText(value).trim();
  return text !== "" && !isLoopbackHost(text);
}
