import { readFileSync } from "node:fs";
import { beforeAll, describe, expect, it } from "vitest";
import { definedMetrics, knownSeriesNames, metricNamesIn } from "./promql.ts";

interface Target { expr?: string; refId?: string }
interface Panel { id: number; type: string; title: string; targets?: Target[]; panels?: Panel[]; gridPos?: { h: number; w: number; x: number; y: number }; datasource?: { uid?: string } }
interface Variable { name: string; type: string; definition?: string; current?: { value?: string } }

interface Input { name: string; type: string; pluginId: string }
interface Dashboard { title: string; uid: string; panels: Panel[]; templating: { list: Variable[] }; __inputs?: Input[] }

const DASHBOARD_TEXT = readFileSync(new URL("../../deploy/grafana/meshward.json", import.meta.url), "utf8");
const OPERATIONS_MD = readFileSync(new URL("../../docs/operations.md", import.meta.url), "utf8");

/**
 * Metrics every component registers that are not meshward's own: prom-client's process and
 * Node.js defaults (the Processes row shows CPU and memory; the rest are for ad-hoc queries).
 */
async function meshwardMetricNames(): Promise<string[]> {
  const withDefaults = await definedMetrics({ processMetrics: true });
  const own = new Set((await definedMetrics({ processMetrics: false })).map((m) => m.name));
  expect(withDefaults.length).toBeGreaterThan(own.size); // the defaults are really there, and excluded
  return withDefaults.filter((m) => own.has(m.name)).map((m) => (m.type === "histogram" ? `${m.name}_bucket` : m.name));
}

/** Metric names a dashboard's panels query. */
function panelMetricNames(dashboard: Dashboard): Set<string> {
  return new Set(allPanels(dashboard).flatMap((p) => (p.targets ?? []).flatMap((t) => (t.expr === undefined ? [] : metricNamesIn(t.expr)))));
}

/** Metrics (by their base name) a panel query uses but that no panel shows. */
function metricsWithoutPanel(names: readonly string[], dashboard: Dashboard): string[] {
  const used = panelMetricNames(dashboard);
  // A histogram counts as shown when any of its series is queried.
  return names.filter((name) => !used.has(name) && !(name.endsWith("_bucket") && (used.has(name.replace(/_bucket$/, "_count")) || used.has(name.replace(/_bucket$/, "_sum")))));
}

function allPanels(dashboard: Dashboard): Panel[] {
  return dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
}

/** Every PromQL expression in the dashboard: panel targets and `label_values(metric, label)` variables. */
function expressions(dashboard: Dashboard): { where: string; expr: string }[] {
  const out: { where: string; expr: string }[] = [];
  for (const panel of allPanels(dashboard)) {
    for (const target of panel.targets ?? []) if (target.expr !== undefined) out.push({ where: `${panel.title} ${target.refId ?? ""}`, expr: target.expr });
  }
  for (const variable of dashboard.templating.list) {
    const labelValues = /^label_values\((.*),\s*\w+\)$/.exec(variable.definition ?? "");
    if (labelValues?.[1] !== undefined) out.push({ where: `variable ${variable.name}`, expr: labelValues[1] });
  }
  return out;
}

function unknownMetricNames(dashboard: Dashboard, known: Set<string>): string[] {
  return expressions(dashboard).flatMap(({ where, expr }) => metricNamesIn(expr).filter((n) => !known.has(n)).map((n) => `${where}: ${n}`));
}

