import type { KeyObject } from "node:crypto";
import { MeshwardError, isMeshwardError } from "../errors.ts";
import { parseSpiffeId } from "../spiffe/id.ts";
import type { Tlv } from "./der.ts";
import { children, DerError, expectTag, readBigInt, readBitString, readOid, readWhole, TAG, whole } from "./der.ts";
import { ACCEPTED_KEYS, assertAcceptableKey } from "./keys.ts";
import type { KeyPair } from "./keys.ts";
import { formatName } from "./names.ts";
import { OID } from "./oids.ts";
import * as der from "./der.ts";
import { pemBlocks, toPem } from "./pem.ts";
import { signingAlgorithmFor, UnsupportedSignatureAlgorithm, verifySignature } from "./signature.ts";
import { importSpki, spkiAlgorithm, spkiOf } from "./spki.ts";
import { readBasicConstraints, readExtensions, readGeneralNames } from "./x509der.ts";

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

const CSR_LABELS = new Set(["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"]);

/**
 * PKCS#10 PEM signed with the key pair (proof of possession), built with the DER writer: a
 * workload creating its CSR does not load an X.509 library (measured ~10 MB of a sidecar's RSS).
 */
export async function createCsr(request: CsrRequest): Promise<string> {
  const { privateKey, publicKey } = request.keyPair;
  assertAcceptableKey(publicKey);
  const names: Buffer[] = [];
  if (request.spiffeId !== undefined) names.push(der.implicit(6, Buffer.from(parseSpiffeId(request.spiffeId).toString(), "latin1")));
  for (const dns of request.dnsNames ?? []) {
    if (!/^[\x21-\x7e]+$/.test(dns)) throw new MeshwardError("E_DNS_NAME_INVALID", `DNS name ${JSON.stringify(dns)} is not printable ASCII`);
    names.push(der.implicit(2, Buffer.from(dns, "latin1")));
  }
  const subject = der.sequence(...(request.commonName === undefined ? [] : [der.set(der.sequence(der.oid(OID.commonName), der.utf8String(request.commonName)))]));
  const attributes =
    names.length === 0
      ? []
      : [der.sequence(der.oid(OID.extensionRequest), der.set(der.sequence(der.sequence(der.oid(OID.subjectAltName), der.octetString(der.sequence(...names))))))];
  const info = der.sequence(der.integer(0), subject, spkiOf(publicKey), der.explicit(0, Buffer.concat(attributes)));
  const algorithm = signingAlgorithmFor(privateKey);
  const csr = der.sequence(info, algorithm.algorithmIdentifier, der.bitString(algorithm.sign(info)));
  return toPem(csr, "CERTIFICATE REQUEST");
}

const PRINTABLE_DNS_NAME = /^[\x21-\x7e]+$/;
const SHOWN_DNS_NAME_LENGTH = 80;

