import { describe, expect, it } from "vitest";
import { APP1_CALLER, parseApp1Policy } from "../helpers/app1-policy.ts";
import { compilePolicy, daprDifferences, operationsNeverApplyingToTcp } from "../../src/policy/index.ts";
import { daprTrie, daprTrieSearch } from "../../src/policy/dapr-differences.ts";
import { auditSources } from "../../src/audit/audit.ts";

/**
 * An operation's own path is decided by that operation, not by a trailing `/*` beside it that
 * matches the path as its bare prefix (decide.ts rule 8). What Dapr does, read from upstream
 * dapr/dapr for this:
 *
 * - pkg/config/acl_trie.go PutOperationAction: each operation is split on "/" and stored one node
 *   per segment, so `/a/*` is the child `/*` of the node `/a`, which also holds `/a` itself when it
 *   is declared (Data set on the existing node, in either order). `/` is the root's child `/` (the
 *   empty segment), and `/*` is the root's child `/*`: siblings, in declaration order.
 * - acl_trie.go Search: for the path `/a` the last segment's node is `/a`; it holds data, so `/a`
 *   decides; only a node without data goes on to its `/*` child (isEnd). For the path `/`, the root's
 *   children are tried in insertion order (findNodeWithWildcard: a child equal to `/`, or `/*` for
 *   the last segment, or `/**`): the first declared of `/` and `/*` decides.
 * - pkg/acl/acl.go IsOperationAllowedByAccessControlPolicy: on the node found, the request's verb,
 *   else its "*", else the app's default; a verb the node does not name never falls through to
 *   another operation.
 *
 * So for `/a` beside `/a/*` Dapr's answer does not depend on order, and meshward gives it. For the
 * path `/` Dapr takes the first child of its root, in the order the children were made, that
 * matches `/`: the node `/` (the operation `/`), `/*` or `/**`, or an all-`*` in-segment glob such
 * as `/***` (acl_trie.go isMatch lets `*` match nothing). A node without data (one only a longer
 * name made, `/*` of `/*\/x`) then goes on to its own `/*` child (Search, isEnd), else nothing
 * decides and the app default applies. meshward now decides the path `/` by that same operation
 * (decide.ts rule 8, compileApp's `root`, computed with the port of acl_trie.go, daprTrie), so
 * the two never differ there and nothing is reported for it. Before, meshward took `/` in either
 * order and reported `/*` or `/**` declared first as a difference ("overlap", MW-ACCESS-009).
 */
const parse = parseApp1Policy;
const caller = APP1_CALLER;
/** The operation the port of acl_trie.go Search (daprTrieSearch) applies to the path. */
const daprOperation = (names: readonly string[], path: string) => {
  const index = daprTrieSearch(daprTrie(names), path);
  return index === undefined ? undefined : names[index];
};

