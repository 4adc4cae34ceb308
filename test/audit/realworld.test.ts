import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { auditPaths } from "../../src/audit/audit.ts";

// Public files copied byte for byte (fixtures/realworld/SOURCES.md names repository and commit
// of each). Each file's exact findings are pinned here, as RULE@line:severity. One PEM label is
// stored as a placeholder (no tracked file holds a private-key marker): the tests read a
// temporary copy of the tree with it put back, byte for byte the upstream file.
const STORED = join(import.meta.dirname, "fixtures", "realworld");
const WITH_PEM_LABEL = "dapr/docs/daprdocs/content/en/reference/components-reference/supported-pubsub/setup-gcp-pubsub.md";
const REALWORLD = join(mkdtempSync(join(tmpdir(), "meshward-realworld-")), "realworld");
cpSync(STORED, REALWORLD, { recursive: true });
writeFileSync(join(REALWORLD, WITH_PEM_LABEL), readFileSync(join(STORED, WITH_PEM_LABEL), "utf8").replace("@@PEM-KEY-LABEL@@", ["PRIVATE", "KEY"].join(" ")));
afterAll(() => rmSync(join(REALWORLD, ".."), { recursive: true, force: true }));

/** Upstream length in characters: a changed copy fails here before its findings are compared. */
const LENGTHS: Record<string, number> = {
  "dapr/components-contrib/tests/config/bindings/aws/s3/docker/bindings.yml": 603,
  "dapr/components-contrib/tests/config/bindings/aws/s3/terraform/bindings.yml": 581,
  "dapr/components-contrib/tests/certification/bindings/zeebe/command/components/retryBackOff/zeebe-command.yaml": 291,
  "dapr/components-contrib/tests/config/state/etcd/v2/statestore.yaml": 267,
  "dapr/components-contrib/tests/certification/pubsub/pulsar/components/tls/tls_enable_insecure.yaml": 477,
  "dapr/components-contrib/tests/certification/pubsub/pulsar/components/consumer_five/pulsar.yaml": 382,
  "dapr/components-contrib/tests/config/bindings/postgresql/azure/bindings.yml": 481,
  "dapr/components-contrib/tests/certification/pubsub/kafka/components/auth_oidc_secret_key/kafka.yaml": 513,
  "dapr/dapr/tests/config/dapr_tracing_config.yaml": 245,
  "dapr/dapr/tests/config/external_invocation_http_endpoint.yaml": 203,
  "dapr/dapr/tests/config/external_invocation_http_endpoint_tls.yaml": 477,
  "dapr/dapr/tests/config/kubernetes_secret.yaml": 97,
  "micro/go-micro/examples/deployment/docker-compose.yml": 1560,
  "micro/go-micro/examples/kubernetes/config/micro/api.yaml": 507,
  "dapr/quickstarts/tutorials/distributed-calculator/deploy/go-adder.yaml": 551,
  "micro/go-micro/gateway/mcp/deploy/helm/mcp-gateway/templates/deployment.yaml": 3336,
  "dapr/docs/daprdocs/content/en/reference/components-reference/supported-pubsub/setup-gcp-pubsub.md": 9066,
  "dapr/samples/hello-docker-compose/components/pubsub.yaml": 202,
  "dapr/samples/middleware-oauth-google/deploy/pipeline.yaml": 298,
  "dapr/samples/dapr-argocd/gitops/conductor/secret.yaml": 264,
  "dapr/samples/batch-file-processing/deploy/batch-processor.yaml": 803,
  "dapr/samples/batch-file-processing/deploy/dapr-tracing.yaml": 113,
  "dapr/samples/batch-file-processing/deploy/messagebus.yaml": 345,
  "dapr/samples/outbox/resources/statestoresql.yaml": 342,
};

