import type { X509Certificate } from "node:crypto";
import { MeshwardError } from "../errors.ts";
import type { Signer } from "./certificate.ts";

export type RevocationReason = "unspecified" | "keyCompromise" | "cACompromise" | "affiliationChanged" | "superseded" | "cessationOfOperation";

export interface CrlEntry {
  /** Uppercase hex, as node prints serials. */
  readonly serial: string;
  readonly revokedAt: Date;
  readonly reason?: RevocationReason;
}

export interface CrlTemplate {
  readonly signer: Signer;
  readonly entries: readonly CrlEntry[];
  readonly thisUpdate: Date;
  readonly nextUpdate: Date;
  readonly crlNumber: bigint;
}

export interface ParsedCrl {
  readonly der: Buffer;
  readonly issuer: string;
  readonly thisUpdate: Date;
  readonly nextUpdate: Date | undefined;
  readonly crlNumber: bigint | undefined;
  readonly entries: readonly CrlEntry[];
  /** Uppercase hex serials, for O(1) lookups on the handshake path. */
  readonly revokedSerials: ReadonlySet<string>;
}

/** X.509 v2 CRL (DER) with CRL number and AKI extensions. */
export async function createCrl(template: CrlTemplate): Promise<Buffer> {
  void template;
  throw new MeshwardError("E_NOT_IMPLEMENTED", "createCrl");
}

/**
 * Parses a DER or PEM CRL; when `issuer` is given, verifies the signature with it
 * (E_CRL_SIGNATURE). Malformed input: E_CRL_INVALID.
 */
export function parseCrl(input: Uint8Array | string, issuer?: X509Certificate): ParsedCrl {
  void input; void issuer;
  throw new MeshwardError("E_NOT_IMPLEMENTED", "parseCrl");
}
