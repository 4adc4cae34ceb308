import type { X509Certificate } from "node:crypto";
import { MeshwardError } from "../../errors.ts";
import { verifyChain } from "../../pki/chain.ts";
import { certificateParts } from "../../pki/inspect.ts";
import { certificatesFromPem, toPem } from "../../pki/pem.ts";
import { notLeafReason } from "../../pki/x509der.ts";
import { parseWorkloadId } from "../../spiffe/id.ts";
import type { IssuanceRecord } from "../../store/store.ts";
import { refusedBeforeAnyCost, type AttestationRequest, type AttestedIdentity, type Attestor } from "./attestor.ts";
import { assertRequestMatches } from "./identity-check.ts";

export interface SvidAttestorOptions {
  /** Current trust anchors, the CA certificates that may sit between them and a leaf, and the CRL. */
  readonly trust: () => { roots: readonly X509Certificate[]; intermediates: readonly X509Certificate[]; revoked: ReadonlySet<string> };
  /**
   * The issuance log's record of a serial (Store.getIssuance; every replica of a PostgreSQL store
   * reads the same log). Renewal is for certificates this CA issued: a chain to the roots is not
   * enough when the root is an organisation's, under which other CAs sign leaves too.
   */
  readonly issued: (serial: string) => Promise<Pick<IssuanceRecord, "serial" | "spiffeId" | "certificatePem"> | undefined>;
}

/**
 * Renewal: a workload proves its identity with its current certificate on the mTLS
 * connection (SPIRE's agent does the same), so single-use join tokens are needed only once.
 */
function commonNameOf(certificate: X509Certificate): string | undefined {
  const names = certificate.subject.split("\n").filter((line) => line.startsWith("CN="));
  return names.length === 1 ? (names[0] as string).slice(3) : undefined;
}

/** What renewal reads from a certificate's own bytes, worked out once per certificate (a workload renews over one connection). */
interface CertificateFacts {
  readonly notLeaf: string | undefined;
  readonly commonName: string | undefined;
}
const facts = new WeakMap<X509Certificate, CertificateFacts>();

function factsOf(certificate: X509Certificate): CertificateFacts {
  let known = facts.get(certificate);
  if (known === undefined) {
    known = { notLeaf: notLeafReason(certificateParts(certificate).extensions), commonName: commonNameOf(certificate) };
    facts.set(certificate, known);
  }
  return known;
}

/** Which set of roots (by identity: the CA keeps one array per set of anchors) a certificate's chain was verified against. */
const verifiedAgainst = new WeakMap<X509Certificate, readonly X509Certificate[]>();

/**
 * The presented certificate is one this CA issued: its serial is in the issuance log, for the same
 * SPIFFE ID, and the logged certificate is byte for byte the presented one. SPIRE's server does
 * the same for an agent's renewal (it compares the presented SVID's serial with the one it
 * recorded for the agent). Without it, any CA that chains to the roots, such as a sibling sub-CA
 * of an imported organisation root whose nameConstraints confine it to other names, could sign
 * a leaf for any identity of the trust domain and have this CA renew it into a real one.
 */
async function assertIssuedHere(options: SvidAttestorOptions, certificate: X509Certificate, serial: string, spiffeId: string): Promise<void> {
  const record = await options.issued(serial);
  if (record === undefined) {
    throw new MeshwardError(
      "E_ATTESTATION_NOT_ISSUED",
      `the certificate presented for renewal (serial ${serial}, ${spiffeId}) was not issued by this CA (its issuance log has no such serial); only certificates this CA issued can be renewed: get a new one with a join token or the workload's JWT`,
      { details: { serial } },
    );
  }
  if (record.spiffeId !== spiffeId || !loggedIs(record.certificatePem, certificate.raw)) {
    throw new MeshwardError(
      "E_ATTESTATION_NOT_ISSUED",
      `the certificate presented for renewal (serial ${serial}, ${spiffeId}) is not the certificate this CA issued under that serial; only certificates this CA issued can be renewed: get a new one with a join token or the workload's JWT`,
      { details: { serial } },
    );
  }
}

/**
 * Whether the logged PEM holds exactly `der`. The CA logs every certificate with toPem, so the
 * presented one encoded the same way is compared as text first (no base64 validation and decode
 * per renewal); a log written otherwise (an import, another tool) is decoded and compared.
 */
export function loggedIs(loggedPem: string, der: Buffer): boolean {
  if (loggedPem === toPem(der, "CERTIFICATE")) return true;
  try {
    return certificatesFromPem(loggedPem)[0]?.equals(der) === true;
  } catch {
    return false;
  }
}

export function svidAttestor(options: SvidAttestorOptions): Attestor {
  return {
    name: "svid",
    readsPeer: true,
    async attest(request: AttestationRequest): Promise<AttestedIdentity> {
      const peer = request.peer;
      if (peer === undefined) {
        throw refusedBeforeAnyCost(new MeshwardError("E_ATTESTATION_NO_CERT", "renewal needs the current certificate presented on the TLS connection"));
      }
      const trust = options.trust();
      if (peer.notAfter <= request.now) {
        throw new MeshwardError("E_CERT_EXPIRED", `the certificate presented for renewal expired at ${peer.notAfter.toISOString()}; get a new one with a token`);
      }
      // OpenSSL accepts a CA certificate as a TLS client certificate; renewal is for leaves only.
      const { notLeaf, commonName } = factsOf(peer.certificate);
      if (notLeaf !== undefined) {
        throw new MeshwardError("E_ATTESTATION_UNTRUSTED", `the certificate presented for renewal is not a leaf SVID: ${notLeaf}`);
      }
      // Verified here even when OpenSSL verified it at the handshake: that was against the roots of
      // that moment, and a connection can outlive a root's retirement. Once per certificate and set
      // of roots (a workload renews over one connection; the roots change only with a rotation).
      if (verifiedAgainst.get(peer.certificate) !== trust.roots) {
        try {
          verifyChain({ leaf: peer.certificate, intermediates: [...trust.intermediates, ...(peer.presentedIntermediates ?? [])], roots: trust.roots, at: request.now });
        } catch (error) {
          throw new MeshwardError("E_ATTESTATION_UNTRUSTED", `the certificate presented for renewal is not acceptable: ${(error as Error).message}`, { cause: error });
        }
        verifiedAgainst.set(peer.certificate, trust.roots);
      }
      if (trust.revoked.has(peer.serial)) {
        throw new MeshwardError("E_CERT_REVOKED", `the certificate presented for renewal (serial ${peer.serial}) is revoked`);
      }
      const [spiffeId, ...more] = peer.uris;
      if (spiffeId === undefined || more.length > 0) {
        throw new MeshwardError("E_ATTESTATION_UNTRUSTED", "the certificate presented for renewal does not carry exactly one SPIFFE ID");
      }
      const { appId } = parseWorkloadId(spiffeId);
      assertRequestMatches(request, spiffeId);
      await assertIssuedHere(options, peer.certificate, peer.serial, spiffeId);
      // A CN granted at the first issuance carries over to renewals, but only the one meshward
      // grants (CN = the certificate's own app id): a CN of any other value is never copied.
      return { spiffeId, allowedDnsNames: peer.dnsNames, method: "svid", ...(commonName === appId ? { commonName } : {}) };
    },
  };
}
