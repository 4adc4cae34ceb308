import { Counter, Gauge, Registry, collectDefaultMetrics, type Metric } from "prom-client";
import { MeshwardError } from "../errors.ts";
import { LabelledHistogram } from "./histogram.ts";
import { HANDSHAKE_FAILURE_REASONS, classifyTlsError } from "./tls-reason.ts";
import type { HandshakeFailureReason, TlsSocketLike } from "./tls-reason.ts";

/**
 * One prom-client Registry per process component (never the global one), with helpers that
 * check names against DESIGN.md (`meshward_<component>_<what>_<unit>`): snake case with the
 * `meshward_` prefix, counters end in `_total`, histograms in a base unit (`_seconds`,
 * `_bytes`), gauges never in `_total`. Creating a metric that already exists returns the
 * existing one when type and labels agree, so components can share definitions.
 */
export interface MetricOptions<L extends string> {
  readonly name: string;
  readonly help: string;
  readonly labelNames?: readonly L[];
}

export interface GaugeOptions<L extends string> extends MetricOptions<L> {
  /** Sets the gauge's values when it is scraped (a value read from elsewhere, no work in between). */
  readonly collect?: (this: Gauge<L>) => void | Promise<void>;
}

export interface HistogramOptions<L extends string> extends MetricOptions<L> {
  readonly buckets?: readonly number[];
}

export interface Metrics {
  readonly registry: Registry;
  counter<L extends string = never>(options: MetricOptions<L>): Counter<L>;
  gauge<L extends string = never>(options: GaugeOptions<L>): Gauge<L>;
  histogram<L extends string = never>(options: HistogramOptions<L>): LabelledHistogram<L>;
  /** Prometheus text exposition of everything in the registry. */
  text(): Promise<string>;
  readonly contentType: string;
}

export interface MetricsConfig {
  /** Also collect Node process metrics (CPU, memory, event loop lag, fds) as meshward_process_*. */
  readonly processMetrics?: boolean;
}

const NAME = /^meshward_[a-z][a-z0-9]*(_[a-z0-9]+)+$/;
const LABEL = /^[a-z_][a-z0-9_]*$/;
const HISTOGRAM_UNITS = ["_seconds", "_bytes"];

export function checkMetricName(name: string, type: "counter" | "gauge" | "histogram"): void {
  const fail = (why: string): never => {
    throw new MeshwardError("E_METRIC_NAME_INVALID", `metric name ${JSON.stringify(name)} ${why} (see DESIGN.md: meshward_<component>_<what>_<unit>)`);
  };
  if (!NAME.test(name)) fail("must be lowercase snake_case starting with meshward_ and have at least two more words");
  if (type === "counter" && !name.endsWith("_total")) fail("is a counter, so it must end in _total");
  if (type !== "counter" && name.endsWith("_total")) fail(`is a ${type}, so it must not end in _total`);
  if (type === "histogram" && !HISTOGRAM_UNITS.some((unit) => name.endsWith(unit))) fail("is a histogram, so it must end in a base unit (_seconds or _bytes)");
}

function checkLabels(name: string, labels: readonly string[]): void {
  for (const label of labels) {
    if (!LABEL.test(label) || label.startsWith("__")) {
      throw new MeshwardError("E_METRIC_NAME_INVALID", `metric ${name}: label ${JSON.stringify(label)} must be lowercase snake_case`);
    }
  }
}

