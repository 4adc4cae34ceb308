import { createPublicKey, randomFillSync } from "node:crypto";
import type { KeyObject, webcrypto } from "node:crypto";
import type * as X509 from "@peculiar/x509";
import { MeshwardError } from "../errors.ts";
import { parseSpiffeId, parseTrustDomain } from "../spiffe/id.ts";
import * as der from "./der.ts";
import { assertAcceptableKey, keysMatch } from "./keys.ts";
import type { KeyPair } from "./keys.ts";
import { OID } from "./oids.ts";
import { loadX509, toWebCryptoPrivateKey, toWebCryptoPublicKey, webCryptoAlgorithms } from "./peculiar.ts";
import type { X509Module } from "./peculiar.ts";
import { signerContext } from "./signer.ts";
import type { Signer } from "./signer.ts";
import { spkiOf } from "./spki.ts";
import { keyIdentifier, parseCertificateParts } from "./x509der.ts";

export type { Signer };

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
  /**
   * Subject common name (O=SPIFFE, CN=<this>), for servers that map a certificate's CN to a
   * user (PostgreSQL `cert` auth). Omitted: the subject is O=SPIFFE only. At most 64 characters
   * of the SPIFFE path-segment alphabet (a-z, A-Z, 0-9, '.', '-', '_').
   */
  readonly commonName?: string;
  /** 16 random bytes when omitted. */
  readonly serial?: Buffer;
}

export interface IssuedCertificate {
  readonly der: Buffer;
  /** Uppercase hex, as node:crypto X509Certificate.serialNumber prints it. */
  readonly serial: string;
}

/** Organization of every certificate meshward issues; leaves carry it as their whole subject. */
export const SUBJECT_ORGANIZATION = "SPIFFE";

// ---------------------------------------------------------------- serials

// One CSPRNG call per 256 serials: a randomBytes(16) call costs more than the rest of the serial.
const randomPool = Buffer.alloc(4096);
let randomPoolOffset = randomPool.length;

function randomChunk(length: number): Buffer {
  if (randomPoolOffset + length > randomPool.length) {
    randomFillSync(randomPool);
    randomPoolOffset = 0;
  }
  const chunk = Buffer.from(randomPool.subarray(randomPoolOffset, randomPoolOffset + length));
  randomPool.fill(0, randomPoolOffset, randomPoolOffset + length);
  randomPoolOffset += length;
  return chunk;
}

/** Random positive 16-byte serial (top bit clear, first byte non-zero). */
export function randomSerial(): Buffer {
  const serial = randomChunk(16);
  serial[0] = serial[0]! & 0x7f;
  // Only 1 in 128 serials lands here; 127 values keep the first byte uniform over 1..127.
  while (serial[0] === 0) serial[0] = randomChunk(1)[0]! & 0x7f;
  return serial;
}

/** Normalises a serial typed by a person ("0a:1b", "0A1B", "a1b") to uppercase hex as node prints it. */
export function normalizeSerial(input: string): string {
  const hex = String(input).trim().replace(/^0x/i, "").replace(/[\s:.-]/g, "");
  if (hex.length === 0 || !/^[0-9a-fA-F]+$/.test(hex)) {
    throw new MeshwardError("E_SERIAL_INVALID", `serial ${JSON.stringify(String(input).slice(0, 80))} is not hexadecimal (e.g. "0A:1B" or "0a1b")`);
  }
  const trimmed = hex.replace(/^0+/, "").toUpperCase();
  if (trimmed.length === 0) return "0";
  return trimmed.length % 2 === 1 ? `0${trimmed}` : trimmed;
}

function serialHex(serial: Buffer): string {
  // Node prints whole bytes without leading zero bytes: a non-zero first byte needs no normalising.
  return serial.length > 0 && serial[0] !== 0 ? serial.toString("hex").toUpperCase() : normalizeSerial(serial.toString("hex"));
}

function checkSerial(serial: Buffer): Buffer {
  if (serial.length === 0 || serial.length > 20 || serial.every((b) => b === 0)) {
    throw new MeshwardError("E_SERIAL_INVALID", "a certificate serial must be 1 to 20 bytes and not zero (RFC 5280 4.1.2.2)");
  }
  return serial;
}

// ---------------------------------------------------------------- shared checks

function checkValidity(validity: Validity): void {
  const { notBefore, notAfter } = validity;
  if (!(notBefore instanceof Date) || !(notAfter instanceof Date) || Number.isNaN(notBefore.getTime()) || Number.isNaN(notAfter.getTime())) {
    throw new MeshwardError("E_CERT_VALIDITY", "notBefore and notAfter must be valid dates");
  }
  if (notAfter.getTime() <= notBefore.getTime()) throw new MeshwardError("E_CERT_VALIDITY", "notAfter must be later than notBefore");
}

