import { X509Certificate } from "node:crypto";
import { MeshwardError } from "../errors.ts";
import type { IdentityKind, IdentityStatus, TrustRootStatus } from "./feed.ts";

/**
 * Helpers for components building a StatusSnapshot from the PEM they already hold (a workload
 * chain, the trust bundle). They read fields with node:crypto's X509Certificate; they verify
 * nothing — the certificates come from the component's own, already verified, state.
 */
const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

function certificates(pem: string, what: string): X509Certificate[] {
  const blocks = pem.match(PEM_CERTIFICATE) ?? [];
  if (blocks.length === 0) throw new MeshwardError("E_PEM_INVALID", `the ${what} holds no PEM certificate`);
  return blocks.map((block) => new X509Certificate(block));
}

function spiffeIdOf(cert: X509Certificate): string | undefined {
  for (const entry of (cert.subjectAltName ?? "").split(/,\s*/)) {
    const value = entry.replace(/^URI:/, "").replace(/^"|"$/g, "");
    if (entry.startsWith("URI:") && value.startsWith("spiffe://")) return value;
  }
  return undefined;
}

/** The first certificate of a chain (the leaf) as an identity row. */
export function identityFromPem(chainPem: string, kind: IdentityKind = "workload"): IdentityStatus {
  const [leaf] = certificates(chainPem, "certificate chain");
  return identityRow(leaf as X509Certificate, kind);
}

/** Every certificate of a trust bundle as an identity row of kind root (the CA's timeline). */
export function rootIdentitiesFromPem(bundlePem: string): IdentityStatus[] {
  return certificates(bundlePem, "trust bundle").map((cert) => identityRow(cert, "root"));
}

function identityRow(cert: X509Certificate, kind: IdentityKind): IdentityStatus {
  return {
    spiffeId: spiffeIdOf(cert) ?? `(no SPIFFE ID) ${cert.subject.replace(/\n/g, ", ")}`,
    serial: cert.serialNumber,
    notBefore: new Date(cert.validFrom),
    notAfter: new Date(cert.validTo),
    kind,
  };
}

/** Every certificate of a trust bundle as a root row. */
export function trustRootsFromPem(bundlePem: string): TrustRootStatus[] {
  return certificates(bundlePem, "trust bundle").map((cert) => ({
    subject: cert.subject.replace(/\n/g, ", "),
    fingerprint: cert.fingerprint256,
    notAfter: new Date(cert.validTo),
  }));
}
