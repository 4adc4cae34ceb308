import type { KeyObject, X509Certificate } from "node:crypto";
import { MeshwardError } from "../errors.ts";
import type { KeyPair } from "./keys.ts";

/** A CA certificate with its private key, able to sign. */
export interface Signer {
  readonly certificate: X509Certificate;
  readonly der: Buffer;
  readonly privateKey: KeyObject;
}

export interface Validity {
  readonly notBefore: Date;
  readonly notAfter: Date;
}

export interface RootTemplate extends Validity {
  readonly trustDomain: string;
  readonly keyPair: KeyPair;
  readonly commonName?: string;
}

export interface IssuerTemplate extends Validity {
  readonly trustDomain: string;
  readonly publicKey: KeyObject;
  readonly signer: Signer;
  readonly commonName?: string;
}

export interface LeafTemplate extends Validity {
  readonly spiffeId: string;
  readonly publicKey: KeyObject;
  readonly signer: Signer;
  readonly dnsNames?: readonly string[];
  /** 16 random bytes when omitted. */
  readonly serial?: Buffer;
}

export interface IssuedCertificate {
  readonly der: Buffer;
  /** Uppercase hex, as node:crypto X509Certificate.serialNumber prints it. */
  readonly serial: string;
}

/** Self-signed root: CA:TRUE, keyCertSign + cRLSign, URI SAN spiffe://<trust-domain>. */
export async function createRootCertificate(template: RootTemplate): Promise<IssuedCertificate> {
  void template;
  throw new MeshwardError("E_NOT_IMPLEMENTED", "createRootCertificate");
}

/** Intermediate signed by `signer`: CA:TRUE pathlen 0, keyCertSign + cRLSign, URI SAN spiffe://<trust-domain>. */
export async function createIssuerCertificate(template: IssuerTemplate): Promise<IssuedCertificate> {
  void template;
  throw new MeshwardError("E_NOT_IMPLEMENTED", "createIssuerCertificate");
}

/**
 * Leaf X509-SVID on the fast synchronous DER path: exactly one URI SAN (the SPIFFE ID),
 * optional DNS SANs, CA:FALSE (critical), digitalSignature (+ keyEncipherment for RSA keys),
 * EKU serverAuth + clientAuth, SKI/AKI, random positive 128-bit serial, signed with
 * node:crypto. Validity is taken as given (policy such as backdating lives in the CA).
 */
export function issueLeafCertificate(template: LeafTemplate): IssuedCertificate {
  void template;
  throw new MeshwardError("E_NOT_IMPLEMENTED", "issueLeafCertificate");
}

/** Random positive 16-byte serial (top bit clear, first byte non-zero). */
export function randomSerial(): Buffer {
  throw new MeshwardError("E_NOT_IMPLEMENTED", "randomSerial");
}

/** Normalises a serial typed by a person ("0a:1b", "0A1B", "a1b") to uppercase hex as node prints it. */
export function normalizeSerial(input: string): string {
  void input;
  throw new MeshwardError("E_NOT_IMPLEMENTED", "normalizeSerial");
}
