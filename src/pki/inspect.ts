import type { KeyObject, X509Certificate } from "node:crypto";
import { MeshwardError } from "../errors.ts";

export interface CertificateInfo {
  readonly serial: string;
  readonly subject: string;
  readonly issuer: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly uris: readonly string[];
  readonly dnsNames: readonly string[];
  readonly isCa: boolean;
  readonly fingerprint256: string;
  readonly publicKey: KeyObject;
}

/** Parses a certificate (DER, PEM or node X509Certificate); E_CERT_INVALID when it is not one. */
export function inspectCertificate(input: Uint8Array | string | X509Certificate): CertificateInfo {
  void input;
  throw new MeshwardError("E_NOT_IMPLEMENTED", "inspectCertificate");
}

/** node:crypto X509Certificate from DER or PEM; E_CERT_INVALID otherwise. */
export function toX509(input: Uint8Array | string | X509Certificate): X509Certificate {
  void input;
  throw new MeshwardError("E_NOT_IMPLEMENTED", "toX509");
}
