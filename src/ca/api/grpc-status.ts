import { MAX_TIMER_MS } from "../../util/clock.ts";

/** gRPC status codes (grpc/grpc doc/statuscodes.md). */
export const GrpcStatus = {
  OK: 0,
  CANCELLED: 1,
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
  if (code === "E_REQUEST_CANCELLED") return GrpcStatus.CANCELLED;
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

const GRPC_TIMEOUT_UNIT_MS: Readonly<Record<string, number>> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 };

/**
 * grpc-timeout (gRPC over HTTP/2: TimeoutValue of at most 8 digits, then H, M, S, m, u or n) in
 * whole milliseconds, at least 1; undefined when absent, malformed or beyond a timer's reach
 * (MAX_TIMER_MS: a longer grpc-timeout is as good as none).
 */
export function parseGrpcTimeout(header: string | string[] | undefined): number | undefined {
  if (typeof header !== "string") return undefined;
  const match = /^(\d{1,8})([HMSmun])$/.exec(header);
  if (match === null) return undefined;
  const ms = Math.max(1, Math.ceil(Number(match[1]) * GRPC_TIMEOUT_UNIT_MS[match[2]!]!));
  return ms > MAX_TIMER_MS ? undefined : ms;
}
