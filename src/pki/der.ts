/**
 * Minimal DER (X.690) encoder and strict reader for the hot paths (leaf issuance, CSR and CRL
 * parsing, SAN extraction). Only what X.509 needs: definite lengths, single-byte tags.
 */

export const TAG = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  ENUMERATED: 0x0a,
  UTF8_STRING: 0x0c,
  PRINTABLE_STRING: 0x13,
  IA5_STRING: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

/** Raised by the reader; callers translate it into their own E_* code. */
export class DerError extends Error {
  override readonly name = "DerError";
}

// ---------------------------------------------------------------- encoding

// Each element is written once into a buffer of its final size: the length header goes in
// place (no header buffer of its own) and a SEQUENCE copies its items once (no concat first).
// A leaf certificate is ~30 elements, so this is a few µs of every issuance.

/** Bytes of the length octets for a content of `length` bytes. */
function headerLength(length: number): number {
  if (length < 0x80) return 1;
  if (length < 0x100) return 2;
  if (length < 0x10000) return 3;
  if (length < 0x1000000) return 4;
  throw new DerError("DER value too long");
}

/** Writes tag and length at the start of `out`; returns where the content begins. */
function writeHeader(out: Buffer, tag: number, length: number, lengthOctets: number): number {
  out[0] = tag;
  if (lengthOctets === 1) {
    out[1] = length;
  } else {
    out[1] = 0x80 | (lengthOctets - 1);
    for (let i = lengthOctets, value = length; i >= 2; i--, value = Math.floor(value / 256)) out[i] = value & 0xff;
  }
  return 1 + lengthOctets;
}

export function tlv(tag: number, content: Uint8Array): Buffer {
  const lengthOctets = headerLength(content.length);
  const out = Buffer.allocUnsafe(1 + lengthOctets + content.length);
  out.set(content, writeHeader(out, tag, content.length, lengthOctets));
  return out;
}

function constructed(tag: number, items: readonly Uint8Array[]): Buffer {
  let length = 0;
  for (const item of items) length += item.length;
  const lengthOctets = headerLength(length);
  const out = Buffer.allocUnsafe(1 + lengthOctets + length);
  let offset = writeHeader(out, tag, length, lengthOctets);
  for (const item of items) {
    out.set(item, offset);
    offset += item.length;
  }
  return out;
}

export function sequence(...items: readonly Uint8Array[]): Buffer {
  return constructed(TAG.SEQUENCE, items);
}

export function set(...items: readonly Uint8Array[]): Buffer {
  return constructed(TAG.SET, items);
}

/** Context-specific constructed tag [n] EXPLICIT. */
export function explicit(n: number, content: Uint8Array): Buffer {
  return tlv(0xa0 | n, content);
}

/** Context-specific primitive tag [n] IMPLICIT. */
export function implicit(n: number, content: Uint8Array): Buffer {
  return tlv(0x80 | n, content);
}

/** INTEGER from unsigned big-endian magnitude bytes (adds the 0x00 sign byte when needed). */
export function unsignedInteger(magnitude: Uint8Array): Buffer {
  let start = 0;
  while (start < magnitude.length - 1 && magnitude[start] === 0) start++;
  const trimmed = magnitude.subarray(start);
  const needsPad = trimmed.length === 0 || (trimmed[0]! & 0x80) !== 0;
  return tlv(TAG.INTEGER, needsPad ? Buffer.concat([Buffer.of(0), trimmed]) : trimmed);
}

export function integer(value: number | bigint): Buffer {
  let n = BigInt(value);
  if (n < 0n) throw new DerError("negative INTEGER not supported");
  const bytes: number[] = [];
  do {
    bytes.unshift(Number(n & 0xffn));
    n >>= 8n;
  } while (n > 0n);
  return unsignedInteger(Uint8Array.from(bytes));
}

export function boolean(value: boolean): Buffer {
  return Buffer.of(TAG.BOOLEAN, 1, value ? 0xff : 0x00);
}

export const NULL = Buffer.of(TAG.NULL, 0);

