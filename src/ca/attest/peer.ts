import type { X509Certificate } from "node:crypto";
import type { TLSSocket } from "node:tls";
import { inspectCertificate } from "../../pki/inspect.ts";

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
 * certificate is parsed once per TLS connection, not once per request.
 */
export function peerCertificateOf(socket: TLSSocket | undefined): PeerCertificate | undefined {
  if (socket === undefined) return undefined;
  const cached = cache.get(socket);
  if (cached !== undefined) return cached ?? undefined;
  const certificate = socket.getPeerX509Certificate?.();
  const peer = certificate === undefined ? null : fromCertificate(certificate, socket.authorized === true);
  cache.set(socket, peer);
  return peer ?? undefined;
}

export function fromCertificate(certificate: X509Certificate, chainVerifiedByTls = false): PeerCertificate {
  const info = inspectCertificate(certificate);
  return { certificate, uris: info.uris, dnsNames: info.dnsNames, serial: info.serial, notAfter: info.notAfter, chainVerifiedByTls, presentedIntermediates: issuersOf(certificate) };
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
