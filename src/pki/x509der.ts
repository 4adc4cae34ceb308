/**
 * Reads the parts of X.509 structures that node:crypto does not expose (or exposes only as
 * display text): raw subject/issuer DER, SubjectPublicKeyInfo, extensions, SANs, basic
 * constraints and key usage. Throws DerError on malformed input.
 */
import * as nodeCrypto from "node:crypto";
import { createHash } from "node:crypto";
import { children, content, DerError, expectTag, readBigInt, readBitString, readBoolean, readOid, readTime, readTlv, readWhole, TAG, whole } from "./der.ts";
import type { Tlv } from "./der.ts";
import { OID } from "./oids.ts";

export interface RawExtension {
  readonly critical: boolean;
  /** Content of extnValue (the DER of the extension's own value). */
  readonly value: Buffer;
}

export interface CertificateParts {
  readonly tbs: Buffer;
  readonly serial: Buffer;
  readonly issuer: Buffer;
  readonly subject: Buffer;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly spki: Buffer;
  readonly extensions: ReadonlyMap<string, RawExtension>;
}

/** Extensions ::= SEQUENCE OF Extension; duplicate OIDs are an error (RFC 5280 4.2). */
export function readExtensions(buf: Uint8Array, seq: Tlv): Map<string, RawExtension> {
  expectTag(seq, TAG.SEQUENCE, "extensions");
  const out = new Map<string, RawExtension>();
  for (const ext of children(buf, seq)) {
    const fields = children(buf, expectTag(ext, TAG.SEQUENCE, "extension"));
    const id = readOid(buf, fields[0], "extension id");
    let index = 1;
    let critical = false;
    if (fields[index]?.tag === TAG.BOOLEAN) critical = readBoolean(buf, fields[index++], "critical");
    const value = content(buf, expectTag(fields[index], TAG.OCTET_STRING, "extension value"));
    if (index + 1 !== fields.length) throw new DerError("extension has extra fields");
    if (out.has(id)) throw new DerError(`extension ${id} appears twice`);
    out.set(id, { critical, value });
  }
  return out;
}

export function parseCertificateParts(der: Uint8Array): CertificateParts {
  const cert = readWhole(der, TAG.SEQUENCE);
  const [tbsEl] = children(der, cert);
  const tbsTlv = expectTag(tbsEl, TAG.SEQUENCE, "tbsCertificate");
  const fields = children(der, tbsTlv);
  let i = 0;
  if (fields[i]?.tag === 0xa0) i++;
  const serialEl = expectTag(fields[i++], TAG.INTEGER, "serial");
  expectTag(fields[i++], TAG.SEQUENCE, "signature algorithm");
  const issuer = expectTag(fields[i++], TAG.SEQUENCE, "issuer");
  const validity = children(der, expectTag(fields[i++], TAG.SEQUENCE, "validity"));
  const subject = expectTag(fields[i++], TAG.SEQUENCE, "subject");
  const spki = expectTag(fields[i++], TAG.SEQUENCE, "subjectPublicKeyInfo");
  let extensions = new Map<string, RawExtension>();
  for (; i < fields.length; i++) {
    const field = fields[i]!;
    if (field.tag === 0xa3) extensions = readExtensions(der, readTlv(der, field.contentStart, field.end));
  }
  return {
    tbs: whole(der, tbsTlv),
    serial: content(der, serialEl),
    issuer: whole(der, issuer),
    subject: whole(der, subject),
    notBefore: readTime(der, validity[0], "notBefore"),
    notAfter: readTime(der, validity[1], "notAfter"),
    spki: whole(der, spki),
    extensions,
  };
}

/** SEQ { SEQ { ecPublicKey, prime256v1 }, BIT STRING (66 bytes) }: (its 00 unused-bits byte included); then 04, X, Y. */
const P256_SPKI_PREFIX = Buffer.from("3059301306072a8648ce3d020106082a8648ce3d030107034200", "hex");
const P256_SPKI_LENGTH = 91;

/** crypto.hash (Node 20.12+, 21.7+): a one-shot digest without a Hash object, ~1 µs less per call. */
const oneShotHash = (nodeCrypto as { hash?: (algorithm: string, data: Uint8Array, encoding: "buffer") => Buffer }).hash;