export function octetString(content: Uint8Array): Buffer {
  return tlv(TAG.OCTET_STRING, content);
}

export function bitString(content: Uint8Array, unusedBits = 0): Buffer {
  const body = Buffer.allocUnsafe(content.length + 1);
  body[0] = unusedBits;
  body.set(content, 1);
  return tlv(TAG.BIT_STRING, body);
}

/** Named-bit BIT STRING (DER: trailing zero bits removed). `bits` are bit numbers, 0 = MSB of the first byte. */
export function namedBits(bits: readonly number[]): Buffer {
  if (bits.length === 0) return bitString(Buffer.alloc(0));
  const highest = Math.max(...bits);
  const bytes = Buffer.alloc((highest >> 3) + 1);
  for (const bit of bits) bytes[bit >> 3]! |= 0x80 >> (bit & 7);
  const last = bytes[bytes.length - 1]!;
  let unused = 0;
  while (unused < 7 && (last & (1 << unused)) === 0) unused++;
  return bitString(bytes, unused);
}

const oidCache = new Map<string, Buffer>();

export function oid(dotted: string): Buffer {
  const cached = oidCache.get(dotted);
  if (cached !== undefined) return cached;
  const parts = dotted.split(".").map((p) => BigInt(p));
  if (parts.length < 2) throw new DerError(`bad OID ${dotted}`);
  const arcs = [parts[0]! * 40n + parts[1]!, ...parts.slice(2)];
  const bytes: number[] = [];
  for (const arc of arcs) {
    const chunk: number[] = [];
    let n = arc;
    do {
      chunk.unshift(Number(n & 0x7fn));
      n >>= 7n;
    } while (n > 0n);
    for (let i = 0; i < chunk.length - 1; i++) chunk[i]! |= 0x80;
    bytes.push(...chunk);
  }
  const encoded = tlv(TAG.OID, Uint8Array.from(bytes));
  oidCache.set(dotted, encoded);
  return encoded;
}

export function utf8String(text: string): Buffer {
  return tlv(TAG.UTF8_STRING, Buffer.from(text, "utf8"));
}

export function ia5String(text: string): Buffer {
  // eslint-disable-next-line no-control-regex
  if (!/^[\x00-\x7f]*$/.test(text)) throw new DerError("IA5String holds ASCII only");
  return tlv(TAG.IA5_STRING, Buffer.from(text, "latin1"));
}

function two(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}

/** RFC 5280 Time: UTCTime through 2049, GeneralizedTime from 2050; whole seconds, Zulu. */
export function time(date: Date): Buffer {
  const ms = date.getTime();
  if (!Number.isFinite(ms)) throw new DerError("invalid date");
  const y = date.getUTCFullYear();
  if (y >= 1950 && y < 2050) {
    // YYMMDDHHMMSSZ written digit by digit: what every certificate's validity holds.
    const out = Buffer.allocUnsafe(15);
    out[0] = TAG.UTC_TIME;
    out[1] = 13;
    const fields = [y % 100, date.getUTCMonth() + 1, date.getUTCDate(), date.getUTCHours(), date.getUTCMinutes(), date.getUTCSeconds()];
    for (let i = 0; i < 6; i++) {
      out[2 + 2 * i] = 0x30 + Math.floor(fields[i]! / 10);
      out[3 + 2 * i] = 0x30 + (fields[i]! % 10);
    }
    out[14] = 0x5a; // Z
    return out;
  }
  const rest = `${two(date.getUTCMonth() + 1)}${two(date.getUTCDate())}${two(date.getUTCHours())}${two(date.getUTCMinutes())}${two(date.getUTCSeconds())}Z`;
  if (y < 0 || y > 9999) throw new DerError("year out of range for X.509");
  return tlv(TAG.GENERALIZED_TIME, Buffer.from(`${String(y).padStart(4, "0")}${rest}`, "latin1"));
}

// ---------------------------------------------------------------- reading

/** One TLV inside `buf`: tag, where its content starts and where the whole element ends. */
export interface Tlv {
  readonly tag: number;
  readonly start: number;
  readonly contentStart: number;
  readonly end: number;
}

