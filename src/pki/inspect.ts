import { X509Certificate } from "node:crypto";
import type { KeyObject } from "node:crypto";
import { MeshwardError, isMeshwardError } from "../errors.ts";
import { DerError, readWhole, TAG } from "./der.ts";
import { OID } from "./oids.ts";
import { certificatesFromPem } from "./pem.ts";
import { parseCertificateParts, readBasicConstraints, readGeneralNames } from "./x509der.ts";
import type { CertificateParts } from "./x509der.ts";

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

function invalid(reason: string, cause?: unknown): MeshwardError {
  return new MeshwardError("E_CERT_INVALID", `not a valid X.509 certificate: ${reason}`, cause === undefined ? {} : { cause });
}

/** node:crypto X509Certificate from DER or PEM; E_CERT_INVALID otherwise. */
export function toX509(input: Uint8Array | string | X509Certificate): X509Certificate {
  if (input instanceof X509Certificate) return input;
  let der: Buffer;
  if (typeof input === "string" || input[0] !== TAG.SEQUENCE) {
    const text = typeof input === "string" ? input : Buffer.from(input).toString("latin1");
    try {
      der = certificatesFromPem(text)[0]!;
    } catch (error) {
      throw invalid(isMeshwardError(error) ? error.message : "unreadable PEM", error);
    }
  } else {
    der = Buffer.from(input.buffer, input.byteOffset, input.byteLength);
  }
  try {
    readWhole(der, TAG.SEQUENCE);
    return new X509Certificate(der);
  } catch (error) {
    throw invalid(error instanceof DerError ? error.message : "the DER could not be parsed", error);
  }
}

const partsCache = new WeakMap<X509Certificate, CertificateParts>();

/** Raw DER parts of a certificate (cached per X509Certificate object). */
export function certificateParts(certificate: X509Certificate): CertificateParts {
  let parts = partsCache.get(certificate);
  if (parts === undefined) {
    try {
      parts = parseCertificateParts(certificate.raw);
    } catch (error) {
      throw invalid(error instanceof DerError ? error.message : "the DER could not be parsed", error);
    }
    partsCache.set(certificate, parts);
  }
  return parts;
}

/** URI and DNS SANs read from the DER (never from node's display string, see CVE-2021-44532). */
export function subjectAltNames(certificate: X509Certificate): { uris: string[]; dnsNames: string[] } {
  const san = certificateParts(certificate).extensions.get(OID.subjectAltName);
  if (san === undefined) return { uris: [], dnsNames: [] };
  try {
    return readGeneralNames(san.value);
  } catch (error) {
    throw invalid("the subjectAltName extension is malformed", error);
  }
}

/** Parses a certificate (DER, PEM or node X509Certificate); E_CERT_INVALID when it is not one. */
export function inspectCertificate(input: Uint8Array | string | X509Certificate): CertificateInfo {
  const certificate = toX509(input);
  const parts = certificateParts(certificate);
  const { uris, dnsNames } = subjectAltNames(certificate);
  const basic = parts.extensions.get(OID.basicConstraints);
  let isCa = false;
  try {
    isCa = basic !== undefined && readBasicConstraints(basic.value).ca;
  } catch (error) {
    throw invalid("the basicConstraints extension is malformed", error);
  }
  return {
    serial: certificate.serialNumber,
    subject: certificate.subject,
    issuer: certificate.issuer,
    notBefore: parts.notBefore,
    notAfter: parts.notAfter,
    uris,
    dnsNames,
    isCa,
    fingerprint256: certificate.fingerprint256,
    publicKey: certificate.publicKey,
  };
}
