import { describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import { compilePolicy, parseAccessControl, type AccessRequest, type Caller } from "../../src/policy/index.ts";
import { canonicalPath } from "../../src/proxy/canonical.ts";

function policyFrom(yaml: string) {
  return compilePolicy(parseAccessControl(parseYaml(yaml), "test.yaml"));
}

const caller = (appId: string, namespace = "default", trustDomain = "public"): Caller => ({ appId, namespace, trustDomain });
const http = (c: Caller | undefined, verb: string, operation: string): AccessRequest => ({ caller: c, verb, operation });
const grpc = (c: Caller | undefined, operation: string): AccessRequest => ({ caller: c, verb: "", operation });

// One policy that exercises every rule; each row below names the rule it proves.
const MAIN = `
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata: { name: appconfig }
spec:
  accessControl:
    defaultAction: deny
    trustDomain: public
    policies:
    - appId: orders
      namespace: default
      defaultAction: allow
      operations:
      - { name: /admin/**, httpVerb: ["*"], action: deny }
      - { name: /admin/health, httpVerb: [GET], action: allow }
      - { name: /v1/items/*, httpVerb: [GET, POST], action: deny }
      - { name: /v1/items/special, httpVerb: [GET], action: allow }
      - { name: /Report*, httpVerb: [GET], action: deny }
      - { name: /files/*, httpVerb: [GET], action: deny }
      - { name: /files/*, httpVerb: [HEAD], action: allow }
    - appId: orders
      namespace: staging
      trustDomain: public
      defaultAction: deny
      operations:
      - { name: /v1/items/*, httpVerb: [GET], action: allow }
    - appId: caller-app
      namespace: default
      defaultAction: deny
      operations:
      - { name: /works/*, httpVerb: [GET], action: allow }
      - { name: /shouldalso/work/*, httpVerb: [GET], action: allow }
    - appId: grpc-app
      namespace: app-namespace
      trustDomain: public
      operations:
      - { action: allow, name: /pkg.Orders/Get }
      - { action: allow, name: /pkg.Orders/List }
      - { action: allow, name: /pkg.Inventory/* }
      - { action: deny, name: /pkg.Inventory/Drop }
    - appId: billing
      namespace: default
      trustDomain: corp.example
      defaultAction: allow
`;

interface Row {
  rule: string;
  request: AccessRequest;
  allowed: boolean;
  decidedBy: string;
}

const ROWS: Row[] = [
  { rule: "unverifiable caller ⇒ global default", request: http(undefined, "GET", "/v1/items/1"), allowed: false, decidedBy: "global-default" },
  { rule: "no policy for the caller's app id ⇒ global default", request: http(caller("stranger"), "GET", "/"), allowed: false, decidedBy: "global-default" },
  { rule: "namespace mismatch ⇒ policy ignored ⇒ global default", request: http(caller("orders", "prod"), "GET", "/x"), allowed: false, decidedBy: "global-default" },
  { rule: "trust domain mismatch ⇒ policy ignored ⇒ global default", request: http(caller("orders", "default", "other.org"), "GET", "/x"), allowed: false, decidedBy: "global-default" },
  { rule: "policy trustDomain defaults to public", request: http(caller("orders"), "GET", "/anything"), allowed: true, decidedBy: "app:orders/default:default-action" },
  { rule: "explicit policy trust domain matches", request: http(caller("billing", "default", "corp.example"), "GET", "/x"), allowed: true, decidedBy: "app:billing/default:default-action" },
  { rule: "explicit policy trust domain: public caller does not match", request: http(caller("billing"), "GET", "/x"), allowed: false, decidedBy: "global-default" },
  { rule: "app default when no operation matches", request: http(caller("orders"), "DELETE", "/v2/other"), allowed: true, decidedBy: "app:orders/default:default-action" },
  { rule: "same app id, other namespace = other policy (#2124)", request: http(caller("orders", "staging"), "DELETE", "/v2/other"), allowed: false, decidedBy: "app:orders/staging:default-action" },
  { rule: "same app id, other namespace, its own operation", request: http(caller("orders", "staging"), "GET", "/v1/items/7"), allowed: true, decidedBy: "app:orders/staging:op:/v1/items/*:GET" },
  { rule: "specific verb matched", request: http(caller("orders"), "POST", "/v1/items/7"), allowed: false, decidedBy: "app:orders/default:op:/v1/items/*:POST" },
  { rule: "verb not listed ⇒ app default (no fall-through)", request: http(caller("orders"), "PUT", "/v1/items/7"), allowed: true, decidedBy: "app:orders/default:default-action" },
  { rule: "'*' verb matches any verb", request: http(caller("orders"), "PATCH", "/admin/users"), allowed: false, decidedBy: "app:orders/default:op:/admin/**:*" },
  { rule: "'**' matches several segments", request: http(caller("orders"), "GET", "/admin/a/b/c"), allowed: false, decidedBy: "app:orders/default:op:/admin/**:*" },
  { rule: "'**' matches the bare prefix", request: http(caller("orders"), "GET", "/admin"), allowed: false, decidedBy: "app:orders/default:op:/admin/**:*" },
  { rule: "'*' matches exactly one segment", request: http(caller("orders"), "GET", "/v1/items/7/parts"), allowed: true, decidedBy: "app:orders/default:default-action" },
  { rule: "trailing '/*' matches the bare prefix (Dapr)", request: http(caller("orders"), "GET", "/v1/items"), allowed: false, decidedBy: "app:orders/default:op:/v1/items/*:GET" },
  { rule: "most specific wins: literal over '**'", request: http(caller("orders"), "GET", "/admin/health"), allowed: true, decidedBy: "app:orders/default:op:/admin/health:GET" },
  { rule: "most specific wins: literal over '*'", request: http(caller("orders"), "GET", "/v1/items/special"), allowed: true, decidedBy: "app:orders/default:op:/v1/items/special:GET" },
  { rule: "most specific chosen, then its verb table (POST not on it ⇒ app default)", request: http(caller("orders"), "POST", "/v1/items/special"), allowed: true, decidedBy: "app:orders/default:default-action" },
  { rule: "in-segment glob", request: http(caller("orders"), "GET", "/reports-2024"), allowed: false, decidedBy: "app:orders/default:op:/Report*:GET" },
  { rule: "HEAD where the operation denies GET ⇒ denied (frameworks run GET's handler for HEAD)", request: http(caller("orders"), "HEAD", "/reports-2024"), allowed: false, decidedBy: "app:orders/default:op:/Report*:GET" },
  { rule: "HEAD where the operation allows GET, no HEAD rule ⇒ app default (as Dapr)", request: http(caller("orders", "staging"), "HEAD", "/v1/items/7"), allowed: false, decidedBy: "app:orders/staging:default-action" },
  { rule: "a rule naming HEAD decides HEAD, whatever GET's rule", request: http(caller("orders"), "HEAD", "/files/a"), allowed: true, decidedBy: "app:orders/default:op:/files/*:HEAD" },
  { rule: "GET beside that HEAD rule keeps its own deny", request: http(caller("orders"), "GET", "/files/a"), allowed: false, decidedBy: "app:orders/default:op:/files/*:GET" },
  { rule: "HTTP matching is case-insensitive", request: http(caller("orders"), "get", "/ADMIN/Users"), allowed: false, decidedBy: "app:orders/default:op:/admin/**:*" },
  { rule: "multi-segment operation names (#2725), first", request: http(caller("caller-app"), "GET", "/works/foo"), allowed: true, decidedBy: "app:caller-app/default:op:/works/*:GET" },
  { rule: "multi-segment operation names (#2725), second", request: http(caller("caller-app"), "GET", "/shouldalso/work/foo"), allowed: true, decidedBy: "app:caller-app/default:op:/shouldalso/work/*:GET" },
  { rule: "multi-segment: a near miss is not a match", request: http(caller("caller-app"), "GET", "/shouldalso/play/foo"), allowed: false, decidedBy: "app:caller-app/default:default-action" },
  { rule: "several gRPC operations in one policy (#4202), first", request: grpc(caller("grpc-app", "app-namespace"), "/pkg.Orders/Get"), allowed: true, decidedBy: "app:grpc-app/app-namespace:op:/pkg.Orders/Get" },
  { rule: "several gRPC operations in one policy (#4202), second", request: grpc(caller("grpc-app", "app-namespace"), "/pkg.Orders/List"), allowed: true, decidedBy: "app:grpc-app/app-namespace:op:/pkg.Orders/List" },
  { rule: "gRPC wildcard service", request: grpc(caller("grpc-app", "app-namespace"), "/pkg.Inventory/Count"), allowed: true, decidedBy: "app:grpc-app/app-namespace:op:/pkg.Inventory/*" },
  { rule: "gRPC most specific: literal deny over '*' allow", request: grpc(caller("grpc-app", "app-namespace"), "/pkg.Inventory/Drop"), allowed: false, decidedBy: "app:grpc-app/app-namespace:op:/pkg.Inventory/Drop" },
  { rule: "gRPC unmatched method, no app default ⇒ global default via app", request: grpc(caller("grpc-app", "app-namespace"), "/pkg.Orders/Delete"), allowed: false, decidedBy: "app:grpc-app/app-namespace:default-action" },
  // Unlike Dapr: servers that route gRPC methods in any case (grpc-dotnet on ASP.NET Core routing, Dubbo's Triple) must not run a denied method spelt in another case.
  { rule: "gRPC matching is case-insensitive (a deny too)", request: grpc(caller("grpc-app", "app-namespace"), "/PKG.inventory/drop"), allowed: false, decidedBy: "app:grpc-app/app-namespace:op:/pkg.Inventory/Drop" },
  { rule: "gRPC matching is case-insensitive (an allow)", request: grpc(caller("grpc-app", "app-namespace"), "/pkg.orders/get"), allowed: true, decidedBy: "app:grpc-app/app-namespace:op:/pkg.Orders/Get" },
  { rule: "'*' verb request is gRPC/TCP: verbs ignored", request: { caller: caller("grpc-app", "app-namespace"), verb: "*", operation: "/pkg.Orders/Get" }, allowed: true, decidedBy: "app:grpc-app/app-namespace:op:/pkg.Orders/Get" },
  { rule: "HTTP request does not match rules without httpVerb (gRPC only)", request: http(caller("grpc-app", "app-namespace"), "POST", "/pkg.Orders/Get"), allowed: false, decidedBy: "app:grpc-app/app-namespace:default-action" },
  { rule: "normalisation: '..' cannot escape a deny", request: http(caller("orders"), "GET", "/public/../admin/x"), allowed: false, decidedBy: "app:orders/default:op:/admin/**:*" },
  { rule: "normalisation: duplicate slashes, query, trailing slash", request: http(caller("orders"), "GET", "//admin//x/?a=b"), allowed: false, decidedBy: "app:orders/default:op:/admin/**:*" },
  { rule: "normalisation: unreserved %-escapes decoded", request: http(caller("orders"), "GET", "/%61dmin/x"), allowed: false, decidedBy: "app:orders/default:op:/admin/**:*" },
  { rule: "normalisation: missing leading slash", request: http(caller("caller-app"), "GET", "works/foo"), allowed: true, decidedBy: "app:caller-app/default:op:/works/*:GET" },
];

describe("Dapr accessControl semantics (one row per rule)", () => {
  const policy = policyFrom(MAIN);
  it.each(ROWS)("$rule", ({ request, allowed, decidedBy }) => {
    const d = policy.decide(request);
    expect(d.rule).toBe(decidedBy);
    expect(d.allowed).toBe(allowed);
    expect(d.reason.length).toBeGreaterThan(0);
  });
});

describe("global defaults", () => {
  const alice = http(caller("alice"), "GET", "/x");

  it("no accessControl block ⇒ allow everything", () => {
    const policy = policyFrom("apiVersion: dapr.io/v1alpha1\nkind: Configuration\nspec:\n  tracing: { samplingRate: '1' }\n");
    expect(policy.allowsAll).toBe(true);
    expect(policy.decide(alice)).toMatchObject({ allowed: true, rule: "no-access-control" });
    expect(policy.decide(http(undefined, "GET", "/x")).allowed).toBe(true);
    expect(compilePolicy(undefined).decide(alice).allowed).toBe(true);
  });

  // dapr/dapr pkg/acl/acl.go ParseAccessControlSpec: no ACL only when trustDomain, defaultAction
  // and policies are all empty; otherwise an absent defaultAction is deny unless `policies` is an
  // empty (non-nil) list. meshward allowed everyone for `accessControl: {trustDomain: x}`.
  it("empty accessControl (no trustDomain, default or policies) ⇒ treated as none ⇒ allow", () => {
    for (const yaml of ["accessControl: {}\n", "accessControl:\n  policies: []\n", "accessControl:\n  trustDomain: ''\n"]) {
      expect(policyFrom(yaml).decide(alice), yaml).toMatchObject({ allowed: true, rule: "no-access-control" });
    }
  });

  it("a trustDomain without a policies list and without a default ⇒ deny everyone (as Dapr); with policies: [] ⇒ allow", () => {
    for (const yaml of ["accessControl:\n  trustDomain: public\n", "accessControl:\n  trustDomain: public\n  policies:\n"]) {
      const policy = policyFrom(yaml);
      expect(policy.allowsAll, yaml).toBe(false);
      expect(policy.decide(alice), yaml).toMatchObject({ allowed: false, rule: "global-default" });
      expect(policy.decide(alice).reason).toContain("a trustDomain and no policies list, as in Dapr");
    }
    const empty = policyFrom("accessControl:\n  trustDomain: public\n  policies: []\n");
    expect(empty.decide(alice)).toMatchObject({ allowed: true, rule: "global-default" });
  });

  it("app policies without a global default ⇒ deny for everyone else", () => {
    const policy = policyFrom("accessControl:\n  policies:\n  - { appId: bob, namespace: default, defaultAction: allow }\n");
    expect(policy.decide(alice)).toMatchObject({ allowed: false, rule: "global-default" });
    expect(policy.decide(alice).reason).toContain("implicit");
    expect(policy.decide(http(caller("bob"), "GET", "/x"))).toMatchObject({ allowed: true, rule: "app:bob/default:default-action" });
  });

  it("global defaultAction allow with no policies ⇒ allow via global default, unverified too", () => {
    const policy = policyFrom("accessControl:\n  defaultAction: allow\n");
    expect(policy.decide(alice)).toMatchObject({ allowed: true, rule: "global-default" });
    expect(policy.decide(http(undefined, "GET", "/x"))).toMatchObject({ allowed: true, rule: "global-default" });
  });

  it("global defaultAction deny applies to unverified callers even when an app policy allows all", () => {
    const policy = policyFrom("accessControl:\n  defaultAction: Deny\n  policies:\n  - { appId: bob, namespace: default, defaultAction: allow }\n");
    expect(policy.decide(http(undefined, "GET", "/x"))).toMatchObject({ allowed: false, rule: "global-default" });
  });

  it("app without defaultAction inherits the global one (allow)", () => {
    const policy = policyFrom(
      "accessControl:\n  defaultAction: allow\n  policies:\n  - appId: bob\n    namespace: default\n    operations: [{ name: /x, httpVerb: [POST], action: deny }]\n",
    );
    expect(policy.decide(http(caller("bob"), "GET", "/x"))).toMatchObject({ allowed: true, rule: "app:bob/default:default-action" });
    expect(policy.decide(http(caller("bob"), "POST", "/x"))).toMatchObject({ allowed: false, rule: "app:bob/default:op:/x:POST" });
  });

  // dapr/dapr pkg/acl/acl.go: OperationAction/VerbAction = appPolicy.Action (no default), and
  // isActionAllowed("") is false, so Dapr denies an operation without an action;
  // charts/dapr/crds/configuration.yaml lists `action` among an operation's required fields.
  it("an operation without an action is refused (Dapr denies it, its CRD requires action), never allowed", () => {
    for (const operation of ["{ name: /x, httpVerb: [GET] }", "{ name: /pkg.Admin/Delete }", "{ name: /admin/**, httpVerb: ['*'] }"]) {
      const yaml = `accessControl:\n  defaultAction: deny\n  policies:\n  - appId: bob\n    namespace: default\n    defaultAction: deny\n    operations: [${operation}]\n`;
      expect(() => policyFrom(yaml), operation).toThrow(
        expect.objectContaining({
          code: "E_POLICY_INVALID",
          message: expect.stringMatching(/test\.yaml: accessControl\.policies\[0\]\.operations\[0\]: app id bob \(namespace default\): operation "[^"]+" has no action: add `action: allow` or `action: deny`/),
        }),
      );
    }
    const explicit = policyFrom("accessControl:\n  defaultAction: deny\n  policies:\n  - appId: bob\n    namespace: default\n    operations: [{ name: /x, httpVerb: [GET], action: allow }]\n");
    expect(explicit.decide(http(caller("bob"), "GET", "/x")).allowed).toBe(true);
  });
});

describe("Dapr documentation scenarios", () => {
  it("scenario 3: POST/PUT op1 for app1; gRPC op2 for app2 in myDomain/ns1", () => {
    const policy = policyFrom(`
accessControl:
  defaultAction: deny
  trustDomain: "public"
  policies:
  - appId: app1
    defaultAction: deny
    trustDomain: 'public'
    namespace: "default"
    operations:
    - name: /op1
      httpVerb: ['POST', 'PUT']
      action: allow
  - appId: app2
    defaultAction: deny
    trustDomain: 'myDomain'
    namespace: "ns1"
    operations:
    - name: /op2
      action: allow
`);
    expect(policy.decide(http(caller("app1"), "POST", "/op1")).allowed).toBe(true);
    expect(policy.decide(http(caller("app1"), "PUT", "/op1")).allowed).toBe(true);
    expect(policy.decide(http(caller("app1"), "GET", "/op1")).allowed).toBe(false);
    // Trust domains are lower-cased (SPIFFE trust domain names are lowercase).
    expect(policy.decide(grpc(caller("app2", "ns1", "mydomain"), "/op2")).allowed).toBe(true);
    expect(policy.decide(grpc(caller("app2", "ns1", "mydomain"), "/op3")).allowed).toBe(false);
  });

  it("scenario 4: allow all except /op1/* for app1", () => {
    const policy = policyFrom(`
accessControl:
  defaultAction: allow
  policies:
  - appId: app1
    defaultAction: allow
    trustDomain: 'public'
    namespace: "default"
    operations:
    - { name: /op1/*, httpVerb: ['*'], action: deny }
`);
    expect(policy.decide(http(caller("app1"), "GET", "/op1/a")).allowed).toBe(false);
    expect(policy.decide(http(caller("app1"), "GET", "/op2")).allowed).toBe(true);
    expect(policy.decide(http(caller("app9"), "GET", "/op1/a")).allowed).toBe(true);
  });

  it("dapr acl_test wildcard cases (gRPC): /op7/a/b/*, /op7/a/b*, /op7/c/**, exact /op7/a/b/c/f", () => {
    const policy = policyFrom(`
accessControl:
  defaultAction: deny
  policies:
  - appId: app4
    namespace: ns2
    trustDomain: domain1
    defaultAction: deny
    operations:
    - { action: allow, name: /op6 }
    - { action: allow, name: /op7/a/b/* }
    - { action: allow, name: /op7/a/b/c/f }
    - { action: allow, name: /op7/a/b* }
    - { action: allow, name: /op7/c/** }
`);
    const app4 = caller("app4", "ns2", "domain1");
    expect(policy.decide(grpc(app4, "op6")).allowed).toBe(true);
    expect(policy.decide(grpc(app4, "op7/a/b/c")).allowed).toBe(true);
    // Dapr denies it (its trie walks into /op7/a/b, finds no child for c/d and never goes back to
    // /op7/a/b*); meshward lets /op7/a/b*, whose in-segment glob matches b, cover the paths below it,
    // and daprDifferences reports the pair (kind prefix).
    expect(policy.decide(grpc(app4, "op7/a/b/c/d")).allowed).toBe(true);
    expect(policy.decide(grpc(app4, "op7/a/b/c/f")).allowed).toBe(true);
    expect(policy.decide(grpc(app4, "op7/a/bc")).allowed).toBe(true);
    expect(policy.decide(grpc(app4, "op7/c/d/e")).allowed).toBe(true);
  });
});

describe("gRPC and HTTP-verb rules (meshward is never more permissive than Dapr)", () => {
  const policy = policyFrom(`
accessControl:
  defaultAction: deny
  policies:
  - appId: orders
    namespace: default
    defaultAction: deny
    operations:
    - { name: /items/**, httpVerb: [GET], action: allow }
    - { name: /admin/**, httpVerb: ['*'], action: deny }
    - { name: /pkg.Orders/*, action: allow }
  - appId: billing
    namespace: default
    defaultAction: allow
    operations:
    - { name: /items/**, httpVerb: [GET], action: allow }
    - { name: /admin/**, httpVerb: [DELETE], action: deny }
`);
  it("does not let a GET-only allow admit gRPC on its path (Dapr would: pkg/acl/acl.go applies the operation's action to gRPC)", () => {
    expect(policy.decide(http(caller("orders"), "GET", "/items/1")).allowed).toBe(true);
    expect(policy.decide(grpc(caller("orders"), "/items/1"))).toMatchObject({ allowed: false, rule: "app:orders/default:default-action" });
    expect(policy.decide(grpc(caller("orders"), "/pkg.Orders/Get")).allowed).toBe(true);
  });

  it("lets a verb rule that denies deny gRPC too, even where the app default allows", () => {
    expect(policy.decide(grpc(caller("orders"), "/admin/x"))).toMatchObject({ allowed: false, rule: "app:orders/default:op:/admin/**" });
    expect(policy.decide(grpc(caller("billing"), "/admin/x"))).toMatchObject({ allowed: false, rule: "app:billing/default:op:/admin/**" });
    // Only verb allows: the app default (allow for billing) decides.
    expect(policy.decide(grpc(caller("billing"), "/items/1"))).toMatchObject({ allowed: true, rule: "app:billing/default:default-action" });
  });
});

describe("verbSensitive: whether another method on the operation is decided otherwise (the sidecar reads POST bodies for _method only then)", () => {
  const policy = policyFrom(`
accessControl:
  defaultAction: deny
  policies:
  - appId: orders
    namespace: default
    defaultAction: deny
    operations:
    - { name: /items/**, httpVerb: [POST], action: allow }
    - { name: /open/**, httpVerb: ['*'], action: allow }
    - { name: /both/**, httpVerb: [POST, DELETE], action: allow }
    - { name: /both/**, httpVerb: ['*'], action: allow }
    - { name: /closed/**, httpVerb: [POST], action: deny }
  - appId: billing
    namespace: default
    defaultAction: allow
`);
  const sensitive = (c: Caller | undefined, verb: string, path: string) => policy.decide(http(c, verb, path)).verbSensitive === true;
  it("is set where a verb rule and the rest of the operation disagree, on every verb's decision", () => {
    expect(sensitive(caller("orders"), "POST", "/items/1")).toBe(true);
    expect(sensitive(caller("orders"), "DELETE", "/items/1")).toBe(true);
    expect(policy.decide(http(caller("orders"), "DELETE", "/items/1")).allowed).toBe(false);
  });
  it("is not set where every method gets the same answer: one '*' rule, verb rules that agree with it, no operation, no app policy, no caller", () => {
    expect(sensitive(caller("orders"), "POST", "/open/1")).toBe(false);
    expect(sensitive(caller("orders"), "POST", "/both/1")).toBe(false);
    expect(sensitive(caller("orders"), "POST", "/closed/1")).toBe(false);
    expect(sensitive(caller("orders"), "POST", "/elsewhere")).toBe(false);
    expect(sensitive(caller("billing"), "POST", "/items/1")).toBe(false);
    expect(sensitive(undefined, "POST", "/items/1")).toBe(false);
    expect(policyFrom("accessControl: {}").decide(http(caller("orders"), "POST", "/x")).verbSensitive).toBeUndefined();
  });
});

describe("percent-encoded operation names (characters a request path carries encoded)", () => {
  // Written as the refusal of "/données/**" and "/admin panel/**" says (UTF-8, upper-case hex).
  const policy = policyFrom(`
accessControl:
  defaultAction: deny
  policies:
  - appId: orders
    namespace: default
    defaultAction: allow
    operations:
    - { name: "/donn%C3%A9es/**", httpVerb: ["*"], action: deny }
    - { name: "/admin%20panel/**", httpVerb: ["*"], action: deny }
    - { name: "/files/%e2%82%ac*", httpVerb: ["*"], action: deny }
`);
  /** The decision on a request target as the sidecar judges it: its canonical path. */
  const decideTarget = (target: string) => {
    const path = canonicalPath(target, "reject");
    if (typeof path !== "string") throw new Error(`refused: ${path.refused}`);
    return policy.decide(http(caller("orders"), "GET", path));
  };

  it("matches the request, whatever the case of its hex digits and of the ASCII letters", () => {
    for (const target of ["/donn%C3%A9es/secret", "/donn%c3%a9es/secret", "/DONN%c3%A9ES/secret", "/donn%C3%A9es"]) {
      expect(decideTarget(target), target).toMatchObject({ allowed: false, rule: "app:orders/default:op:/donn%C3%A9es/**:*" });
    }
    expect(decideTarget("/admin%20panel/x")).toMatchObject({ allowed: false, rule: "app:orders/default:op:/admin%20panel/**:*" });
    // Lower-case hex in the rule too; an in-segment glob after an escape.
    expect(decideTarget("/files/%E2%82%AC-2024.pdf")).toMatchObject({ allowed: false, rule: "app:orders/default:op:/files/%E2%82%AC*:*" });
  });

  it("compares an encoded letter byte for byte: %C3%89 (É) is not %C3%A9 (é)", () => {
    expect(decideTarget("/DONN%C3%89ES/secret")).toMatchObject({ allowed: true, rule: "app:orders/default:default-action" });
  });
});

describe("robustness", () => {
  const policy = policyFrom(MAIN);
  // A small deterministic PRNG so failures reproduce.
  let seed = 0x2f6b1d;
  const rand = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  const alphabet = ["/", "//", ".", "..", "%", "%2F", "%41", "?", "#", "*", "a", "Admin", "v1", "items", "é", "\u0000", " ", "~", "pkg.Svc"];
  const callers = [undefined, caller("orders"), caller("orders", "staging"), caller("grpc-app", "app-namespace"), caller("x", "y", "z")];
  const verbs = ["GET", "post", "", "*", "BREW", "g e t"];

  it("random operations never throw and always give a decision with a rule and reason", () => {
    for (let i = 0; i < 3000; i++) {
      let op = "";
      const parts = Math.floor(rand() * 12);
      for (let j = 0; j < parts; j++) op += alphabet[Math.floor(rand() * alphabet.length)];
      const request = { caller: callers[i % callers.length], verb: verbs[i % verbs.length]!, operation: op };
      const d = policy.decide(request);
      expect(typeof d.allowed).toBe("boolean");
      expect(d.rule).toMatch(/^(global-default|app:[^:]+:(default-action|op:.+))$/);
      expect(d.reason).not.toBe("");
    }
  });

  it("a very long path (many segments) is handled", () => {
    const long = "/admin" + "/x".repeat(5000);
    expect(policy.decide(http(caller("orders"), "GET", long)).allowed).toBe(false);
    const long2 = "/v1" + "/items".repeat(5000);
    expect(policy.decide(http(caller("orders"), "GET", long2)).rule).toBe("app:orders/default:default-action");
  });

  it("decide() returns shared decision objects (no per-request allocation of results)", () => {
    const a = policy.decide(http(caller("orders"), "GET", "/admin/x"));
    const b = policy.decide(http(caller("orders"), "GET", "/admin/y/z"));
    expect(a).toBe(b);
    expect(Object.isFrozen(a)).toBe(true);
  });
});

/**
 * An operation whose last segment is a literal or an in-segment glob also decides the paths below
 * it, as in Dapr (dapr/dapr pkg/config/acl_trie.go Search answers with the first node on the way
 * down that holds an operation), below every operation that matches the path by its own segments.
 */
describe("an operation covers the paths below its name (as in Dapr)", () => {
  const policy = policyFrom(`
accessControl:
  defaultAction: allow
  policies:
  - appId: app1
    namespace: default
    defaultAction: allow
    operations:
    - { name: /admin, httpVerb: ["*"], action: deny }
    - { name: /files/*.pdf, httpVerb: [GET], action: deny }
    - { name: /api/v1, httpVerb: [DELETE], action: deny }
    - { name: /a, httpVerb: ["*"], action: deny }
    - { name: /a/b/**, httpVerb: ["*"], action: allow }
    - { name: /pkg.Admin, action: deny }
    - { name: /pkg.Orders/Get, action: allow }
`);
  const app1 = caller("app1");

  it("/admin deny denies /admin/users and everything below, in any case, after canonicalisation", () => {
    for (const path of ["/admin/users", "/admin/users/7/roles", "/ADMIN/Users", "/admin/../admin/x", "/public/../admin/x", "/admin/./x", "/%61dmin/x", "//admin//x/?q=1"]) {
      const d = policy.decide(http(app1, "GET", path));
      expect(d.allowed, path).toBe(false);
      expect(d.rule, path).toBe("app:app1/default:op:/admin:*");
      expect(d.reason, path).toContain("for a path below /admin");
    }
    expect(policy.decide(http(app1, "POST", "/admin/users")).allowed).toBe(false);
    expect(policy.decide(http(app1, "GET", "/admin")).reason).not.toContain("below");
  });

  it("does not touch a sibling that merely starts with the same letters, nor a path that leaves it", () => {
    for (const path of ["/administrator", "/admin-x", "/admin-x/users", "/adminx/y", "/admin/../public", "/x/admin/users"]) {
      expect(policy.decide(http(app1, "GET", path)).allowed, path).toBe(true);
    }
  });

  it("an in-segment glob last covers the paths below the segments it matches", () => {
    expect(policy.decide(http(app1, "GET", "/files/report.pdf/page/2")).allowed).toBe(false);
    expect(policy.decide(http(app1, "GET", "/files/report.txt/page/2")).allowed).toBe(true);
  });

  it("its verbs count as for an exact match: a verb it does not list gets the app default (Dapr's verb check on the node Search found)", () => {
    expect(policy.decide(http(app1, "DELETE", "/api/v1/orders/7")).allowed).toBe(false);
    expect(policy.decide(http(app1, "GET", "/api/v1/orders/7"))).toMatchObject({ allowed: true, rule: "app:app1/default:default-action" });
  });

  it("an operation that matches the path by its own segments goes first: /a deny, /a/b/** allow (Dapr denies /a/b/x: reported)", () => {
    expect(policy.decide(http(app1, "GET", "/a/b/x")).rule).toBe("app:app1/default:op:/a/b/**:*");
    expect(policy.decide(http(app1, "GET", "/a/c")).allowed).toBe(false);
  });

  it("gRPC: a service name covers its methods, as in Dapr (one trie for both)", () => {
    expect(policy.decide(grpc(app1, "/pkg.Admin/DropAll")).allowed).toBe(false);
    expect(policy.decide(grpc(app1, "/pkg.AdminTools/List")).allowed).toBe(true);
    expect(policy.decide(grpc(app1, "/pkg.Orders/Get/x")).allowed).toBe(true);
  });

  it("the root operation covers nothing below it (Dapr's '/' node matches only '/')", () => {
    const root = policyFrom(`accessControl:\n  defaultAction: allow\n  policies:\n  - { appId: app1, namespace: default, operations: [{ name: /, httpVerb: ["*"], action: deny }] }\n`);
    expect(root.decide(http(app1, "GET", "/")).allowed).toBe(false);
    expect(root.decide(http(app1, "GET", "/x")).allowed).toBe(true);
  });
});

describe("a covering operation ranks, for the paths below its name, as its name followed by /**", () => {
  const withOrder = (first: string, second: string) =>
    policyFrom(`
accessControl:
  defaultAction: deny
  policies:
  - appId: orders
    namespace: default
    defaultAction: allow
    operations:
    - ${first}
    - ${second}
`);
  const adminDeny = "{ name: /admin, httpVerb: ['*'], action: deny }";

  it("/admin deny beside /** allow denies /admin/users, declared in either order (Dapr denies it when /admin comes first)", () => {
    for (const policy of [withOrder(adminDeny, "{ name: /**, httpVerb: ['*'], action: allow }"), withOrder("{ name: /**, httpVerb: ['*'], action: allow }", adminDeny)]) {
      expect(policy.decide(http(caller("orders"), "GET", "/admin/users"))).toMatchObject({ allowed: false, rule: "app:orders/default:op:/admin:*" });
      expect(policy.decide(http(caller("orders"), "GET", "/admin"))).toMatchObject({ allowed: false, rule: "app:orders/default:op:/admin:*" });
      expect(policy.decide(http(caller("orders"), "GET", "/administrator"))).toMatchObject({ allowed: true, rule: "app:orders/default:op:/**:*" });
    }
  });

  it("/*/users beside /admin: the covering /admin (as /admin/**) is more specific for /admin/users", () => {
    const policy = withOrder("{ name: /*/users, httpVerb: ['*'], action: allow }", adminDeny);
    expect(policy.decide(http(caller("orders"), "GET", "/admin/users")).allowed).toBe(false);
    expect(policy.decide(http(caller("orders"), "GET", "/orders/users")).allowed).toBe(true);
  });

  it("an operation naming a path below decides it, and an explicit /admin/** goes before the covering /admin", () => {
    const named = withOrder(adminDeny, "{ name: /admin/health, httpVerb: [GET], action: allow }");
    expect(named.decide(http(caller("orders"), "GET", "/admin/health")).allowed).toBe(true);
    expect(named.decide(http(caller("orders"), "GET", "/admin/other")).allowed).toBe(false);
    const explicit = withOrder(adminDeny, "{ name: /admin/**, httpVerb: [GET], action: allow }");
    expect(explicit.decide(http(caller("orders"), "GET", "/admin/x"))).toMatchObject({ allowed: true, rule: "app:orders/default:op:/admin/**:GET" });
    expect(explicit.decide(http(caller("orders"), "GET", "/admin"))).toMatchObject({ allowed: false, rule: "app:orders/default:op:/admin:*" });
  });
});

describe("explain(): decide()'s answer and what led to it", () => {
  const policy = policyFrom(`
accessControl:
  defaultAction: deny
  policies:
    - appId: orders
      namespace: default
      defaultAction: allow
      operations:
        - { name: /admin, httpVerb: [GET], action: deny }
        - { name: /**, action: deny }
        - { name: /**, httpVerb: [GET], action: allow }
        - { name: /admin, httpVerb: [POST], action: allow }
`);
  const requests: AccessRequest[] = [
    http(caller("orders"), "GET", "/admin"),
    http(caller("orders"), "HEAD", "/admin/users"),
    http(caller("orders"), "POST", "/admin"),
    http(caller("orders"), "PUT", "/admin"),
    http(caller("orders"), "GET", "/x"),
    grpc(caller("orders"), "/admin"),
    grpc(caller("orders"), ""),
    grpc(caller("billing"), "/x"),
    grpc(undefined, "/x"),
  ];

  it("answers as decide() for every request", () => {
    for (const request of requests) expect(policy.explain(request).decision, JSON.stringify(request)).toEqual(policy.decide(request));
  });

  it("names the rule that decided (HEAD: the GET deny; below a name: the covering entry), the entries matched in order, or the default", () => {
    const [getAdmin, headBelow, postAdmin, putAdmin, getX, grpcAdmin, tcp, noPolicy, unverified] = requests.map((request) => policy.explain(request));
    // The covering entry (ranked as /admin/**, which matches /admin too) comes after the name itself.
    expect(getAdmin).toMatchObject({ by: "operation", policyIndex: 0, ruleIndex: 0, matched: [{ name: "/admin", below: false }, { name: "/admin", below: true }, { name: "/**", below: false }] });
    expect(headBelow).toMatchObject({ by: "operation", ruleIndex: 0, matched: [{ name: "/admin", below: true }, { name: "/**", below: false }] });
    expect(postAdmin).toMatchObject({ by: "operation", ruleIndex: 3 });
    expect(putAdmin).toMatchObject({ by: "app-default", policyIndex: 0 });
    expect(putAdmin?.ruleIndex).toBeUndefined();
    expect(getX).toMatchObject({ by: "operation", ruleIndex: 2, matched: [{ name: "/**", below: false }] });
    // A call without a verb: /admin's GET deny denies it too (rule 10).
    expect(grpcAdmin).toMatchObject({ by: "operation", ruleIndex: 0 });
    expect(tcp).toMatchObject({ by: "operation", ruleIndex: 1, matched: [{ name: "/**", below: false }] });
    expect(noPolicy).toMatchObject({ by: "global-default", matched: [] });
    expect(unverified).toMatchObject({ by: "global-default", matched: [] });
    expect(compilePolicy(undefined).explain(grpc(undefined, "/"))).toMatchObject({ by: "global-default", decision: { allowed: true } });
  });
});
