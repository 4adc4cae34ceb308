import { describe, expect, it } from "vitest";
import { auditSources } from "../../src/audit/audit.ts";
import { ALL_RULES } from "../../src/audit/rules/index.ts";

describe("rule registry", () => {
  it("has at least 30 rules with unique, well-formed ids", () => {
    expect(ALL_RULES.length).toBeGreaterThanOrEqual(30);
    const ids = ALL_RULES.map((rule) => rule.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const rule of ALL_RULES) {
      expect(rule.id).toMatch(/^MW-[A-Z0-9]+-\d{3}$/);
      expect(["high", "medium", "low"]).toContain(rule.severity);
      expect(rule.title.length).toBeGreaterThan(5);
      expect(rule.why.length).toBeGreaterThan(20);
      expect(rule.fix.length).toBeGreaterThan(10);
    }
  });
});

// Each rule's own example is its test: the insecure form must produce this rule's finding,
// the fixed form must produce no finding at all (no false positive from any other rule).
describe.each(ALL_RULES.map((rule) => [rule.id, rule] as const))("%s", (_id, rule) => {
  const files = (form: "bad" | "good") => [
    { file: rule.example.file, text: rule.example[form] },
    ...(rule.example.companion === undefined ? [] : [{ file: rule.example.companion.file, text: rule.example.companion[form] }]),
  ];

  it("fires on the insecure example", () => {
    const result = auditSources(files("bad"), { enable: ["all"] });
    expect(result.parseErrors).toEqual([]);
    const hits = result.findings.filter((finding) => finding.ruleId === rule.id);
    expect(hits.length).toBeGreaterThanOrEqual(1);
    for (const hit of hits) {
      expect(hit.severity).toBe(rule.severity);
      expect(hit.file).toBe(rule.example.file);
      expect(hit.line).toBeGreaterThanOrEqual(1);
      expect(hit.column).toBeGreaterThanOrEqual(1);
      expect(hit.evidence).not.toBe("");
    }
  });

  it("stays quiet on the fixed example", () => {
    const result = auditSources(files("good"), { enable: ["all"] });
    expect(result.parseErrors).toEqual([]);
    expect(result.findings).toEqual([]);
  });
});

describe("MW-ACCESS-012: a TCP-mode sidecar's policy with operations that never apply", () => {
  const sidecar = (extra: string): string => `appId: orders\nnamespace: prod\nca: ca.prod.svc:8443\napp: 127.0.0.1:8080\npolicy: policy.yaml\n${extra}`;
  const policy = (operations: string): string =>
    `apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: p\nspec:\n  accessControl:\n    defaultAction: deny\n    policies:\n      - appId: checkout\n        namespace: prod\n        defaultAction: allow\n        operations:\n${operations}`;
  const run = (sidecarText: string, policyText: string) =>
    auditSources([{ file: "sidecar.yaml", text: sidecarText }, { file: "policy.yaml", text: policyText }]).findings.filter((finding) => finding.ruleId === "MW-ACCESS-012");

  it("medium for a deny on a path (it protects nothing), at the protocol key, naming the operation and the policy file", () => {
    const [hit, ...rest] = run(sidecar("protocol: tcp\n"), policy("          - { name: /admin/**, httpVerb: ['*'], action: deny }\n"));
    expect(rest).toEqual([]);
    expect(hit).toMatchObject({ severity: "medium", line: 6, column: 1, evidence: "protocol: tcp; checkout /admin/**" });
    expect(hit?.message).toContain("The policy policy.yaml: in TCP mode a connection has no path and no verb");
  });

  it("medium for a /** deny shadowed by a GET-only / allow: the default admits every connection, and the message says so", () => {
    const [hit, ...rest] = run(sidecar("protocol: tcp\n"), policy("          - { name: /, httpVerb: [GET], action: allow }\n          - { name: /**, action: deny }\n"));
    expect(rest).toEqual([]);
    expect(hit).toMatchObject({ severity: "medium", evidence: "protocol: tcp; checkout /, checkout /**" });
    expect(hit?.message).toContain("/** deny (app policy checkout in prod: shadowed by /, which decides the path / (as in Dapr, the first declared of the operations on /))");
    expect(hit?.message).toContain("every connection is allowed by the app policy's defaultAction (allow;");
  });

  it("low for an allow shadowed by a deny on / declared before it (connections refused, nothing opened); medium the other way round", () => {
    const [hit] = run(sidecar("protocol: tcp\n"), policy("          - { name: /*, httpVerb: [POST], action: deny }\n          - { name: /**, action: allow }\n"));
    expect(hit).toMatchObject({ severity: "low", evidence: "protocol: tcp; checkout /**" });
    expect(hit?.message).toContain("every connection is denied by the operation /* (deny)");
    // /** declared first decides / (as in Dapr): the /* deny protects nothing.
    const [reversed] = run(sidecar("protocol: tcp\n"), policy("          - { name: /**, action: allow }\n          - { name: /*, httpVerb: [POST], action: deny }\n"));
    expect(reversed).toMatchObject({ severity: "medium", evidence: "protocol: tcp; checkout /*" });
    expect(reversed?.message).toContain("every connection is allowed by the operation /** (allow)");
  });

  it("low when only allows never apply (connections refused, nothing opened); an HTTP-verb allow on /** counts", () => {
    expect(run(sidecar("protocol: TCP\n"), policy("          - { name: /**, httpVerb: [GET], action: allow }\n")).map((hit) => hit.severity)).toEqual(["low"]);
  });

  it("quiet in HTTP mode (the default), and for a TCP policy of defaultAction and /** without verbs", () => {
    const paths = policy("          - { name: /admin/**, httpVerb: ['*'], action: deny }\n");
    expect(run(sidecar(""), paths)).toEqual([]);
    expect(run(sidecar("protocol: http\n"), paths)).toEqual([]);
    expect(run(sidecar("protocol: tcp\n"), policy("          - { name: /**, action: allow }\n"))).toEqual([]);
  });
});

