/**
 * Handshake failure reasons (the `reason` label of meshward_tls_handshake_failures_total) and the
 * classification of a TLS error into one. Pure: no metrics registry, so the transport layer can name
 * the reason in its log lines without loading prom-client.
 */

/** Why a TLS handshake failed (issue 7), a closed set so dashboards and alerts can rely on it. */
export const HANDSHAKE_FAILURE_REASONS = [
  "no_certificate",
  "unknown_ca",
  "expired",
  "revoked",
  "spiffe_mismatch",
  "protocol_version",
  "other",
] as const;
export type HandshakeFailureReason = (typeof HANDSHAKE_FAILURE_REASONS)[number];

// ---------------------------------------------------------------------------------------
// TLS error classification.

/** The part of a server-side tls.TLSSocket we read: Node puts the verify result here. */
export interface TlsSocketLike {
  readonly authorizationError?: unknown;
}

const BY_CODE: ReadonlyMap<string, HandshakeFailureReason> = new Map<string, HandshakeFailureReason>([
  // The peer sent no certificate (server side), or the server told us one was required.
  ["ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE", "no_certificate"],
  ["ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED", "no_certificate"],
  ["E_NO_CLIENT_CERTIFICATE", "no_certificate"],
  ["E_NO_PEER_CERTIFICATE", "no_certificate"],
  // The chain does not lead to a trusted root (OpenSSL verify codes and the peer's alert).
  ["UNABLE_TO_VERIFY_LEAF_SIGNATURE", "unknown_ca"],
  ["UNABLE_TO_GET_ISSUER_CERT", "unknown_ca"],
  ["UNABLE_TO_GET_ISSUER_CERT_LOCALLY", "unknown_ca"],
  ["SELF_SIGNED_CERT_IN_CHAIN", "unknown_ca"],
  ["DEPTH_ZERO_SELF_SIGNED_CERT", "unknown_ca"],
  ["CERT_SIGNATURE_FAILURE", "unknown_ca"],
  ["CERT_UNTRUSTED", "unknown_ca"],
  ["ERR_SSL_TLSV1_ALERT_UNKNOWN_CA", "unknown_ca"],
  ["E_UNKNOWN_CA", "unknown_ca"],
  ["E_CHAIN_UNTRUSTED", "unknown_ca"],
  // Outside the validity period (expired, or not yet valid: both are clock/lifetime problems).
  ["CERT_HAS_EXPIRED", "expired"],
  ["CERT_NOT_YET_VALID", "expired"],
  ["ERR_SSL_SSLV3_ALERT_CERTIFICATE_EXPIRED", "expired"],
  ["E_CERT_EXPIRED", "expired"],
  ["E_CERT_NOT_YET_VALID", "expired"],
  // Revoked (our CRL, or the peer's alert).
  ["CERT_REVOKED", "revoked"],
  ["ERR_SSL_SSLV3_ALERT_CERTIFICATE_REVOKED", "revoked"],
  ["E_CERT_REVOKED", "revoked"],
  // The peer is not the SPIFFE ID we expected.
  ["E_SPIFFE_MISMATCH", "spiffe_mismatch"],
  ["ERR_TLS_CERT_ALTNAME_INVALID", "spiffe_mismatch"],
  ["E_PEER_NO_SPIFFE_ID", "spiffe_mismatch"],
  ["E_PEER_NOT_LEAF", "spiffe_mismatch"],
  ["E_TRUST_DOMAIN_MISMATCH", "spiffe_mismatch"],
  // TLS version below our minimum, or no common version.
  ["ERR_SSL_UNSUPPORTED_PROTOCOL", "protocol_version"],
  ["ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION", "protocol_version"],
  ["ERR_SSL_NO_PROTOCOLS_AVAILABLE", "protocol_version"],
  ["ERR_SSL_VERSION_TOO_LOW", "protocol_version"],
  ["ERR_SSL_UNSUPPORTED_SSL_VERSION", "protocol_version"],
  ["ERR_TLS_INVALID_PROTOCOL_VERSION", "protocol_version"],
]);

/**
 * Maps a TLS failure to a HandshakeFailureReason. Server side, pass the TLSSocket too
 * (`server.on("tlsClientError", (err, socket) => …)`): when the client's certificate fails
 * verification Node ends the handshake and reports a bare ECONNRESET, and the real reason
 * (e.g. CERT_HAS_EXPIRED) is only on `socket.authorizationError`. Follows `cause` chains.
 */
export function classifyTlsError(error: unknown, socket?: TlsSocketLike): HandshakeFailureReason {
  const authorizationError = socket?.authorizationError;
  if (authorizationError !== undefined && authorizationError !== null) {
    const code = typeof authorizationError === "string" ? authorizationError : codeOf(authorizationError);
    const reason = code === undefined ? undefined : BY_CODE.get(code);
    if (reason) return reason;
  }
  let current: unknown = error;
  for (let depth = 0; depth < 5 && current !== undefined && current !== null; depth++) {
    const code = codeOf(current);
    const reason = code === undefined ? undefined : BY_CODE.get(code);
    if (reason) return reason;
    current = (current as { cause?: unknown }).cause;
  }
  // Wrappers such as E_PEER_UNTRUSTED quote the verify code in their message.
  const message = error instanceof Error ? error.message : undefined;
  if (message) {
    for (const token of message.match(/\b[A-Z][A-Z0-9_]{5,}\b/g) ?? []) {
      const reason = BY_CODE.get(token);
      if (reason) return reason;
    }
  }
  return "other";
}

/** What an "other" handshake failure was, in words, for logs and status pages (not a metric label). */
const OTHER_FAILURES: ReadonlyMap<string, string> = new Map([
  ["ERR_SSL_HTTP_REQUEST", "plain HTTP sent to the TLS port"],
  ["ERR_SSL_WRONG_VERSION_NUMBER", "not TLS (the first bytes are no TLS record)"],
  ["ERR_SSL_PACKET_LENGTH_TOO_LONG", "not TLS (the first bytes are no TLS record)"],
  ["ECONNRESET", "the client closed the connection during the handshake"],
  ["EPIPE", "the client closed the connection during the handshake"],
  ["ERR_SSL_NO_SHARED_CIPHER", "no cipher suite in common"],
  ["ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE", "the client aborted the handshake (handshake_failure alert)"],
  ["ERR_SSL_TLSV1_ALERT_DECODE_ERROR", "the client could not parse the handshake (decode_error alert)"],
  ["ERR_TLS_HANDSHAKE_TIMEOUT", "the client did not finish the handshake in time"],
]);

/**
 * A handshake failure for people: the classified reason, and for `other` what actually
 * happened (a known cause in words, else the error code), e.g. "other: plain HTTP sent to the
 * TLS port" instead of a bare "other".
 */
export function describeHandshakeFailure(reason: HandshakeFailureReason, error: unknown): string {
  if (reason !== "other") return reason;
  const code = codeOf(error);
  const known = code === undefined ? undefined : OTHER_FAILURES.get(code);
  if (known !== undefined) return `other: ${known}`;
  if (code !== undefined) return `other: ${code}`;
  const message = error instanceof Error ? error.message : String(error);
  return `other: ${message.slice(0, 120)}`;
}

function codeOf(value: unknown): string | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  const code = (value as { code?: unknown }).code;
  return typeof code === "string" ? code : undefined;
}