const CC = "dapr/components-contrib/tests";
const EXPECTED: Record<string, string[]> = {
  // Miss classes, now reported. Loopback-only components are low.
  [`${CC}/config/bindings/aws/s3/docker/bindings.yml`]: ["MW-TLS-007@13:low", "MW-TLS-011@27:low", "MW-TLS-009@29:low"],
  [`${CC}/config/bindings/aws/s3/terraform/bindings.yml`]: ["MW-TLS-011@25:high", "MW-TLS-009@27:high"],
  [`${CC}/certification/bindings/zeebe/command/components/retryBackOff/zeebe-command.yaml`]: ["MW-TLS-011@14:low"],
  [`${CC}/config/state/etcd/v2/statestore.yaml`]: ["MW-TLS-011@14:low"],
  // A host without a scheme is dialled as pulsar:// whatever enableTLS says; Dapr does not read
  // tlsAllowInsecureConnection (pubsub/pulsar/pulsar.go), so it is not a finding of its own.
  [`${CC}/certification/pubsub/pulsar/components/tls/tls_enable_insecure.yaml`]: ["MW-TLS-011@10:low"],
  // No enableTLS and a host without a scheme: dialled as pulsar:// (plaintext), on loopback (review audit H4).
  [`${CC}/certification/pubsub/pulsar/components/consumer_five/pulsar.yaml`]: ["MW-TLS-011@10:low"],
  // oidcTokenEndpoint is a URL (not a secret) on loopback; the client secret is inline.
  [`${CC}/certification/pubsub/kafka/components/auth_oidc_secret_key/kafka.yaml`]: ["MW-TLS-007@14:low", "MW-SECRET-001@18:high", "MW-TLS-006@22:low"],
  "dapr/dapr/tests/config/dapr_tracing_config.yaml": ["MW-TLS-012@9:low"],
  "dapr/dapr/tests/config/external_invocation_http_endpoint.yaml": ["MW-TLS-013@6:high"],
  "dapr/dapr/tests/config/kubernetes_secret.yaml": ["MW-SECRET-007@7:low"],
  // K8S-003 and K8S-006 are opt-in; K8S-002 is one finding per workload.
  "dapr/quickstarts/tutorials/distributed-calculator/deploy/go-adder.yaml": ["MW-K8S-002@17:medium", "MW-K8S-004@20:medium"],
  // micro settings in docker-compose environment (two services) and in a container env.
  // …and, since compose environment is read like container env, the OTLP exporter's plaintext endpoint.
  // OTEL_EXPORTER_OTLP_ENDPOINT: http://jaeger:4318 is a telemetry exporter: low, as MW-TLS-012 (review-auditprec L1).
  "micro/go-micro/examples/deployment/docker-compose.yml": ["MW-MICRO-001@34:high", "MW-MICRO-001@49:high", "MW-TLS-007@52:low"],
  "micro/go-micro/examples/kubernetes/config/micro/api.yaml": ["MW-MICRO-001@20:high"],
  // dapr/samples: dapr.io/config "tracing" resolves to dapr-tracing.yaml in the same folder.
  "dapr/samples/batch-file-processing/deploy/batch-processor.yaml": ["MW-K8S-002@17:medium"],
  "dapr/samples/dapr-argocd/gitops/conductor/secret.yaml": ["MW-SECRET-007@9:low"],
  "dapr/samples/hello-docker-compose/components/pubsub.yaml": ["MW-TLS-001@6:high"],
  "dapr/samples/middleware-oauth-google/deploy/pipeline.yaml": ["MW-TLS-012@9:low"],
  "dapr/samples/outbox/resources/statestoresql.yaml": ["MW-SECRET-002@10:high", "MW-TLS-004@10:low"],
  // Quiet (false-positive classes): `privateKey: private.key`, a connection string that is a
  // `${{…}}` substitution, clientTLS from secrets, and the elided key in a markdown table of
  // dapr/docs are not reported; they have no entry here.
};

function byFile(): Record<string, string[]> {
  const result = auditPaths([REALWORLD]);
  const grouped: Record<string, string[]> = {};
  for (const finding of result.findings) (grouped[relative(REALWORLD, finding.file)] ??= []).push(`${finding.ruleId}@${finding.line}:${finding.severity}`);
  return grouped;
}

describe("real-world files (issue 19)", () => {
  it("are unchanged copies of the upstream files", () => {
    for (const [file, length] of Object.entries(LENGTHS)) expect(readFileSync(join(REALWORLD, file), "utf8").length, file).toBe(length);
  });

  it("yield exactly the pinned findings, file by file", () => {
    expect(byFile()).toEqual(EXPECTED);
  });

  it("report the Helm template once, as not audited, and nothing else goes unread", () => {
    const result = auditPaths([REALWORLD]);
    expect(result.parseErrors.map((problem) => `${relative(REALWORLD, problem.file)}:${problem.line}:${problem.kind}`)).toEqual([
      "micro/go-micro/gateway/mcp/deploy/helm/mcp-gateway/templates/deployment.yaml:4:helm-template",
    ]);
    expect(result.skipped).toEqual([]);
  });

  it("keep the false-positive classes quiet", () => {
    const files = Object.keys(byFile());
    // publicKey/privateKey file paths are not secrets (its one finding is Pulsar without TLS).
    expect(byFile()[`${CC}/certification/pubsub/pulsar/components/consumer_five/pulsar.yaml`]).toEqual(["MW-TLS-011@10:low"]);
    for (const quiet of [
      `${CC}/config/bindings/postgresql/azure/bindings.yml`,
      "dapr/dapr/tests/config/external_invocation_http_endpoint_tls.yaml",
      "dapr/samples/batch-file-processing/deploy/messagebus.yaml",
      "dapr/docs/daprdocs/content/en/reference/components-reference/supported-pubsub/setup-gcp-pubsub.md",
    ]) expect(files, quiet).not.toContain(quiet);
  });
});
