import { describe, expect, it } from "vitest";
import { auditSources, loadSources } from "../../src/audit/audit.ts";
import { collectPosture } from "../../src/audit/drift.ts";
import { parseYamlFile } from "../../src/audit/yaml-source.ts";

// Issue 19: settings no rule covered. Each class is reported now; the secure form is quiet.

const audit = (file: string, text: string): string[] =>
  auditSources([{ file, text }]).findings.map((finding) => `${finding.ruleId}@${finding.line}:${finding.severity}`);

const component = (type: string, items: Record<string, string>): string =>
  `apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: c\nspec:\n  type: ${type}\n  metadata:\n${Object.entries(items).map(([name, value]) => `  - name: ${name}\n    value: ${JSON.stringify(value)}\n`).join("")}`;

describe("TLS switched off in components (MW-TLS-011) and certificate checks off (MW-TLS-009)", () => {
  it("S3: disableSSL and insecureSSL", () => {
    expect(audit("s3.yaml", component("bindings.aws.s3", { endpoint: "https://minio.storage.svc:9000", disableSSL: "true", insecureSSL: "true" })))
      .toEqual(["MW-TLS-011@11:high", "MW-TLS-009@13:high"]);
    expect(audit("s3.yaml", component("bindings.aws.s3", { endpoint: "https://minio.storage.svc:9000", disableSSL: "false", insecureSSL: "false" }))).toEqual([]);
  });
  it("Zeebe: usePlainTextConnection", () => {
    expect(audit("z.yaml", component("bindings.zeebe.command", { gatewayAddr: "zeebe.svc:26500", usePlainTextConnection: "true" }))).toEqual(["MW-TLS-011@11:high"]);
    expect(audit("z.yaml", component("bindings.zeebe.command", { gatewayAddr: "zeebe.svc:26500", usePlainTextConnection: "false" }))).toEqual([]);
  });
  it("etcd: tlsEnable \"false\"", () => {
    expect(audit("e.yaml", component("state.etcd", { endpoints: "etcd-0.etcd.svc:2379", tlsEnable: "false" }))).toEqual(["MW-TLS-011@11:high"]);
    expect(audit("e.yaml", component("state.etcd", { endpoints: "etcd-0.etcd.svc:2379", tlsEnable: "true" }))).toEqual([]);
  });
  // Dapr's Pulsar components: the host scheme decides TLS, enableTLS the certificate check, and
  // tlsAllowInsecureConnection is not read (precision.test.ts cites the upstream code).
  it("Pulsar: a host without a scheme is plaintext (on the host); enableTLS \"false\" with pulsar+ssl:// is unverified", () => {
    expect(audit("p.yaml", component("pubsub.pulsar", { host: "pulsar.svc:6650", enableTLS: "false" }))).toEqual(["MW-TLS-011@9:high"]);
    expect(audit("p.yaml", component("pubsub.pulsar", { host: "pulsar+ssl://pulsar.svc:6651", enableTLS: "false" }))).toEqual(["MW-TLS-009@11:high"]);
    expect(audit("p.yaml", component("pubsub.pulsar", { host: "pulsar+ssl://pulsar.svc:6651", enableTLS: "true" }))).toEqual([]);
  });
  it("is low when every address is loopback", () => {
    expect(audit("z.yaml", component("bindings.zeebe.command", { gatewayAddr: "localhost:26500", usePlainTextConnection: "true" }))).toEqual(["MW-TLS-011@11:low"]);
  });
  it("leaves Redis and Kafka to their own rules (no double finding)", () => {
    expect(audit("r.yaml", component("state.redis", { redisHost: "redis.svc:6379", enableTLS: "false" }))).toEqual(["MW-TLS-001@11:high"]);
    expect(audit("k.yaml", component("pubsub.kafka", { brokers: "kafka.svc:9092", authType: "mtls", disableTls: "true" }))).toEqual(["MW-TLS-006@13:high"]);
  });
});

