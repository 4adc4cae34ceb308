import type { X509Certificate } from "node:crypto";
import { MeshwardError, isMeshwardError } from "../errors.ts";
import { normalizeSerial } from "./certificate.ts";
import type { Signer } from "./certificate.ts";
import * as der from "./der.ts";
import { children, content, DerError, expectTag, readBigInt, readBitString, readTime, readTlv, readUnsignedInteger, readWhole, TAG, whole } from "./der.ts";
import type { Tlv } from "./der.ts";
import { certificateParts } from "./inspect.ts";
import { formatName } from "./names.ts";
import { OID } from "./oids.ts";
import { pemBlocks } from "./pem.ts";
import { signerContext } from "./signer.ts";
import { UnsupportedSignatureAlgorithm, verifySignature } from "./signature.ts";
import { readExtensions } from "./x509der.ts";

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

/** CRLReason codes (RFC 5280 5.3.1). */
const REASON_CODES: Record<RevocationReason, number> = {
  unspecified: 0,
  keyCompromise: 1,
  cACompromise: 2,
  affiliationChanged: 3,
  superseded: 4,
  cessationOfOperation: 5,
};
const REASON_NAMES = new Map<number, RevocationReason>(Object.entries(REASON_CODES).map(([name, code]) => [code, name as RevocationReason]));

function serialBytes(serial: string): Buffer {
  const hex = normalizeSerial(serial);
  return Buffer.from(hex.length % 2 === 1 ? `0${hex}` : hex, "hex");
}

function revokedEntry(entry: CrlEntry): Buffer {
  const fields = [der.unsignedInteger(serialBytes(entry.serial)), der.time(entry.revokedAt)];
  // RFC 5280 5.3.1: leave the reason out rather than writing "unspecified".
  if (entry.reason !== undefined && entry.reason !== "unspecified") {
    const code = REASON_CODES[entry.reason];
    if (code === undefined) throw new MeshwardError("E_CRL_REASON", `unknown revocation reason ${JSON.stringify(entry.reason)}`);
    fields.push(der.sequence(der.sequence(der.oid(OID.cRLReason), der.octetString(der.tlv(TAG.ENUMERATED, Buffer.of(code))))));
  }
  return der.sequence(...fields);
}

/** X.509 v2 CRL (DER) with CRL number and AKI extensions. */
export async function createCrl(template: CrlTemplate): Promise<Buffer> {
  if (template.crlNumber < 0n || template.crlNumber >= 1n << 159n) {
    throw new MeshwardError("E_CRL_NUMBER", "the CRL number must be a non-negative integer of at most 20 octets (RFC 5280 5.2.3)");
  }
  if (template.nextUpdate.getTime() <= template.thisUpdate.getTime()) {
    throw new MeshwardError("E_CRL_VALIDITY", "nextUpdate must be later than thisUpdate");
  }
  const context = signerContext(template.signer);
  const fields = [
    der.integer(1),
    context.algorithm.algorithmIdentifier,
    context.subject,
    der.time(template.thisUpdate),
    der.time(template.nextUpdate),
  ];
  if (template.entries.length > 0) fields.push(der.sequence(...template.entries.map(revokedEntry)));
  fields.push(
    der.explicit(
      0,
      der.sequence(context.authorityKeyIdExtension, der.sequence(der.oid(OID.cRLNumber), der.octetString(der.integer(template.crlNumber)))),
    ),
  );
  const tbs = der.sequence(...fields);
  return der.sequence(tbs, context.algorithm.algorithmIdentifier, der.bitString(context.algorithm.sign(tbs)));
}

function crlDer(input: Uint8Array | string): Buffer {
  if (typeof input !== "string") {
    const bytes = Buffer.from(input.buffer, input.byteOffset, input.byteLength);
    if (bytes[0] === TAG.SEQUENCE) return bytes;
    input = bytes.toString("latin1");
  }
  let blocks;
  try {
    blocks = pemBlocks(input);
  } catch (error) {
    throw invalid(isMeshwardError(error) ? error.message : "unreadable PEM");
  }
  const block = blocks.find((candidate) => candidate.label === "X509 CRL");
  if (block === undefined) throw invalid(`no X509 CRL PEM block (found ${blocks.map((b) => b.label).join(", ")})`);
  return block.der;
}

function invalid(reason: string, cause?: unknown): MeshwardError {
  return new MeshwardError("E_CRL_INVALID", `not a valid X.509 CRL: ${reason}`, cause === undefined ? {} : { cause });
}