describe("deploy/grafana/meshward.json", () => {
  let known: Set<string>;
  let dashboard: Dashboard;
  beforeAll(async () => {
    known = await knownSeriesNames();
    dashboard = JSON.parse(DASHBOARD_TEXT) as Dashboard;
  });

  it("is a Grafana dashboard: title, uid, unique panel ids, grid positions inside 24 columns, the datasource variable", () => {
    expect(dashboard.title).toBe("meshward");
    expect(dashboard.uid).toMatch(/^[\w-]{1,40}$/);
    const panels = allPanels(dashboard);
    const ids = panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const panel of panels) {
      expect(panel.gridPos, panel.title).toBeDefined();
      expect((panel.gridPos?.x ?? 0) + (panel.gridPos?.w ?? 0), panel.title).toBeLessThanOrEqual(24);
      if (panel.type !== "row") {
        expect(panel.targets?.length, panel.title).toBeGreaterThan(0);
        expect(panel.datasource?.uid, panel.title).toBe("${datasource}");
      }
    }
    expect(dashboard.templating.list.map((v) => v.name)).toEqual(["datasource", "job", "instance"]);
  });

  it("every PromQL expression references only metric names meshward defines", () => {
    const exprs = expressions(dashboard);
    expect(exprs.length).toBeGreaterThan(20);
    for (const { where, expr } of exprs) expect(metricNamesIn(expr).length, where).toBeGreaterThan(0);
    expect(unknownMetricNames(dashboard, known)).toEqual([]);
  });

  it("shows every shared mesh metric and every CA metric at least once", () => {
    const used = new Set(expressions(dashboard).flatMap(({ expr }) => metricNamesIn(expr)));
    const required = [
      "meshward_cert_expiry_timestamp_seconds",
      "meshward_rotation_total",
      "meshward_tls_handshakes_total",
      "meshward_tls_handshake_failures_total",
      "meshward_connections_active",
      "meshward_plaintext_connections_total",
      "meshward_policy_denials_total",
      "meshward_request_duration_seconds_bucket",
      "meshward_ca_sign_requests_total",
      "meshward_ca_sign_duration_seconds_bucket",
      "meshward_ca_issued_total",
      "meshward_ca_revoked_certificates",
    ];
    for (const name of required) expect(known.has(name), `${name} is defined`).toBe(true);
    expect(required.filter((name) => !used.has(name))).toEqual([]);
  });

  it("every metric meshward exports (CA, identity, sidecar, egress) has a panel and a row in docs/operations.md", async () => {
    const names = await meshwardMetricNames();
    for (const name of ["meshward_sidecar_refused_total", "meshward_sidecar_upstream_errors_total", "meshward_egress_connections_total", "meshward_egress_connections_active", "meshward_trust_bundle_version"]) {
      expect(names, name).toContain(name);
    }
    expect(metricsWithoutPanel(names, dashboard)).toEqual([]);
    const documented = new Set([...OPERATIONS_MD.matchAll(/^\| `(meshward_[a-z0-9_]+)` \|/gm)].map((m) => m[1]));
    expect(names.map((n) => n.replace(/_bucket$/, "")).filter((n) => !documented.has(n))).toEqual([]);
  });

  it("negative control: a dashboard without the egress panels is caught, and so is an undocumented metric", async () => {
    const names = await meshwardMetricNames();
    const trimmed = JSON.parse(DASHBOARD_TEXT) as Dashboard;
    trimmed.panels = trimmed.panels.filter((p) => !/egress/i.test(p.title));
    expect(metricsWithoutPanel(names, trimmed)).toEqual(["meshward_egress_connections_total", "meshward_egress_connections_active"]);
  });

  it("declares its data source as an import input, so Grafana asks for it on import (and nothing else is left unresolved)", () => {
    expect(dashboard.__inputs).toEqual([expect.objectContaining({ name: "DS_PROMETHEUS", type: "datasource", pluginId: "prometheus" })]);
    const datasource = dashboard.templating.list.find((v) => v.name === "datasource");
    expect(datasource?.current?.value).toBe("${DS_PROMETHEUS}");
    // every ${DS_*} placeholder in the file is an input, and every input is used
    const placeholders = new Set([...DASHBOARD_TEXT.matchAll(/\$\{(DS_[A-Z0-9_]+)\}/g)].map((m) => m[1]));
    expect([...placeholders]).toEqual(dashboard.__inputs?.map((i) => i.name));
  });

  it("negative control: a misspelt metric in a copy of the dashboard is caught", () => {
    const broken = JSON.parse(DASHBOARD_TEXT.replace("meshward_tls_handshake_failures_total", "meshward_tls_handshake_failure_total")) as Dashboard;
    expect(unknownMetricNames(broken, known)).toEqual([expect.stringContaining("meshward_tls_handshake_failure_total")]);
  });

  it("the PromQL name extractor ignores labels, strings, functions, grouping and durations", () => {
    expect(metricNamesIn('histogram_quantile(0.99, sum by (le, direction) (rate(meshward_request_duration_seconds_bucket{job=~"$job", status_class="5xx"}[$__rate_interval])))')).toEqual([
      "meshward_request_duration_seconds_bucket",
    ]);
    expect(metricNamesIn('a_total - time() < 7 * 86400 unless on (job) b_total offset 1h and c{x="y z"}').sort()).toEqual(["a_total", "b_total", "c"]);
  });
});
