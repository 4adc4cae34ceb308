import { MeshwardError } from "../errors.ts";
import { issueLeafCertificate, type IssuedCertificate, type Signer } from "../pki/certificate.ts";
import type { ParsedCsr } from "../pki/csr.ts";
import type { AttestedIdentity } from "./attest/attestor.ts";

/** A leaf cut shorter than this (or than the configured TTL) by the issuer's expiry is not worth issuing. */
export const MIN_LEAF_TTL_MS = 60_000;

export interface SigningPolicy {
  readonly workloadTtlMs: number;
  readonly clockSkewMs: number;
}

export interface SignedLeaf extends IssuedCertificate {
  readonly spiffeId: string;
  readonly dnsNames: readonly string[];
  readonly notBefore: Date;
  readonly notAfter: Date;
}

/**
 * The signing policy (apart from the signing mechanism, as in SPIRE): the identity comes
 * from attestation, the CSR contributes only its public key; leaf lifetime is capped by the
 * issuer's remaining life; an expired or not-yet-valid issuer never signs (dapr/dapr#8557).
 */
export function signWorkloadCertificate(input: {
  readonly csr: ParsedCsr;
  readonly identity: AttestedIdentity;
  readonly signer: Signer;
  readonly policy: SigningPolicy;
  readonly now: Date;
}): SignedLeaf {
  const { csr, identity, signer, policy, now } = input;
  if (csr.requestsCa) {
    throw new MeshwardError("E_CSR_REQUESTS_CA", "the CSR asks for a CA certificate (basicConstraints CA:TRUE); workloads get leaf certificates only");
  }
  for (const uri of csr.uris) {
    if (uri !== identity.spiffeId) {
      throw new MeshwardError(
        "E_CSR_IDENTITY_MISMATCH",
        `the CSR asks for ${JSON.stringify(uri)} but the workload was attested as ${identity.spiffeId}`,
        { details: { requested: uri, attested: identity.spiffeId } },
      );
    }
  }
  if (csr.uris.length > 1) {
    throw new MeshwardError("E_CSR_IDENTITY_MISMATCH", "the CSR names more than one URI; an X509-SVID carries exactly one SPIFFE ID");
  }
  const granted = identity.dnsNames ?? [];
  const allowedDns = new Set([...identity.allowedDnsNames, ...granted].map((n) => n.toLowerCase()));
  for (const name of csr.dnsNames) {
    if (!allowedDns.has(name.toLowerCase())) {
      throw new MeshwardError(
        "E_CSR_DNS_NOT_ALLOWED",
        `the CSR asks for DNS name ${JSON.stringify(name)}, which this workload's attestation does not allow (create the join token with --dns-name ${JSON.stringify(name)})`,
      );
    }
  }

  const issuerNotBefore = new Date(signer.certificate.validFrom);
  const issuerNotAfter = new Date(signer.certificate.validTo);
  if (now < issuerNotBefore) {
    throw new MeshwardError("E_ISSUER_NOT_YET_VALID", `the issuer certificate is not valid until ${issuerNotBefore.toISOString()}; refusing to sign`);
  }
  if (now >= issuerNotAfter) {
    throw new MeshwardError("E_ISSUER_EXPIRED", `the issuer certificate expired at ${issuerNotAfter.toISOString()}; refusing to sign. Rotate it with 'meshward ca rotate-issuer'`);
  }
  const notAfter = new Date(Math.min(now.getTime() + policy.workloadTtlMs, issuerNotAfter.getTime()));
  if (notAfter.getTime() - now.getTime() < Math.min(MIN_LEAF_TTL_MS, policy.workloadTtlMs)) {
    throw new MeshwardError("E_ISSUER_EXPIRING", `the issuer certificate expires at ${issuerNotAfter.toISOString()}, too soon to issue a useful certificate`);
  }
  const notBefore = new Date(Math.max(now.getTime() - policy.clockSkewMs, issuerNotBefore.getTime()));
  // The names the CA grants first, then any other the CSR asked for (each once, case aside).
  const seen = new Set<string>();
  const dnsNames = [...granted, ...csr.dnsNames].filter((name) => {
    const key = name.toLowerCase();
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
  const issued = issueLeafCertificate({
    spiffeId: identity.spiffeId,
    publicKey: csr.publicKey,
    signer,
    dnsNames,
    ...(identity.commonName !== undefined ? { commonName: identity.commonName } : {}),
    notBefore,
    notAfter,
  });
  return { ...issued, spiffeId: identity.spiffeId, dnsNames, notBefore, notAfter };
}