export function readTlv(buf: Uint8Array, offset: number, limit = buf.length): Tlv {
  if (offset + 2 > limit) throw new DerError("truncated DER");
  const tag = buf[offset]!;
  if ((tag & 0x1f) === 0x1f) throw new DerError("multi-byte tags are not supported");
  let pos = offset + 1;
  const first = buf[pos++]!;
  let length: number;
  if (first < 0x80) {
    length = first;
  } else {
    const count = first & 0x7f;
    if (count === 0) throw new DerError("indefinite length is not DER");
    if (count > 3) throw new DerError("DER length too large");
    if (pos + count > limit) throw new DerError("truncated DER length");
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + buf[pos++]!;
    if (length < 0x80 || (count > 1 && buf[pos - count] === 0)) throw new DerError("non-minimal DER length");
  }
  const end = pos + length;
  if (end > limit) throw new DerError("truncated DER value");
  return { tag, start: offset, contentStart: pos, end };
}

/** The element that fills `buf` exactly (trailing bytes are an error). */
export function readWhole(buf: Uint8Array, expectedTag?: number): Tlv {
  const el = readTlv(buf, 0);
  if (el.end !== buf.length) throw new DerError("trailing bytes after DER value");
  if (expectedTag !== undefined && el.tag !== expectedTag) throw new DerError(`expected tag 0x${expectedTag.toString(16)}, found 0x${el.tag.toString(16)}`);
  return el;
}

/** Children of a constructed element. */
export function children(buf: Uint8Array, parent: Tlv): Tlv[] {
  const out: Tlv[] = [];
  let pos = parent.contentStart;
  while (pos < parent.end) {
    const el = readTlv(buf, pos, parent.end);
    out.push(el);
    pos = el.end;
  }
  return out;
}

export function expectTag(el: Tlv | undefined, tag: number, what: string): Tlv {
  if (el === undefined) throw new DerError(`${what} is missing`);
  if (el.tag !== tag) throw new DerError(`${what}: expected tag 0x${tag.toString(16)}, found 0x${el.tag.toString(16)}`);
  return el;
}

export function content(buf: Uint8Array, el: Tlv): Buffer {
  return Buffer.from(buf.buffer, buf.byteOffset + el.contentStart, el.end - el.contentStart);
}

export function whole(buf: Uint8Array, el: Tlv): Buffer {
  return Buffer.from(buf.buffer, buf.byteOffset + el.start, el.end - el.start);
}

/**
 * Longest OID content read, in bytes. RFC 5280 sets no bound, but the OIDs meshward reads
 * (algorithms, curves, extension ids, name attribute types, SPIFFE and X.509 ones) are under
 * 16 bytes and OIDs met in practice under 40 (a 2.25.<UUID> one is 20). Anything longer is
 * refused before any arc is decoded: the input is the attacker's (a CSR, a client certificate),
 * and the work per byte must stay constant.
 */
export const MAX_OID_BYTES = 128;

/** OIDs up to this many content bytes are remembered once decoded, at most CACHED_OIDS of them (~60 KB all told). */
const CACHED_OID_BYTES = 32;
const CACHED_OIDS = 512;
const decodedOids = new Map<string, string>();

/** How many decoded OIDs are remembered (for tests: attacker OIDs must not fill memory). */
export function decodedOidCacheSize(): number {
  return decodedOids.size;
}

/** Above this an arc no longer fits in a double after one more 7-bit step (2^53 / 2^7). */
const NUMBER_ARC_LIMIT = 2 ** 46;