describe("tracing exporters over plaintext (MW-TLS-012, low)", () => {
  const config = (tracing: string): string => `apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: t\nspec:\n  tracing:\n    samplingRate: "1"\n${tracing}`;
  it("zipkin http endpoint and otel isSecure false", () => {
    expect(audit("t.yaml", config("    zipkin:\n      endpointAddress: http://zipkin.monitoring.svc:9411/api/v2/spans\n"))).toEqual(["MW-TLS-012@9:low"]);
    expect(audit("t.yaml", config("    otel:\n      endpointAddress: otel-collector.monitoring.svc:4317\n      isSecure: false\n      protocol: grpc\n"))).toEqual(["MW-TLS-012@10:low"]);
  });
  it("quiet on https and isSecure true", () => {
    expect(audit("t.yaml", config("    zipkin:\n      endpointAddress: https://zipkin.monitoring.svc:9411/api/v2/spans\n"))).toEqual([]);
    expect(audit("t.yaml", config("    otel:\n      endpointAddress: otel-collector.monitoring.svc:4317\n      isSecure: true\n"))).toEqual([]);
  });
});

describe("HTTPEndpoint resources", () => {
  const endpoint = (baseUrl: string, headers = ""): string => `apiVersion: dapr.io/v1alpha1\nkind: HTTPEndpoint\nmetadata:\n  name: payments\nspec:\n  baseUrl: ${baseUrl}\n${headers}`;
  it("reports a plaintext baseUrl (MW-TLS-013), low on loopback", () => {
    expect(audit("h.yaml", endpoint("http://payments.example.org"))).toEqual(["MW-TLS-013@6:high"]);
    expect(audit("h.yaml", endpoint("http://localhost:8080"))).toEqual(["MW-TLS-013@6:low"]);
    expect(audit("h.yaml", endpoint("https://payments.example.org"))).toEqual([]);
  });
  it("reports an inline secret header or client key (MW-SECRET-001), not a secretKeyRef", () => {
    const inline = "  headers:\n  - name: Authorization\n    value: Bearer 5f2a9c1e7b3d4a6f\n  - name: Accept\n    value: application/json\n";
    expect(audit("h.yaml", endpoint("https://payments.example.org", inline))).toEqual(["MW-SECRET-001@9:high"]);
    const ref = "  headers:\n  - name: Authorization\n    secretKeyRef:\n      name: payments\n      key: token\n";
    expect(audit("h.yaml", endpoint("https://payments.example.org", ref))).toEqual([]);
  });
});

describe("micro settings as environment variables", () => {
  it("docker-compose environment, map and list forms", () => {
    const compose = "services:\n  greeter:\n    image: greeter\n    environment:\n      MICRO_REGISTRY: mdns\n      MICRO_BROKER_ADDRESS: nats://nats:4222\n  api:\n    image: api\n    environment:\n      - MICRO_ENABLE_TLS=true\n      - MICRO_TLS_CERT_FILE=/tls/cert.pem\n      - MICRO_TLS_CA_FILE=/tls/ca.pem\n      - MICRO_TLS_CLIENT_CA_FILE=/tls/ca.pem\n  db:\n    image: postgres\n    environment:\n      POSTGRES_URL: http://not-micro\n";
    // POSTGRES_URL is no micro setting, but a plaintext endpoint in the service's environment.
    expect(audit("docker-compose.yml", compose)).toEqual(["MW-MICRO-001@5:high", "MW-MICRO-005@6:medium", "MW-TLS-007@17:high"]);
  });
  it("Kubernetes container env", () => {
    const deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: greeter\nspec:\n  template:\n    spec:\n      containers:\n      - name: greeter\n        image: greeter\n        env:\n        - name: MICRO_SERVER_ADDRESS\n          value: \":8080\"\n        - name: MICRO_TRANSPORT_SECURE\n          value: \"false\"\n";
    expect(audit("k8s.yaml", deployment)).toEqual(["MW-MICRO-001@15:high"]);
  });
  it("MICRO_TLS_INSECURE=true is one finding (MW-MICRO-003), not also \"no TLS\"", () => {
    expect(audit("service.env", "MICRO_SERVER_ADDRESS=:8080\nMICRO_TLS_INSECURE=true\n")).toEqual(["MW-MICRO-003@2:high"]);
    expect(audit("service.env", "MICRO_SERVER_ADDRESS=:8080\nMICRO_TLS_INSECURE=false\n")).toEqual(["MW-MICRO-001@1:high"]);
  });
});