function publicOnly(key: KeyObject): KeyObject {
  return key.type === "private" ? createPublicKey(key) : key;
}

const DNS_NAME_RE = /^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;

function checkDnsName(name: string): string {
  if (typeof name !== "string" || name.length > 253 || !DNS_NAME_RE.test(name)) {
    throw new MeshwardError("E_DNS_NAME_INVALID", `DNS name ${JSON.stringify(String(name).slice(0, 80))} is not a valid host name (letters, digits, '-', '.', optional leading '*.')`);
  }
  return name.toLowerCase();
}

function trustDomainId(trustDomain: string): string {
  return parseSpiffeId(`spiffe://${parseTrustDomain(trustDomain)}`).toString();
}

// ---------------------------------------------------------------- CA certificates (@peculiar/x509, rare path)

function caName(trustDomain: string, commonName: string | undefined, kind: string): Record<string, string[]>[] {
  return [{ [OID.organizationName]: [SUBJECT_ORGANIZATION] }, { [OID.commonName]: [commonName ?? `meshward ${kind} ${trustDomain}`] }];
}

async function caExtensions(x509: X509Module, trustDomain: string, publicKey: webcrypto.CryptoKey, pathLength: number | undefined): Promise<X509.Extension[]> {
  return [
    new x509.BasicConstraintsExtension(true, pathLength, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
    new x509.SubjectAlternativeNameExtension([{ type: "url", value: trustDomainId(trustDomain) }], false),
    await x509.SubjectKeyIdentifierExtension.create(publicKey),
  ];
}

function issued(raw: ArrayBuffer): IssuedCertificate {
  const bytes = Buffer.from(raw);
  return { der: bytes, serial: serialHex(parseCertificateParts(bytes).serial) };
}

/** Self-signed root: CA:TRUE, keyCertSign + cRLSign, URI SAN spiffe://<trust-domain>. */
export async function createRootCertificate(template: RootTemplate): Promise<IssuedCertificate> {
  checkValidity(template);
  const { privateKey } = template.keyPair;
  const publicKey = publicOnly(template.keyPair.publicKey);
  assertAcceptableKey(publicKey);
  if (!keysMatch(privateKey, publicKey)) throw new MeshwardError("E_KEY_MISMATCH", "the root's private key does not belong to its public key");
  const x509 = await loadX509();
  const webPublic = await toWebCryptoPublicKey(publicKey);
  const webPrivate = await toWebCryptoPrivateKey(privateKey);
  const certificate = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial().toString("hex"),
    name: caName(template.trustDomain, template.commonName, "root"),
    notBefore: template.notBefore,
    notAfter: template.notAfter,
    signingAlgorithm: webCryptoAlgorithms(privateKey).signingAlgorithm,
    keys: { privateKey: webPrivate, publicKey: webPublic },
    extensions: await caExtensions(x509, template.trustDomain, webPublic, undefined),
  });
  return issued(certificate.rawData);
}

/** Intermediate signed by `signer`: CA:TRUE pathlen 0, keyCertSign + cRLSign, URI SAN spiffe://<trust-domain>. */
export async function createIssuerCertificate(template: IssuerTemplate): Promise<IssuedCertificate> {
  checkValidity(template);
  const publicKey = publicOnly(template.publicKey);
  assertAcceptableKey(publicKey);
  const context = signerContext(template.signer);
  const x509 = await loadX509();
  const webPublic = await toWebCryptoPublicKey(publicKey);
  const extensions = await caExtensions(x509, template.trustDomain, webPublic, 0);
  extensions.push(new x509.AuthorityKeyIdentifierExtension(context.keyId.toString("hex")));
  const certificate = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial().toString("hex"),
    subject: caName(template.trustDomain, template.commonName, "issuer"),
    issuer: new x509.Name(context.subject),
    notBefore: template.notBefore,
    notAfter: template.notAfter,
    signingAlgorithm: webCryptoAlgorithms(template.signer.privateKey).signingAlgorithm,
    publicKey: webPublic,
    signingKey: await toWebCryptoPrivateKey(template.signer.privateKey),
    extensions,
  });
  return issued(certificate.rawData);
}

// ---------------------------------------------------------------- leaf (fast synchronous DER path)

