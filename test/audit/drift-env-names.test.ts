import { describe, expect, it } from "vitest";
import { loadSources } from "../../src/audit/audit.ts";
import { collectPosture, compareEnvironments } from "../../src/audit/drift.ts";

// Left from the stop-42 audit review: resources named after their environment
// (`statestore-staging` / `statestore-production`) were two `differs` rows, so a staging
// component without TLS next to a production one with it never read `weaker`.

const redis = (name: string, tls: boolean) =>
  `apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: ${name}\nspec:\n  type: state.redis\n  version: v1\n  metadata:\n  - name: redisHost\n    value: redis.data.svc:6379\n${tls ? "  - name: enableTLS\n    value: \"true\"\n" : ""}`;

function drift(environments: Record<string, Record<string, string>>) {
  const report = compareEnvironments(Object.entries(environments).map(([name, files]) => {
    const { corpus } = loadSources(Object.entries(files).map(([file, text]) => ({ file, text })));
    return { name, posture: collectPosture(corpus) };
  }));
  return report.rows.map((row) => `${row.status} ${row.subject} ${JSON.stringify(row.values)}`);
}

describe("drift: resource names that carry their environment", () => {
  it("statestore-staging and statestore-production are one row, weaker in staging", () => {
    expect(drift({
      staging: { "state.yaml": redis("statestore-staging", false) },
      production: { "state.yaml": redis("statestore-production", true) },
    })).toEqual(['weaker component statestore-<env> (state.redis) ["off/weak (MW-TLS-001)","on"]']);
  });

  it("prefixes and the environment folders' own names count (prod-, qa-, eu1-)", () => {
    expect(drift({
      qa: { "state.yaml": redis("qa-orders", false) },
      prod: { "state.yaml": redis("prod-orders", true) },
    })).toEqual(['weaker component <env>-orders (state.redis) ["off/weak (MW-TLS-001)","on"]']);
    expect(drift({
      eu1: { "state.yaml": redis("orders-eu1", false) },
      production: { "state.yaml": redis("orders-production", true) },
    })).toEqual(['weaker component orders-<env> (state.redis) ["off/weak (MW-TLS-001)","on"]']);
  });

  it("a name shared as is stays as is; a word that is not an environment is not stripped", () => {
    expect(drift({
      staging: { "state.yaml": redis("statestore", false) },
      production: { "state.yaml": redis("statestore", true) },
    })).toEqual(['weaker component statestore (state.redis) ["off/weak (MW-TLS-001)","on"]']);
    expect(drift({
      staging: { "state.yaml": redis("orders-cache", false) },
      production: { "state.yaml": redis("orders-store", true) },
    })).toEqual([
      'differs component orders-cache (state.redis) ["off/weak (MW-TLS-001)",null]',
      'differs component orders-store (state.redis) [null,"on"]',
    ]);
  });

  it("does not merge two suffixed resources of one environment, nor one next to an unsuffixed one of that name", () => {
    const rows = drift({
      staging: { "a.yaml": redis("cache-dev", false), "b.yaml": redis("cache-staging", true) },
      production: { "a.yaml": redis("cache-production", true) },
    });
    expect(rows).toHaveLength(3);
    expect(rows.every((row) => !row.includes("<env>"))).toBe(true);
    const withPlain = drift({
      staging: { "a.yaml": redis("cache-staging", false) },
      production: { "a.yaml": redis("cache-production", true), "b.yaml": redis("cache", true) },
    });
    expect(withPlain.every((row) => !row.includes("<env>"))).toBe(true);
  });
});