describe("rule details", () => {
  const audit = (file: string, text: string): string[] =>
    auditSources([{ file, text }]).findings.map((finding) => `${finding.ruleId}@${finding.line}:${finding.column}`);

  it("reads PostgreSQL sslmode in URL and keyword form, and ignores connection strings from secrets", () => {
    const component = (connection: string): string =>
      `apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pg\nspec:\n  type: state.postgresql\n  metadata:\n  - name: connectionString\n    value: "${connection}"\n`;
    expect(audit("a.yaml", component("postgres://pg.db.svc/state?sslmode=allow"))).toEqual(["MW-TLS-002@9:5"]);
    expect(audit("a.yaml", component("host=pg sslmode='verify-ca'"))).toEqual(["MW-TLS-003@9:5"]);
    expect(audit("a.yaml", component("postgresql://pg.db.svc/state?sslmode=verify-full"))).toEqual([]);
    expect(audit("a.yaml", component("").replace('value: ""', "secretKeyRef: { name: pg, key: url }"))).toEqual([]);
  });

  it("never prints a secret in evidence", () => {
    const text = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: s\nspec:\n  type: state.postgresql\n  metadata:\n  - name: connectionString\n    value: postgres://app:TopSecret99@pg/db?sslmode=verify-full\n  - name: accessKey\n    value: AKIAQX7RZ2LMN4BV\n  - name: dsn\n    value: app:Hidden42@tcp(db:3306)/x\n";
    const result = auditSources([{ file: "s.yaml", text }]);
    expect(result.findings.map((finding) => finding.ruleId)).toEqual(["MW-SECRET-002", "MW-SECRET-001", "MW-SECRET-002"]);
    const serialized = JSON.stringify(result.findings);
    for (const secret of ["TopSecret99", "AKIAQX7RZ2LMN4BV", "Hidden42"]) expect(serialized).not.toContain(secret);
  });

  it("flags each plaintext scheme and leaves the TLS forms alone", () => {
    const component = (url: string): string =>
      `apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: b\nspec:\n  type: bindings.x\n  metadata:\n  - name: endpoint\n    value: ${url}\n`;
    for (const url of ["amqp://mq:5672", "mqtt://m:1883", "tcp://m:1883", "nats://n:4222", "redis://r:6379", "http://h", "ws://w", "ldap://l"]) {
      expect(audit("b.yaml", component(url)), url).toEqual(["MW-TLS-007@9:5"]);
    }
    for (const url of ["amqps://mq:5671", "mqtts://m:8883", "ssl://m:8883", "tls://n:4222", "rediss://r:6380", "https://h", "wss://w", "ldaps://l"]) {
      expect(audit("b.yaml", component(url)), url).toEqual([]);
    }
  });

  it("reads TLS versions in the usual spellings", () => {
    const component = (version: string): string =>
      `apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: b\nspec:\n  type: bindings.http\n  metadata:\n  - name: minTLSVersion\n    value: "${version}"\n`;
    for (const weak of ["1.0", "1.1", "TLSv1", "TLS1.1", "VersionTLS10", "tls1_1", "SSLv3"]) expect(audit("b.yaml", component(weak)), weak).toEqual(["MW-TLS-010@9:5"]);
    for (const strong of ["1.2", "1.3", "TLSv1.2", "VersionTLS13"]) expect(audit("b.yaml", component(strong)), strong).toEqual([]);
  });

  it("reads meshward configs in kind/spec form with camelCase keys", () => {
    const sidecar = "apiVersion: meshward.dev/v1\nkind: Sidecar\nspec:\n  appId: web\n  ca: ca:8443\n  policy: p.yaml\n  mode: PERMISSIVE\n  token: abcdef123\n";
    // The sidecar refuses the wrapper (3:1, at `spec:`) and `PERMISSIVE` (it reads `permissive`):
    // MW-CONFIG-001 says so, and the settings are still analysed.
    expect(audit("s.yaml", sidecar)).toEqual(["MW-CONFIG-001@3:1", "MW-CONFIG-001@7:3", "MW-MTLS-004@7:3", "MW-SECRET-006@8:3"]);
    const ca = "apiVersion: meshward.dev/v1\nkind: CAConfig\nspec:\n  trustDomain: td\n  validators:\n    insecure: {}\n    join-token: { enabled: true }\n    jwks: false\n";
    // A legacy `validators` map is still analysed, and reported as a key the CA does not read.
    expect(audit("c.yaml", ca)).toEqual(["MW-CONFIG-002@3:1", "MW-CONFIG-002@5:3", "MW-MTLS-005@6:5"]);
  });

  it("MW-ACCESS-004 reads outbound and every tcpUpstreams listener; loopback in any spelling is fine", () => {
    const base = "appId: web\nca: ca:8443\nbundle: b.pem\npolicy: p.yaml\n";
    expect(audit("s.yaml", `${base}outbound: "[::]:3500"\ntcpUpstreams:\n  redis: 127.0.0.1:6380\n  pg: 10.0.0.5:5433\n`)).toEqual(["MW-ACCESS-004@5:1", "MW-ACCESS-004@8:3"]);
    expect(audit("s.yaml", `${base}outbound: localhost:3500\ntcpUpstreams:\n  redis: "[::1]:6380"\n  pg: 127.0.0.2:5433\n`)).toEqual([]);
    expect(audit("s.yaml", `${base}outboundAllowedHosts: [gw.example, "*"]\n`)).toEqual(["MW-ACCESS-005@5:36"]);
  });

  // dapr/dapr pkg/config/acl_trie.go: findNodeWithWildcard takes the first-declared match,
  // PutOperationAction keeps a repeated name's first entry; the meshward sidecar picks the most
  // specific operation and merges repeats (src/policy/dapr-differences.ts).
  it("MW-ACCESS-007/008 flag a Configuration whose accessControl Dapr reads differently from the sidecar (low)", () => {
    const config = (operations: string): string =>
      `apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  accessControl:\n    defaultAction: deny\n    policies:\n    - appId: web\n      namespace: shop\n      operations:\n${operations}`;
    const overlap = "      - { name: /admin/*, httpVerb: ['*'], action: deny }\n      - { name: /admin/health, httpVerb: [GET], action: allow }\n";
    const repeated = "      - { name: /orders/**, httpVerb: [GET], action: allow }\n      - { name: /orders/**, httpVerb: [DELETE], action: allow }\n";
    expect(audit("c.yaml", config(overlap + repeated))).toEqual(["MW-ACCESS-007@13:9", "MW-ACCESS-008@15:9"]);
    const findings = auditSources([{ file: "c.yaml", text: config(overlap) }]).findings;
    expect(findings.map((f) => [f.ruleId, f.severity])).toEqual([["MW-ACCESS-007", "low"]]);
    expect(JSON.stringify(findings[0])).toContain("appId web: /admin/* declared before /admin/health");
    // The narrower one first, or one entry per name: nothing. A block the sidecar refuses: not these rules.
    expect(audit("c.yaml", config("      - { name: /admin/health, httpVerb: [GET], action: allow }\n      - { name: /admin/*, httpVerb: ['*'], action: deny }\n"))).toEqual([]);
    expect(audit("c.yaml", config("      - { name: /admin/*, httpVerb: ['*'] }\n      - { name: /admin/health, httpVerb: [GET], action: allow }\n"))).toEqual([]);
    // /a/** before /a: Dapr's node /a holds /a, so /a decides the path /a in both (acl_trie.go Search): not
    // MW-ACCESS-007. Below /a Dapr meets /a first and meshward uses /a/**: MW-ACCESS-010 says that.
    const below = config("      - { name: /a/**, httpVerb: [GET], action: allow }\n      - { name: /a, httpVerb: ['*'], action: deny }\n");
    expect(audit("c.yaml", below)).toEqual(["MW-ACCESS-010@13:9"]);
    expect(JSON.stringify(auditSources([{ file: "c.yaml", text: below }]).findings[0])).toContain("for /a/x meshward uses /a/**");
  });

  // dapr/dapr pkg/config/acl_trie.go Search answers with the first operation on the way down: /api
  // decides /api/public/x in Dapr, /api/public/** in the sidecar. A bare '*' before the last segment
  // never matches in Dapr (findNodeWithWildcard).
  it("MW-ACCESS-010/011 flag an operation Dapr lets decide the paths below it, and an allow behind a bare '*' Dapr never matches (low)", () => {
    const config = (operations: string): string =>
      `apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  accessControl:\n    defaultAction: deny\n    policies:\n    - appId: web\n      namespace: shop\n      operations:\n${operations}`;
    const prefix = "      - { name: /api, httpVerb: ['*'], action: deny }\n      - { name: /api/public/**, httpVerb: [GET], action: allow }\n";
    const findings = auditSources([{ file: "c.yaml", text: config(prefix) }]).findings;
    expect(findings.map((f) => [f.ruleId, f.severity])).toEqual([["MW-ACCESS-010", "low"]]);
    expect(JSON.stringify(findings[0])).toContain("appId web: /api and /api/public/**, one below the other");
    expect(audit("c.yaml", config(prefix))).toEqual(["MW-ACCESS-010@13:9"]);
    expect(audit("c.yaml", config("      - { name: /orders/*/items, httpVerb: [GET], action: allow }\n"))).toEqual(["MW-ACCESS-011@12:9"]);
    // The same action for both: nothing.
    expect(audit("c.yaml", config("      - { name: /api, httpVerb: ['*'], action: deny }\n      - { name: /api/internal/**, httpVerb: ['*'], action: deny }\n"))).toEqual([]);
    // A deny behind a bare '*' is not MW-ACCESS-011 (meshward the stricter there), but for GET /orders/x Dapr's
    // trie takes the '/*' branch of /orders/*/items (the last segment), finds nothing and denies, where
    // /orders/** allows in meshward: MW-ACCESS-009 (it was missed while the check tried one path per pair).
    const shadowed = config("      - { name: /orders/*/items, httpVerb: ['*'], action: deny }\n      - { name: /orders/**, httpVerb: [GET], action: allow }\n");
    expect(audit("c.yaml", shadowed)).toEqual(["MW-ACCESS-009@13:9"]);
    expect(JSON.stringify(auditSources([{ file: "c.yaml", text: shadowed }]).findings[0])).toContain("its trie took the branch of /orders/*/items");
  });

  // Overlaps neither side of which covers the other: Dapr's trie (acl_trie.go Search) takes the
  // first declared branch that matches, segment by segment, without going back.
  it("MW-ACCESS-009 flags overlapping operations Dapr and the sidecar decide differently, and not those both read alike (low)", () => {
    const config = (operations: string): string =>
      `apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  accessControl:\n    defaultAction: deny\n    policies:\n    - appId: web\n      namespace: shop\n      operations:\n${operations}`;
    const findings = auditSources([{ file: "c.yaml", text: config("      - { name: /files/*.pdf, httpVerb: ['*'], action: deny }\n      - { name: /files/public-*, httpVerb: [GET], action: allow }\n") }]).findings;
    expect(findings.map((f) => [f.ruleId, f.severity])).toEqual([["MW-ACCESS-009", "low"]]);
    expect(JSON.stringify(findings[0])).toContain("appId web: /files/*.pdf overlaps /files/public-*");
    // /a/*/c allows behind a bare '*' Dapr never matches: MW-ACCESS-011 as well.
    expect(audit("c.yaml", config("      - { name: /a/*/c, httpVerb: ['*'], action: allow }\n      - { name: /*/b/**, httpVerb: ['*'], action: deny }\n"))).toEqual(["MW-ACCESS-011@12:9", "MW-ACCESS-009@13:9"]);
    // Read alike: the brief's /a/*/c and /a/b/* (both deny /a/b/c), and the globs declared the other way round.
    expect(audit("c.yaml", config("      - { name: /a/*/c, httpVerb: ['*'], action: allow }\n      - { name: /a/b/*, httpVerb: ['*'], action: deny }\n")).filter((hit) => !hit.startsWith("MW-ACCESS-011@"))).toEqual([]);
    expect(audit("c.yaml", config("      - { name: /files/public-*, httpVerb: [GET], action: allow }\n      - { name: /files/*.pdf, httpVerb: ['*'], action: deny }\n"))).toEqual([]);
  });

  it("MW-K8S-009/010/011 read the pod template the injector reads: annotation before label, only where a sidecar is injected", () => {
    const pod = (annotations: string, labels = "") =>
      `apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n    metadata:\n      labels:\n        app: web\n${labels}      annotations:\n${annotations}    spec:\n      containers:\n        - name: web\n          image: web:1\n`;
    const injected = '        meshward.io/inject: "true"\n        meshward.io/app-port: "8080"\n        meshward.io/config: web-policy\n';
    // The label alone (deploy/prometheus relabels on it) puts the sidecar in PERMISSIVE mode.
    expect(audit("d.yaml", pod(injected, "        meshward.io/mode: Permissive\n"))).toEqual(["MW-K8S-009@10:9"]);
    // The annotation wins over the label, as in src/inject/settings.ts.
    expect(audit("d.yaml", pod(`${injected}        meshward.io/mode: strict\n`, "        meshward.io/mode: permissive\n"))).toEqual([]);
    expect(audit("d.yaml", pod(`${injected}        meshward.io/mode: permissive\n`))).toEqual(["MW-K8S-009@14:9"]);
    // Dapr's annotation asks for the sidecar too; an explicit meshward.io/inject: "false" does not.
    const dapr = '        dapr.io/enabled: "true"\n        dapr.io/app-port: "8080"\n        dapr.io/api-token-secret: t\n        dapr.io/app-protocol: https\n';
    expect(audit("d.yaml", pod(`${dapr}        meshward.io/outbound-allowed-hosts: "*"\n`))).toEqual(["MW-K8S-010@15:9"]);
    expect(audit("d.yaml", pod(`${dapr}        meshward.io/inject: "false"\n        meshward.io/outbound-allowed-hosts: "*"\n        meshward.io/mode: permissive\n`))).toEqual([]);
    // "*" only as a whole entry: a suffix pattern is a narrow allowance.
    expect(audit("d.yaml", pod(`${injected}        meshward.io/outbound-allowed-hosts: "*.shop.example, gw"\n`))).toEqual([]);
    // MW-K8S-011: an explicit meshward.io/inject without a policy; dapr.io/config names one too.
    const noPolicy = '        meshward.io/inject: "True"\n        meshward.io/app-port: "8080"\n';
    expect(audit("d.yaml", pod(noPolicy))).toEqual(["MW-K8S-011@11:9"]);
    expect(audit("d.yaml", pod(`${noPolicy}        meshward.io/config: " "\n`))).toEqual(["MW-K8S-011@11:9"]);
    expect(audit("d.yaml", pod(`${noPolicy}        dapr.io/config: appconfig\n`))).toEqual([]);
    // Dapr's annotation alone may be meant for daprd: its Configuration rules apply, not this one.
    expect(audit("d.yaml", pod(dapr))).toEqual([]);
  });

  it("MW-ACCESS-013 / MW-K8S-013: the sidecar settings (file or injector annotation) that forward field names with '_' or undecoded %2F, and not their stricter values", () => {
    const base = "appId: web\nca: ca:8443\nbundle: b.pem\npolicy: p.yaml\n";
    expect(audit("s.yaml", `${base}headersWithUnderscores: allow\nescapedSlashes: keep\n`)).toEqual(["MW-ACCESS-013@5:1", "MW-ACCESS-013@6:1"]);
    expect(audit("s.yaml", `${base}headersWithUnderscores: drop\nescapedSlashes: unescape\n`)).toEqual([]);
    expect(audit("s.yaml", `${base}headersWithUnderscores: reject\nescapedSlashes: reject\n`)).toEqual([]);
    const pod = (annotations: string) =>
      `apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n    metadata:\n      annotations:\n${annotations}    spec:\n      containers:\n        - name: web\n          image: web:1\n`;
    const injected = '        meshward.io/inject: "true"\n        meshward.io/app-port: "8080"\n        meshward.io/config: web-policy\n';
    expect(audit("d.yaml", pod(`${injected}        meshward.io/escaped-slashes: keep\n        meshward.io/headers-with-underscores: allow\n`))).toEqual(["MW-K8S-013@12:9", "MW-K8S-013@13:9"]);
    expect(audit("d.yaml", pod(`${injected}        meshward.io/escaped-slashes: unescape\n        meshward.io/headers-with-underscores: drop\n`))).toEqual([]);
    // No sidecar injected: the annotations configure nothing.
    expect(audit("d.yaml", pod('        meshward.io/headers-with-underscores: allow\n'))).toEqual([]);
  });

  it("MW-K8S-012: shareProcessNamespace, hostPID or a privileged container next to an injected meshward sidecar, as the injector refuses them", () => {
    const pod = (annotations: string, spec: string, container = "") =>
      `apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n    metadata:\n      annotations:\n${annotations}    spec:\n${spec}      containers:\n        - name: web\n          image: web:1\n${container}`;
    const injected = '        meshward.io/inject: "true"\n        meshward.io/app-port: "8080"\n        meshward.io/config: web-policy\n';
    expect(audit("d.yaml", pod(injected, "      shareProcessNamespace: true\n"))).toEqual(["MW-K8S-012@13:7"]);
    expect(audit("d.yaml", pod(injected, "      hostPID: true\n      shareProcessNamespace: true\n"))).toEqual(["MW-K8S-012@13:7", "MW-K8S-012@14:7"]);
    expect(audit("d.yaml", pod(injected, "", "          securityContext:\n            privileged: true\n"))).toEqual(["MW-K8S-012@17:13"]);
    expect(audit("d.yaml", pod(injected, "      initContainers:\n        - name: setup\n          image: s\n          securityContext: { privileged: true }\n"))).toEqual(["MW-K8S-012@16:30"]);
    // Off, or a container that only adds capabilities (the injector warns about SYS_PTRACE, it does not refuse it).
    expect(audit("d.yaml", pod(injected, "      shareProcessNamespace: false\n      hostPID: false\n", "          securityContext:\n            privileged: false\n            capabilities: { add: [SYS_PTRACE] }\n"))).toEqual([]);
    // No meshward sidecar asked for: not this rule's business.
    expect(audit("d.yaml", pod('        app: web\n', "      shareProcessNamespace: true\n      hostPID: true\n"))).toEqual([]);
  });

  it("reads kubectl List output", () => {
    const list = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: dapr.io/v1alpha1\n  kind: Configuration\n  metadata:\n    name: c\n  spec:\n    mtls:\n      enabled: false\n";
    expect(audit("l.yaml", list)).toEqual(["MW-MTLS-001@10:7"]);
  });
});