function sha1(data: Uint8Array): Buffer {
  return oneShotHash !== undefined ? oneShotHash("sha1", data, "buffer") : createHash("sha1").update(data).digest();
}

/** RFC 5280 4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING value. */
export function keyIdentifier(spkiDer: Uint8Array): Buffer {
  if (spkiDer.length === P256_SPKI_LENGTH && Buffer.compare(spkiDer.subarray(0, P256_SPKI_PREFIX.length), P256_SPKI_PREFIX) === 0) {
    return sha1(spkiDer.subarray(P256_SPKI_PREFIX.length));
  }
  const spki = readWhole(spkiDer, TAG.SEQUENCE);
  const [, keyBits] = children(spkiDer, spki);
  return sha1(readBitString(spkiDer, keyBits, "subjectPublicKey").bytes);
}

export interface GeneralNames {
  readonly uris: string[];
  readonly dnsNames: string[];
}

/** SubjectAltName value: URIs ([6]) and DNS names ([2]); other name types are skipped. */
export function readGeneralNames(value: Uint8Array): GeneralNames {
  const seq = readWhole(value, TAG.SEQUENCE);
  const uris: string[] = [];
  const dnsNames: string[] = [];
  for (const name of children(value, seq)) {
    if (name.tag === 0x86) uris.push(content(value, name).toString("latin1"));
    else if (name.tag === 0x82) dnsNames.push(content(value, name).toString("latin1"));
  }
  return { uris, dnsNames };
}

export interface BasicConstraints {
  readonly ca: boolean;
  readonly pathLength: number | undefined;
}

export function readBasicConstraints(value: Uint8Array): BasicConstraints {
  const seq = readWhole(value, TAG.SEQUENCE);
  const fields = children(value, seq);
  let i = 0;
  let ca = false;
  if (fields[i]?.tag === TAG.BOOLEAN) ca = readBoolean(value, fields[i++], "cA");
  const pathLength = fields[i] === undefined ? undefined : Number(readBigInt(value, fields[i], "pathLenConstraint"));
  return { ca, pathLength };
}

export const KEY_USAGE_BITS = {
  digitalSignature: 0,
  nonRepudiation: 1,
  keyEncipherment: 2,
  dataEncipherment: 3,
  keyAgreement: 4,
  keyCertSign: 5,
  cRLSign: 6,
} as const;

/** Set bit numbers of a keyUsage value. */
export function readKeyUsage(value: Uint8Array): Set<number> {
  const { bytes } = readBitString(value, readWhole(value, TAG.BIT_STRING), "keyUsage");
  const bits = new Set<number>();
  for (let i = 0; i < bytes.length * 8; i++) if ((bytes[i >> 3]! & (0x80 >> (i & 7))) !== 0) bits.add(i);
  return bits;
}

/** keyIdentifier [0] of an AuthorityKeyIdentifier value, when present. */
export function readAuthorityKeyId(value: Uint8Array): Buffer | undefined {
  const seq = readWhole(value, TAG.SEQUENCE);
  const first = children(value, seq)[0];
  return first?.tag === 0x80 ? content(value, first) : undefined;
}

export function readSubjectKeyId(value: Uint8Array): Buffer {
  return content(value, readWhole(value, TAG.OCTET_STRING));
}


/**
 * Why a certificate with these extensions must not be used as an end-entity (a client or
 * server SVID, a renewal proof): basicConstraints CA:TRUE, or keyUsage keyCertSign / cRLSign
 * (X509-SVID spec §4.1–4.3). undefined when it is a leaf. Malformed values count as not a leaf.
 */
export function notLeafReason(extensions: ReadonlyMap<string, RawExtension>): string | undefined {
  const basic = extensions.get(OID.basicConstraints);
  const usage = extensions.get(OID.keyUsage);
  try {
    if (basic !== undefined && readBasicConstraints(basic.value).ca) return "it is a CA certificate (basicConstraints CA:TRUE)";
    if (usage !== undefined) {
      const bits = readKeyUsage(usage.value);
      if (bits.has(KEY_USAGE_BITS.keyCertSign)) return "its key usage allows signing certificates (keyCertSign)";
      if (bits.has(KEY_USAGE_BITS.cRLSign)) return "its key usage allows signing CRLs (cRLSign)";
    }
  } catch {
    return "its basicConstraints or keyUsage extension is malformed";
  }
  return undefined;
}
