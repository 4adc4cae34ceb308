import { trustBundleVersionOfPem } from "../telemetry/bundle-version.ts";
import type { MeshMetrics } from "../telemetry/metrics.ts";
import type { IdentitySource } from "./source.ts";

/**
 * Feeds an identity's events into the shared metrics: renewals by result
 * (meshward_rotation_total{kind="workload"}) and the current certificate's expiry
 * (meshward_cert_expiry_timestamp_seconds{kind="workload"}), which the alerts watch, and the
 * version of the trust bundle in use (meshward_trust_bundle_version), which an operator compares
 * with the CA's during a root rotation.
 */
export function instrumentIdentity(source: IdentitySource, metrics: Pick<MeshMetrics, "rotations" | "certExpiry" | "bundleVersion">): () => void {
  const current = source.current();
  if (current) {
    metrics.certExpiry.set({ kind: "workload" }, current.svid.notAfter.getTime() / 1000);
    metrics.bundleVersion.set(trustBundleVersionOfPem(current.bundle.rootsPem));
  }
  metrics.rotations.inc({ kind: "workload", result: "ok" }, 0);
  metrics.rotations.inc({ kind: "workload", result: "error" }, 0);
  return source.subscribe((event) => {
    switch (event.type) {
      case "rotated":
        metrics.rotations.inc({ kind: "workload", result: "ok" });
        metrics.certExpiry.set({ kind: "workload" }, event.snapshot.svid.notAfter.getTime() / 1000);
        metrics.bundleVersion.set(trustBundleVersionOfPem(event.snapshot.bundle.rootsPem));
        break;
      case "renewal-failed":
        metrics.rotations.inc({ kind: "workload", result: "error" });
        break;
      case "bundle-updated":
        metrics.bundleVersion.set(trustBundleVersionOfPem(event.snapshot.bundle.rootsPem));
        break;
      case "expired":
        break;
    }
  });
}
