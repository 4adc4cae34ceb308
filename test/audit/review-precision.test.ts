import { describe, expect, it } from "vitest";
import { auditSources } from "../../src/audit/audit.ts";

// Precision findings of review-auditprec (branch fix-prec): each block is one finding (H1…L4),
// with the quiet cases beside the ones that must be reported. Fixtures are written the way the
// upstream documentation writes them; the source is cited above each block.

const findings = (file: string, text: string): string[] =>
  auditSources([{ file, text }]).findings.map((finding) => `${finding.ruleId}@${finding.line}:${finding.severity} ${finding.evidence}`);

const ids = (file: string, text: string): string[] =>
  auditSources([{ file, text }]).findings.map((finding) => `${finding.ruleId}@${finding.line}:${finding.severity}`);

/** A Deployment whose one container has these env values. */
const deployment = (vars: Record<string, string>): string =>
  `apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: orders\nspec:\n  template:\n    spec:\n      containers:\n        - name: app\n          image: orders:1\n          env:\n${Object.entries(vars).map(([name, value]) => `            - name: ${name}\n              value: ${JSON.stringify(value)}`).join("\n")}\n`;

/** The env line of the n-th variable (0-based) in `deployment`. */
const envLine = (index: number): number => 13 + 2 * index;

// H1. learn.microsoft.com/azure/container-apps/dapr-components, "Component schema": "In Azure
// Container Apps, the above schema is slightly simplified … remove unnecessary fields, including
// apiVersion, kind, and redundant metadata and spec properties": `componentType`, `version`,
// `metadata` (`name` + `value` | `secretRef`), `secrets`, `scopes`.
describe("H1: Azure Container Apps Dapr components (componentType:)", () => {
  const aca = [
    "componentType: state.redis",
    "version: v1",
    "metadata:",
    "  - name: redisHost",
    "    value: orders-cache.redis.cache.windows.net:6379",
    "  - name: redisPassword",
    "    value: Zx9vQk2LmN8pR4tY",
    "  - name: enableTLS",
    '    value: "false"',
    "scopes:",
    "  - orders",
    "",
  ].join("\n");

  it("an inline password and enableTLS false are reported at their lines", () => {
    expect(findings("aca/statestore.yaml", aca)).toEqual([
      "MW-SECRET-001@7:high redisPassword: <redacted, 16 characters>",
      "MW-TLS-001@9:high enableTLS: \"false\"",
    ]);
    expect(auditSources([{ file: "aca/statestore.yaml", text: aca }]).unknownKinds).toEqual({});
  });

  it("a component without enableTLS is reported at componentType; secretRef entries are references", () => {
    const text = "componentType: state.redis\nversion: v1\nmetadata:\n  - name: redisHost\n    value: cache.redis.cache.windows.net:6380\n  - name: redisPassword\n    secretRef: redis-key\nsecrets:\n  - name: redis-key\n    keyVaultUrl: https://kv.vault.azure.net/secrets/redis-key\n    identity: system\n";
    expect(findings("aca/statestore.yaml", text)).toEqual(["MW-TLS-001@1:high state.redis without enableTLS"]);
    const secure = text.replace("metadata:\n", "metadata:\n  - name: enableTLS\n    value: \"true\"\n");
    expect(findings("aca/statestore.yaml", secure)).toEqual([]);
  });

  it("inline `secrets` values are MW-SECRET-008 and judged by the connection-string rules", () => {
    const text = "componentType: state.postgresql\nversion: v1\nmetadata:\n  - name: connectionString\n    secretRef: pg\nsecrets:\n  - name: pg\n    value: \"postgres://app:Wint3r-is-c0ming@pg.prod.internal/orders?sslmode=disable\"\n";
    expect(ids("aca/pg.yaml", text)).toEqual(["MW-SECRET-008@8:medium", "MW-TLS-002@8:high"]);
  });

  it("the ARM resource form (Microsoft.App/managedEnvironments/daprComponents, fields under properties) is read too", () => {
    const text = "name: pubsub\ntype: Microsoft.App/managedEnvironments/daprComponents\nproperties:\n  componentType: pubsub.rabbitmq\n  version: v1\n  metadata:\n    - name: host\n      value: amqp://rabbit.internal:5672\n";
    expect(findings("arm/pubsub.yaml", text)).toEqual(["MW-TLS-007@8:high host: amqp://rabbit.internal:5672"]);
  });

  it("documents that only look alike stay unknown kinds", () => {
    const result = auditSources([{ file: "x.yaml", text: "componentType: not a type\nmetadata:\n  - name: a\n    value: b\n" }]);
    expect(result.findings).toEqual([]);
    expect(result.unknownKinds).toEqual({ "(no kind)": 1 });
  });
});
