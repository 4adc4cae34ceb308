/**
 * The protobuf wire format, as much as the CA API needs: varints, length-delimited fields and
 * skipping what we do not know. Written out instead of loading protobufjs because every
 * workload (sidecar, SDK) talks to the CA, and a long-running sidecar should not carry a
 * general protobuf runtime. Checked field by field against protobufjs with proto/sentry.proto
 * in test/protocol.
 */

export class ProtobufError extends Error {
  override readonly name = "ProtobufError";
}

const WIRE_VARINT = 0;
const WIRE_FIXED64 = 1;
const WIRE_LENGTH_DELIMITED = 2;
const WIRE_FIXED32 = 5;

export class ProtobufWriter {
  readonly #chunks: Buffer[] = [];

  /** A varint field; proto3 leaves out zero values. Accepts integers in ±2^53 (int64 as two's complement). */
  varint(field: number, value: number): this {
    if (value === 0) return this;
    this.#tag(field, WIRE_VARINT);
    this.#chunks.push(encodeVarint(value));
    return this;
  }

  bytes(field: number, value: Uint8Array): this {
    if (value.length === 0) return this;
    this.#tag(field, WIRE_LENGTH_DELIMITED);
    this.#chunks.push(encodeVarint(value.length), Buffer.from(value.buffer, value.byteOffset, value.byteLength));
    return this;
  }

  string(field: number, value: string): this {
    return this.bytes(field, Buffer.from(value, "utf8"));
  }

  /** A repeated bytes field: every element is written, empty ones too. */
  repeatedBytes(field: number, values: readonly Uint8Array[]): this {
    for (const value of values) {
      this.#tag(field, WIRE_LENGTH_DELIMITED);
      this.#chunks.push(encodeVarint(value.length), Buffer.from(value.buffer, value.byteOffset, value.byteLength));
    }
    return this;
  }

  /** An embedded message field (written even when empty: presence matters for messages). */
  message(field: number, body: Uint8Array): this {
    this.#tag(field, WIRE_LENGTH_DELIMITED);
    this.#chunks.push(encodeVarint(body.length), Buffer.from(body.buffer, body.byteOffset, body.byteLength));
    return this;
  }

  finish(): Buffer {
    return Buffer.concat(this.#chunks);
  }

  #tag(field: number, wireType: number): void {
    this.#chunks.push(encodeVarint(field * 8 + wireType));
  }
}

export type FieldValue = { readonly wireType: 0; readonly value: number } | { readonly wireType: 2; readonly value: Buffer };

/**
 * Reads every field of a message in order, calling `onField` for varint and length-delimited
 * fields; fixed32/fixed64 fields are skipped. Throws ProtobufError on truncated or malformed input.
 */
export function readFields(bytes: Uint8Array, onField: (field: number, value: FieldValue) => void): void {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let offset = 0;
  while (offset < buf.length) {
    const [key, afterKey] = decodeVarint(buf, offset);
    offset = afterKey;
    const field = Math.floor(key / 8);
    const wireType = key % 8;
    if (field === 0) throw new ProtobufError("field number 0");
    switch (wireType) {
      case WIRE_VARINT: {
        const [value, next] = decodeVarint(buf, offset);
        offset = next;
        onField(field, { wireType: 0, value });
        break;
      }
      case WIRE_LENGTH_DELIMITED: {
        const [length, start] = decodeVarint(buf, offset);
        if (length > buf.length - start) throw new ProtobufError(`field ${field} runs past the end of the message`);
        offset = start + length;
        onField(field, { wireType: 2, value: buf.subarray(start, offset) });
        break;
      }
      case WIRE_FIXED64:
        offset += 8;
        break;
      case WIRE_FIXED32:
        offset += 4;
        break;
      default:
        throw new ProtobufError(`unsupported wire type ${wireType} for field ${field}`);
    }
    if (offset > buf.length) throw new ProtobufError(`field ${field} runs past the end of the message`);
  }
}

/** Encodes a non-negative integer, or a negative one as 64-bit two's complement (10 bytes). */
export function encodeVarint(value: number): Buffer {
  if (!Number.isSafeInteger(value)) throw new ProtobufError(`varint ${value} is not a safe integer`);
  const out: number[] = [];
  if (value < 0) {
    let n = (1n << 64n) + BigInt(value);
    while (n >= 0x80n) {
      out.push(Number(n & 0x7fn) | 0x80);
      n >>= 7n;
    }
    out.push(Number(n));
    return Buffer.from(out);
  }
  let n = value;
  while (n >= 0x80) {
    out.push((n % 0x80) | 0x80);
    n = Math.floor(n / 0x80);
  }
  out.push(n);
  return Buffer.from(out);
}

/** Decodes a varint of at most 10 bytes; values above 2^53 (and negative int64s) are refused. */
export function decodeVarint(buf: Buffer, offset: number): [value: number, next: number] {
  let result = 0;
  let multiplier = 1;
  for (let i = 0; i < 10; i++) {
    const byte = buf[offset + i];
    if (byte === undefined) throw new ProtobufError("truncated varint");
    result += (byte & 0x7f) * multiplier;
    if ((byte & 0x80) === 0) {
      if (!Number.isSafeInteger(result)) throw new ProtobufError("varint out of range");
      return [result, offset + i + 1];
    }
    multiplier *= 0x80;
  }
  throw new ProtobufError("varint longer than 10 bytes");
}
