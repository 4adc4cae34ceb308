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
   * (`socket.authorized`); otherwise the attestor verifies it itself.
   */
  readonly chainVerifiedByTls: boolean;
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
  return { certificate, uris: info.uris, dnsNames: info.dnsNames, serial: info.serial, notAfter: info.notAfter, chainVerifiedByTls };
}
