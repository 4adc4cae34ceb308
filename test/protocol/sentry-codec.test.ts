import { randomBytes } from "node:crypto";
import protobuf from "protobufjs";
import { describe, expect, it } from "vitest";
import { ProtobufError, ProtobufWriter, decodeVarint, encodeVarint } from "../../src/protocol/protobuf-wire.ts";
import { decodeSignRequest, decodeSignResponse, encodeSignRequest, encodeSignResponse, TokenValidator, type SignCertificateRequestMessage } from "../../src/protocol/sentry.ts";
import { packageFile } from "../../src/util/package-files.ts";

// The hand-written codec checked against protobufjs reading proto/sentry.proto: what one
// writes, the other reads, field for field, in both directions.
const root = protobuf.loadSync(packageFile("proto/sentry.proto"));
const RequestType = root.lookupType("dapr.proto.sentry.v1.SignCertificateRequest");
const ResponseType = root.lookupType("dapr.proto.sentry.v1.SignCertificateResponse");

const text = (n: number) => randomBytes(n).toString("base64url") + Array.from("ü€😀").slice(0, n % 4).join("");
/** Comparable form: bytes as hex. */
const plain = (m: object) => JSON.parse(JSON.stringify(m, (_k, v: unknown) => (v instanceof Uint8Array || (v as { type?: string })?.type === "Buffer" ? Buffer.from(v as Uint8Array).toString("hex") : v))) as unknown;

function randomRequest(i: number): SignCertificateRequestMessage {
  const validators = Object.values(TokenValidator);
  return {
    id: i % 5 === 0 ? "" : text(1 + (i % 40)),
    token: text(i * 7),
    trustDomain: i % 3 === 0 ? "" : "cluster.local",
    namespace: text(i % 20),
    certificateSigningRequest: randomBytes(i * 13),
    tokenValidator: validators[i % validators.length] as number,
    jwtAudiences: Array.from({ length: i % 4 }, (_, j) => (j === 1 ? "" : text(3 + j))),
  };
}

describe("SignCertificateRequest", () => {
  it.each(Array.from({ length: 25 }, (_, i) => i))("round-trips with protobufjs both ways (%i)", (i) => {
    const message = randomRequest(i);
    const ours = encodeSignRequest(message);
    const theirs = RequestType.toObject(RequestType.decode(ours), { defaults: true, enums: Number, bytes: Buffer as unknown as typeof String });
    expect(plain(theirs)).toEqual(plain(message));
    const back = decodeSignRequest(RequestType.encode(RequestType.fromObject(message)).finish());
    expect(plain(back)).toEqual(plain(message));
    // Same bytes, too: both write fields in number order and leave out defaults.
    expect(Buffer.from(ours).equals(Buffer.from(RequestType.encode(RequestType.fromObject(message)).finish()))).toBe(true);
  });

  it("skips unknown fields of every wire type, and keeps the last value of a repeated scalar", () => {
    const known = encodeSignRequest({ id: "a", token: "t", trustDomain: "", namespace: "ns", certificateSigningRequest: Buffer.from("csr"), tokenValidator: 1001 });
    const unknown = Buffer.concat([
      Buffer.from([0x78, 0x2a]), // field 15 varint 42
      Buffer.from([0x81, 0x01, ...Buffer.alloc(8)]), // field 16 fixed64
      Buffer.from([0x8d, 0x01, 1, 2, 3, 4]), // field 17 fixed32
      new ProtobufWriter().string(18, "future field").finish(),
      new ProtobufWriter().string(1, "b").finish(), // id again: last wins
    ]);
    expect(decodeSignRequest(Buffer.concat([known, unknown]))).toMatchObject({ id: "b", token: "t", namespace: "ns", tokenValidator: 1001 });
    expect(RequestType.toObject(RequestType.decode(Buffer.concat([known, unknown])))).toMatchObject({ id: "b" });
  });

  it.each([
    ["a truncated varint", Buffer.from([0x30, 0xff])],
    ["a length past the end", Buffer.from([0x0a, 0x05, 0x61])],
    ["a string field sent as a varint", Buffer.from([0x08, 0x01])],
    ["a varint field sent as bytes", Buffer.from([0x32, 0x01, 0x00])],
    ["wire type 3 (groups)", Buffer.from([0x0b])],
    ["field number 0", Buffer.from([0x02, 0x00])],
    ["a varint above 2^53", Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])],
    ["an 11-byte varint", Buffer.from([0x30, ...Array(10).fill(0x80), 0x01])],
    ["a fixed64 past the end", Buffer.from([0x79, 1, 2])],
  ])("refuses %s with a ProtobufError", (_name, bytes) => {
    expect(() => decodeSignRequest(bytes)).toThrow(ProtobufError);
  });
});

describe("SignCertificateResponse", () => {
  it.each([0, 1, 2, 5])("round-trips with protobufjs both ways (%i chain certificates)", (n) => {
    const message = {
      workloadCertificate: randomBytes(700),
      trustChainCertificates: Array.from({ length: n }, (_, i) => randomBytes(300 + i)),
      validUntil: { seconds: 1_900_000_000 + n, nanos: n * 1000 },
      // Fields 4 and 5 (JWT-SVIDs) on every other case, an empty JWT string included.
      ...(n % 2 === 1 ? { jwt: text(n * 50), perAudienceJwts: Object.fromEntries(Array.from({ length: n }, (_, i) => [`aud-${i}`, i === 0 ? "" : text(40 + i)])) } : {}),
    };
    const decoded = ResponseType.toObject(ResponseType.decode(encodeSignResponse(message)), { longs: Number, bytes: Buffer as unknown as typeof String }) as Record<string, unknown>;
    const theirs = {
      workloadCertificate: decoded.workloadCertificate,
      trustChainCertificates: decoded.trustChainCertificates ?? [],
      validUntil: decoded.validUntil,
      ...(decoded.jwt !== undefined ? { jwt: (decoded.jwt as { value?: string }).value ?? "" } : {}),
      ...(decoded.perAudienceJwts !== undefined ? { perAudienceJwts: Object.fromEntries(Object.entries(decoded.perAudienceJwts as Record<string, { value?: string }>).map(([k, v]) => [k, v.value ?? ""])) } : {}),
    };
    expect(plain({ ...theirs, validUntil: { nanos: 0, ...(theirs.validUntil as object) } })).toEqual(plain(message));
    const wire = {
      ...message,
      ...(message.jwt !== undefined ? { jwt: { value: message.jwt }, perAudienceJwts: Object.fromEntries(Object.entries(message.perAudienceJwts ?? {}).map(([k, v]) => [k, { value: v }])) } : {}),
    };
    const back = decodeSignResponse(ResponseType.encode(ResponseType.fromObject(wire)).finish());
    expect(plain(back)).toEqual(plain(message));
  });
});

describe("varints", () => {
  it.each([0, 1, 127, 128, 300, 2 ** 31, 2 ** 32 + 5, Number.MAX_SAFE_INTEGER, -1, -1001])("%d matches protobufjs's encoding and reads back", (n) => {
    const theirs = protobuf.Writer.create().int64(n).finish();
    expect(encodeVarint(n).equals(Buffer.from(theirs))).toBe(true);
    if (n >= 0) expect(decodeVarint(encodeVarint(n), 0)).toEqual([n, theirs.length]);
    else expect(() => decodeVarint(encodeVarint(n), 0)).toThrow(ProtobufError); // negative int64s are not used by the CA API
  });
});
