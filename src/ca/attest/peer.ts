import type { X509Certificate } from "node:crypto";
import type { TLSSocket } from "node:tls";
import { MeshwardError } from "../../errors.ts";
import { certificateParts, subjectAltNames } from "../../pki/inspect.ts";

/** The certificate a caller presented on its TLS connection, parsed once per connection. */
export interface PeerCertificate {
  readonly certificate: X509Certificate;
  readonly uris: readonly string[];
  readonly dnsNames: readonly string[];
  readonly serial: string;
  readonly notAfter: Date;
  /**
   * OpenSSL verified the presented chain against the CA's roots during the handshake
   * (`socket.authorized`). Informational: that was against the roots of that moment, so the
   * attestor verifies the chain itself against the current ones (once per certificate and set of roots).
   */
  readonly chainVerifiedByTls: boolean;
  /** CA certificates the peer sent above its leaf (Node links them as issuerCertificate), e.g. an issuer that is not the CA's current one. */
  readonly presentedIntermediates?: readonly X509Certificate[];
}

const cache = new WeakMap<TLSSocket, PeerCertificate | null>();

/**
 * Parsing a certificate costs far more than signing one, so a renewing workload's
 * certificate is parsed once per TLS connection, not once per request; and only for a request
 * whose validator reads it (see Attestor.readsPeer). A certificate it cannot read is refused
 * E_ATTESTATION_UNTRUSTED (not cached: the next svid call on the connection is refused again).
 */
export function peerCertificateOf(socket: TLSSocket | undefined): PeerCertificate | undefined {
  if (socket === undefined) return undefined;
  const cached = cache.get(socket);
  if (cached !== undefined) return cached ?? undefined;
  const certificate = socket.getPeerX509Certificate?.();
  let peer: PeerCertificate | null;
  try {
    peer = certificate === undefined ? null : fromCertificate(certificate, socket.authorized === true);
  } catch (error) {
    // The caller's certificate, not the CA, is at fault: UNAUTHENTICATED like any failed renewal proof.
    const reason = error instanceof Error ? error.message : String(error);
    throw new MeshwardError("E_ATTESTATION_UNTRUSTED", `the certificate presented on the connection cannot be read: ${reason}`, { cause: error });
  }
  cache.set(socket, peer);
  return peer ?? undefined;
}

/**
 * Largest client certificate read for renewal. The CA's own leaves are under 3 KB (an RSA-8192
 * key and a few DNS names included); OpenSSL takes a client certificate of up to ~100 KB, which
 * nobody renewing sends.
 */
export const MAX_PEER_CERTIFICATE_BYTES = 16 * 1024;

/** Reads what renewal needs (SANs, serial, expiry): work in proportion to the certificate's size, bounded by MAX_PEER_CERTIFICATE_BYTES. */
export function fromCertificate(certificate: X509Certificate, chainVerifiedByTls = false): PeerCertificate {
  const size = certificate.raw.length;
  if (size > MAX_PEER_CERTIFICATE_BYTES) {
    throw new MeshwardError("E_CERT_INVALID", `the certificate presented on the connection is ${size} bytes, more than the ${MAX_PEER_CERTIFICATE_BYTES} this CA reads; a certificate it issued is far smaller`);
  }
  const { notAfter } = certificateParts(certificate);
  const { uris, dnsNames } = subjectAltNames(certificate);
  return { certificate, uris, dnsNames, serial: certificate.serialNumber, notAfter, chainVerifiedByTls, presentedIntermediates: issuersOf(certificate) };
}

/** The issuerCertificate links Node made from the peer's chain, at most 4 deep. */
function issuersOf(certificate: X509Certificate): X509Certificate[] {
  const out: X509Certificate[] = [];
  let current = certificate.issuerCertificate;
  while (current !== undefined && out.length < 4 && !out.includes(current) && current !== certificate) {
    out.push(current);
    current = current.issuerCertificate;
  }
  return out;
}
