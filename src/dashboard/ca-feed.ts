import { identityFromPem, rootIdentitiesFromPem, trustRootsFromPem } from "./certs.ts";
import { recordedSections, type DaprTrustBundleStatus, type IdentityStatus, type StatusProvider, type StatusRecorder } from "./feed.ts";
import type { Health } from "../telemetry/health.ts";
import { trustBundleVersionOfPem } from "../telemetry/bundle-version.ts";

/** What the CA holds right now, as PEM (read on every refresh: rotations change it). */
export interface CaCertificates {
  readonly trustDomain: string;
  /** The CA's own serving certificate chain (its SVID on the API port). */
  readonly servingChainPem: string;
  /** The issuer that signs workload certificates. */
  readonly issuerPem: string;
  /** Every root of the trust bundle. */
  readonly rootsPem: string;
}

/**
 * Status page feed for the CA: its serving identity, the issuer and every root on the timeline,
 * the trust bundle, and what the recorder saw (anchor changes, handshake failures on the API
 * port, refused sign requests).
 */
export function caStatus(options: {
  certificates: () => CaCertificates;
  health: Health;
  recorder: StatusRecorder;
  /** Live certificates per root fingerprint (the store's countValidByRoot); a failure shows no counts. */
  liveByRoot?: () => Promise<ReadonlyMap<string, number>>;
  /** The dapr-trust-bundle sync's state (daprTrustBundle set), shown beside the health checks, never one of them. */
  daprTrustBundle?: () => DaprTrustBundleStatus | undefined;
}): StatusProvider {
  const { recorder } = options;
  return async () => {
    const certs = options.certificates();
    const report = await options.health.run("readiness");
    const dapr = options.daprTrustBundle?.();
    const live = options.liveByRoot === undefined ? undefined : await options.liveByRoot().catch(() => undefined);
    const identities: IdentityStatus[] = [identityFromPem(certs.servingChainPem, "workload"), identityFromPem(certs.issuerPem, "issuer"), ...rootIdentitiesFromPem(certs.rootsPem)];
    return {
      component: "ca",
      name: certs.trustDomain,
      generatedAt: new Date(),
      identities,
      roots: trustRootsFromPem(certs.rootsPem).map((root) => (live === undefined ? root : { ...root, liveCertificates: live.get(root.fingerprint) ?? 0 })),
      bundleVersion: trustBundleVersionOfPem(certs.rootsPem),
      ...recordedSections(recorder),
      health: { ok: report.ok, checks: report.checks },
      ...(dapr !== undefined ? { daprTrustBundle: dapr } : {}),
    };
  };
}
