import { createPublicKey, generateKeyPairSync } from "node:crypto";
import { describe, expect, it } from "vitest";
import { isMeshwardError } from "../../src/errors.ts";
import {
  assertAcceptableKey,
  certificatesFromPem,
  decodePrivateKey,
  describePublicKey,
  encodePrivateKey,
  generateKeyPair,
  isEncryptedPrivateKeyPem,
  keysMatch,
  pemBlocks,
  toPem,
} from "../../src/pki/index.ts";
import { derImportIsFast, importSpki, spkiOf } from "../../src/pki/spki.ts";
import { openssl } from "./helpers.ts";

function caught(fn: () => unknown): { code: string; message: string } {
  try {
    fn();
  } catch (error) {
    if (isMeshwardError(error)) return { code: error.code, message: error.message };
    throw error;
  }
  throw new Error("nothing was thrown");
}

describe("keys", () => {
  it("generates P-256 by default and the other algorithms on request", () => {
    expect(describePublicKey(generateKeyPair().publicKey)).toEqual({ type: "ec", curve: "P-256", label: "ECDSA P-256" });
    expect(describePublicKey(generateKeyPair("ec-p384").publicKey).label).toBe("ECDSA P-384");
    expect(describePublicKey(generateKeyPair("rsa-2048").publicKey)).toEqual({ type: "rsa", bits: 2048, label: "RSA 2048" });
  });

  it("round-trips plain and encrypted PKCS#8 PEM", () => {
    const { privateKey, publicKey } = generateKeyPair();
    const plain = encodePrivateKey(privateKey);
    expect(pemBlocks(plain).map((b) => b.label)).toEqual(["PRIVATE KEY"]);
    expect(isEncryptedPrivateKeyPem(plain)).toBe(false);
    expect(keysMatch(decodePrivateKey(plain), publicKey)).toBe(true);

    const encrypted = encodePrivateKey(privateKey, "correct horse");
    expect(pemBlocks(encrypted).map((b) => b.label)).toEqual(["ENCRYPTED PRIVATE KEY"]);
    expect(isEncryptedPrivateKeyPem(encrypted)).toBe(true);
    // openssl sees PBES2 with AES-256-CBC.
    expect(openssl(["asn1parse"], encrypted)).toMatch(/PBES2[\s\S]*aes-256-cbc/);
    expect(keysMatch(decodePrivateKey(encrypted, "correct horse"), publicKey)).toBe(true);
    // openssl can read it with the passphrase.
    expect(openssl(["pkey", "-passin", "pass:correct horse", "-noout", "-text"], encrypted)).toContain("NIST CURVE: P-256");
  });

  it("refuses a wrong or missing passphrase and damaged keys without leaking key material", () => {
    const { privateKey } = generateKeyPair();
    const encrypted = encodePrivateKey(privateKey, "right");
    const base64Line = encrypted.split("\n")[1]!;
    for (const [fn, code] of [
      [() => decodePrivateKey(encrypted), "E_KEY_PASSPHRASE_REQUIRED"],
      [() => decodePrivateKey(encrypted, "wrong"), "E_KEY_PASSPHRASE_WRONG"],
      [() => decodePrivateKey("not a key"), "E_KEY_INVALID"],
      [() => decodePrivateKey(encodePrivateKey(privateKey).replace(/\n[A-Za-z0-9+/]{8}/, "\nAAAAAAAA")), "E_KEY_INVALID"],
      [() => decodePrivateKey(createPublicKey(privateKey).export({ type: "spki", format: "pem" }) as string), "E_KEY_INVALID"],
    ] as const) {
      const error = caught(fn);
      expect(error.code).toBe(code);
      expect(error.message).not.toContain(base64Line.slice(0, 16));
    }
    expect(caught(() => encodePrivateKey(privateKey, "")).code).toBe("E_KEY_PASSPHRASE_EMPTY");
  });

  it("reads SEC1 and PKCS#1 PEM written by openssl", () => {
    const sec1 = openssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout"]);
    expect(pemBlocks(sec1).map((b) => b.label)).toEqual(["EC PRIVATE KEY"]);
    expect(describePublicKey(decodePrivateKey(sec1)).label).toBe("ECDSA P-256");
    const pkcs1 = openssl(["genrsa", "-traditional", "2048"]);
    expect(pemBlocks(pkcs1).map((b) => b.label)).toEqual(["RSA PRIVATE KEY"]);
    expect(describePublicKey(decodePrivateKey(pkcs1)).label).toBe("RSA 2048");
    const legacyEncrypted = openssl(["ec", "-aes256", "-passout", "pass:pw"], sec1);
    expect(isEncryptedPrivateKeyPem(legacyEncrypted)).toBe(true);
    expect(caught(() => decodePrivateKey(legacyEncrypted, "nope")).code).toBe("E_KEY_PASSPHRASE_WRONG");
    expect(describePublicKey(decodePrivateKey(legacyEncrypted, "pw")).label).toBe("ECDSA P-256");
  });

  it("accepts P-256, P-384, Ed25519, RSA >= 2048 and refuses the rest naming what it found", () => {
    assertAcceptableKey(generateKeyPair().publicKey);
    assertAcceptableKey(generateKeyPair("ec-p384").publicKey);
    assertAcceptableKey(generateKeyPair("rsa-2048").publicKey);
    assertAcceptableKey(generateKeyPair("ed25519").publicKey);
    const cases = [
      [generateKeyPairSync("rsa", { modulusLength: 1024 }).publicKey, /RSA 1024/],
      [generateKeyPairSync("ec", { namedCurve: "secp256k1" }).publicKey, /secp256k1/],
      [generateKeyPairSync("ec", { namedCurve: "P-192" }).publicKey, /P-192/],
      [generateKeyPairSync("ed448").publicKey, /Ed448/],
      [generateKeyPairSync("dsa", { modulusLength: 2048, divisorLength: 256 }).publicKey, /DSA/],
    ] as const;
    for (const [key, label] of cases) {
      const error = caught(() => assertAcceptableKey(key));
      expect(error.code).toBe("E_KEY_WEAK");
      expect(error.message).toMatch(label);
    }
  });

  it("remembers an accepted key, never a refused one: a second check refuses the same weak key again", () => {
    const good = generateKeyPair().publicKey;
    assertAcceptableKey(good);
    assertAcceptableKey(good);
    const weak = generateKeyPairSync("ec", { namedCurve: "secp256k1" }).publicKey;
    for (let i = 0; i < 2; i++) expect(caught(() => assertAcceptableKey(weak)).code).toBe("E_KEY_WEAK");
  });

  it("imports P-256 SPKI the way this OpenSSL does fastest, with the same key either way", () => {
    expect(derImportIsFast("3.0.19")).toBe(false);
    expect(derImportIsFast("3.0.15+quic")).toBe(false);
    expect(derImportIsFast("3.5.9")).toBe(true);
    expect(derImportIsFast("3.10.0")).toBe(true);
    expect(derImportIsFast("4.0.0")).toBe(true);
    expect(derImportIsFast("")).toBe(false);
    const { publicKey } = generateKeyPair();
    const spki = publicKey.export({ type: "spki", format: "der" });
    const imported = importSpki(spki);
    expect(imported.export({ format: "jwk" })).toEqual(publicKey.export({ format: "jwk" }));
    expect(spkiOf(imported)).toEqual(spki);
    // A point that is not on the curve is refused on either path.
    const offCurve = Buffer.from(spki);
    offCurve[offCurve.length - 1] = offCurve[offCurve.length - 1]! ^ 0x01;
    expect(() => importSpki(offCurve)).toThrow();
  });

  it("takes the fast P-256 path only for the canonical encoding; every other shape gets the full checks", () => {
    const spki = generateKeyPair().publicKey.export({ type: "spki", format: "der" });
    const imported = importSpki(spki);
    // The fast path records the key as acceptable without asking node:crypto: it must be P-256.
    expect(imported.asymmetricKeyDetails?.namedCurve).toBe("prime256v1");
    assertAcceptableKey(imported);
    // A trailing byte, a 65-byte point that claims to be compressed, or a P-384 key never
    // reach the fast path; the first two are refused as broken, the last is imported as P-384.
    expect(() => importSpki(Buffer.concat([spki, Buffer.of(0)]))).toThrow(/trailing bytes/);
    const notUncompressed = Buffer.from(spki);
    notUncompressed[26] = 0x02;
    expect(() => importSpki(notUncompressed)).toThrow(/compressed EC points/);
    const p384 = generateKeyPair("ec-p384").publicKey.export({ type: "spki", format: "der" });
    expect(importSpki(p384).asymmetricKeyDetails?.namedCurve).toBe("secp384r1");
  });

  it("keysMatch tells pairs apart", () => {
    const a = generateKeyPair();
    const b = generateKeyPair();
    expect(keysMatch(a.privateKey, a.publicKey)).toBe(true);
    expect(keysMatch(a.privateKey, b.publicKey)).toBe(false);
    expect(keysMatch(a.privateKey, generateKeyPair("rsa-2048").publicKey)).toBe(false);
  });
});

