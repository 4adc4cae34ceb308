import type { Metrics } from "../telemetry/metrics.ts";

/** What became of one POST /mutate. */
export type ReviewResult = "injected" | "unchanged" | "denied" | "invalid" | "unavailable" | "busy";
export type CaBundleSyncResult = "patched" | "unchanged" | "error";

/** The injector's own counters; the serving certificate's come from instrumentIdentity. */
export interface InjectorMetrics {
  review(result: ReviewResult): void;
  connectionRefused(reason: string): void;
  caBundleSync(result: CaBundleSyncResult): void;
}

const REVIEW_RESULTS: readonly ReviewResult[] = ["injected", "unchanged", "denied", "invalid", "unavailable", "busy"];
const SYNC_RESULTS: readonly CaBundleSyncResult[] = ["patched", "unchanged", "error"];

/** Registers (or finds) the injector's counters in `metrics`, every result at 0 so alerts see the series. */
export function createInjectorMetrics(metrics: Metrics): InjectorMetrics {
  const reviews = metrics.counter({
    name: "meshward_injector_reviews_total",
    help: "Admission reviews answered: injected (patched), unchanged (allowed as is), denied (the pod's meshward/dapr annotations are refused, or an ephemeral container would reach the sidecar's token: its volume, the sidecar's processes, or privileged in a pod with the sidecar), invalid (not an AdmissionReview), unavailable (no current trust bundle), busy (503: the unfinished reviews held together reached the injector's memory budget).",
    labelNames: ["result"],
  });
  for (const result of REVIEW_RESULTS) reviews.inc({ result }, 0);
  const refused = metrics.counter({
    name: "meshward_injector_connections_refused_total",
    help: "Webhook connections reset on accept, before any TLS work, by reason (max_connections, max_connections_per_address).",
    labelNames: ["reason"],
  });
  const syncs = metrics.counter({
    name: "meshward_injector_ca_bundle_syncs_total",
    help: "Passes keeping the MutatingWebhookConfiguration's caBundle equal to the CA's bundle: patched, unchanged, error.",
    labelNames: ["result"],
  });
  for (const result of SYNC_RESULTS) syncs.inc({ result }, 0);
  return {
    review: (result) => reviews.inc({ result }),
    connectionRefused: (reason) => refused.inc({ reason }),
    caBundleSync: (result) => syncs.inc({ result }),
  };
}