function readEntry(buf: Buffer, el: Tlv): CrlEntry {
  const [serial, date, extensions] = children(buf, expectTag(el, TAG.SEQUENCE, "revoked certificate"));
  const entry: { serial: string; revokedAt: Date; reason?: RevocationReason } = {
    serial: normalizeSerial(readUnsignedInteger(buf, serial, "serial").toString("hex") || "0"),
    revokedAt: readTime(buf, date, "revocationDate"),
  };
  if (extensions !== undefined) {
    const reason = readExtensions(buf, extensions).get(OID.cRLReason);
    if (reason !== undefined) {
      const code = content(reason.value, readWhole(reason.value, TAG.ENUMERATED));
      const name = code.length === 1 ? REASON_NAMES.get(code[0]!) : undefined;
      if (name !== undefined) entry.reason = name;
    }
  }
  return entry;
}

/**
 * Parses a DER or PEM CRL; when `issuer` is given, verifies the signature with it
 * (E_CRL_SIGNATURE). Malformed input: E_CRL_INVALID.
 */
export function parseCrl(input: Uint8Array | string, issuer?: X509Certificate): ParsedCrl {
  const buf = crlDer(input);
  let parsed: ParsedCrl;
  let tbs: Tlv, algorithm: Tlv, signature: Buffer, issuerName: Buffer;
  try {
    const outer = readWhole(buf, TAG.SEQUENCE);
    const top = children(buf, outer);
    if (top.length !== 3) throw new DerError("expected tbsCertList, signatureAlgorithm, signature");
    tbs = expectTag(top[0], TAG.SEQUENCE, "tbsCertList");
    algorithm = expectTag(top[1], TAG.SEQUENCE, "signatureAlgorithm");
    const bits = readBitString(buf, top[2], "signature");
    if (bits.unusedBits !== 0) throw new DerError("signature has unused bits");
    signature = bits.bytes;
    const fields = children(buf, tbs);
    let i = 0;
    if (fields[i]?.tag === TAG.INTEGER && readBigInt(buf, fields[i++], "version") !== 1n) throw new DerError("only v2 CRLs are supported");
    const innerAlgorithm = expectTag(fields[i++], TAG.SEQUENCE, "signature");
    if (!whole(buf, innerAlgorithm).equals(whole(buf, algorithm))) throw new DerError("the inner and outer signature algorithms differ");
    const issuerEl = expectTag(fields[i++], TAG.SEQUENCE, "issuer");
    issuerName = whole(buf, issuerEl);
    const thisUpdate = readTime(buf, fields[i++], "thisUpdate");
    let nextUpdate: Date | undefined;
    if (fields[i]?.tag === TAG.UTC_TIME || fields[i]?.tag === TAG.GENERALIZED_TIME) nextUpdate = readTime(buf, fields[i++], "nextUpdate");
    const entries: CrlEntry[] = [];
    if (fields[i]?.tag === TAG.SEQUENCE) for (const el of children(buf, fields[i++]!)) entries.push(readEntry(buf, el));
    let crlNumber: bigint | undefined;
    if (fields[i]?.tag === 0xa0) {
      const field = fields[i++]!;
      const number = readExtensions(buf, readTlv(buf, field.contentStart, field.end)).get(OID.cRLNumber);
      if (number !== undefined) crlNumber = readBigInt(number.value, readWhole(number.value, TAG.INTEGER), "cRLNumber");
    }
    if (i !== fields.length) throw new DerError("unexpected fields in tbsCertList");
    parsed = {
      der: Buffer.from(buf),
      issuer: formatName(buf, issuerEl),
      thisUpdate,
      nextUpdate,
      crlNumber,
      entries,
      revokedSerials: new Set(entries.map((entry) => entry.serial)),
    };
  } catch (error) {
    if (isMeshwardError(error)) throw invalid(error.message, error);
    throw invalid(error instanceof DerError ? error.message : "unreadable DER", error);
  }

  if (issuer !== undefined) {
    if (!issuerName.equals(certificateParts(issuer).subject)) {
      throw new MeshwardError("E_CRL_SIGNATURE", `the CRL was issued by ${JSON.stringify(parsed.issuer.replace(/\n/g, ", "))}, not by the given issuer ${JSON.stringify(issuer.subject.replace(/\n/g, ", "))}`);
    }
    let ok: boolean;
    try {
      ok = verifySignature(buf, algorithm, issuer.publicKey, whole(buf, tbs), signature);
    } catch (error) {
      throw invalid(error instanceof UnsupportedSignatureAlgorithm || error instanceof DerError ? error.message : "signature algorithm unreadable", error);
    }
    if (!ok) throw new MeshwardError("E_CRL_SIGNATURE", "the CRL's signature does not verify with the issuer's public key (damaged or forged CRL)");
  }
  return parsed;
}