// daprd reads spec.metadata into a map in order, `properties[c.Name] = val` (dapr/dapr
// pkg/runtime/meta/meta.go, convertItemsToProps): of two entries of one name the LAST wins; and
// components-contrib's DecodeMetadata (mapstructure) takes the key spelled as the field's tag
// (`enableTLS`) before a case variant. The auditor read the first (review audit finding 3).
describe("duplicate Dapr metadata entries are read as daprd reads them", () => {
  const redis = (...entries: [string, string][]): string => `apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: statestore\nspec:\n  type: state.redis\n  version: v1\n  metadata:\n  - name: redisHost\n    value: redis.prod.svc:6379\n${entries.map(([name, value]) => `  - name: ${name}\n    value: "${value}"\n`).join("")}`;
  const tls = (text: string) => auditSources([{ file: "statestore.yaml", text }]).findings.filter((finding) => finding.ruleId === "MW-TLS-001").map((finding) => `${finding.line}:${finding.evidence}`);

  it('enableTLS "true" then "false": daprd runs without TLS, a finding at the second', () => {
    expect(tls(redis(["enableTLS", "true"], ["enableTLS", "false"]))).toHaveLength(1);
    expect(tls(redis(["enableTLS", "true"], ["enableTLS", "false"]))[0]).toMatch(/^14:/);
  });

  it('"false" then "true": TLS on, no finding', () => {
    expect(tls(redis(["enableTLS", "false"], ["enableTLS", "true"]))).toEqual([]);
  });

  it("the exact spelling wins over a case variant after it", () => {
    expect(tls(redis(["enableTLS", "false"], ["ENABLETLS", "true"]))).toHaveLength(1);
    expect(tls(redis(["ENABLETLS", "false"], ["enableTLS", "true"]))).toEqual([]);
  });
});