/** A DNS name from a CSR (Latin-1, one character a byte) quoted in printable ASCII: other bytes as \xNN, at most 80 of them shown. */
function escapeDnsName(name: string): string {
  const shown = name.slice(0, SHOWN_DNS_NAME_LENGTH).replace(/[^\x20-\x7e]|[ "\\]/g, (c) => (c === '"' || c === "\\" ? `\\${c}` : `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`));
  return `"${shown}"${name.length > SHOWN_DNS_NAME_LENGTH ? "..." : ""}`;
}

function invalid(reason: string, cause?: unknown): MeshwardError {
  return new MeshwardError("E_CSR_INVALID", `the certificate request is not a valid PKCS#10 CSR: ${reason}`, cause === undefined ? {} : { cause });
}

function csrDer(input: string | Uint8Array): Buffer {
  if (typeof input !== "string") {
    const bytes = Buffer.from(input.buffer, input.byteOffset, input.byteLength);
    if (bytes[0] === 0x30) return bytes;
    input = bytes.toString("latin1");
  }
  let blocks;
  try {
    blocks = pemBlocks(input);
  } catch (error) {
    throw invalid(isMeshwardError(error) ? error.message : "PEM could not be read");
  }
  if (blocks.length !== 1) throw invalid(`expected one PEM block, found ${blocks.length}`);
  const block = blocks[0]!;
  if (!CSR_LABELS.has(block.label)) throw invalid(`the PEM block is a ${block.label}, not a CERTIFICATE REQUEST`);
  return block.der;
}

/**
 * Parses a PEM or DER PKCS#10 request and verifies its signature with its own public key,
 * synchronously. Errors: E_CSR_INVALID (not a CSR / malformed), E_CSR_SIGNATURE (the
 * signature does not verify), E_KEY_WEAK (key not acceptable, see assertAcceptableKey).
 * E_CSR_INVALID also for a subjectAltName DNS name that is not printable ASCII (named escaped).
 */
export function parseCsr(input: string | Uint8Array): ParsedCsr {
  const der = csrDer(input);
  // Hand-written DER reading: @peculiar/asn1-schema needs ~160 µs per CSR here, more than the signature check.
  let info: Tlv, signatureAlgorithm: Tlv, signature: Tlv | undefined, infoFields: Tlv[], spki: Buffer;
  try {
    const outer = readWhole(der, TAG.SEQUENCE);
    const top = children(der, outer);
    info = expectTag(top[0], TAG.SEQUENCE, "certificationRequestInfo");
    signatureAlgorithm = expectTag(top[1], TAG.SEQUENCE, "signatureAlgorithm");
    signature = top[2];
    infoFields = children(der, info);
    if (readBigInt(der, infoFields[0], "version") !== 0n) throw new DerError("version must be 0 (v1)");
    expectTag(infoFields[1], TAG.SEQUENCE, "subject");
    spki = whole(der, expectTag(infoFields[2], TAG.SEQUENCE, "subjectPKInfo"));
    if (top.length !== 3) throw new DerError("extra fields after the signature");
  } catch (error) {
    throw invalid(error instanceof DerError ? error.message : "unreadable DER", error);
  }

  let publicKey: KeyObject;
  try {
    publicKey = importSpki(spki);
  } catch (error) {
    if (error instanceof DerError) throw invalid(`public key: ${error.message}`, error);
    const { acceptable, label } = spkiAlgorithm(spki);
    if (acceptable) throw invalid(`the ${label} public key is damaged (not a valid key)`, error);
    throw new MeshwardError("E_KEY_WEAK", `key ${label} is not accepted; use ${ACCEPTED_KEYS}`, {
      cause: error,
      details: { key: label },
    });
  }
  assertAcceptableKey(publicKey);

  let subject: string;
  let uris: string[] = [];
  let dnsNames: string[] = [];
  let requestsCa = false;
  let signatureBytes: Buffer;
  try {
    const { bytes, unusedBits } = readBitString(der, signature, "signature");
    if (unusedBits !== 0) throw new DerError("signature has unused bits");
    signatureBytes = bytes;
    subject = formatName(der, infoFields[1]!);
    const attributes = infoFields[3];
    if (attributes === undefined || attributes.tag !== 0xa0 || infoFields.length !== 4) throw new DerError("attributes [0] missing or extra fields");
    let extensionRequests = 0;
    for (const attribute of children(der, attributes)) {
      const [type, values] = children(der, expectTag(attribute, TAG.SEQUENCE, "attribute"));
      if (readOid(der, type, "attribute type") !== OID.extensionRequest) continue;
      // A second one would otherwise replace what the first asked for, unseen by the CA's checks.
      if (++extensionRequests > 1) throw new DerError("the extensionRequest attribute appears more than once");
      const valueSet = expectTag(values, TAG.SET, "attribute values");
      const [extensionsSeq, ...extra] = children(der, valueSet);
      if (extensionsSeq === undefined || extra.length > 0) throw new DerError("extensionRequest must hold exactly one Extensions value");
      const extensions = readExtensions(der, extensionsSeq);
      const san = extensions.get(OID.subjectAltName);
      if (san !== undefined) ({ uris, dnsNames } = readGeneralNames(san.value));
      const basic = extensions.get(OID.basicConstraints);
      if (basic !== undefined) requestsCa = readBasicConstraints(basic.value).ca;
    }
  } catch (error) {
    throw invalid(error instanceof DerError ? error.message : "unreadable DER", error);
  }

  // A dNSName is an IA5String that a host name fills with letters, digits, '-', '.' (and '*'):
  // one with a control character, a space or a byte over 0x7e is no host name, whatever the
  // policy says later, and would reach logs and error messages raw. Refused here, shown escaped.
  for (const name of dnsNames) {
    if (!PRINTABLE_DNS_NAME.test(name)) {
      throw new MeshwardError(
        "E_CSR_INVALID",
        `the certificate request's subjectAltName has the DNS name ${escapeDnsName(name)}, which is ${name === "" ? "empty" : "not printable ASCII (a space, a control character or a non-ASCII byte, shown as \\xNN)"}; a DNS name holds letters, digits, '-', '.' and a leading '*.' only`,
      );
    }
  }

  let verified: boolean;
  try {
    verified = verifySignature(der, signatureAlgorithm, publicKey, der.subarray(info.start, info.end), signatureBytes);
  } catch (error) {
    if (error instanceof UnsupportedSignatureAlgorithm) throw invalid(error.message, error);
    throw invalid(error instanceof DerError ? error.message : "signature algorithm unreadable", error);
  }
  if (!verified) {
    throw new MeshwardError("E_CSR_SIGNATURE", "the CSR's signature does not verify with its own public key (damaged request, or not signed by the key it carries)");
  }
  return { der: Buffer.from(der), publicKey, subject, uris, dnsNames, requestsCa };
}
