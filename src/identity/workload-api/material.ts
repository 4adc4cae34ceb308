import type { KeyObject, X509Certificate } from "node:crypto";
import { describeError, MeshwardError } from "../../errors.ts";
import { verifyChain } from "../../pki/chain.ts";
import { parseCrl } from "../../pki/crl.ts";
import { DerError, readTlv, TAG } from "../../pki/der.ts";
import { inspectCertificate, toX509 } from "../../pki/inspect.ts";
import { keysMatch } from "../../pki/keys.ts";
import { certificatesFromPem, toPem } from "../../pki/pem.ts";
import { parseSpiffeId } from "../../spiffe/id.ts";
import type { IdentitySnapshot } from "../source.ts";

/** Identity material from outside (files, the Workload API), before it is trusted. */
export interface IdentityMaterial {
  /** DER certificates, leaf first, then intermediates (a root in the chain is tolerated). */
  readonly chain: readonly Buffer[];
  readonly privateKey: KeyObject;
  /** DER root certificates of the SVID's trust domain. */
  readonly roots: readonly Buffer[];
  readonly revokedSerials?: ReadonlySet<string>;
  /** The verified CRLs (DER) revokedSerials came from. */
  readonly crls?: readonly Buffer[];
  /** Validity is checked at this time (default now). */
  readonly at?: Date;
}

/**
 * Turns outside material into a snapshot only when it is complete and consistent: the leaf
 * has exactly one URI SAN that is a workload SPIFFE ID, the key belongs to the leaf, and the
 * chain verifies to one of the roots at `at`. Errors: E_SVID_INVALID, E_KEY_MISMATCH,
 * E_TRUST_DOMAIN_MISMATCH, and verifyChain's (E_CHAIN_UNTRUSTED, E_CERT_EXPIRED, ...).
 */
export function buildSnapshot(material: IdentityMaterial): IdentitySnapshot {
  const [leaf, ...intermediates] = material.chain;
  if (leaf === undefined) throw new MeshwardError("E_SVID_INVALID", "the certificate chain is empty");
  if (material.roots.length === 0) throw new MeshwardError("E_SVID_INVALID", "the trust bundle holds no certificate");
  const info = inspectCertificate(leaf);
  if (info.isCa) throw new MeshwardError("E_SVID_INVALID", "the first certificate of the chain is a CA certificate, not a leaf SVID");
  if (info.uris.length !== 1) {
    throw new MeshwardError("E_SVID_INVALID", `an X509-SVID has exactly one URI SAN; the leaf has ${info.uris.length}`);
  }
  const spiffeId = parseSpiffeId(info.uris[0]!);
  if (spiffeId.path === "") throw new MeshwardError("E_SVID_INVALID", `the leaf's SPIFFE ID ${spiffeId.toString()} has no path; that ID belongs to a CA`);
  if (!keysMatch(material.privateKey, info.publicKey)) {
    throw new MeshwardError("E_KEY_MISMATCH", "the private key does not belong to the leaf certificate");
  }
  const rootInfos = material.roots.map((root) => inspectCertificate(root));
  const foreignRoot = rootInfos.find((root) => root.uris.length > 0 && !root.uris.includes(`spiffe://${spiffeId.trustDomain}`));
  if (foreignRoot !== undefined) {
    throw new MeshwardError("E_TRUST_DOMAIN_MISMATCH", `the bundle holds a root of ${foreignRoot.uris.join(", ")}, but the SVID belongs to trust domain ${spiffeId.trustDomain}`);
  }
  const rootSet = new Set(material.roots.map((root) => root.toString("base64")));
  const chainOnly = intermediates.filter((certificate) => !rootSet.has(certificate.toString("base64")));
  verifyChain({ leaf, intermediates: chainOnly, roots: material.roots, at: material.at ?? new Date() });
  return {
    svid: {
      spiffeId: spiffeId.toString(),
      certChainPem: [leaf, ...chainOnly].map((der) => toPem(der, "CERTIFICATE")).join(""),
      privateKey: material.privateKey,
      notBefore: info.notBefore,
      notAfter: info.notAfter,
      serial: info.serial,
    },
    bundle: {
      trustDomain: spiffeId.trustDomain,
      rootsPem: material.roots.map((der) => toPem(der, "CERTIFICATE")).join(""),
      revokedSerials: material.revokedSerials ?? new Set(),
      ...(material.crls !== undefined && material.crls.length > 0 ? { crls: material.crls } : {}),
    },
  };
}

