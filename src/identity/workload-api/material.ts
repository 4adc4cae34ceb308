import type { KeyObject } from "node:crypto";
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
 * Revoked serials from CRLs (DER or PEM), each of which must be signed by one of `issuers`
 * (the chain's intermediates or the bundle's roots); E_CRL_SIGNATURE otherwise.
 */
export function revocationsFromCrls(crls: readonly (Uint8Array | string)[], issuers: readonly Buffer[]): ReadonlySet<string> {
  const revoked = new Set<string>();
  for (const crl of crls) {
    const input = typeof crl === "string" || !Buffer.from(crl).includes("-----BEGIN") ? crl : Buffer.from(crl).toString("latin1");
    let lastError: unknown;
    let verified = false;
    for (const issuer of issuers) {
      try {
        for (const serial of parseCrl(input, toX509(issuer)).revokedSerials) revoked.add(serial);
        verified = true;
        break;
      } catch (error) {
        lastError = error;
      }
    }
    if (!verified) {
      throw new MeshwardError("E_CRL_SIGNATURE", `a CRL is not signed by any CA of the chain or bundle${lastError ? ` (${describeError(lastError)})` : ""}`);
    }
  }
  return revoked;
}

/** A CRL as DER, whether it came as DER or PEM ("-----BEGIN X509 CRL-----"). */
export function crlDer(crl: Uint8Array | string): Buffer {
  const bytes = typeof crl === "string" ? Buffer.from(crl, "latin1") : Buffer.from(crl);
  const text = bytes.toString("latin1");
  const pem = /-----BEGIN X509 CRL-----([\s\S]*?)-----END X509 CRL-----/.exec(text);
  return pem === null ? bytes : Buffer.from(pem[1]!.replace(/\s+/g, ""), "base64");
}