export function createMetrics(config: MetricsConfig = {}): Metrics {
  const registry = new Registry();
  if (config.processMetrics) {
    collectDefaultMetrics({ register: registry, prefix: "meshward_" });
    // prom-client's nodejs_active_{handles,requests,resources}_total are gauges named like
    // counters (`promtool check metrics` flags them); their per-type siblings stay.
    for (const metric of registry.getMetricsAsArray()) {
      const name = (metric as { name?: string }).name ?? "";
      if (name.endsWith("_total") && metric instanceof Gauge) registry.removeSingleMetric(name);
    }
  }

  function existing<T>(name: string, type: string, labelNames: readonly string[]): T | undefined {
    const found = registry.getSingleMetric(name) as (Metric & { labelNames?: readonly string[]; type?: string }) | undefined;
    if (!found) return undefined;
    const sameLabels = [...(found.labelNames ?? [])].sort().join(",") === [...labelNames].sort().join(",");
    const foundType = (found as { type?: string }).type ?? typeFromInstance(found);
    if (foundType !== type || !sameLabels) {
      throw new MeshwardError(
        "E_METRIC_CONFLICT",
        `metric ${name} is already registered as a ${foundType} with labels [${(found.labelNames ?? []).join(", ")}]; requested a ${type} with [${labelNames.join(", ")}]`,
      );
    }
    return found as T;
  }

  return {
    registry,
    contentType: registry.contentType,
    counter<L extends string = never>(options: MetricOptions<L>): Counter<L> {
      const labelNames = options.labelNames ?? [];
      checkMetricName(options.name, "counter");
      checkLabels(options.name, labelNames);
      return (
        existing<Counter<L>>(options.name, "counter", labelNames) ??
        new Counter<L>({ name: options.name, help: options.help, labelNames: [...labelNames], registers: [registry] })
      );
    },
    gauge<L extends string = never>(options: GaugeOptions<L>): Gauge<L> {
      const labelNames = options.labelNames ?? [];
      checkMetricName(options.name, "gauge");
      checkLabels(options.name, labelNames);
      return (
        existing<Gauge<L>>(options.name, "gauge", labelNames) ??
        new Gauge<L>({ name: options.name, help: options.help, labelNames: [...labelNames], registers: [registry], ...(options.collect ? { collect: options.collect } : {}) })
      );
    },
    histogram<L extends string = never>(options: HistogramOptions<L>): LabelledHistogram<L> {
      const labelNames = options.labelNames ?? [];
      checkMetricName(options.name, "histogram");
      checkLabels(options.name, labelNames);
      if ((labelNames as readonly string[]).includes("le")) throw new MeshwardError("E_METRIC_NAME_INVALID", `metric ${options.name}: le is the bucket label of every histogram`);
      const found = existing<LabelledHistogram<L>>(options.name, "histogram", labelNames);
      if (found !== undefined) return found;
      const histogram = new LabelledHistogram<L>(options.name, options.help, [...labelNames], options.buckets ?? DEFAULT_BUCKETS);
      registry.registerMetric(histogram as unknown as Metric);
      return histogram;
    },
    text: () => registry.metrics(),
  };
}

/** prom-client's default buckets, in seconds. */
const DEFAULT_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

function typeFromInstance(metric: Metric): string {
  if (metric instanceof Counter) return "counter";
  if (metric instanceof Gauge) return "gauge";
  if (metric instanceof LabelledHistogram) return "histogram";
  return "summary";
}

// ---------------------------------------------------------------------------------------
// Shared definitions used by several components (CA, identity, SDK, sidecar).

export { HANDSHAKE_FAILURE_REASONS, classifyTlsError, describeHandshakeFailure } from "./tls-reason.ts";
export type { HandshakeFailureReason, TlsSocketLike } from "./tls-reason.ts";

export type Direction = "inbound" | "outbound";
export type CertKind = "root" | "issuer" | "workload";

/** Latency buckets (seconds) for proxied requests: sub-millisecond to 10 s. */
export const REQUEST_DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10] as const;

export interface MeshMetrics {
  /** meshward_cert_expiry_timestamp_seconds{kind}: when a certificate expires (Unix seconds). */
  readonly certExpiry: Gauge<"kind">;
  /** meshward_trust_bundle_version: the version of the trust bundle in use (telemetry/bundle-version.ts). */
  readonly bundleVersion: Gauge;
  /** meshward_crl_this_update_timestamp_seconds{kind}: when the CRL in force was signed (ca: the one it serves; workload: the one it enforces). */
  readonly crlThisUpdate: Gauge<"kind">;
  /** meshward_crl_next_update_timestamp_seconds{kind}: the nextUpdate of the CRL in force; past it, the CRL is stale (still enforced). */
  readonly crlNextUpdate: Gauge<"kind">;
  /** meshward_rotation_total{kind,result}: rotations by certificate kind and result (ok, error). */
  readonly rotations: Counter<"kind" | "result">;
  /** meshward_identity_bundle_refused_total: root sets from the CA an identity refused (they left out the root that vouched for them). */
  readonly bundleRefusals: Counter;
  /** meshward_identity_ca_refused_total{reason}: CA endpoints an identity refused at the handshake for their serving chain (issuer_retired, cert_revoked). */
  readonly caRefusals: Counter<"reason">;
  /** meshward_tls_handshakes_total{direction,result}: result is ok or failed. */
  readonly handshakes: Counter<"direction" | "result">;
  /** meshward_tls_handshake_failures_total{direction,reason}: reason from HANDSHAKE_FAILURE_REASONS. */
  readonly handshakeFailures: Counter<"direction" | "reason">;
  /** meshward_connections_active{direction}. */
  readonly connectionsActive: Gauge<"direction">;
  /** meshward_plaintext_connections_total: plaintext accepted in PERMISSIVE mode. */
  readonly plaintextConnections: Counter;
  /** meshward_policy_denials_total{caller,rule}: caller is the SPIFFE ID or "unverified". */
  readonly policyDenials: Counter<"caller" | "rule">;
  /** meshward_request_duration_seconds{direction,protocol,status_class}. */
  readonly requestDuration: LabelledHistogram<"direction" | "protocol" | "status_class">;
  /** Counts one failed handshake (both counters) with a classified reason. */
  handshakeFailed(direction: Direction, error: unknown, socket?: TlsSocketLike): HandshakeFailureReason;
  handshakeSucceeded(direction: Direction): void;
}