describe("an operation decides its own path before a trailing /* beside it (Dapr's trie)", () => {
  it("/ then /*: the path / is decided by /, as in Dapr; /x still by /*", () => {
    const config = parse(`    - { name: /, httpVerb: ["*"], action: allow }
    - { name: "/*", httpVerb: ["*"], action: deny }
`);
    expect(daprOperation(["/", "/*"], "/")).toBe("/");
    const policy = compilePolicy(config);
    expect(policy.decide({ caller, operation: "/", verb: "GET" })).toMatchObject({ allowed: true, rule: "app:app1/default:op:/:*" });
    expect(policy.explain({ caller, operation: "/", verb: "GET" }).matched).toEqual([{ name: "/", below: false }]);
    expect(policy.decide({ caller, operation: "/x", verb: "GET" })).toMatchObject({ allowed: false, rule: "app:app1/default:op:/*:*" });
    // Both read it alike now: nothing to report.
    expect(daprDifferences(config)).toEqual([]);
  });

  it("with different verbs: POST / is the app default's (the / entry has no POST rule, and Dapr does not fall through to /*)", () => {
    const config = parse(`    - { name: /, httpVerb: [GET], action: allow }
    - { name: "/*", httpVerb: [POST], action: allow }
`);
    const policy = compilePolicy(config);
    expect(policy.decide({ caller, operation: "/", verb: "GET" })).toMatchObject({ allowed: true, rule: "app:app1/default:op:/:GET" });
    expect(policy.decide({ caller, operation: "/", verb: "POST" })).toMatchObject({ allowed: false, rule: "app:app1/default:default-action" });
    expect(policy.decide({ caller, operation: "/x", verb: "POST" })).toMatchObject({ allowed: true, rule: "app:app1/default:op:/*:POST" });
    expect(policy.decide({ caller, operation: "/x", verb: "GET" })).toMatchObject({ allowed: false, rule: "app:app1/default:default-action" });
    expect(daprDifferences(config)).toEqual([]);
  });

  it("/* then /: the path / is decided by /* (declared first), as in Dapr; nothing reported, MW-ACCESS-009 quiet", () => {
    const operations = `    - { name: "/*", httpVerb: [POST], action: allow }
    - { name: /, httpVerb: [GET], action: allow }
`;
    const config = parse(operations);
    expect(daprOperation(["/*", "/"], "/")).toBe("/*");
    const policy = compilePolicy(config);
    expect(policy.decide({ caller, operation: "/", verb: "POST" })).toMatchObject({ allowed: true, rule: "app:app1/default:op:/*:POST" });
    // Only /*'s verbs count: GET is the app default's (Dapr does not fall through to /).
    expect(policy.decide({ caller, operation: "/", verb: "GET" })).toMatchObject({ allowed: false, rule: "app:app1/default:default-action" });
    expect(policy.explain({ caller, operation: "/", verb: "GET" }).matched).toEqual([{ name: "/*", below: false }]);
    expect(daprDifferences(config)).toEqual([]);
    const audited = auditSources([{ file: "config.yaml", text: `apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: app
spec:
  accessControl:
    defaultAction: deny
    policies:
    - appId: app1
      namespace: default
      defaultAction: deny
      operations:
${operations.replaceAll(/^ {4}/gm, "      ")}` }]).findings;
    expect(audited.filter((finding) => finding.ruleId.startsWith("MW-ACCESS-"))).toEqual([]);
  });

  it("/** then /: /** decides the path /, as in Dapr; / then /**: / does", () => {
    const first = parse(`    - { name: /**, httpVerb: ["*"], action: deny }
    - { name: /, httpVerb: [GET], action: allow }
`);
    expect(daprOperation(["/**", "/"], "/")).toBe("/**");
    expect(compilePolicy(first).decide({ caller, operation: "/", verb: "GET" })).toMatchObject({ allowed: false, rule: "app:app1/default:op:/**:*" });
    expect(compilePolicy(first).decide({ caller, operation: "/x", verb: "GET" })).toMatchObject({ allowed: false, rule: "app:app1/default:op:/**:*" });
    // Both agree, but the / allow never decides anything: reported (precedence), not silently dead.
    expect(daprDifferences(first).map((d) => [d.kind, d.operations])).toEqual([["precedence", ["/**", "/"]]]);
    const second = parse(`    - { name: /, httpVerb: [GET], action: allow }
    - { name: /**, httpVerb: ["*"], action: deny }
`);
    expect(daprOperation(["/", "/**"], "/")).toBe("/");
    expect(compilePolicy(second).decide({ caller, operation: "/", verb: "GET" })).toMatchObject({ allowed: true, rule: "app:app1/default:op:/:GET" });
    expect(daprDifferences(second)).toEqual([]);
  });

  it("the order of the root's children counts, not of the operations: /*/x made the /* node before / (and then /* decides /, or nothing does)", () => {
    // /*/x, /, /*: the root's children are /* (made by /*/x, data set later by /*) and /: /* decides.
    const names = ["/*/x", "/", "/*"];
    expect(daprOperation(names, "/")).toBe("/*");
    const policy = compilePolicy(parse(`    - { name: "/*/x", httpVerb: ["*"], action: allow }
    - { name: /, httpVerb: ["*"], action: allow }
    - { name: "/*", httpVerb: ["*"], action: deny }
`));
    expect(policy.decide({ caller, operation: "/", verb: "GET" })).toMatchObject({ allowed: false, rule: "app:app1/default:op:/*:*" });
    // /*/x, / (no /*): Dapr takes the /* node, which has no data and no /* child: none decides, the default does.
    expect(daprOperation(["/*/x", "/"], "/")).toBeUndefined();
    const none = compilePolicy(parse(`    - { name: "/*/x", httpVerb: ["*"], action: deny }
    - { name: /, httpVerb: ["*"], action: deny }
`, "allow"));
    expect(none.decide({ caller, operation: "/", verb: "GET" })).toMatchObject({ allowed: true, rule: "app:app1/default:default-action" });
    expect(none.explain({ caller, operation: "/", verb: "GET" }).matched).toEqual([]);
    // /*/** first: the /* node's /** child holds data, so /*/** decides / in Dapr (its /* child for the last segment).
    expect(daprOperation(["/*/**", "/"], "/")).toBe("/*/**");
    const rest = compilePolicy(parse(`    - { name: "/*/**", httpVerb: ["*"], action: deny }
    - { name: /, httpVerb: ["*"], action: allow }
`));
    expect(rest.decide({ caller, operation: "/", verb: "GET" })).toMatchObject({ allowed: false, rule: "app:app1/default:op:/*/**:*" });
  });

  it("/a beside /a/*, in either order: /a decides the path /a, as in Dapr (its node holds /a), /a/* the paths one below", () => {
    for (const operations of [
      [`    - { name: /a, httpVerb: ["*"], action: allow }`, `    - { name: "/a/*", httpVerb: ["*"], action: deny }`],
      [`    - { name: "/a/*", httpVerb: ["*"], action: deny }`, `    - { name: /a, httpVerb: ["*"], action: allow }`],
    ]) {
      const names = operations.map((line) => /name: "?([^",]+)/.exec(line)![1]!);
      expect(daprOperation(names, "/a"), names.join(" ")).toBe("/a");
      expect(daprOperation(names, "/a/x"), names.join(" ")).toBe("/a");
      const policy = compilePolicy(parse(`${operations.join("\n")}\n`));
      expect(policy.decide({ caller, operation: "/a", verb: "GET" }), names.join(" ")).toMatchObject({ allowed: true, rule: "app:app1/default:op:/a:*" });
      expect(policy.decide({ caller, operation: "/A/", verb: "DELETE" }), names.join(" ")).toMatchObject({ allowed: true, rule: "app:app1/default:op:/a:*" });
      expect(policy.decide({ caller, operation: "/a/x", verb: "GET" }), names.join(" ")).toMatchObject({ allowed: false, rule: "app:app1/default:op:/a/*:*" });
    }
  });

  it("/* alone still decides / (Dapr: a node without data goes on to its /* child), and /a/* alone /a", () => {
    const policy = compilePolicy(parse(`    - { name: "/*", httpVerb: ["*"], action: allow }
    - { name: "/a/*", httpVerb: ["*"], action: deny }
`));
    expect(daprOperation(["/*", "/a/*"], "/")).toBe("/*");
    expect(policy.decide({ caller, operation: "/", verb: "GET" })).toMatchObject({ allowed: true, rule: "app:app1/default:op:/*:*" });
    expect(daprOperation(["/a/*"], "/a")).toBe("/a/*");
    expect(compilePolicy(parse(`    - { name: "/a/*", httpVerb: ["*"], action: deny }\n`, "allow")).decide({ caller, operation: "/a", verb: "GET" })).toMatchObject({ allowed: false, rule: "app:app1/default:op:/a/*:*" });
  });

  it("TCP mode (a connection is the operation / without a verb): the operation Dapr takes for / decides, the others on / are reported as shadowed", () => {
    const config = parse(`    - { name: "/*", action: allow }
    - { name: /, action: deny }
`);
    expect(compilePolicy(config).decide({ caller, operation: "", verb: "" })).toMatchObject({ allowed: true, rule: "app:app1/default:op:/*" });
    expect(operationsNeverApplyingToTcp(config).map((operation) => [operation.name, operation.why, operation.decidedBy.name])).toEqual([["/", "shadowed", "/*"]]);
    const reversed = parse(`    - { name: /, action: deny }
    - { name: "/*", action: allow }
`);
    expect(compilePolicy(reversed).decide({ caller, operation: "", verb: "" })).toMatchObject({ allowed: false, rule: "app:app1/default:op:/" });
    expect(operationsNeverApplyingToTcp(reversed).map((operation) => [operation.name, operation.why, operation.decidedBy.name])).toEqual([["/*", "shadowed", "/"]]);
  });

  it("TCP mode: a /* deny beside a GET-only / allow decides connections only when declared first", () => {
    // / first: Dapr's operation for / is /, which only allows GET: connections get the app default (allow), the /* deny protects nothing.
    const slashFirst = parse(`    - { name: /, httpVerb: [GET], action: allow }
    - { name: "/*", httpVerb: ["*"], action: deny }
`, "allow");
    expect(compilePolicy(slashFirst).decide({ caller, operation: "", verb: "" })).toMatchObject({ allowed: true, rule: "app:app1/default:default-action" });
    expect(operationsNeverApplyingToTcp(slashFirst).map((operation) => [operation.name, operation.action, operation.why, operation.decidedBy])).toEqual([
      ["/", "allow", "verbs", { kind: "default", name: "/", action: "allow" }],
      ["/*", "deny", "shadowed", { kind: "default", name: "/", action: "allow" }],
    ]);
    // /* first: it decides / (its deny also denies a call without a verb): every connection is denied, the / allow never applies.
    const starFirst = parse(`    - { name: "/*", httpVerb: ["*"], action: deny }
    - { name: /, httpVerb: [GET], action: allow }
`, "allow");
    expect(compilePolicy(starFirst).decide({ caller, operation: "", verb: "" })).toMatchObject({ allowed: false, rule: "app:app1/default:op:/*" });
    expect(operationsNeverApplyingToTcp(starFirst).map((operation) => [operation.name, operation.action, operation.why, operation.decidedBy])).toEqual([
      ["/", "allow", "shadowed", { kind: "operation", name: "/*", action: "deny" }],
    ]);
  });
});