describe("reading", () => {
  it("reports a YAML alias error at the alias's own line", () => {
    const parsed = parseYamlFile("a.yaml", "apiVersion: v1\nkind: ConfigMap\ndata:\n  a: &anchor 1\n  b: *anchr\n");
    expect(parsed.problems.map((problem) => `${problem.line}:${problem.column} ${problem.message}`)).toEqual(["5:6 Unresolved alias (the anchor must be set before the alias): anchr"]);
  });

  it("reads JSON with comments and points at the right line", () => {
    const json = '{\n  // a Dapr component, JSON form\n  "apiVersion": "dapr.io/v1alpha1", /* inline */\n  "kind": "Component",\n  "metadata": { "name": "s" },\n  "spec": { "type": "state.redis", "metadata": [\n    { "name": "redisHost", "value": "redis.svc:6379 // not a comment" }\n  ] }\n}\n';
    const result = auditSources([{ file: "component.json", text: json }]);
    expect(result.parseErrors).toEqual([]);
    expect(result.findings.map((finding) => `${finding.ruleId}@${finding.line}`)).toEqual(["MW-TLS-001@6"]);
  });

  it("reports a Helm template once, at its first template action, and does not audit it", () => {
    const template = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {{ include \"x.fullname\" . }}\ndata:\n  password: {{ .Values.password | b64enc }}\n  token: {{ .Values.token | b64enc }}\n";
    const result = auditSources([{ file: "chart/templates/secret.yaml", text: template }]);
    expect(result.findings).toEqual([]);
    expect(result.parseErrors).toEqual([{ file: "chart/templates/secret.yaml", line: 4, column: 1, kind: "helm-template", message: "Helm template: not YAML until rendered; run `helm template` and audit its output" }]);
  });
});

// Review of `meshward audit` precision: connection URLs in container env, MongoDB certificate
// checks switched off inside values, Pulsar's plaintext scheme, inline kustomize patches.
describe("connection URLs in container env (MW-SECRET-005, MW-TLS-002/003/007/008/009)", () => {
  const deployment = (env: Record<string, string>): string =>
    `apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: orders\nspec:\n  template:\n    spec:\n      containers:\n      - name: orders\n        image: orders:1.0\n        env:\n${Object.entries(env).map(([name, value]) => `        - name: ${name}\n          value: ${JSON.stringify(value)}\n`).join("")}`;

  it("reports the password in a URL whatever the variable is called, and the plaintext connection", () => {
    const text = deployment({
      DATABASE_URL: "postgres://orders:Hunter2Secret@db:5432/orders?sslmode=disable",
      REDIS_URL: "redis://:pw@redis:6379",
      AMQP_URL: "amqp://u:p@mq",
      MONGO_URI: "mongodb://u:p@mongo",
    });
    expect(audit("d.yaml", text)).toEqual([
      "MW-SECRET-005@13:high", "MW-TLS-002@13:high",
      "MW-SECRET-005@15:high", "MW-TLS-007@15:high",
      "MW-SECRET-005@17:high", "MW-TLS-007@17:high",
      "MW-SECRET-005@19:high", "MW-TLS-008@19:high",
    ]);
    const result = auditSources([{ file: "d.yaml", text }]);
    expect(result.findings.map((finding) => finding.evidence)).toEqual([
      "DATABASE_URL: postgres://orders:****@db:5432/orders?sslmode=disable",
      "DATABASE_URL: sslmode=disable (postgres://db:5432)",
      "REDIS_URL: redis://:****@redis:6379",
      "REDIS_URL: redis://redis:6379",
      "AMQP_URL: amqp://u:****@mq",
      "AMQP_URL: amqp://mq",
      "MONGO_URI: mongodb://u:****@mongo",
      "MONGO_URI: no tls=true (mongodb://mongo)",
    ]);
    expect(JSON.stringify(result.findings)).not.toMatch(/Hunter2Secret|:pw@|:p@/);
    // The location is the env entry's value: file, document, line and column.
    expect(result.findings[0]).toMatchObject({ file: "d.yaml", document: 0, line: 13, column: 11 });
  });

  it("reads sslmode=require as TLS without host name checks, and lowers a loopback URL", () => {
    expect(audit("d.yaml", deployment({ DATABASE_URL: "postgresql://db.shop.svc/orders?sslmode=require" }))).toEqual(["MW-TLS-003@13:medium"]);
    expect(audit("d.yaml", deployment({ DATABASE_URL: "postgres://localhost:5432/orders?sslmode=disable" }))).toEqual(["MW-TLS-002@13:low"]);
    expect(audit("d.yaml", deployment({ DATABASE_URL: "postgres://db.shop.svc/orders", PGSSLMODE: "disable" }))).toEqual(["MW-TLS-002@13:high"]);
  });

  it("stays quiet on the TLS forms, on URLs without a password and on values from a Secret", () => {
    expect(audit("d.yaml", deployment({
      DATABASE_URL: "postgres://db.shop.svc:5432/orders?sslmode=verify-full",
      REPORTS_URL: "postgres://reports.shop.svc/reports",
      PGSSLMODE: "verify-full",
      REDIS_URL: "rediss://redis.shop.svc:6380",
      AMQP_URL: "amqps://mq.shop.svc:5671",
      MONGO_URI: "mongodb+srv://orders.abcd1.mongodb.net/orders",
      AUDIT_MONGO_URI: "mongodb://mongo.shop.svc/audit?tls=true",
      CACHE_URL: "rediss://:$(REDIS_PASSWORD)@redis.shop.svc:6380",
      HTTPS_PROXY: "http://proxy.egress.svc:3128",
      TOKEN_AUDIENCE: "http://orders.example.org",
    }))).toEqual([]);
    const fromSecret = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: orders\nspec:\n  template:\n    spec:\n      containers:\n      - name: orders\n        image: orders:1.0\n        env:\n        - name: DATABASE_URL\n          valueFrom:\n            secretKeyRef: { name: db, key: url }\n";
    expect(audit("d.yaml", fromSecret)).toEqual([]);
  });

  it("reads MySQL URLs and Go DSNs in env (MW-TLS-004): no TLS setting, or one that falls back or skips verification", () => {
    const text = deployment({
      DATABASE_URL: "mysql://orders:Hunter2Secret@mysql.shop.svc:3306/orders",
      REPORTS_DSN: "reports:pw@tcp(mysql.shop.svc:3306)/reports?tls=preferred",
      SQLALCHEMY_URL: "mysql+pymysql://app@mysql.shop.svc/app?ssl-mode=REQUIRED",
      PRISMA_URL: "mysql://app@mysql.shop.svc/app?sslaccept=accept_invalid_certs",
      LOCAL_URL: "mariadb://app@127.0.0.1/app",
    });
    expect(audit("d.yaml", text)).toEqual(["MW-SECRET-005@13:high", "MW-TLS-004@13:high", "MW-SECRET-005@15:high", "MW-TLS-004@15:high", "MW-TLS-004@17:high", "MW-TLS-004@19:high", "MW-TLS-004@21:low"]);
    const evidence = auditSources([{ file: "d.yaml", text }]).findings.filter((finding) => finding.ruleId === "MW-TLS-004").map((finding) => finding.evidence);
    expect(evidence).toEqual([
      "DATABASE_URL: no TLS setting (mysql://mysql.shop.svc:3306)",
      "REPORTS_DSN: tls=preferred (tcp(mysql.shop.svc:3306))",
      "SQLALCHEMY_URL: ssl-mode=REQUIRED (mysql+pymysql://mysql.shop.svc)",
      "PRISMA_URL: sslaccept=accept_invalid_certs (mysql://mysql.shop.svc)",
      "LOCAL_URL: no TLS setting (mariadb://127.0.0.1)",
    ]);
    expect(JSON.stringify(auditSources([{ file: "d.yaml", text }]).findings)).not.toMatch(/Hunter2Secret|:pw@/);
    // Verified TLS in each dialect: quiet.
    expect(audit("d.yaml", deployment({
      A_URL: "mysql://app@mysql.shop.svc/app?tls=true",
      B_DSN: "app@tcp(mysql.shop.svc:3306)/app?tls=custom",
      C_URL: "mysql+pymysql://app@mysql.shop.svc/app?ssl_ca=/etc/mysql/ca.pem",
      D_URL: "mysql://app@mysql.shop.svc/app?sslaccept=strict",
      E_URL: "mysql://app@mysql.shop.svc/app?ssl-mode=VERIFY_IDENTITY",
      F_URL: "mysql://app@mysql.shop.svc/app?ssl={\"rejectUnauthorized\":true}",
      G_URL: "postgres://db.shop.svc/app?sslmode=verify-full",
    }))).toEqual([]);
  });

  it("reads docker-compose environment like container env, map and list forms", () => {
    const compose = [
      "services:",
      "  orders:",
      "    image: orders",
      "    environment:",
      "      DATABASE_URL: postgres://orders:Hunter2Secret@db:5432/orders",
      "      PGSSLMODE: verify-full",
      "      API_TOKEN: tok_live_8f3a9c2d",
      "      SESSION_SECRET_ROTATION: daily",
      "  worker:",
      "    image: worker",
      "    environment:",
      "      - REDIS_URL=redis://:pw@redis:6379",
      "      - DB_PASSWORD",
      "      - MYSQL_DSN=app@tcp(mysql:3306)/app",
      "  reports:",
      "    image: reports",
      "    environment:",
      "      REPORTS_URL: postgres://reports-db/reports",
      "      DB_PASSWORD:",
      "",
    ].join("\n");
    // orders: the URL's password and the token (PGSSLMODE of the same service verifies); worker:
    // the Redis password and plaintext, the MySQL DSN without TLS; DB_PASSWORD passed through from
    // the host holds nothing; reports: no sslmode (PGSSLMODE of another service does not count).
    expect(audit("docker-compose.yml", compose)).toEqual(["MW-SECRET-005@5:high", "MW-SECRET-005@7:high", "MW-SECRET-005@12:high", "MW-TLS-007@12:high", "MW-TLS-004@14:high", "MW-TLS-002@18:high"]);
    expect(JSON.stringify(auditSources([{ file: "docker-compose.yml", text: compose }]).findings)).not.toMatch(/Hunter2Secret|tok_live|:pw@/);
  });

  it("leaves MICRO_* variables to the micro rules (one finding, not two)", () => {
    expect(audit("d.yaml", deployment({ MICRO_BROKER_ADDRESS: "nats://nats.shop.svc:4222", MICRO_ENABLE_TLS: "true", MICRO_TLS_CERT_FILE: "/tls/cert.pem", MICRO_TLS_CA_FILE: "/tls/ca.pem", MICRO_TLS_CLIENT_CA_FILE: "/tls/ca.pem" })))
      .toEqual(["MW-MICRO-005@13:medium"]);
  });
});

describe("MongoDB certificate checks switched off inside values (MW-TLS-009)", () => {
  it("reads tlsInsecure and tlsAllowInvalidCertificates in params, host and connection strings", () => {
    expect(audit("m.yaml", component("state.mongodb", { host: "mongo.prod.internal:27017", params: "?tls=true&tlsInsecure=true" }))).toEqual(["MW-TLS-009@11:high"]);
    expect(audit("m.yaml", component("state.mongodb", { host: "mongo.prod.internal:27017", params: "?tls=true&tlsAllowInvalidCertificates=true" }))).toEqual(["MW-TLS-009@11:high"]);
    expect(audit("m.yaml", component("state.mongodb", { connectionString: "mongodb://mongo.prod.internal/orders?ssl=true&sslAllowInvalidCertificates=true" }))).toEqual(["MW-TLS-009@9:high"]);
  });
  it("tlsAllowInvalidHostnames is medium (the certificate is still checked), low on loopback", () => {
    expect(audit("m.yaml", component("state.mongodb", { host: "mongo.prod.internal:27017", params: "?tls=true&tlsAllowInvalidHostnames=true" }))).toEqual(["MW-TLS-009@11:medium"]);
    expect(audit("m.yaml", component("state.mongodb", { host: "localhost:27017", params: "?tls=true&tlsAllowInvalidHostnames=true" }))).toEqual(["MW-TLS-009@11:low"]);
  });
  it("stays quiet when the checks are on", () => {
    expect(audit("m.yaml", component("state.mongodb", { host: "mongo.prod.internal:27017", params: "?tls=true&tlsInsecure=false&tlsCAFile=/etc/mongo/ca.pem" }))).toEqual([]);
  });
});

describe("Pulsar's plaintext scheme (MW-TLS-007)", () => {
  it("reports pulsar:// and leaves pulsar+ssl:// alone", () => {
    expect(audit("p.yaml", component("pubsub.pulsar", { host: "pulsar://pulsar.prod.internal:6650" }))).toEqual(["MW-TLS-007@9:high"]);
    const found = auditSources([{ file: "p.yaml", text: component("pubsub.pulsar", { host: "pulsar://pulsar.prod.internal:6650" }) }]).findings[0];
    expect(found?.message).toMatch(/Use pulsar\+ssl:\/\//);
    expect(audit("p.yaml", component("pubsub.pulsar", { host: "pulsar+ssl://pulsar.prod.internal:6651", enableTLS: "true" }))).toEqual([]);
    expect(audit("p.yaml", component("pubsub.pulsar", { host: "pulsar://localhost:6650" }))).toEqual(["MW-TLS-007@9:low"]);
  });
});

describe("inline kustomize patches", () => {
  const kustomization = (patches: string): string =>
    `apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../base\npatches:\n${patches}`;
  const json6902 = "  - target:\n      kind: Configuration\n      name: appconfig\n    patch: |-\n      - op: replace\n        path: /spec/mtls/enabled\n        value: false\n";
  const strategicMerge = "  - patch: |-\n      apiVersion: dapr.io/v1alpha1\n      kind: Configuration\n      metadata:\n        name: appconfig\n      spec:\n        mtls:\n          enabled: false\n";

  it("audits a JSON6902 operation's value and a strategic-merge document, at the Kustomization's lines", () => {
    const result = auditSources([{ file: "overlays/prod/kustomization.yaml", text: kustomization(json6902 + strategicMerge) }]);
    expect(result.findings.map((finding) => `${finding.ruleId}@${finding.line}:${finding.column}:${finding.severity}`)).toEqual(["MW-MTLS-001@12:9:high", "MW-MTLS-001@20:11:high"]);
    expect(result.findings[0]).toMatchObject({ file: "overlays/prod/kustomization.yaml", document: 0, evidence: "mtls.enabled: false" });
    expect(result.findings[0]?.message).toMatch(/inline kustomize patch \(patches\[0\], JSON6902 on Configuration appconfig\)/);
    expect(result.findings[1]?.message).toMatch(/inline kustomize patch \(patches\[1\]\)/);
    expect(result.unknownKinds).toEqual({});
  });

  it("names the document of a multi-document file, and reads JSON patches and patchesJson6902", () => {
    const json = "patchesJson6902:\n  - target: { group: dapr.io, version: v1alpha1, kind: Configuration, name: appconfig }\n    patch: '[{\"op\": \"add\", \"path\": \"/spec/mtls\", \"value\": {\"enabled\": false}}]'\n";
    const text = `apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n---\napiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n${json}`;
    const result = auditSources([{ file: "kustomization.yaml", text }]);
    // A quoted (not block) patch is reported at its `patch:` key.
    expect(result.findings.map((finding) => `${finding.ruleId}@${finding.line}:${finding.column} doc ${finding.document}`)).toEqual(["MW-MTLS-001@10:5 doc 1"]);
  });

  it("a partial patch never stands in for the Configuration it patches (dapr.io/config, drift)", () => {
    const tracing = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\npatches:\n  - target: { kind: Configuration, name: appconfig }\n    patch: |-\n      - op: add\n        path: /spec/tracing/samplingRate\n        value: \"1\"\n";
    const config = "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: appconfig\nspec:\n  mtls:\n    enabled: false\n";
    const deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: orders\nspec:\n  template:\n    metadata:\n      annotations:\n        dapr.io/enabled: \"true\"\n        dapr.io/app-id: orders\n        dapr.io/config: appconfig\n    spec:\n      containers:\n      - name: orders\n        image: orders:1.0\n";
    const files = [{ file: "app/kustomization.yaml", text: tracing }, { file: "app/config.yaml", text: config }, { file: "app/deploy.yaml", text: deploy }];
    expect(auditSources(files).findings.filter((finding) => finding.ruleId === "MW-K8S-005").map((finding) => finding.file)).toEqual(["app/deploy.yaml"]);
    expect(collectPosture(loadSources(files).corpus).find((entry) => entry.aspect === "mTLS" && entry.label === "Configuration" && entry.name === "appconfig")?.value).toBe("off");
  });

  it("reports a JSON6902 remove of the access control (MW-ACCESS-006) at its operation, not other removals", () => {
    const remove = (path: string) => `  - target:\n      kind: Configuration\n      name: appconfig\n    patch: |-\n      - op: remove\n        path: ${path}\n`;
    const result = auditSources([{ file: "overlays/staging/kustomization.yaml", text: kustomization(remove("/spec/accessControl") + remove("/spec/tracing") + remove("/spec")) }]);
    expect(result.findings.map((finding) => `${finding.ruleId}@${finding.line}:${finding.column} ${finding.evidence}`)).toEqual([
      "MW-ACCESS-006@10:9 op: remove, path: /spec/accessControl",
      "MW-ACCESS-006@22:9 op: remove, path: /spec",
    ]);
    expect(result.findings[0]?.message).toMatch(/inline kustomize patch \(patches\[0\], JSON6902 on Configuration appconfig\)/);
    // A patch of remove operations only is read (it was counted as a patch without a target kind).
    expect(result.unknownKinds).toEqual({});
  });

  it("stays quiet on secure patch values and on patches that only name files", () => {
    const secure = "  - target:\n      kind: Configuration\n      name: appconfig\n    patch: |-\n      - op: replace\n        path: /spec/mtls/enabled\n        value: true\n  - path: mtls-patch.yaml\n";
    expect(audit("kustomization.yaml", kustomization(secure))).toEqual([]);
  });
});

// Review audit H4: documented Dapr component shapes that are insecure. Sources:
// - Dapr docs, setup-postgresql-v2 ("Individual connection parameters": host, hostaddr, port,
//   database, user, password, sslRootCert; no sslmode among them, so libpq's default prefer).
//   dapr/components-contrib state/postgresql/v2/metadata.yaml (0031de0f92f8a98357b594ec7e39844aa36e00a1)
//   documents the connectionString profile only.
// - dapr/components-contrib pubsub/rabbitmq/metadata.yaml (04100bf61d663c921009302e81f979b21aac2e4f):
//   profile "Authenticate Using RabbitMQ properties" (hostname, username, password) and
//   `protocol` with example "amqp", "amqps".
// - dapr/components-contrib pubsub/pulsar/metadata.yaml (026e40178b0d5c3d0410a1c3c1eac4974595728f):
//   `enableTLS` default 'false'; pubsub/pulsar/pulsar.go of that tree prefixes a host without
//   http(s):// with "pulsar://".
// - dapr/components-contrib state/sqlserver/metadata.yaml (645e1b33bc9c04b1c34c4a181db71c6ccfc951aa):
//   ADO-style connectionString ("Server=…;Database=…;User Id=…;Password=…;"); the driver,
//   go-mssqldb, documents encrypt disable/false ("not encrypted beyond the login packet", the
//   default) / true and TrustServerCertificate=true ("any certificate … susceptible to MITM").
describe("documented component shapes (review audit H4)", () => {
  it("postgres with individual host/user/password fields and no connection string: sslmode not set (MW-TLS-002)", () => {
    const fields = { host: "pg.prod.internal", port: "5432", database: "orders", user: "dapr" };
    expect(audit("pg.yaml", component("state.postgresql", fields))).toEqual(["MW-TLS-002@9:high"]);
    expect(auditSources([{ file: "pg.yaml", text: component("state.postgresql", fields) }]).findings[0]?.evidence).toBe("sslmode not set (libpq default: prefer) (host: pg.prod.internal)");
    expect(audit("pg.yaml", component("state.postgresql", { ...fields, host: "localhost" }))).toEqual(["MW-TLS-002@9:low"]);
    // Quiet: a socket, and a connection string (from a secret) that may carry the sslmode.
    expect(audit("pg.yaml", component("state.postgresql", { ...fields, host: "/var/run/postgresql" }))).toEqual([]);
    const secretConnection = component("state.postgresql", fields) + "  - name: connectionString\n    secretKeyRef:\n      name: pg\n      key: dsn\n";
    expect(audit("pg.yaml", secretConnection)).toEqual([]);
  });

  it("RabbitMQ properties profile with protocol: amqp (MW-TLS-007)", () => {
    expect(audit("r.yaml", component("pubsub.rabbitmq", { hostname: "rabbitmq.prod.svc", username: "orders", protocol: "amqp" }))).toEqual(["MW-TLS-007@13:high"]);
    expect(audit("r.yaml", component("pubsub.rabbitmq", { hostname: "localhost", protocol: "amqp" }))).toEqual(["MW-TLS-007@11:low"]);
    expect(audit("r.yaml", component("pubsub.rabbitmq", { hostname: "rabbitmq.prod.svc", protocol: "amqps" }))).toEqual([]);
    // One finding when the connection string already says amqp://.
    expect(audit("r.yaml", component("pubsub.rabbitmq", { connectionString: "amqp://rabbitmq.prod.svc:5672", protocol: "amqp" }))).toEqual(["MW-TLS-007@9:high"]);
  });

  it("Pulsar with a host without a scheme (MW-TLS-011, whatever enableTLS says)", () => {
    expect(audit("p.yaml", component("pubsub.pulsar", { host: "broker.pulsar.svc:6650", consumerID: "orders" }))).toEqual(["MW-TLS-011@9:high"]);
    expect(audit("p.yaml", component("pubsub.pulsar", { host: "broker.pulsar.svc:6650", enableTLS: "true" }))).toEqual(["MW-TLS-011@9:high"]);
    expect(audit("p.yaml", component("pubsub.pulsar", { host: "pulsar+ssl://broker.pulsar.svc:6651", enableTLS: "true" }))).toEqual([]);
    // A pulsar:// host is MW-TLS-007's alone; an explicit "false" does not add a second finding.
    expect(audit("p.yaml", component("pubsub.pulsar", { host: "pulsar://broker.pulsar.svc:6650" }))).toEqual(["MW-TLS-007@9:high"]);
    expect(audit("p.yaml", component("pubsub.pulsar", { host: "broker.pulsar.svc:6650", enableTLS: "false" }))).toEqual(["MW-TLS-011@9:high"]);
  });

  it("SQL Server Encrypt=false / TrustServerCertificate=true, in components and env (MW-TLS-014)", () => {
    const conn = (options: string) => component("state.sqlserver", { connectionString: `Server=sql.prod.internal;Database=dapr;User ID=dapr;${options}` });
    expect(audit("s.yaml", conn("Encrypt=false;"))).toEqual(["MW-TLS-014@9:high"]);
    expect(audit("s.yaml", conn("encrypt=disable;"))).toEqual(["MW-TLS-014@9:high"]);
    expect(audit("s.yaml", conn("Encrypt=true;TrustServerCertificate=true;"))).toEqual(["MW-TLS-014@9:medium"]);
    expect(audit("s.yaml", conn("Encrypt=True;"))).toEqual([]);
    expect(audit("s.yaml", conn("Encrypt=strict;"))).toEqual([]);
    expect(audit("cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  MSSQL_URL: sqlserver://sql.prod.internal:1433?database=orders&encrypt=disable\n")).toEqual(["MW-TLS-014@6:high"]);
    // Not SQL Server: a MySQL .NET string (SslMode) and a URL that is not sqlserver://.
    expect(audit("s.yaml", component("state.mysql", { connectionString: "dapr@tcp(mysql.db.svc:3306)/?tls=true" }))).toEqual([]);
  });
});