export function createMeshMetrics(metrics: Metrics): MeshMetrics {
  const handshakes = metrics.counter({
    name: "meshward_tls_handshakes_total",
    help: "TLS handshakes by direction and result (ok, failed).",
    labelNames: ["direction", "result"],
  });
  const handshakeFailures = metrics.counter({
    name: "meshward_tls_handshake_failures_total",
    help: "Failed TLS handshakes by direction and reason (no_certificate, unknown_ca, expired, revoked, spiffe_mismatch, protocol_version, other).",
    labelNames: ["direction", "reason"],
  });
  const mesh: MeshMetrics = {
    certExpiry: metrics.gauge({
      name: "meshward_cert_expiry_timestamp_seconds",
      help: "When a certificate expires (Unix seconds), by kind (root, issuer, workload).",
      labelNames: ["kind"],
    }),
    bundleVersion: metrics.gauge({
      name: "meshward_trust_bundle_version",
      help: "Version of the trust bundle in use: a number naming its set of roots, equal at the CA and at every workload that has fetched the CA's current bundle.",
    }),
    crlThisUpdate: metrics.gauge({
      name: "meshward_crl_this_update_timestamp_seconds",
      help: "When the CRL in force was signed (its thisUpdate, Unix seconds), by kind: ca (the CRL the CA serves) and workload (the one an identity or sidecar enforces). A workload behind the CA has not fetched the latest revocations.",
      labelNames: ["kind"],
    }),
    crlNextUpdate: metrics.gauge({
      name: "meshward_crl_next_update_timestamp_seconds",
      help: "When the CRL in force is due to be replaced (its nextUpdate, Unix seconds), by kind: ca (the CRL the CA serves) and workload (the one an identity or sidecar enforces). Past it the CRL is stale: its revocations are still enforced, but revocations made since it was signed are unknown there.",
      labelNames: ["kind"],
    }),
    rotations: metrics.counter({
      name: "meshward_rotation_total",
      help: "Certificate rotations by kind (root, issuer, workload) and result (ok, error).",
      labelNames: ["kind", "result"],
    }),
    bundleRefusals: metrics.counter({
      name: "meshward_identity_bundle_refused_total",
      help: "Root sets from the CA that a workload identity refused because they leave out the root the CA's connection was verified under; the current roots were kept.",
    }),
    caRefusals: metrics.counter({
      name: "meshward_identity_ca_refused_total",
      help: "CA endpoints a workload identity refused at the handshake, before any request, for their serving chain, by reason: issuer_retired (its issuer is on a root CRL in force: retired with --now) or cert_revoked (its certificate is on the CA's CRL). Each refused attempt counts once.",
      labelNames: ["reason"],
    }),
    handshakes,
    handshakeFailures,
    connectionsActive: metrics.gauge({
      name: "meshward_connections_active",
      help: "Open connections by direction (inbound, outbound).",
      labelNames: ["direction"],
    }),
    plaintextConnections: metrics.counter({
      name: "meshward_plaintext_connections_total",
      help: "Plaintext connections accepted on an mTLS port (PERMISSIVE mode only).",
    }),
    policyDenials: metrics.counter({
      name: "meshward_policy_denials_total",
      help: "Requests denied by the access policy, by caller SPIFFE ID (or unverified) and deciding rule.",
      labelNames: ["caller", "rule"],
    }),
    requestDuration: metrics.histogram({
      name: "meshward_request_duration_seconds",
      help: "Proxied request latency by direction, protocol (http, grpc, tcp) and status class (2xx, 4xx, 5xx, error).",
      labelNames: ["direction", "protocol", "status_class"],
      buckets: REQUEST_DURATION_BUCKETS,
    }),
    handshakeFailed(direction, error, socket) {
      const reason = classifyTlsError(error, socket);
      handshakes.inc({ direction, result: "failed" });
      handshakeFailures.inc({ direction, reason });
      return reason;
    },
    handshakeSucceeded(direction) {
      handshakes.inc({ direction, result: "ok" });
    },
  };
  // Make every reason visible at 0 so rate() and alerts work before the first failure.
  for (const direction of ["inbound", "outbound"] as const) {
    handshakes.inc({ direction, result: "ok" }, 0);
    handshakes.inc({ direction, result: "failed" }, 0);
    for (const reason of HANDSHAKE_FAILURE_REASONS) handshakeFailures.inc({ direction, reason }, 0);
  }
  return mesh;
}
