import { describe, expect, it } from "vitest";
import * as der from "../../src/pki/der.ts";
import { openssl } from "./helpers.ts";

describe("der", () => {
  it("encodes OIDs, integers, times and named bits as openssl reads them", () => {
    const value = der.sequence(
      der.oid("1.2.840.10045.4.3.2"),
      der.oid("2.999.3"),
      der.integer(0),
      der.integer(128),
      der.unsignedInteger(Buffer.from("00ff", "hex")),
      der.time(new Date("2049-12-31T23:59:59Z")),
      der.time(new Date("2050-01-01T00:00:00Z")),
      der.namedBits([0, 2]),
      der.octetString(Buffer.alloc(300, 1)),
    );
    const text = openssl(["asn1parse", "-inform", "DER"], value);
    expect(text).toContain("OBJECT            :ecdsa-with-SHA256");
    expect(text).toContain("OBJECT            :2.999.3");
    expect(text).toContain("INTEGER           :00");
    expect(text).toContain("INTEGER           :80");
    expect(text).toContain("INTEGER           :FF");
    expect(text).toContain("UTCTIME           :491231235959Z");
    expect(text).toContain("GENERALIZEDTIME   :20500101000000Z");
    // keyUsage digitalSignature + keyEncipherment, and keyCertSign + cRLSign (trailing zero bits dropped).
    expect(der.namedBits([0, 2])).toEqual(Buffer.from([0x03, 0x02, 0x05, 0xa0]));
    expect(der.namedBits([5, 6])).toEqual(Buffer.from([0x03, 0x02, 0x01, 0x06]));
  });

  it("reads back what it writes", () => {
    for (const dotted of ["1.2.840.10045.4.3.2", "2.5.29.17", "0.9.2342.19200300.100.1.25", "2.999.3"]) {
      const encoded = der.oid(dotted);
      expect(der.decodeOid(der.content(encoded, der.readWhole(encoded, der.TAG.OID)))).toBe(dotted);
    }
    const t = der.time(new Date("2031-05-06T07:08:09Z"));
    expect(der.readTime(t, der.readWhole(t), "t").toISOString()).toBe("2031-05-06T07:08:09.000Z");
    const n = der.integer(0x1234567890n);
    expect(der.readBigInt(n, der.readWhole(n), "n")).toBe(0x1234567890n);
  });

  it("writes the length header of every size class, in one buffer for a SEQUENCE of parts", () => {
    // Each boundary of the short and long forms (X.690 8.1.3), as a primitive and as a SEQUENCE
    // whose content is split into two parts, read back by the reader and by openssl.
    const headers: [number, string][] = [
      [0, "0400"],
      [127, "047f"],
      [128, "048180"],
      [255, "0481ff"],
      [256, "04820100"],
      [65_535, "0482ffff"],
      [65_536, "0483010000"],
    ];
    for (const [size, header] of headers) {
      const content = Buffer.alloc(size, 0x5a);
      const octets = der.octetString(content);
      expect(octets.subarray(0, header.length / 2).toString("hex")).toBe(header);
      expect(der.content(octets, der.readWhole(octets, der.TAG.OCTET_STRING))).toEqual(content);
      const half = Math.floor(size / 2);
      const seq = der.sequence(content.subarray(0, half), content.subarray(half));
      expect(seq[0]).toBe(0x30);
      expect(seq.subarray(1, header.length / 2).toString("hex")).toBe(header.slice(2));
      expect(der.content(seq, der.readWhole(seq, der.TAG.SEQUENCE))).toEqual(content);
    }
    const nested = der.sequence(der.octetString(Buffer.alloc(300, 1)), der.set(der.integer(1), der.boolean(true)));
    const lines = openssl(["asn1parse", "-inform", "DER"], nested).split("\n").map((line) => line.slice(0, 60));
    expect(lines[0]).toMatch(/d=0\s+hl=4 l=\s*312 cons: SEQUENCE/);
    expect(lines[1]).toMatch(/d=1\s+hl=4 l=\s*300 prim: OCTET STRING/);
    expect(lines[2]).toMatch(/d=1\s+hl=2 l=\s*6 cons: SET/);
  });

  it("writes UTCTime from 1950 to 2049 and GeneralizedTime outside, digit by digit", () => {
    const cases: [string, string][] = [
      ["1950-01-01T00:00:00Z", "170d3530303130313030303030305a"],
      ["2031-05-06T07:08:09Z", "170d3331303530363037303830395a"],
      ["2049-12-31T23:59:59Z", "170d3439313233313233353935395a"],
      ["1949-12-31T23:59:59Z", "180f31393439313233313233353935395a"],
    ];
    for (const [iso, hex] of cases) {
      expect(der.time(new Date(iso)).toString("hex")).toBe(hex);
      const t = der.time(new Date(iso));
      expect(der.readTime(t, der.readWhole(t), "t").toISOString()).toBe(new Date(iso).toISOString());
    }
    expect(() => der.time(new Date(Number.NaN))).toThrow(/invalid date/);
  });

  it("refuses non-DER and truncated input", () => {
    const bad: [string, number[]][] = [
      ["indefinite length", [0x30, 0x80, 0x00, 0x00]],
      ["non-minimal length", [0x04, 0x81, 0x01, 0x00]],
      ["truncated value", [0x04, 0x05, 0x00]],
      ["trailing bytes", [0x05, 0x00, 0x00]],
      ["multi-byte tag", [0x1f, 0x81, 0x00]],
    ];
    for (const [, bytes] of bad) expect(() => der.readWhole(Uint8Array.from(bytes))).toThrow(der.DerError);
    expect(() => der.decodeOid(Uint8Array.from([0x2a, 0x86]))).toThrow(der.DerError);
    const badTime = der.tlv(der.TAG.UTC_TIME, Buffer.from("4912312359"));
    expect(() => der.readTime(badTime, der.readWhole(badTime), "t")).toThrow(der.DerError);
  });

  // Review ca-api HIGH-1: arcs were BigInts shifted once per byte and printed in decimal, so a
  // 256 KB OID in a CSR or client certificate took 25 s; and every distinct OID was cached.
  it("refuses an OID longer than MAX_OID_BYTES before decoding any arc", () => {
    const huge = Buffer.concat([Buffer.from([0x2a]), Buffer.alloc(40_000, 0xff), Buffer.from([0x7f])]);
    expect(() => der.decodeOid(huge)).toThrow(/OID too long \(40002 bytes; at most 128 are read\)/);
    const element = der.tlv(der.TAG.OID, huge);
    expect(() => der.readOid(element, der.readWhole(element), "extension id")).toThrow(der.DerError);
    // the longest accepted still decodes
    const longest = Buffer.concat([Buffer.from([0x2a]), Buffer.alloc(der.MAX_OID_BYTES - 1, 0x01)]);
    expect(der.decodeOid(longest)).toBe(`1.2${".1".repeat(der.MAX_OID_BYTES - 1)}`);
  });

  it("decodes arcs past 2^53 exactly (2.25.<UUID>), with plain numbers below", () => {
    for (const dotted of ["2.25.329800735698586629295641978511506172918", "1.2.9007199254740991", "1.2.9007199254740992.5", "1.2.18446744073709551616", "2.999999999999999999", "0.39", "1.0", "2.40"]) {
      const encoded = der.oid(dotted);
      expect(der.decodeOid(der.content(encoded, der.readWhole(encoded)))).toBe(dotted);
    }
  });

  it("remembers only short OIDs, so distinct attacker OIDs cannot fill memory", () => {
    const before = der.decodedOidCacheSize();
    for (let i = 0; i < 600; i++) {
      const bytes = Buffer.concat([Buffer.from([0x2a]), Buffer.alloc(60, 0x01), Buffer.from([((i >> 7) + 1) | 0x80, i & 0x7f])]);
      der.decodeOid(bytes);
    }
    expect(der.decodedOidCacheSize()).toBe(before);
    der.decodeOid(Uint8Array.from([0x2a, 0x03, 0x04, 0x05]));
    expect(der.decodedOidCacheSize()).toBeLessThanOrEqual(before + 1);
  });
});
