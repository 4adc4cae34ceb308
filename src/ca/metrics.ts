import { Counter, Gauge, Histogram, type Registry } from "prom-client";

/** The CA's metrics (names per DESIGN.md: meshward_<component>_<what>_<unit>). */
export interface CaMetrics {
  readonly signRequests: Counter<"result" | "reason">;
  readonly signDuration: Histogram<"result">;
  readonly issued: Counter<"validator">;
  readonly certExpiry: Gauge<"kind">;
  readonly revocations: Gauge;
}

export function createCaMetrics(registry: Registry): CaMetrics {
  return {
    signRequests: new Counter({
      name: "meshward_ca_sign_requests_total",
      help: "Certificate signing requests by result (ok, refused, error) and refusal reason (error code).",
      labelNames: ["result", "reason"],
      registers: [registry],
    }),
    signDuration: new Histogram({
      name: "meshward_ca_sign_duration_seconds",
      help: "Time to attest, verify and sign one request.",
      labelNames: ["result"],
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers: [registry],
    }),
    issued: new Counter({
      name: "meshward_ca_issued_total",
      help: "Workload certificates issued, by attestation validator.",
      labelNames: ["validator"],
      registers: [registry],
    }),
    certExpiry: new Gauge({
      name: "meshward_cert_expiry_timestamp_seconds",
      help: "When a certificate expires (Unix seconds), by kind (root, issuer, workload).",
      labelNames: ["kind"],
      registers: [registry],
    }),
    revocations: new Gauge({
      name: "meshward_ca_revoked_certificates",
      help: "Certificates on the CRL.",
      registers: [registry],
    }),
  };
}
