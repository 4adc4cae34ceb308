/** gRPC status codes (grpc/grpc doc/statuscodes.md). */
export const GrpcStatus = {
  OK: 0,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;

/** A name in the request, the token or the presented certificate that cannot be an identity (a refusal, not the CA failing). */
const INVALID_NAMES = new Set(["E_SPIFFE_ID_INVALID", "E_SPIFFE_ID_NOT_WORKLOAD", "E_TRUST_DOMAIN_INVALID", "E_DNS_NAME_INVALID", "E_CN_INVALID"]);

/** Which gRPC status a meshward error code becomes on the wire. */
export function grpcStatusForCode(code: string): number {
  if (code.startsWith("E_CSR_") || code.startsWith("E_PEM_") || code === "E_KEY_WEAK" || code === "E_REQUEST_INVALID" || INVALID_NAMES.has(code)) {
    return GrpcStatus.INVALID_ARGUMENT;
  }
  if (code === "E_REQUEST_TOO_LARGE" || code === "E_CA_BUSY" || code === "E_RATE_LIMITED") return GrpcStatus.RESOURCE_EXHAUSTED;
  if (code === "E_REQUEST_TIMEOUT") return GrpcStatus.DEADLINE_EXCEEDED;
  if (code === "E_IDENTITY_MISMATCH" || code === "E_IDENTITY_RESERVED" || code === "E_TRUST_DOMAIN_MISMATCH" || code === "E_VALIDATOR_DISABLED" || code === "E_CERT_REVOKED") {
    return GrpcStatus.PERMISSION_DENIED;
  }
  if (code.startsWith("E_TOKEN_") || code.startsWith("E_ATTESTATION_") || code === "E_CERT_EXPIRED") return GrpcStatus.UNAUTHENTICATED;
  if (code.startsWith("E_ISSUER_")) return GrpcStatus.FAILED_PRECONDITION;
  if (code === "E_JWKS_UNAVAILABLE" || code === "E_KUBERNETES_UNAVAILABLE" || code.startsWith("E_STORE_")) return GrpcStatus.UNAVAILABLE;
  return GrpcStatus.INTERNAL;
}

/**
 * grpc-message is percent-encoded (gRPC over HTTP/2 spec): only bytes outside printable
 * ASCII (0x20–0x7E) and "%" itself are escaped; everything else goes as is.
 */
export function encodeGrpcMessage(message: string): string {
  let out = "";
  for (const byte of Buffer.from(message, "utf8")) {
    out += byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}