export function decodeOid(bytes: Uint8Array): string {
  if (bytes.length === 0) throw new DerError("empty OID");
  if (bytes.length > MAX_OID_BYTES) throw new DerError(`OID too long (${bytes.length} bytes; at most ${MAX_OID_BYTES} are read)`);
  const cacheable = bytes.length <= CACHED_OID_BYTES;
  const key = cacheable ? Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("latin1") : "";
  if (cacheable) {
    const cached = decodedOids.get(key);
    if (cached !== undefined) return cached;
  }
  // Arcs as plain numbers; one that outgrows 2^53 (a UUID arc, 2.25.<128 bits>) continues as a
  // BigInt, bounded by MAX_OID_BYTES.
  const arcs: (number | bigint)[] = [];
  let value = 0;
  let big: bigint | undefined;
  let inArc = false;
  for (const byte of bytes) {
    if (!inArc && byte === 0x80) throw new DerError("non-minimal OID arc");
    if (big === undefined && value >= NUMBER_ARC_LIMIT) big = BigInt(value);
    if (big === undefined) value = value * 128 + (byte & 0x7f);
    else big = (big << 7n) | BigInt(byte & 0x7f);
    inArc = (byte & 0x80) !== 0;
    if (!inArc) {
      arcs.push(big ?? value);
      value = 0;
      big = undefined;
    }
  }
  if (inArc) throw new DerError("truncated OID");
  const first = arcs[0]!;
  const head = typeof first === "bigint" ? [2, first - 80n] : first < 80 ? [Math.floor(first / 40), first % 40] : [2, first - 80];
  const dotted = [...head, ...arcs.slice(1)].join(".");
  if (cacheable && decodedOids.size < CACHED_OIDS) decodedOids.set(key, dotted);
  return dotted;
}

export function readOid(buf: Uint8Array, el: Tlv | undefined, what: string): string {
  return decodeOid(content(buf, expectTag(el, TAG.OID, what)));
}

/** Non-negative INTEGER magnitude (leading sign byte removed). Negative values are an error. */
export function readUnsignedInteger(buf: Uint8Array, el: Tlv | undefined, what: string): Buffer {
  const bytes = content(buf, expectTag(el, TAG.INTEGER, what));
  if (bytes.length === 0) throw new DerError(`${what}: empty INTEGER`);
  if ((bytes[0]! & 0x80) !== 0) throw new DerError(`${what}: negative INTEGER`);
  return bytes.length > 1 && bytes[0] === 0 ? bytes.subarray(1) : bytes;
}

export function readBigInt(buf: Uint8Array, el: Tlv | undefined, what: string): bigint {
  const bytes = readUnsignedInteger(buf, el, what);
  return bytes.length === 0 ? 0n : BigInt(`0x${bytes.toString("hex")}`);
}

export function readBoolean(buf: Uint8Array, el: Tlv | undefined, what: string): boolean {
  const bytes = content(buf, expectTag(el, TAG.BOOLEAN, what));
  if (bytes.length !== 1) throw new DerError(`${what}: bad BOOLEAN`);
  return bytes[0] !== 0;
}

/** BIT STRING content without the unused-bits byte. */
export function readBitString(buf: Uint8Array, el: Tlv | undefined, what: string): { bytes: Buffer; unusedBits: number } {
  const bytes = content(buf, expectTag(el, TAG.BIT_STRING, what));
  if (bytes.length === 0 || bytes[0]! > 7) throw new DerError(`${what}: bad BIT STRING`);
  return { bytes: bytes.subarray(1), unusedBits: bytes[0]! };
}

const TIME_RE = /^(\d{2}|\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/;

export function readTime(buf: Uint8Array, el: Tlv | undefined, what: string): Date {
  if (el === undefined || (el.tag !== TAG.UTC_TIME && el.tag !== TAG.GENERALIZED_TIME)) throw new DerError(`${what}: expected a Time`);
  const text = content(buf, el).toString("latin1");
  const m = TIME_RE.exec(text);
  if (m === null || (el.tag === TAG.UTC_TIME) !== (m[1]!.length === 2)) throw new DerError(`${what}: bad time ${JSON.stringify(text)}`);
  let year = Number(m[1]);
  if (el.tag === TAG.UTC_TIME) year += year < 50 ? 2000 : 1900;
  const date = new Date(Date.UTC(year, Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6])));
  if (Number.isNaN(date.getTime())) throw new DerError(`${what}: bad time`);
  return date;
}

/** True when `a` and `b` hold the same bytes. */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.compare(a, b) === 0;
}
