import { X509Certificate } from "node:crypto";
import { parseCrl } from "../pki/crl.ts";
import { certificatesFromPem } from "../pki/pem.ts";
import { trustBundleVersionOfPem } from "../telemetry/bundle-version.ts";
import type { MeshMetrics } from "../telemetry/metrics.ts";
import type { IdentitySource, TrustBundle } from "./source.ts";
import { formatCertificateTime } from "../util/duration.ts";

/** The `reason` label of meshward_identity_ca_refused_total, by refusal code (anything else: "other"): a bounded set. */
const CA_REFUSAL_REASONS: Readonly<Record<string, string>> = { E_CA_ISSUER_RETIRED: "issuer_retired", E_CA_CERT_REVOKED: "cert_revoked" };

/**
 * Feeds an identity's events into the shared metrics: renewals by result
 * (meshward_rotation_total{kind="workload"}) and the current certificate's expiry
 * (meshward_cert_expiry_timestamp_seconds{kind="workload"}), which the alerts watch, and the
 * version of the trust bundle in use (meshward_trust_bundle_version), which an operator compares
 * with the CA's during a root rotation, and when the CRL it enforces was signed
 * (meshward_crl_this_update_timestamp_seconds{kind="workload"}), which an alert compares with the CA's,
 * and when it is due to be replaced (meshward_crl_next_update_timestamp_seconds{kind="workload"}),
 * which an alert compares with the time: past it the CRL is stale (see staleCrlWarning), and the
 * CA endpoints refused for their serving chain (meshward_identity_ca_refused_total{reason}).
 */
export function instrumentIdentity(source: IdentitySource, metrics: Pick<MeshMetrics, "rotations" | "certExpiry" | "bundleVersion" | "crlThisUpdate"> & Partial<Pick<MeshMetrics, "bundleRefusals" | "caRefusals" | "crlNextUpdate">>): () => void {
  const setBundle = (bundle: TrustBundle) => {
    metrics.bundleVersion.set(trustBundleVersionOfPem(bundle.rootsPem));
    const newest = newestCrl(bundle);
    if (newest !== undefined) {
      metrics.crlThisUpdate.set({ kind: "workload" }, newest.thisUpdate / 1000);
      if (newest.nextUpdate !== undefined) metrics.crlNextUpdate?.set({ kind: "workload" }, newest.nextUpdate / 1000);
    }
  };
  const current = source.current();
  if (current) {
    metrics.certExpiry.set({ kind: "workload" }, current.svid.notAfter.getTime() / 1000);
    setBundle(current.bundle);
  }
  metrics.rotations.inc({ kind: "workload", result: "ok" }, 0);
  metrics.rotations.inc({ kind: "workload", result: "error" }, 0);
  metrics.bundleRefusals?.inc(0);
  for (const reason of Object.values(CA_REFUSAL_REASONS)) metrics.caRefusals?.inc({ reason }, 0);
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
      case "ca-refused":
        metrics.caRefusals?.inc({ reason: CA_REFUSAL_REASONS[event.reason] ?? "other" });
        break;
      case "expired":
        break;
    }
  });
}

/**
 * The newest CRL of a bundle: when it was signed and when it is due to be replaced (ms), or
 * undefined without one (or unreadable: it was verified when it arrived).
 */
export function newestCrl(bundle: TrustBundle): { readonly thisUpdate: number; readonly nextUpdate: number | undefined } | undefined {
  let newest: { thisUpdate: number; nextUpdate: number | undefined } | undefined;
  const crls = bundle.crls ?? [];
  let roots: X509Certificate[] = [];
  try {
    roots = crls.length > 1 ? certificatesFromPem(bundle.rootsPem).map((der) => new X509Certificate(der)) : [];
  } catch {
    roots = [];
  }
  for (const der of crls) {
    try {
      const parsed = parseCrl(der);
      const at = parsed.thisUpdate.getTime();
      // Root CRLs (root-crl.ts: they list revoked issuers, live 30 days and are re-signed on their
      // own schedule) say nothing of how current the workloads' revocations are: left out.
      if (roots.some((root) => signedBy(der, root))) continue;
      if (newest === undefined || at > newest.thisUpdate) newest = { thisUpdate: at, nextUpdate: parsed.nextUpdate?.getTime() };
    } catch {
      // left out of the figure
    }
  }
  return newest;
}

function signedBy(der: Buffer, certificate: X509Certificate): boolean {
  try {
    parseCrl(der, certificate);
    return true;
  } catch {
    return false;
  }
}

/**
 * What a health check says (as a warning: the identity stays ready) while the CRL in force is
 * past its nextUpdate: no newer CRL has reached this workload (the CA is down or unreachable, or
 * no CA replica re-signs). Its revocations are still enforced (a revocation is never forgotten
 * because its CRL aged), but revocations made since it was signed are unknown here. Undefined
 * while it is current, or when there is none.
 *
 * Why a warning and not a refusal: a workload certificate revoked after that CRL was signed is
 * accepted here until its own notAfter at the latest, stale CRL or not, so refusing peers once
 * the CRL is stale does not bound that exposure more tightly than certificate expiry does, while
 * it would turn a CA outage into an outage of the whole mesh up to a certificate lifetime early
 * (docs/troubleshooting.md, "Revocation list stale"). The alert MeshwardRevocationListStale pages.
 */
export function staleCrlWarning(bundle: TrustBundle, now: number): string | undefined {
  const newest = newestCrl(bundle);
  if (newest?.nextUpdate === undefined || now < newest.nextUpdate) return undefined;
  return `WARNING: the CRL in force (signed ${formatCertificateTime(new Date(newest.thisUpdate))}) is past its nextUpdate ${formatCertificateTime(new Date(newest.nextUpdate))}: no newer one has arrived (is the CA reachable? is there a CA leader?); its revocations are still enforced, revocations made since are unknown here`;
}
