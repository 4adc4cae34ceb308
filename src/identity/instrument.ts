import { parseCrl } from "../pki/crl.ts";
import { trustBundleVersionOfPem } from "../telemetry/bundle-version.ts";
import type { MeshMetrics } from "../telemetry/metrics.ts";
import type { IdentitySource, TrustBundle } from "./source.ts";

/**
 * Feeds an identity's events into the shared metrics: renewals by result
 * (meshward_rotation_total{kind="workload"}) and the current certificate's expiry
 * (meshward_cert_expiry_timestamp_seconds{kind="workload"}), which the alerts watch, and the
 * version of the trust bundle in use (meshward_trust_bundle_version), which an operator compares
 * with the CA's during a root rotation, and when the CRL it enforces was signed
 * (meshward_crl_this_update_timestamp_seconds{kind="workload"}), which an alert compares with the CA's.
 */
export function instrumentIdentity(source: IdentitySource, metrics: Pick<MeshMetrics, "rotations" | "certExpiry" | "bundleVersion" | "crlThisUpdate"> & Partial<Pick<MeshMetrics, "bundleRefusals">>): () => void {
  const setBundle = (bundle: TrustBundle) => {
    metrics.bundleVersion.set(trustBundleVersionOfPem(bundle.rootsPem));
    const signedAt = crlSignedAt(bundle);
    if (signedAt !== undefined) metrics.crlThisUpdate.set({ kind: "workload" }, signedAt / 1000);
  };
  const current = source.current();
  if (current) {
    metrics.certExpiry.set({ kind: "workload" }, current.svid.notAfter.getTime() / 1000);
    setBundle(current.bundle);
  }
  metrics.rotations.inc({ kind: "workload", result: "ok" }, 0);
  metrics.rotations.inc({ kind: "workload", result: "error" }, 0);
  metrics.bundleRefusals?.inc(0);
  return source.subscribe((event) => {
    switch (event.type) {
      case "rotated":
        metrics.rotations.inc({ kind: "workload", result: "ok" });
        metrics.certExpiry.set({ kind: "workload" }, event.snapshot.svid.notAfter.getTime() / 1000);
        setBundle(event.snapshot.bundle);
        break;
      case "renewal-failed":
        metrics.rotations.inc({ kind: "workload", result: "error" });
        break;
      case "bundle-updated":
        setBundle(event.snapshot.bundle);
        break;
      case "bundle-refused":
        metrics.bundleRefusals?.inc();
        break;
      case "expired":
        break;
    }
  });
}

/** When the newest CRL of a bundle was signed (ms), or undefined without one (or unreadable: it was verified when it arrived). */
function crlSignedAt(bundle: TrustBundle): number | undefined {
  let newest: number | undefined;
  for (const der of bundle.crls ?? []) {
    try {
      const at = parseCrl(der).thisUpdate.getTime();
      if (newest === undefined || at > newest) newest = at;
    } catch {
      // left out of the figure
    }
  }
  return newest;
}