const VERSION_3 = der.explicit(0, der.integer(2));
const LEAF_ORGANIZATION = der.set(der.sequence(der.oid(OID.organizationName), der.utf8String(SUBJECT_ORGANIZATION)));
const LEAF_SUBJECT = der.sequence(LEAF_ORGANIZATION);
const LEAF_COMMON_NAME_RE = /^[A-Za-z0-9._-]{1,64}$/;

/** O=SPIFFE, and CN=<commonName> when given (RFC 5280 ub-common-name: 64). */
function leafSubject(commonName: string | undefined): Buffer {
  if (commonName === undefined) return LEAF_SUBJECT;
  if (typeof commonName !== "string" || !LEAF_COMMON_NAME_RE.test(commonName)) {
    throw new MeshwardError("E_CN_INVALID", `common name ${JSON.stringify(String(commonName).slice(0, 80))} must be 1 to 64 characters of a-z, A-Z, 0-9, '.', '-' and '_' (an app id)`);
  }
  return der.sequence(LEAF_ORGANIZATION, der.set(der.sequence(der.oid(OID.commonName), der.utf8String(commonName))));
}
const CRITICAL = der.boolean(true);
// CA:FALSE is the DEFAULT, so DER encodes basicConstraints as an empty SEQUENCE.
const EXT_BASIC_CONSTRAINTS_LEAF = der.sequence(der.oid(OID.basicConstraints), CRITICAL, der.octetString(der.sequence()));
const EXT_KEY_USAGE_EC = der.sequence(der.oid(OID.keyUsage), CRITICAL, der.octetString(der.namedBits([0])));
const EXT_KEY_USAGE_RSA = der.sequence(der.oid(OID.keyUsage), CRITICAL, der.octetString(der.namedBits([0, 2])));
const EXT_EXT_KEY_USAGE = der.sequence(der.oid(OID.extKeyUsage), der.octetString(der.sequence(der.oid(OID.serverAuth), der.oid(OID.clientAuth))));
const OID_SAN = der.oid(OID.subjectAltName);
const OID_SKI = der.oid(OID.subjectKeyIdentifier);

/**
 * Leaf X509-SVID on the fast synchronous DER path: exactly one URI SAN (the SPIFFE ID),
 * optional DNS SANs, CA:FALSE (critical), digitalSignature (+ keyEncipherment for RSA keys),
 * EKU serverAuth + clientAuth, SKI/AKI, random positive 128-bit serial, signed with
 * node:crypto. Validity is taken as given (policy such as backdating lives in the CA).
 */
export function issueLeafCertificate(template: LeafTemplate): IssuedCertificate {
  const id = parseSpiffeId(template.spiffeId);
  if (id.path === "") {
    throw new MeshwardError("E_SPIFFE_ID_INVALID", `leaf SPIFFE ID ${JSON.stringify(template.spiffeId)} needs a path (X509-SVID 3.1); the bare trust domain ID is for CA certificates`);
  }
  checkValidity(template);
  const context = signerContext(template.signer);
  const publicKey = publicOnly(template.publicKey);
  assertAcceptableKey(publicKey);
  const spki = spkiOf(publicKey);
  const serial = checkSerial(template.serial ?? randomSerial());

  const names = [der.implicit(6, Buffer.from(id.toString(), "latin1"))];
  for (const name of template.dnsNames ?? []) names.push(der.implicit(2, Buffer.from(checkDnsName(name), "latin1")));

  const tbs = der.sequence(
    VERSION_3,
    der.unsignedInteger(serial),
    context.algorithm.algorithmIdentifier,
    context.subject,
    der.sequence(der.time(template.notBefore), der.time(template.notAfter)),
    leafSubject(template.commonName),
    spki,
    der.explicit(
      3,
      der.sequence(
        EXT_BASIC_CONSTRAINTS_LEAF,
        publicKey.asymmetricKeyType === "rsa" ? EXT_KEY_USAGE_RSA : EXT_KEY_USAGE_EC,
        EXT_EXT_KEY_USAGE,
        // The subject is not empty, so the SAN need not be critical (RFC 5280 4.2.1.6).
        der.sequence(OID_SAN, der.octetString(der.sequence(...names))),
        der.sequence(OID_SKI, der.octetString(der.octetString(keyIdentifier(spki)))),
        context.authorityKeyIdExtension,
      ),
    ),
  );
  const signature = context.algorithm.sign(tbs);
  const certificate = der.sequence(tbs, context.algorithm.algorithmIdentifier, der.bitString(signature));
  return { der: certificate, serial: serialHex(serial) };
}