describe("pem", () => {
  it("round-trips blocks and keeps their order and labels", () => {
    const text = `${toPem(Buffer.from("one"), "CERTIFICATE")}some text in between\n${toPem(Buffer.alloc(100, 7), "X509 CRL")}${toPem(Buffer.from("two"), "CERTIFICATE")}`;
    const blocks = pemBlocks(text);
    expect(blocks.map((b) => b.label)).toEqual(["CERTIFICATE", "X509 CRL", "CERTIFICATE"]);
    expect(blocks[1]!.der).toEqual(Buffer.alloc(100, 7));
    expect(certificatesFromPem(text).map((d) => d.toString())).toEqual(["one", "two"]);
    expect(toPem(Buffer.alloc(100), "X").split("\n")[1]!.length).toBe(64);
    expect(pemBlocks(toPem(Buffer.from("crlf"), "CERTIFICATE").replace(/\n/g, "\r\n"))[0]!.der.toString()).toBe("crlf");
  });

  it("refuses text without blocks, broken base64 and mismatched END labels", () => {
    expect(caught(() => pemBlocks("nothing here")).code).toBe("E_PEM_INVALID");
    expect(caught(() => pemBlocks("-----BEGIN CERTIFICATE-----\nAB$C\n-----END CERTIFICATE-----\n")).code).toBe("E_PEM_INVALID");
    expect(caught(() => pemBlocks("-----BEGIN CERTIFICATE-----\nABC\n-----END CERTIFICATE-----\n")).code).toBe("E_PEM_INVALID");
    expect(caught(() => pemBlocks("-----BEGIN CERTIFICATE-----\nAAAA\n-----END X509 CRL-----\n")).code).toBe("E_PEM_INVALID");
    expect(caught(() => pemBlocks("-----BEGIN CERTIFICATE-----\nAAAA\n")).code).toBe("E_PEM_INVALID");
    expect(caught(() => certificatesFromPem(toPem(Buffer.from("k"), "PRIVATE KEY"))).code).toBe("E_PEM_INVALID");
  });
});
