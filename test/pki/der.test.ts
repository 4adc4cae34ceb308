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
});
