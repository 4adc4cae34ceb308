import type { KeyObject } from "node:crypto";
import { MeshwardError } from "../errors.ts";
import type { KeyPair } from "./keys.ts";

export interface CsrRequest {
  readonly keyPair: KeyPair;
  /** Put in the CSR as its URI SAN (informational: the CA takes identity from attestation). */
  readonly spiffeId?: string;
  readonly dnsNames?: readonly string[];
  readonly commonName?: string;
}

export interface ParsedCsr {
  readonly der: Buffer;
  readonly publicKey: KeyObject;
  readonly subject: string;
  readonly uris: readonly string[];
  readonly dnsNames: readonly string[];
  /** The CSR asks for basicConstraints CA:TRUE. */
  readonly requestsCa: boolean;
}

/** PKCS#10 PEM signed with the key pair (proof of possession). */
export async function createCsr(request: CsrRequest): Promise<string> {
  void request;
  throw new MeshwardError("E_NOT_IMPLEMENTED", "createCsr");
}

/**
 * Parses a PEM or DER PKCS#10 request and verifies its signature with its own public key,
 * synchronously. Errors: E_CSR_INVALID (not a CSR / malformed), E_CSR_SIGNATURE (the
 * signature does not verify), E_KEY_WEAK (key not acceptable, see assertAcceptableKey).
 */
export function parseCsr(input: string | Uint8Array): ParsedCsr {
  void input;
  throw new MeshwardError("E_NOT_IMPLEMENTED", "parseCsr");
}
