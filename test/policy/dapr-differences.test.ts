import { describe, expect, it } from "vitest";
import { APP1_CALLER, parseApp1Policy } from "../helpers/app1-policy.ts";
import { compilePolicy, daprDifferences } from "../../src/policy/index.ts";
import { daprTrie, daprTrieSearch, representativePaths } from "../../src/policy/dapr-differences.ts";
import { compileOperation } from "../../src/policy/operation.ts";

/**
 * Two deliberate differences from Dapr, made visible (policy review MEDIUM-1, MEDIUM-2):
 *   - dapr/dapr pkg/config/acl_trie.go findNodeWithWildcard walks a node's children in insertion
 *     order and returns the first that matches; meshward picks the most specific operation.
 *   - acl_trie.go PutOperationAction (`if subNode.Data == nil { subNode.Data = data }`) keeps the
 *     first entry of a repeated name; meshward merges the entries.
 */
const parse = parseApp1Policy;
const caller = APP1_CALLER;

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
    // /orders/*/items also allows what Dapr, where a bare '*' before the last segment never matches, leaves to the default.
    expect(verbs.map((d) => [d.kind, d.operations])).toEqual([["precedence", ["/orders/**", "/orders/*/items"]], ["never-matches-in-dapr", ["/orders/*/items", "/orders/*/items"]]]);
    expect(verbs[0]!.message).toContain("decide DELETE differently");
    const grpc = daprDifferences(parse(`    - { name: /pkg.Admin/*, action: deny }\n    - { name: /pkg.Admin/Health, action: allow }\n`));
    expect(grpc.map((d) => d.operations)).toEqual([["/pkg.Admin/*", "/pkg.Admin/Health"]]);
    expect(grpc[0]!.message).toContain("decide gRPC calls differently");
    const glob = daprDifferences(parse(`    - { name: /reports/*, httpVerb: ["*"], action: allow }\n    - { name: /reports/secret-*.pdf, httpVerb: ["*"], action: deny }\n`, "allow"));
    expect(glob.map((d) => d.operations)).toEqual([["/reports/*", "/reports/secret-*.pdf"]]);
  });
});

/**
 * The precedence check reports a wildcard declared before a narrower operation it covers only where
 * Dapr's trie really takes the wildcard for the narrower one's path (and meshward the narrower one).
 * dapr/dapr pkg/config/acl_trie.go: PutOperationAction stores `/a/**` as the `/**` child of the node
 * `/a` and sets that node's Data for `/a`, in either order; Search("/a") answers with the node `/a`
 * (it holds data), so `/a` decides the path `/a` in Dapr whatever is declared first. And the trie's
 * children are in the order they were made, not the order of the operations that name them: a
 * `/a/b/c` declared first made the node `/a/b` before `/a/*`'s `/*`, so Search("/a/b") takes `/a/b`.
 */
