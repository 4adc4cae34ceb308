import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { compilePolicy, daprDifferences, parseAccessControl } from "../../src/policy/index.ts";
import type { AccessControlConfig } from "../../src/policy/index.ts";
import { daprTrie, daprTrieSearch } from "../../src/policy/dapr-differences.ts";
import { compileOperation, matchesBelow, normaliseOperation, PathSegments } from "../../src/policy/operation.ts";

/**
 * meshward's decide() against a port of Dapr's decision (dapr/dapr pkg/config/acl_trie.go Search,
 * pkg/acl/acl.go IsOperationAllowedByAccessControlPolicy: the found operation's verb, else its "*",
 * else the app default) for generated policies and paths that lie below an operation's name (an
 * operation with a last literal or in-segment glob decides them, in Dapr as in meshward: operation.ts
 * matchesBelow). Where daprDifferences() reports nothing, the two decide every such path and verb
 * alike. Names are literals and in-segment globs: a bare '*' before the last segment never matches in
 * Dapr (reported as never-matches-in-dapr where it allows), and the overlap check tries one path per
 * pair (dapr-differences.ts), which this generator would show for paths no operation covers.
 * FC_SEED=<n> replays a run.
 */
const SEGMENT = fc.constantFrom("a", "b", "ab", "a*", "*b");
const NAME = fc
  .tuple(fc.array(SEGMENT, { minLength: 1, maxLength: 3 }), fc.constant(false))
  .map(([segments, rest]) => `/${[...segments, ...(rest ? ["**"] : [])].join("/")}`);
const OPERATION = fc.record({
  name: NAME,
  httpVerb: fc.constantFrom(["*"], ["GET"], ["GET", "POST"], ["POST"]),
  action: fc.constantFrom("allow", "deny"),
});
const POLICY = fc.record({
  appDefault: fc.constantFrom("allow", "deny"),
  operations: fc.uniqueArray(OPERATION, { minLength: 1, maxLength: 4, selector: (op) => normaliseOperation(op.name) }),
});
const PATH = fc.array(fc.constantFrom("a", "b", "ab", "ba", "x"), { minLength: 1, maxLength: 4 }).map((s) => `/${s.join("/")}`);
const VERBS = ["GET", "POST", "DELETE"];
const caller = { trustDomain: "public", namespace: "default", appId: "app1" };

function daprDecides(config: AccessControlConfig, appDefault: string, path: string, verb: string): boolean {
  const operations = config.policies[0]!.operations;
  const index = daprTrieSearch(daprTrie(operations.map((op) => normaliseOperation(op.name).toLowerCase())), path);
  if (index === undefined) return appDefault === "allow";
  const op = operations[index]!;
  const action = op.httpVerb.includes(verb) || op.httpVerb.includes("*") ? op.action : appDefault;
  return action === "allow";
}

describe("decide() and Dapr's trie decide alike except where daprDifferences says otherwise", () => {
  it("for generated policies, paths and verbs", () => {
    let below = 0;
    const seed = process.env["FC_SEED"] === undefined ? undefined : Number(process.env["FC_SEED"]);
    fc.assert(
      fc.property(POLICY, fc.array(PATH, { minLength: 1, maxLength: 12 }), ({ appDefault, operations }, paths) => {
        const config = parseAccessControl({ accessControl: { defaultAction: "deny", policies: [{ appId: "app1", namespace: "default", defaultAction: appDefault, operations }] } });
        const differences = daprDifferences(config);
        const policy = compilePolicy(config);
        const patterns = operations.map((op) => compileOperation(op.name));
        const segments = new PathSegments();
        for (const path of paths) {
          segments.load(path);
          if (!patterns.some((pattern) => matchesBelow(pattern.segments, segments))) continue;
          below++;
          for (const verb of VERBS) {
            const mine = policy.decide({ caller, operation: path, verb }).allowed;
            const theirs = daprDecides(config, appDefault, path, verb);
            if (mine === theirs || differences.length > 0) continue;
            expect.fail(`${verb} ${path}: meshward ${mine ? "allows" : "denies"}, Dapr ${theirs ? "allows" : "denies"}, no difference reported for ${JSON.stringify({ appDefault, operations })}`);
          }
        }
      }),
      { numRuns: 3000, ...(seed === undefined ? {} : { seed }) },
    );
    // The generator does reach paths below an operation's name.
    expect(below).toBeGreaterThan(1000);
  });
});
