import { describe, expect, it } from "vitest";
import { GrpcStatus, grpcStatusForCode, parseGrpcTimeout } from "../../src/ca/api/grpc-status.ts";

// A refusal is the client's to fix; INTERNAL (13) says the CA itself failed (grpc/grpc
// doc/statuscodes.md: "reserved for serious errors"). Each code below can be caused by a request
// alone (test/ca/svid-renewal.test.ts: E_SPIFFE_ID_NOT_WORKLOAD from a renewal with a certificate
// that is not a workload ID; E_CN_INVALID / E_DNS_NAME_INVALID from what a token grants).
describe("grpcStatusForCode: every refusal a request can cause has a status other than INTERNAL", () => {
  it.each([
    ["E_CSR_INVALID", GrpcStatus.INVALID_ARGUMENT],
    ["E_KEY_WEAK", GrpcStatus.INVALID_ARGUMENT],
    ["E_SPIFFE_ID_INVALID", GrpcStatus.INVALID_ARGUMENT],
    ["E_SPIFFE_ID_NOT_WORKLOAD", GrpcStatus.INVALID_ARGUMENT],
    ["E_TRUST_DOMAIN_INVALID", GrpcStatus.INVALID_ARGUMENT],
    ["E_DNS_NAME_INVALID", GrpcStatus.INVALID_ARGUMENT],
    ["E_CN_INVALID", GrpcStatus.INVALID_ARGUMENT],
    ["E_REQUEST_INVALID", GrpcStatus.INVALID_ARGUMENT],
    ["E_REQUEST_TOO_LARGE", GrpcStatus.RESOURCE_EXHAUSTED],
    ["E_CA_BUSY", GrpcStatus.RESOURCE_EXHAUSTED],
    ["E_REQUEST_TIMEOUT", GrpcStatus.DEADLINE_EXCEEDED],
    ["E_REQUEST_CANCELLED", GrpcStatus.CANCELLED],
    ["E_IDENTITY_MISMATCH", GrpcStatus.PERMISSION_DENIED],
    ["E_CERT_REVOKED", GrpcStatus.PERMISSION_DENIED],
    ["E_TOKEN_USED", GrpcStatus.UNAUTHENTICATED],
    ["E_ATTESTATION_UNTRUSTED", GrpcStatus.UNAUTHENTICATED],
    ["E_CERT_EXPIRED", GrpcStatus.UNAUTHENTICATED],
  ])("%s → %i", (code, status) => {
    expect(grpcStatusForCode(code)).toBe(status);
  });

  it("keeps INTERNAL for what is the CA's own failure (control)", () => {
    expect(grpcStatusForCode("E_INTERNAL")).toBe(GrpcStatus.INTERNAL);
    expect(grpcStatusForCode("E_SIGNING_CLOSED")).toBe(GrpcStatus.INTERNAL);
  });
});

// The client's deadline as grpc-go and grpc-js send it (test/ca/cancelled-sign.test.ts: the CA stops
// a call whose deadline passed before it spends a join token).
describe("parseGrpcTimeout (gRPC over HTTP/2: TimeoutValue TimeoutUnit)", () => {
  it.each([
    ["3S", 3000],
    ["2999m", 2999],
    ["1H", 3_600_000],
    ["5M", 300_000],
    ["1500u", 2],
    ["10n", 1],
    ["0m", 1],
    ["99999999m", 99_999_999],
  ])("%s is %d ms", (header, ms) => {
    expect(parseGrpcTimeout(header)).toBe(ms);
  });

  it.each([[undefined], [""], ["3"], ["3s"], ["123456789m"], ["-1S"], ["1.5S"], [["1S", "2S"]], ["99999999H"]])("%j is no deadline", (header) => {
    expect(parseGrpcTimeout(header as string | undefined)).toBeUndefined();
  });
});
