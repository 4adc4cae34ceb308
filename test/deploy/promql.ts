import { createCaMetrics } from "../../src/ca/metrics.ts";
import { pino } from "pino";
import { egressMetrics } from "../../src/proxy/egress.ts";
import { sidecarTelemetry } from "../../src/proxy/sidecar.ts";
import { createMeshMetrics, createMetrics } from "../../src/telemetry/metrics.ts";
import { createInjectorMetrics } from "../../src/inject/metrics.ts";
import { statusPortMetrics } from "../../src/telemetry/health.ts";

/** Series Prometheus itself adds to every target. */
const PROMETHEUS_SERIES = ["up", "scrape_duration_seconds"];

/**
 * Every series name meshward exposes, taken from the real definitions (not a copied list):
 * the shared mesh metrics, the CA's, the sidecar's and egress's metrics and the process metrics, with
 * the _bucket/_sum/_count series of histograms.
 */
export async function knownSeriesNames(): Promise<Set<string>> {
  const names = new Set<string>(PROMETHEUS_SERIES);
  for (const metric of await definedMetrics({ processMetrics: true })) {
    names.add(metric.name);
    if (String(metric.type) === "histogram" || String(metric.type) === "summary") {
      for (const suffix of ["_bucket", "_sum", "_count"]) names.add(`${metric.name}${suffix}`);
    }
  }
  return names;
}

/** Every metric meshward's components register (the real definitions), by name and type. */
export async function definedMetrics(options: { processMetrics: boolean }): Promise<{ name: string; type: string }[]> {
  const metrics = createMetrics(options);
  createMeshMetrics(metrics);
  createCaMetrics(metrics);
  sidecarTelemetry(pino({ level: "silent" }), metrics);
  egressMetrics(metrics, "example");
  createInjectorMetrics(metrics);
  statusPortMetrics(metrics);
  return (await metrics.registry.getMetricsAsJSON()).map((m) => ({ name: m.name, type: String(m.type) }));
}

const KEYWORDS = new Set([
  "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or", "unless", "inf", "nan",
]);

/**
 * Metric names used by a PromQL expression (also one with Grafana's $variables). Strings, label
 * matchers, range selectors, grouping clauses and function names are removed first, so what is
 * left are the selectors' metric names.
 */
export function metricNamesIn(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, " ")
    .replace(/\{[^}]*\}/g, " ")
    .replace(/\[[^\]]*\]/g, " ")
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, " ")
    .replace(/\$\{?\w+\}?/g, " ")
    .replace(/\boffset\s+\w+/g, " ");
  const names = new Set<string>();
  for (const match of stripped.matchAll(/(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?/g)) {
    const [, name, call] = match;
    if (name === undefined || call !== undefined) continue;
    if (KEYWORDS.has(name.toLowerCase())) continue;
    if (/^\d/.test(name)) continue;
    names.add(name);
  }
  return [...names];
}
