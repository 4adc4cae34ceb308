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
 * So for `/a` beside `/a/*` Dapr's answer does not depend on order, and meshward now gives it. For
 * `/` beside `/*` Dapr takes whichever is declared first; meshward takes `/` in either order (an
 * operation's meaning does not depend on where it is listed, as everywhere else in rule 8), and
 * where `/*` is declared first, so that Dapr differs, daprDifferences reports it ("overlap",
 * `meshward audit` MW-ACCESS-009). Before this change meshward ranked `/*` first for `/` (a longer
 * pattern), so `/` with `/*` after it, the order Dapr agrees with, was decided by `/*`.
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

  it("/* then /: meshward still uses / for the path /, Dapr /* (first declared): reported, and by meshward audit as MW-ACCESS-009", () => {
    const operations = `    - { name: "/*", httpVerb: [POST], action: allow }
    - { name: /, httpVerb: [GET], action: allow }
`;
    const config = parse(operations);
    expect(daprOperation(["/*", "/"], "/")).toBe("/*");
    const policy = compilePolicy(config);
    expect(policy.decide({ caller, operation: "/", verb: "GET" })).toMatchObject({ allowed: true, rule: "app:app1/default:op:/:GET" });
    expect(policy.decide({ caller, operation: "/", verb: "POST" })).toMatchObject({ allowed: false, rule: "app:app1/default:default-action" });
    const found = daprDifferences(config);
    expect(found).toHaveLength(1);
    expect(found[0]).toMatchObject({ kind: "overlap", operations: ["/*", "/"], operationIndexes: [0, 1] });
    expect(found[0]!.message).toContain("for / meshward uses / (operations[1]), Dapr /*");
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
    expect(audited.map((finding) => `${finding.ruleId}@${finding.line}`)).toContain("MW-ACCESS-009@14");
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

  it("TCP mode (a connection is the operation / without a verb): / decides, and the /* beside it is reported as shadowed", () => {
    const config = parse(`    - { name: "/*", action: allow }
    - { name: /, action: deny }
`);
    expect(compilePolicy(config).decide({ caller, operation: "", verb: "" })).toMatchObject({ allowed: false, rule: "app:app1/default:op:/" });
    expect(operationsNeverApplyingToTcp(config).map((operation) => [operation.name, operation.why, operation.decidedBy.name])).toEqual([["/*", "shadowed", "/"]]);
  });
});