describe("daprDifferences: precedence only where Dapr's trie takes the wildcard declared first", () => {
  const daprOperation = (names: readonly string[], path: string) => {
    const index = daprTrieSearch(daprTrie(names), path);
    return index === undefined ? undefined : names[index];
  };

  it("/a/** declared before /a: not a precedence (Dapr uses /a for /a too); the real difference below /a is reported as prefix", () => {
    const config = parse(`    - { name: /a/**, httpVerb: [GET], action: allow }\n    - { name: /a, httpVerb: ["*"], action: deny }\n`);
    expect(daprOperation(["/a/**", "/a"], "/a")).toBe("/a");
    expect(compilePolicy(config).decide({ caller, operation: "/a", verb: "GET" })).toMatchObject({ allowed: false, rule: "app:app1/default:op:/a:*" });
    const found = daprDifferences(config);
    expect(found.filter((d) => d.kind === "precedence")).toEqual([]);
    // Below /a the two do differ: Dapr meets the node /a first (it holds data), meshward uses /a/**.
    expect(daprOperation(["/a/**", "/a"], "/a/x")).toBe("/a");
    expect(found.map((d) => [d.kind, d.operations])).toEqual([["prefix", ["/a/**", "/a"]]]);
    expect(found[0]!.message).toContain("for /a/x meshward uses /a/**");
  });

  it("/a/** declared before /a with the same action below /a: nothing at all", () => {
    expect(daprDifferences(parse(`    - { name: /a/**, httpVerb: ["*"], action: deny }\n    - { name: /a, httpVerb: [GET], action: deny }\n`))).toEqual([]);
  });

  it("/a/* declared before /a/b, whose node /a/b/c made first: Dapr takes /a/b, not reported", () => {
    const names = ["/a/b/c", "/a/*", "/a/b"];
    expect(daprOperation(names, "/a/b")).toBe("/a/b");
    const config = parse(`    - { name: /a/b/c, httpVerb: ["*"], action: allow }\n    - { name: /a/*, httpVerb: ["*"], action: deny }\n    - { name: /a/b, httpVerb: [GET], action: allow }\n`);
    expect(daprDifferences(config).filter((d) => d.kind === "precedence")).toEqual([]);
  });

  it("still reported where Dapr does take the wildcard: /a/** before /a/b (its /** child comes first), /admin/* before /admin/health", () => {
    expect(daprOperation(["/a/**", "/a/b"], "/a/b")).toBe("/a/**");
    const rest = daprDifferences(parse(`    - { name: /a/**, httpVerb: ["*"], action: deny }\n    - { name: /a/b, httpVerb: [GET], action: allow }\n`));
    expect(rest.map((d) => [d.kind, d.operations])).toEqual([["precedence", ["/a/**", "/a/b"]]]);
    expect(rest[0]!.message).toContain("for /a/b meshward uses the more specific /a/b, Dapr the first declared /a/**");
    expect(daprOperation(["/admin/*", "/admin/health"], "/admin/health")).toBe("/admin/*");
    expect(daprDifferences(parse(`    - { name: /admin/*, httpVerb: ["*"], action: deny }\n    - { name: /admin/health, httpVerb: [GET], action: allow }\n`)).map((d) => d.kind)).toEqual(["precedence"]);
  });

  // The path / is decided as in Dapr (decide.ts rule 8): with /** declared before a / deny, both
  // take /** for /, and the / deny never decides anything. The two agree, but the file reads
  // stricter than what either enforces: reported as precedence (MW-ACCESS-007), not silently.
  it("/** declared before /: both use /** for the path /, and the / that never decides it is reported", () => {
    expect(daprOperation(["/**", "/"], "/")).toBe("/**");
    const config = parse(`    - { name: /**, httpVerb: ["*"], action: allow }\n    - { name: /, httpVerb: ["*"], action: deny }\n`);
    expect(compilePolicy(config).decide({ caller, operation: "/", verb: "GET" })).toMatchObject({ allowed: true, rule: "app:app1/default:op:/**:*" });
    const found = daprDifferences(config);
    expect(found.map((d) => [d.kind, d.operations, d.operationIndexes])).toEqual([["precedence", ["/**", "/"], [0, 1]]]);
    expect(found[0]!.message).toContain("for the path / Dapr and meshward both use the first declared /**, so / never decides it");
    // Declared first, / decides / in both, and nothing is reported.
    expect(daprDifferences(parse(`    - { name: /, httpVerb: ["*"], action: deny }\n    - { name: /**, httpVerb: ["*"], action: allow }\n`))).toEqual([]);
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

/**
 * Overlaps where neither operation covers the other. Dapr's trie (dapr/dapr pkg/config/acl_trie.go
 * Search, findNodeWithWildcard) descends segment by segment into the first child, in insertion
 * order, that matches, with a bare `*` only as the last segment, and never goes back.
 */
describe("daprDifferences: overlapping operations neither of which covers the other", () => {
  it("a port of Dapr's trie answers as acl_trie_search_test.go and acl.go read", () => {
    const trie = daprTrie(["/api/v1/*", "/api/v1/state", "/api/**", "/a/*/c", "/a/b/*", "/x/y*"]);
    expect(daprTrieSearch(trie, "/api/v1/state")).toBe(0); // a wildcard registered before a sibling exact leaf shadows it
    expect(daprTrieSearch(trie, "/api/v1/foo/bar")).toBeUndefined(); // '/*' matches one segment; '/api/**' is a sibling of /api's child v1, never reached
    expect(daprTrieSearch(trie, "/a/b/c")).toBe(4);
    expect(daprTrieSearch(trie, "/a/z/c")).toBeUndefined(); // a bare '*' before the last segment never matches
    expect(daprTrieSearch(daprTrie(["/op3/a/*"]), "/op3/a")).toBe(0); // a trailing '/*' matches the bare prefix (pkg/acl/acl_test.go)
    expect(daprTrieSearch(trie, "/a/b")).toBeUndefined(); // … unless an earlier '/*' child (of /a/*/c) is taken for the last segment first
    expect(daprTrieSearch(trie, "/x/yz")).toBe(5);
    expect(daprTrieSearch(daprTrie(["/a/b", "/a/b"]), "/a/b/c/d")).toBe(0); // an operation with data on the way answers for everything below it
  });

  it("/a/*c deny and /a/bb* allow: meshward uses the more literal /a/bb*, Dapr the first declared /a/*c (reported)", () => {
    const config = parse(`    - { name: /a/*c, httpVerb: ["*"], action: deny }\n    - { name: /a/bb*, httpVerb: ["*"], action: allow }\n`);
    expect(compilePolicy(config).decide({ caller, operation: "/a/bbc", verb: "GET" }).allowed).toBe(true);
    const found = daprDifferences(config);
    expect(found.map((d) => [d.kind, d.operations, d.operationIndexes])).toEqual([["overlap", ["/a/*c", "/a/bb*"], [0, 1]]]);
    expect(found[0]!.message).toMatch(/operations \/a\/\*c \(operations\[0\]\) and \/a\/bb\* \(operations\[1\]\) both match \/a\/bb\S*c, neither covering the other; there meshward uses \/a\/bb\*, Dapr \/a\/\*c, and they decide GET differently|decide the other verbs differently/);
  });

  it("/a/*/c allow and /*/b/** deny: meshward allows /a/b/c, Dapr finds neither (no backtracking) and applies the default (reported)", () => {
    for (const operations of [
      `    - { name: /a/*/c, httpVerb: ["*"], action: allow }\n    - { name: /*/b/**, httpVerb: ["*"], action: deny }\n`,
      `    - { name: /*/b/**, httpVerb: ["*"], action: deny }\n    - { name: /a/*/c, httpVerb: ["*"], action: allow }\n`,
    ]) {
      const config = parse(operations);
      expect(compilePolicy(config).decide({ caller, operation: "/a/b/c", verb: "GET" }).allowed).toBe(true);
      const found = daprDifferences(config);
      expect(found.map((d) => d.kind)).toEqual(["overlap", "never-matches-in-dapr"]);
      expect(found[0]!.message).toContain("both match /a/b/c");
      expect(found[0]!.message).toContain("Dapr none of them");
    }
  });

  it.each([
    ["/a/*/c allow, /a/b/* deny (both deny /a/b/c: Dapr descends into b, meshward ranks b over *)", `    - { name: /a/*/c, httpVerb: ["*"], action: allow }\n    - { name: /a/b/*, httpVerb: ["*"], action: deny }\n`],
    ["/a/b/* deny, /a/*/c allow (the other order: the same)", `    - { name: /a/b/*, httpVerb: ["*"], action: deny }\n    - { name: /a/*/c, httpVerb: ["*"], action: allow }\n`],
    ["/a/x* and /a/*y, equally specific: both take the first declared", `    - { name: /a/x*, httpVerb: ["*"], action: allow }\n    - { name: /a/*y, httpVerb: ["*"], action: deny }\n`],
    ["/a/*c and /a/bb*, the same action", `    - { name: /a/*c, httpVerb: ["*"], action: allow }\n    - { name: /a/bb*, httpVerb: ["*"], action: allow }\n`],
    ["/a/*/c and /*/b/** deny both, default deny", `    - { name: /a/*/c, httpVerb: ["*"], action: deny }\n    - { name: /*/b/**, httpVerb: ["*"], action: deny }\n`],
    ["disjoint: /a/*/c and /a/b/d", `    - { name: /a/*/c, httpVerb: ["*"], action: allow }\n    - { name: /a/b/d, httpVerb: ["*"], action: deny }\n`],
  ])("not reported: %s", (_label, operations) => {
    expect(daprDifferences(parse(operations)).filter((d) => d.kind === "overlap")).toEqual([]);
  });
});

/**
 * An operation with a last literal or in-segment glob decides the paths below it in both; Dapr's
 * Search answers with the first such operation on the way down (acl_trie.go), meshward with an
 * operation that matches the path itself first, then the longest covering one.
 */
describe("daprDifferences: an operation covering the paths below it (kind prefix)", () => {
  it("/a deny and /a/b/** allow: meshward allows /a/b/x, Dapr denies (it meets /a first): reported, in either order", () => {
    for (const operations of [
      `    - { name: /a, httpVerb: ["*"], action: deny }\n    - { name: /a/b/**, httpVerb: ["*"], action: allow }\n`,
      `    - { name: /a/b/**, httpVerb: ["*"], action: allow }\n    - { name: /a, httpVerb: ["*"], action: deny }\n`,
    ]) {
      const config = parse(operations, "allow");
      expect(compilePolicy(config).decide({ caller, operation: "/a/b/x", verb: "GET" }).allowed).toBe(true);
      expect(daprTrieSearch(daprTrie(config.policies[0]!.operations.map((op) => op.name)), "/a/b/x")).toBe(operations.startsWith("    - { name: /a,") ? 0 : 1);
      const found = daprDifferences(config);
      expect(found.map((d) => [d.kind, d.operations])).toEqual([["prefix", operations.startsWith("    - { name: /a,") ? ["/a", "/a/b/**"] : ["/a/b/**", "/a"]]]);
      expect(found[0]!.message).toMatch(/operation \/a \(operations\[\d\]\) also decides the paths below it, in Dapr as in meshward, and \/a\/b\/\*\* \(operations\[\d\]\) lies along it; for \/a\/b\S* meshward uses \/a\/b\/\*\*, Dapr \/a, the first operation its trie meets/);
    }
  });

  it("/a deny and /a/b allow (a literal): Dapr's /a shadows /a/b entirely: reported", () => {
    const found = daprDifferences(parse(`    - { name: /a/b, httpVerb: [GET], action: allow }\n    - { name: /a, httpVerb: ["*"], action: deny }\n`, "allow"));
    expect(found.map((d) => [d.kind, d.operations, d.operationIndexes])).toEqual([["prefix", ["/a/b", "/a"], [0, 1]]]);
  });

  it("an in-segment glob covering a path Dapr's walk leaves for a literal branch: /op7/a/b/* then /op7/a/b* (Dapr's acl_test)", () => {
    const config = parse(`    - { name: /op7/a/b/*, action: allow }\n    - { name: /op7/a/b*, action: allow }\n`);
    expect(compilePolicy(config).decide({ caller, operation: "/op7/a/b/c/d", verb: "" }).allowed).toBe(true);
    const found = daprDifferences(config);
    expect(found.map((d) => [d.kind, d.operations])).toEqual([["prefix", ["/op7/a/b/*", "/op7/a/b*"]]]);
    expect(found[0]!.message).toContain("Dapr none");
    expect(found[0]!.message).toContain("decide gRPC calls differently");
  });

  it.each([
    ["/admin deny alone", `    - { name: /admin, httpVerb: ["*"], action: deny }\n`],
    ["/admin deny and /admin/health deny", `    - { name: /admin, httpVerb: ["*"], action: deny }\n    - { name: /admin/health, httpVerb: ["*"], action: deny }\n`],
    ["/admin deny and /administrator allow (not below it)", `    - { name: /admin, httpVerb: ["*"], action: deny }\n    - { name: /administrator/**, httpVerb: ["*"], action: allow }\n`],
    ["/a/* allow and /a/b deny (a last '*' covers nothing below)", `    - { name: /a/*, httpVerb: ["*"], action: allow }\n    - { name: /b, httpVerb: ["*"], action: deny }\n`],
  ])("not reported: %s", (_label, operations) => {
    expect(daprDifferences(parse(operations, "allow")).filter((d) => d.kind === "prefix")).toEqual([]);
  });
});

describe("daprDifferences: a bare '*' before the last segment never matches in Dapr (kind never-matches-in-dapr)", () => {
  it("an allow the app default denies is reported (meshward allows what Dapr leaves to the default)", () => {
    const config = parse(`    - { name: /orders/*/items, httpVerb: [GET], action: allow }\n`);
    expect(compilePolicy(config).decide({ caller, operation: "/orders/7/items", verb: "GET" }).allowed).toBe(true);
    expect(daprTrieSearch(daprTrie(["/orders/*/items"]), "/orders/7/items")).toBeUndefined();
    const found = daprDifferences(config);
    expect(found).toEqual([expect.objectContaining({ kind: "never-matches-in-dapr", operations: ["/orders/*/items", "/orders/*/items"], operationIndexes: [0, 0] })]);
    expect(found[0]!.message).toMatch(/operation \/orders\/\*\/items \(operations\[0\]\) has a bare '\*' before its last segment, which never matches in Dapr .* allows GET/);
    expect(daprDifferences(parse(`    - { name: /pkg/*/Get, action: allow }\n`))[0]!.message).toContain("allows gRPC calls");
  });

  it.each([
    ["a deny (meshward the stricter)", `    - { name: /orders/*/items, httpVerb: ["*"], action: deny }\n`, "deny"],
    ["an allow where the app default allows", `    - { name: /orders/*/items, httpVerb: [GET], action: allow }\n`, "allow"],
    ["a last '*' (matches in Dapr)", `    - { name: /orders/*, httpVerb: [GET], action: allow }\n`, "deny"],
    ["'**' last", `    - { name: /orders/**, httpVerb: [GET], action: allow }\n`, "deny"],
  ])("not reported: %s", (_label, operations, appDefault) => {
    expect(daprDifferences(parse(operations, appDefault)).filter((d) => d.kind === "never-matches-in-dapr")).toEqual([]);
  });
});

/**
 * Trailing `*` and `**` beside literal branches: Dapr's trie (dapr/dapr pkg/config/acl_trie.go Search,
 * findNodeWithWildcard) takes, segment by segment, the first child in insertion order that matches and
 * never goes back, so a literal branch taken for a segment hides a `/*` or `/**` sibling for the rest of
 * the path. Found by dapr-trie.property.test.ts once it generated these shapes (FC_SEED=42).
 */
describe("daprDifferences: every path class is read by both (trailing '*' and '**' beside literal branches)", () => {
  it("/a/a allow, /** deny, default allow: for /a/x Dapr takes the branch of /a/a, finds nothing and allows; meshward denies (/**): reported", () => {
    const config = parse(`    - { name: /a/a, httpVerb: ["*"], action: allow }\n    - { name: /**, httpVerb: ["*"], action: deny }\n`, "allow");
    expect(compilePolicy(config).decide({ caller, operation: "/a/x", verb: "GET" }).allowed).toBe(false);
    expect(daprTrieSearch(daprTrie(["/a/a", "/**"]), "/a/x")).toBeUndefined();
    const found = daprDifferences(config);
    expect(found.map((d) => [d.kind, d.operations, d.operationIndexes])).toEqual([["overlap", ["/a/a", "/**"], [0, 1]]]);
    expect(found[0]!.message).toContain("for /a meshward uses /** (operations[1]), Dapr none, so the default action (allow): its trie took the branch of /a/a (operations[0])");
  });

  it("/ab/a*/** deny, /* allow GET, default deny: meshward allows GET /ab, Dapr (stuck in the /ab branch) denies: reported", () => {
    const config = parse(`    - { name: /ab/a*/**, httpVerb: [POST], action: deny }\n    - { name: /*, httpVerb: [GET], action: allow }\n`);
    expect(compilePolicy(config).decide({ caller, operation: "/ab", verb: "GET" }).allowed).toBe(true);
    expect(daprTrieSearch(daprTrie(["/ab/a*/**", "/*"]), "/ab")).toBeUndefined();
    const found = daprDifferences(config);
    expect(found.map((d) => [d.kind, d.operations])).toEqual([["overlap", ["/ab/a*/**", "/*"]]]);
    expect(found[0]!.message).toContain("for /ab meshward uses /* (operations[1]), Dapr none, so the default action (deny)");
    expect(found[0]!.message).toContain("decide GET differently");
  });

  it("/a* allow and /a/b/** deny (a glob sibling declared first): Dapr's /a* decides /a/b/x, meshward /a/b/**: reported", () => {
    const config = parse(`    - { name: /a*, httpVerb: ["*"], action: allow }\n    - { name: /a/b/**, httpVerb: ["*"], action: deny }\n`);
    expect(compilePolicy(config).decide({ caller, operation: "/a/b/x", verb: "GET" }).allowed).toBe(false);
    const found = daprDifferences(config);
    expect(found.map((d) => [d.kind, d.operations])).toEqual([["prefix", ["/a*", "/a/b/**"]]]);
  });

  it.each([
    ["/admin/** allow declared before /admin allow", `    - { name: /admin/**, httpVerb: ["*"], action: allow }\n    - { name: /admin, httpVerb: ["*"], action: allow }\n`],
    ["/a/* and /a/b, the same action", `    - { name: /a/b, httpVerb: ["*"], action: deny }\n    - { name: /a/*, httpVerb: ["*"], action: deny }\n`],
    ["/a/** and /b/**, disjoint", `    - { name: /a/**, httpVerb: ["*"], action: allow }\n    - { name: /b/**, httpVerb: ["*"], action: deny }\n`],
    ["/a/b/* allow declared before /a/** allow, default allow: where Dapr stops in /a/b it allows too", `    - { name: /a/b/*, httpVerb: ["*"], action: allow }\n    - { name: /a/**, httpVerb: ["*"], action: allow }\n`],
  ])("not reported: %s", (_label, operations) => {
    expect(daprDifferences(parse(operations, "allow"))).toEqual([]);
  });
});

describe("representativePaths: one path per class the two matchers can tell apart", () => {
  it("covers the overlapped short segments of prefix/suffix globs (/a matches a* and *a, not a*a)", () => {
    const paths = representativePaths(["/a*", "/*a", "/a*a"].map((name) => compileOperation(name)));
    // a* and *a only; all three; a* only; *a only; none.
    expect(paths).toEqual(expect.arrayContaining(["/a", "/aa", "/ax", "/xa", "/x"]));
  });

  it("extends a prefix no name continues by one segment only", () => {
    expect(representativePaths([compileOperation("/a/**")])).toEqual(["/", "/x", "/x/x", "/a", "/a/x"]);
  });
});
