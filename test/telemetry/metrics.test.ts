import { spawnSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { register as globalRegistry } from "prom-client";
import { isMeshwardError } from "../../src/errors.ts";
import { checkMetricName, createMeshMetrics, createMetrics, HANDSHAKE_FAILURE_REASONS } from "../../src/telemetry/metrics.ts";

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    if (isMeshwardError(error)) return error.code;
    throw error;
  }
  return "none";
}

/** Parses Prometheus text into sample lines: name{labels} -> value. */
function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const space = line.lastIndexOf(" ");
    out.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return out;
}

describe("metric name checks (DESIGN.md: meshward_<component>_<what>_<unit>)", () => {
  it.each([
    ["meshward_ca_sign_requests_total", "counter"],
    ["meshward_cert_expiry_timestamp_seconds", "gauge"],
    ["meshward_ca_sign_duration_seconds", "histogram"],
    ["meshward_proxy_body_size_bytes", "histogram"],
    ["meshward_connections_active", "gauge"],
  ] as const)("accepts %s as a %s", (name, type) => {
    expect(() => checkMetricName(name, type)).not.toThrow();
  });

  it.each([
    ["ca_sign_requests_total", "counter", "no prefix"],
    ["meshward_total", "counter", "too short"],
    ["meshward_CA_requests_total", "counter", "upper case"],
    ["meshward-ca-requests-total", "counter", "dashes"],
    ["meshward_ca_sign_requests", "counter", "counter without _total"],
    ["meshward_ca_requests_total", "gauge", "gauge with _total"],
    ["meshward_ca_sign_latency_ms", "histogram", "histogram not in base unit"],
  ] as const)("refuses %s as a %s (%s)", (name, type, _why) => {
    expect(code(() => checkMetricName(name, type))).toBe("E_METRIC_NAME_INVALID");
  });

  it("helpers check names and labels before registering", () => {
    const metrics = createMetrics();
    expect(code(() => metrics.counter({ name: "meshward_x_requests", help: "h" }))).toBe("E_METRIC_NAME_INVALID");
    expect(code(() => metrics.gauge({ name: "meshward_x_things", help: "h", labelNames: ["Bad-Label"] }))).toBe("E_METRIC_NAME_INVALID");
    expect(metrics.registry.getMetricsAsArray()).toHaveLength(0);
  });
});

describe("createMetrics", () => {
  it("uses its own registry, not prom-client's global one", async () => {
    const metrics = createMetrics();
    metrics.counter({ name: "meshward_test_isolated_total", help: "h" }).inc();
    expect(globalRegistry.getSingleMetric("meshward_test_isolated_total")).toBeUndefined();
    expect(createMetrics().registry.getSingleMetric("meshward_test_isolated_total")).toBeUndefined();
    expect(await metrics.text()).toContain("meshward_test_isolated_total 1");
  });

  it("returns the existing metric for an identical definition and refuses a conflicting one", () => {
    const metrics = createMetrics();
    const a = metrics.counter({ name: "meshward_test_events_total", help: "h", labelNames: ["kind"] });
    const b = metrics.counter({ name: "meshward_test_events_total", help: "h", labelNames: ["kind"] });
    expect(b).toBe(a);
    expect(code(() => metrics.counter({ name: "meshward_test_events_total", help: "h", labelNames: ["other"] }))).toBe("E_METRIC_CONFLICT");
    expect(code(() => metrics.gauge({ name: "meshward_test_events_seconds", help: "h" }))).toBe("none");
  });

  it("optionally collects process metrics under the meshward_ prefix", async () => {
    const text = await createMetrics({ processMetrics: true }).text();
    expect(text).toMatch(/^meshward_process_resident_memory_bytes \d+/m);
    expect(await createMetrics().text()).not.toContain("process_");
  });
});

describe("shared mesh metrics", () => {
  it("exposes every shared series with the documented names and labels", async () => {
    const metrics = createMetrics();
    const mesh = createMeshMetrics(metrics);
    mesh.certExpiry.set({ kind: "workload" }, 1_900_000_000);
    mesh.crlNextUpdate.set({ kind: "workload" }, 1_800_000_000);
    mesh.rotations.inc({ kind: "workload", result: "ok" });
    mesh.connectionsActive.inc({ direction: "inbound" });
    mesh.plaintextConnections.inc();
    mesh.policyDenials.inc({ caller: "spiffe://example.org/ns/default/a", rule: "app:a/default:default-action" });
    mesh.requestDuration.observe({ direction: "inbound", protocol: "http", status_class: "2xx" }, 0.003);
    const s = samples(await metrics.text());
    expect(s.get('meshward_cert_expiry_timestamp_seconds{kind="workload"}')).toBe(1_900_000_000);
    expect(s.get('meshward_crl_next_update_timestamp_seconds{kind="workload"}')).toBe(1_800_000_000);
    expect(s.get('meshward_rotation_total{kind="workload",result="ok"}')).toBe(1);
    expect(s.get('meshward_connections_active{direction="inbound"}')).toBe(1);
    expect(s.get("meshward_plaintext_connections_total")).toBe(1);
    expect(s.get('meshward_policy_denials_total{caller="spiffe://example.org/ns/default/a",rule="app:a/default:default-action"}')).toBe(1);
    expect(s.get('meshward_request_duration_seconds_bucket{le="0.005",direction="inbound",protocol="http",status_class="2xx"}')).toBe(1);
    expect(s.get('meshward_request_duration_seconds_bucket{le="0.0025",direction="inbound",protocol="http",status_class="2xx"}')).toBe(0);
    for (const reason of HANDSHAKE_FAILURE_REASONS) {
      expect(s.get(`meshward_tls_handshake_failures_total{direction="outbound",reason="${reason}"}`)).toBe(0);
    }
  });

  it("can be created twice on one registry (several components in one process)", () => {
    const metrics = createMetrics();
    const a = createMeshMetrics(metrics);
    const b = createMeshMetrics(metrics);
    expect(b.handshakes).toBe(a.handshakes);
  });

  it("the exposition passes `promtool check metrics`", async () => {
    const metrics = createMetrics({ processMetrics: true });
    const mesh = createMeshMetrics(metrics);
    mesh.handshakeFailed("inbound", Object.assign(new Error("x"), { code: "CERT_HAS_EXPIRED" }));
    mesh.requestDuration.observe({ direction: "outbound", protocol: "grpc", status_class: "2xx" }, 0.01);
    const result = spawnSync("promtool", ["check", "metrics"], { input: await metrics.text(), encoding: "utf8" });
    expect(result.error).toBeUndefined();
    expect(`${result.stdout}${result.stderr}`.trim()).toBe("");
    expect(result.status).toBe(0);
  });
});
