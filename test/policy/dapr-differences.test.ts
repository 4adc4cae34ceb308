import { describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import { compilePolicy, daprDifferences, parseAccessControl } from "../../src/policy/index.ts";

/**
 * Two deliberate differences from Dapr, made visible (policy review MEDIUM-1, MEDIUM-2):
 *   - dapr/dapr pkg/config/acl_trie.go findNodeWithWildcard walks a node's children in insertion
 *     order and returns the first that matches; meshward picks the most specific operation.
 *   - acl_trie.go PutOperationAction (`if subNode.Data == nil { subNode.Data = data }`) keeps the
 *     first entry of a repeated name; meshward merges the entries.
 */
const parse = (operations: string, appDefault = "deny") =>
  parseAccessControl(
    parseYaml(`accessControl:
  defaultAction: deny
  policies:
  - appId: app1
    namespace: default
    defaultAction: ${appDefault}
    operations:
${operations}`),
    "test.yaml",
  );
const caller = { trustDomain: "public", namespace: "default", appId: "app1" };

describe("daprDifferences: where first-declared (Dapr) and most-specific (meshward) decide differently", () => {
  it("a wildcard deny declared before a narrower allow it covers is reported (meshward allows, Dapr denies)", () => {
    const config = parse(`    - { name: /admin/*, httpVerb: ["*"], action: deny }
    - { name: /admin/health, httpVerb: [GET], action: allow }
`);
    // What meshward decides (unchanged): the more specific operation.
    expect(compilePolicy(config).decide({ caller, operation: "/admin/health", verb: "GET" })).toMatchObject({ allowed: true, rule: "app:app1/default:op:/admin/health:GET" });
    const found = daprDifferences(config);
    expect(found).toHaveLength(1);
    expect(found[0]).toMatchObject({ kind: "precedence", appId: "app1", namespace: "default", operations: ["/admin/*", "/admin/health"], operationIndexes: [0, 1] });
    expect(found[0]!.message).toMatch(/^app id app1 \(namespace default\): operation \/admin\/\* \(operations\[0\]\) is declared before \/admin\/health \(operations\[1\]\), which it covers, and they decide GET differently; .*Dapr the first declared \/admin\/\*: declare \/admin\/health first/);
  });

  it.each([
    ["the narrower one declared first (both pick it)", `    - { name: /admin/health, httpVerb: [GET], action: allow }\n    - { name: /admin/*, httpVerb: ["*"], action: deny }\n`],
    ["the same decision for every verb", `    - { name: /admin/**, httpVerb: ["*"], action: deny }\n    - { name: /admin/health, httpVerb: ["*"], action: deny }\n`],
    ["no overlap", `    - { name: /admin/*, httpVerb: ["*"], action: deny }\n    - { name: /public/health, httpVerb: [GET], action: allow }\n`],
    ["a deny GET under a deny-all wildcard, the default deny: same outcome", `    - { name: /admin/**, httpVerb: ["*"], action: deny }\n    - { name: /admin/x, httpVerb: [GET], action: deny }\n`],
  ])("not reported: %s", (_label, operations) => {
    expect(daprDifferences(parse(operations))).toEqual([]);
  });

  it("reports differing verbs, gRPC, and in-segment globs and '**'", () => {
    const verbs = daprDifferences(parse(`    - { name: /orders/**, httpVerb: [GET], action: allow }\n    - { name: /orders/*/items, httpVerb: [GET, DELETE], action: allow }\n`));
    expect(verbs.map((d) => [d.kind, d.operations])).toEqual([["precedence", ["/orders/**", "/orders/*/items"]]]);
    expect(verbs[0]!.message).toContain("decide DELETE differently");
    const grpc = daprDifferences(parse(`    - { name: /pkg.Admin/*, action: deny }\n    - { name: /pkg.Admin/Health, action: allow }\n`));
    expect(grpc.map((d) => d.operations)).toEqual([["/pkg.Admin/*", "/pkg.Admin/Health"]]);
    expect(grpc[0]!.message).toContain("decide gRPC calls differently");
    const glob = daprDifferences(parse(`    - { name: /reports/*, httpVerb: ["*"], action: allow }\n    - { name: /reports/secret-*.pdf, httpVerb: ["*"], action: deny }\n`, "allow"));
    expect(glob.map((d) => d.operations)).toEqual([["/reports/*", "/reports/secret-*.pdf"]]);
  });
});

describe("daprDifferences: a repeated operation name (meshward merges, Dapr keeps the first entry)", () => {
  it("is reported once per name, naming the entries", () => {
    const config = parse(`    - { name: /orders/**, httpVerb: [GET], action: allow }
    - { name: orders/**, httpVerb: [DELETE], action: allow }
    - { name: /x, httpVerb: [GET], action: allow }
`);
    // What meshward decides (unchanged): the entries are merged.
    expect(compilePolicy(config).decide({ caller, operation: "/orders/7", verb: "DELETE" }).allowed).toBe(true);
    const found = daprDifferences(config);
    expect(found).toEqual([
      expect.objectContaining({ kind: "repeated-name", appId: "app1", operations: ["/orders/**", "/orders/**"], operationIndexes: [0, 1] }),
    ]);
    expect(found[0]!.message).toMatch(/app id app1 \(namespace default\): operation \/orders\/\*\* is listed 2 times \(operations\[0\], \[1\]\); meshward merges the entries, Dapr uses only the first one/);
  });

  it("nothing for a policy without repeats or overlaps", () => {
    expect(daprDifferences(parse(`    - { name: /a, httpVerb: [GET], action: allow }\n    - { name: /b, httpVerb: [GET], action: deny }\n`))).toEqual([]);
  });
});