/** Splits concatenated DER certificates (the Workload API's `x509_svid` and `bundle` fields). */
export function splitDerCertificates(bytes: Uint8Array): Buffer[] {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: Buffer[] = [];
  let offset = 0;
  try {
    while (offset < buf.length) {
      const el = readTlv(buf, offset);
      if (el.tag !== TAG.SEQUENCE) throw new DerError("expected a certificate (SEQUENCE)");
      out.push(Buffer.from(buf.subarray(el.start, el.end)));
      offset = el.end;
    }
  } catch (error) {
    throw new MeshwardError("E_SVID_INVALID", `concatenated DER certificates are malformed: ${error instanceof DerError ? error.message : "unreadable"}`);
  }
  return out;
}

/** Concatenated DER of every certificate in `pem`. */
export function pemToConcatenatedDer(pem: string): Buffer {
  return Buffer.concat(certificatesFromPem(pem));
}

/**
 * The CRLs that verify with one of `issuers` (the chain's intermediates or the bundle's roots),
 * and the union of their revoked serials. A CA publishes a CRL per live issuer (the current
 * issuer's and, after a rotation, the previous issuer's; each lists every revocation the CA
 * holds), so one CRL of the set is signed by an issuer this workload cannot name (the one it is
 * not on): that CRL is left out, not used and not handed on, and the others still give every
 * revocation. Each entry is DER or PEM, and a PEM entry may hold several "X509 CRL" blocks (a
 * crl.pem written by the file sink). E_CRL_SIGNATURE when none verifies.
 */
export function verifiedCrls(crls: readonly (Uint8Array | string)[], issuers: readonly Buffer[]): { revokedSerials: ReadonlySet<string>; crls: Buffer[] } {
  const revoked = new Set<string>();
  const verified: Buffer[] = [];
  let lastError: unknown;
  let offered = 0;
  const certificates = issuers.map((issuer) => toX509(issuer));
  const isRoot = (certificate: X509Certificate) => certificate.checkIssued(certificate) && certificate.verify(certificate.publicKey);
  // A CRL signed by a root lists revoked issuers (root-crl.ts), not workload certificates: when the
  // chain has an issuer below the root, such CRLs alone give none of the workloads' revocations.
  const needsIssuerCrl = certificates.some((certificate) => !isRoot(certificate));
  let issuerCrls = 0;
  for (const der of crls.flatMap((crl) => splitCrls(crl))) {
    offered += 1;
    for (const issuer of certificates) {
      try {
        for (const serial of parseCrl(der, issuer).revokedSerials) revoked.add(serial);
        verified.push(der);
        if (!isRoot(issuer)) issuerCrls += 1;
        break;
      } catch (error) {
        lastError = error;
      }
    }
  }
  if (verified.length > 0 && needsIssuerCrl && issuerCrls === 0) {
    throw new MeshwardError("E_CRL_SIGNATURE", `only root CRLs (which list revoked issuers) verify among the ${offered} CRL${offered === 1 ? "" : "s"}: none is signed by an issuer of the chain, so the workloads' revocations are unknown`);
  }
  if (verified.length === 0) {
    throw new MeshwardError("E_CRL_SIGNATURE", `${offered === 1 ? "the CRL is" : `none of the ${offered} CRLs is`} signed by any CA of the chain or bundle${lastError ? ` (${describeError(lastError)})` : ""}`);
  }
  return { revokedSerials: revoked, crls: verified };
}

/** Revoked serials of the CRLs that verify (see verifiedCrls). */
export function revocationsFromCrls(crls: readonly (Uint8Array | string)[], issuers: readonly Buffer[]): ReadonlySet<string> {
  return verifiedCrls(crls, issuers).revokedSerials;
}

/** Every CRL in one input, as DER: DER bytes (one CRL), or PEM with one or more "X509 CRL" blocks. */
export function splitCrls(crl: Uint8Array | string): Buffer[] {
  const bytes = typeof crl === "string" ? Buffer.from(crl, "latin1") : Buffer.from(crl);
  const text = bytes.toString("latin1");
  if (!text.includes("-----BEGIN")) return [bytes];
  const blocks = [...text.matchAll(/-----BEGIN X509 CRL-----([\s\S]*?)-----END X509 CRL-----/g)].map((m) => Buffer.from(m[1]!.replace(/\s+/g, ""), "base64"));
  if (blocks.length === 0) throw new MeshwardError("E_CRL_INVALID", "not a valid X.509 CRL: no X509 CRL PEM block");
  return blocks;
}
