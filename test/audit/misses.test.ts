import { describe, expect, it } from "vitest";
import { auditSources } from "../../src/audit/audit.ts";
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
  it("Pulsar: enableTLS \"false\"; tlsAllowInsecureConnection", () => {
    expect(audit("p.yaml", component("pubsub.pulsar", { host: "pulsar.svc:6650", enableTLS: "false" }))).toEqual(["MW-TLS-011@11:high"]);
    expect(audit("p.yaml", component("pubsub.pulsar", { host: "pulsar.svc:6651", enableTLS: "true", tlsAllowInsecureConnection: "true" }))).toEqual(["MW-TLS-009@13:high"]);
    expect(audit("p.yaml", component("pubsub.pulsar", { host: "pulsar.svc:6651", enableTLS: "true" }))).toEqual([]);
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
    expect(audit("docker-compose.yml", compose)).toEqual(["MW-MICRO-001@5:high", "MW-MICRO-005@6:medium"]);
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
