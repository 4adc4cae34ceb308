import { createHash, X509Certificate } from "node:crypto";

/**
 * A trust bundle's version: a number that names the set of roots it holds, the same wherever
 * it is computed (the CA, every identity and sidecar, the status pages), so an operator can
 * check during a root rotation that every workload has fetched the bundle the CA serves:
 * `count(count by (v) (count_values("v", meshward_trust_bundle_version)))` is 1 when they all agree.
 *
 * It is the first 32 bits of SHA-256 over the roots' SHA-256 fingerprints, sorted: the order of
 * the roots in a file does not change it, adding or removing a root does. 32 bits fit a
 * Prometheus float exactly and are short enough to read aloud; the chance that two different
 * bundles of one installation share a version is 1 in 4 billion.
 */
export function trustBundleVersion(rootFingerprints: readonly string[]): number {
  const canonical = [...new Set(rootFingerprints.map((f) => f.toUpperCase()))].sort().join("\n");
  return createHash("sha256").update(canonical, "utf8").digest().readUInt32BE(0);
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** The version of a PEM bundle (every CERTIFICATE block in it is a root). */
export function trustBundleVersionOfPem(rootsPem: string): number {
  return trustBundleVersion((rootsPem.match(PEM_CERTIFICATE) ?? []).map((block) => new X509Certificate(block).fingerprint256));
}
