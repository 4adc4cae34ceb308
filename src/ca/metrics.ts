import type { Counter, Gauge } from "prom-client";
import type { LabelledHistogram } from "../telemetry/histogram.ts";
import { createMeshMetrics, type Metrics } from "../telemetry/metrics.ts";
import { STREAM_REFUSALS } from "../util/address-slots.ts";
import { GRPC_REFUSALS } from "./api/grpc.ts";
import { CONNECTION_REFUSALS } from "../util/connection-gate.ts";
import { HANDSHAKE_TOO_LARGE } from "../tls/handshake-cap.ts";

/** The CA's metrics (names per DESIGN.md: meshward_<component>_<what>_<unit>). */
export interface CaMetrics {
  readonly signRequests: Counter<"result" | "reason">;
  readonly signDuration: LabelledHistogram<"result">;
  readonly issued: Counter<"validator">;
  /** Shared definition: meshward_cert_expiry_timestamp_seconds{kind}. */
  readonly certExpiry: Gauge<"kind">;
  readonly revocations: Gauge;
  /** meshward_ca_leader: 1 on the process that rotates and signs CRLs, 0 on the other replicas. */
  readonly leader: Gauge;
  /** meshward_ca_connections_refused_total{reason}: connections closed without being served. */
  readonly connectionsRefused: Counter<"reason">;
  /** meshward_ca_kubernetes_api_circuit_open: 1 while the CA sends the Kubernetes API server no call (kube-api-breaker.ts). */
  readonly kubernetesApiCircuitOpen: Gauge;
  /** meshward_ca_dapr_trust_bundle_syncs_total{result}: passes keeping Dapr's dapr-trust-bundle ConfigMap in step (dapr-trust-bundle-sync.ts). */
  readonly daprTrustBundleSyncs: Counter<"result">;
  /** meshward_ca_api_requests_refused_total{reason}: SignCertificate calls the API refused before the authority saw them (GRPC_REFUSALS). */
  readonly apiRequestsRefused: Counter<"reason">;
  /** meshward_ca_held_request_bytes: bytes of unfinished SignCertificate requests the CA holds now (its HeldBudget), read at scrape time. */
  readonly heldRequestBytes: Gauge;
}

/** Values the CA's gauges read when scraped. */
export interface CaMetricSources {
  /** Bytes of unfinished requests held now (0 when not given). */
  readonly heldRequestBytes?: () => number;
}

/** Why the CA closed a connection without serving it (a closed set: alerts rely on it). */
export const CA_CONNECTION_REFUSALS = [...CONNECTION_REFUSALS, "handshake_timeout", HANDSHAKE_TOO_LARGE, ...STREAM_REFUSALS] as const;
export type CaConnectionRefusal = (typeof CA_CONNECTION_REFUSALS)[number];

export function createCaMetrics(metrics: Metrics, sources: CaMetricSources = {}): CaMetrics {
  return {
    signRequests: metrics.counter({
      name: "meshward_ca_sign_requests_total",
      help: "Certificate signing requests by result (ok, refused, error) and refusal reason (error code).",
      labelNames: ["result", "reason"],
    }),
    signDuration: metrics.histogram({
      name: "meshward_ca_sign_duration_seconds",
      help: "Time to attest, verify, sign and record one request.",
      labelNames: ["result"],
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    }),
    issued: metrics.counter({
      name: "meshward_ca_issued_total",
      help: "Workload certificates issued, by attestation validator.",
      labelNames: ["validator"],
    }),
    certExpiry: createMeshMetrics(metrics).certExpiry,
    revocations: metrics.gauge({
      name: "meshward_ca_revoked_certificates",
      help: "Certificates on the CRL.",
    }),
    leader: metrics.gauge({
      name: "meshward_ca_leader",
      help: "1 on the CA process that rotates and signs CRLs (the leader among replicas sharing a store, or a CA alone), 0 on the other replicas. The sum over one CA's replicas is 1; 0 means nobody signs revocations into a CRL.",
    }),
    connectionsRefused: connectionsRefused(metrics),
    kubernetesApiCircuitOpen: metrics.gauge({
      name: "meshward_ca_kubernetes_api_circuit_open",
      help: "1 while the CA sends the Kubernetes API server no TokenReview or pod read because its last calls failed (5 in a row; KUBERNETES attestations are refused E_KUBERNETES_UNAVAILABLE at once, one probe per cooldown of 1 s doubling to 10 s), 0 otherwise (and without the kubernetes validator).",
    }),
    daprTrustBundleSyncs: metrics.counter({
      name: "meshward_ca_dapr_trust_bundle_syncs_total",
      help: "Passes keeping Dapr's dapr-trust-bundle ConfigMap equal to the CA's trust bundle (daprTrustBundle), by result: created, updated, unchanged, error (retried with backoff). Exported only with daprTrustBundle set.",
      labelNames: ["result"],
    }),
    apiRequestsRefused: apiRequestsRefused(metrics),
    heldRequestBytes: metrics.gauge({
      name: "meshward_ca_held_request_bytes",
      help: "Bytes of unfinished SignCertificate request bodies the CA holds now, all callers together. Bounded by maxRequestBytes × 256, and per source address by that × maxConnectionsPerAddress / maxConnections (past either a call is refused E_CA_BUSY, counted in meshward_ca_api_requests_refused_total).",
      collect() {
        this.set(sources.heldRequestBytes?.() ?? 0);
      },
    }),
  };
}

function apiRequestsRefused(metrics: Metrics): Counter<"reason"> {
  const counter = metrics.counter({
    name: "meshward_ca_api_requests_refused_total",
    help: "SignCertificate calls the CA's API refused before attestation, by reason: budget (E_CA_BUSY: the unfinished requests of all callers hold maxRequestBytes × 256), budget_per_address (E_CA_BUSY: those of the caller's source address hold its share), too_large (E_REQUEST_TOO_LARGE: over maxRequestBytes), request_timeout (E_REQUEST_TIMEOUT: the request did not arrive within requestTimeout), client_deadline (E_REQUEST_TIMEOUT: the client's grpc-timeout passed while its request was still arriving; one passing after, while the CA attests or signs, is counted in meshward_ca_sign_requests_total only). Not counted in meshward_ca_sign_requests_total.",
    labelNames: ["reason"],
  });
  // Every reason exported from the start, so rate() and increase() see the first refusal.
  for (const reason of GRPC_REFUSALS) counter.inc({ reason }, 0);
  return counter;
}

function connectionsRefused(metrics: Metrics): Counter<"reason"> {
  const counter = metrics.counter({
    name: "meshward_ca_connections_refused_total",
    help: "API connections and HTTP/2 streams the CA closed without serving them, by reason: max_connections and max_connections_per_address (closed on accept, before any TLS work), handshake_timeout (no complete TLS handshake within handshakeTimeout), handshake_too_large (more than maxHandshakeBytes sent before the handshake completed: reset before the client chain is verified), max_streams and max_streams_per_address (a stream refused with REFUSED_STREAM over the open-stream caps).",
    labelNames: ["reason"],
  });
  // Every reason exported from the start, so rate() and increase() see the first refusal.
  for (const reason of CA_CONNECTION_REFUSALS) counter.inc({ reason }, 0);
  return counter;
}
