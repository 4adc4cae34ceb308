import type { X509Certificate } from "node:crypto";
import { MeshwardError } from "../errors.ts";

export type CertificateInput = Uint8Array | string | X509Certificate;

export interface ChainVerification {
  readonly leaf: CertificateInput;
  readonly intermediates?: readonly CertificateInput[];
  readonly roots: readonly CertificateInput[];
  readonly at?: Date;
  /** Verify a CA certificate (an issuer being imported) as the chain's first element. Default false: leaves must be CA:FALSE. */
  readonly allowCaLeaf?: boolean;
}

/**
 * Verifies leaf → intermediates → one of the roots: signatures, validity at `at`, CA flags
 * and path lengths. Returns the chain leaf first, root last. Errors: E_CHAIN_UNTRUSTED,
 * E_CERT_EXPIRED, E_CERT_NOT_YET_VALID, E_CHAIN_INVALID.
 */
export function verifyChain(input: ChainVerification): X509Certificate[] {
  void input;
  throw new MeshwardError("E_NOT_IMPLEMENTED", "verifyChain");
}
