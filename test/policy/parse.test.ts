import { describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import { isMeshwardError } from "../../src/errors.ts";
import { parseAccessControl } from "../../src/policy/index.ts";
import { normaliseOperation, operationNameProblem } from "../../src/policy/operation.ts";
import { canonicalPath } from "../../src/proxy/canonical.ts";

function refusal(fn: () => unknown): { code: string; message: string; path: unknown } {
  try {
    fn();
  } catch (error) {
    if (isMeshwardError(error)) return { code: error.code, message: error.message, path: error.details?.path };
    throw error;
  }
  throw new Error("expected a refusal, got none");
}

describe("parseAccessControl accepts Dapr's shapes", () => {
  it("a kind: Configuration document with spec.accessControl", () => {
    const config = parseAccessControl(
      parseYaml(`
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata: { name: c }
spec:
  accessControl:
    defaultAction: DENY
    trustDomain: Public
    policies:
    - appId: app1
      namespace: default
      operations: [{ name: op1, httpVerb: [GET, "*"], action: allow }]
`),
    );
    expect(config.present).toBe(true);
    expect(config.defaultAction).toBe("deny");
    expect(config.trustDomain).toBe("public");
    expect(config.policies).toEqual([
      { appId: "app1", namespace: "default", trustDomain: "public", defaultAction: undefined, operations: [{ name: "/op1", httpVerb: ["GET", "*"], action: "allow" }] },
    ]);
  });

  it("a bare accessControl block, and a document holding only accessControl", () => {
    expect(parseAccessControl({ defaultAction: "allow" }).defaultAction).toBe("allow");
    expect(parseAccessControl({ accessControl: { defaultAction: "deny" } }).defaultAction).toBe("deny");
  });

  it("no accessControl ⇒ present: false", () => {
    expect(parseAccessControl({ kind: "Configuration", spec: { tracing: {} } }).present).toBe(false);
    expect(parseAccessControl(undefined).present).toBe(false);
  });
});

describe("parseAccessControl refuses bad input with the field's path", () => {
  const base = (policy: object) => ({ kind: "Configuration", spec: { accessControl: { defaultAction: "deny", policies: [policy] } } });
  it.each([
    ["bad defaultAction", { kind: "Configuration", spec: { accessControl: { defaultAction: "alow" } } }, "spec.accessControl.defaultAction", /allow" or "deny/],
    ["missing namespace", base({ appId: "a" }), "spec.accessControl.policies[0].namespace", /./],
    ["missing appId", base({ namespace: "n" }), "spec.accessControl.policies[0].appId", /./],
    ["old 'app' field", base({ app: "a", namespace: "n" }), "spec.accessControl.policies[0].app", /appId/],
    ["unknown field (typo)", base({ appId: "a", namespace: "n", defaultaction: "deny" }), "spec.accessControl.policies[0]", /unknown field "defaultaction"/],
    ["bad trust domain", base({ appId: "a", namespace: "n", trustDomain: "bad domain!" }), "spec.accessControl.policies[0].trustDomain", /trust domain/],
    ["bad verb", base({ appId: "a", namespace: "n", operations: [{ name: "/x", httpVerb: ["GET /"] }] }), "spec.accessControl.policies[0].operations[0].httpVerb[0]", /verb/],
    // dapr/dapr pkg/acl/acl.go keeps the verb as written (VerbAction[verb]) and looks up the
    // request's upper-case verb: "get" never matches there; methods are case-sensitive (RFC 9110 §9.1).
    ["a lower-case verb", base({ appId: "a", namespace: "n", operations: [{ name: "/x", httpVerb: ["*", "get"], action: "allow" }] }), "spec.accessControl.policies[0].operations[0].httpVerb[1]", /: httpVerb "get" is not a method: methods are case-sensitive, write "GET"$/],
    ["a mixed-case verb", base({ appId: "a", namespace: "n", operations: [{ name: "/x", httpVerb: ["Delete"], action: "deny" }] }), "spec.accessControl.policies[0].operations[0].httpVerb[0]", /httpVerb "Delete" is not a method: methods are case-sensitive, write "DELETE"/],
    ["'**' in the middle", base({ appId: "a", namespace: "n", operations: [{ name: "/a/**/b" }] }), "spec.accessControl.policies[0].operations[0].name", /last segment/],
    ["too many globs", base({ appId: "a", namespace: "n", operations: [{ name: "/a*b*c*d*e" }] }), "spec.accessControl.policies[0].operations[0].name", /wildcards/],
    ["empty operation name", base({ appId: "a", namespace: "n", operations: [{ name: "" }] }), "spec.accessControl.policies[0].operations[0].name", /empty/],
    [
      "a non-ASCII character, which a request path carries encoded",
      base({ appId: "a", namespace: "n", operations: [{ name: "/admin/**" }, { name: "/données/**", httpVerb: ["*"], action: "deny" }] }),
      "spec.accessControl.policies[0].operations[1].name",
      /"\/données\/\*\*" holds "é" \(%C3%A9\).*never match: write "\/donn%C3%A9es\/\*\*"/,
    ],
    ["a space", base({ appId: "a", namespace: "n", operations: [{ name: "/admin panel/**" }] }), "spec.accessControl.policies[0].operations[0].name", /write "\/admin%20panel\/\*\*"/],
    ["a raw ';'", base({ appId: "a", namespace: "n", operations: [{ name: "/a;b" }] }), "spec.accessControl.policies[0].operations[0].name", /write "\/a%3Bb"/],
    ["a '%' that starts no escape", base({ appId: "a", namespace: "n", operations: [{ name: "/100%/x" }] }), "spec.accessControl.policies[0].operations[0].name", /write "\/100%25\/x"/],
    ["a control character", base({ appId: "a", namespace: "n", operations: [{ name: "/a\tb" }] }), "spec.accessControl.policies[0].operations[0].name", /control character.*never match/],
    ["an escaped control character", base({ appId: "a", namespace: "n", operations: [{ name: "/a%0ab" }] }), "spec.accessControl.policies[0].operations[0].name", /%0A, an escaped control character/],
    ["an escaped '*' (requests have it decoded)", base({ appId: "a", namespace: "n", operations: [{ name: "/a%2ab" }] }), "spec.accessControl.policies[0].operations[0].name", /%2A.*never match/],
    ["a backslash", base({ appId: "a", namespace: "n", operations: [{ name: "/a\\b" }] }), "spec.accessControl.policies[0].operations[0].name", /backslash/],
    [
      "conflicting duplicate operation",
      base({ appId: "a", namespace: "n", operations: [{ name: "/x", httpVerb: ["GET"], action: "allow" }, { name: "x", httpVerb: ["GET"], action: "deny" }] }),
      "spec.accessControl.policies[0].operations[1]",
      /different actions/,
    ],
    ["wrong kind", { kind: "Component", spec: {} }, "kind", /Configuration/],
    ["not a mapping", ["x"], "(document)", /mapping/],
  ])("%s", (_label, doc, field, message) => {
    const r = refusal(() => parseAccessControl(doc, "cfg.yaml"));
    expect(r.code).toBe("E_POLICY_INVALID");
    expect(r.message).toContain(`cfg.yaml: ${field}`);
    expect(r.message).toMatch(message);
  });

  it("refuses a duplicate (appId, namespace, trustDomain) policy but accepts the same app id in two namespaces", () => {
    const two = { accessControl: { policies: [{ appId: "a", namespace: "n1" }, { appId: "a", namespace: "n2" }] } };
    expect(parseAccessControl(two).policies).toHaveLength(2);
    const dup = { accessControl: { policies: [{ appId: "a", namespace: "n1" }, { appId: "a", namespace: "n1", trustDomain: "public" }] } };
    expect(refusal(() => parseAccessControl(dup)).message).toMatch(/duplicate policy.*policies\[0\]/);
  });

  it("uses the locate callback for file:line", () => {
    const seen: unknown[] = [];
    const r = refusal(() =>
      parseAccessControl({ accessControl: { defaultAction: "maybe" } }, "cfg.yaml", (path) => {
        seen.push(path);
        return "cfg.yaml:7";
      }),
    );
    expect(seen).toEqual([["accessControl", "defaultAction"]]);
    expect(r.message.startsWith("cfg.yaml:7: accessControl.defaultAction:")).toBe(true);
  });
});

describe("normaliseOperation (Dapr's purell normalisation)", () => {
  it.each([
    ["path", "/path"],
    ["/path", "/path"],
    ["///path", "/path"],
    ["../path", "/path"],
    ["path%72", "/pathr"],
    ["/a/./b/../c/", "/a/c"],
    ["/a%2Fb", "/a%2Fb"],
    ["/a?x=/admin#frag", "/a"],
    ["", "/"],
    ["/", "/"],
    ["/pkg.Service/Method", "/pkg.Service/Method"],
  ])("%s → %s", (input, expected) => {
    expect(normaliseOperation(input)).toBe(expected);
  });
});

describe("operation names hold only what a canonical request path can (src/proxy/canonical.ts)", () => {
  const samples = [...Array.from({ length: 128 }, (_, c) => String.fromCharCode(c)), "é", "É", "\u00a0", "€", "😀"];

  it.each(samples.filter((c) => c !== "?" && c !== "#").map((c) => [JSON.stringify(c), c]))("%s: accepted exactly when a request path keeps it as it is", (_label, c) => {
    const name = `/a${c}b`;
    expect(operationNameProblem(name) === undefined).toBe(canonicalPath(name, "keep") === name);
  });

  it("the form a refusal says to write is the one the canonical path spells", () => {
    let refused = 0;
    for (const c of samples) {
      const problem = operationNameProblem(`/a${c}b`);
      const written = problem?.match(/write "(.+)" \(UTF-8/)?.[1];
      if (written === undefined) continue;
      refused++;
      expect(canonicalPath(written, "keep")).toBe(written);
      expect(canonicalPath(`/a${encodeURIComponent(c).toLowerCase()}b`, "keep")).toBe(written);
      expect(operationNameProblem(written)).toBeUndefined();
    }
    // space " % < > [ ] ^ ` { | } ; and the five non-ASCII samples
    expect(refused).toBe(18);
  });
});
