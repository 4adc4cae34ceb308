import { createHash, generateKeyPairSync, X509Certificate } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isMeshwardError } from "../../src/errors.ts";
import { generateKeyPair, inspectCertificate, issueLeafCertificate, normalizeSerial, randomSerial, toPem } from "../../src/pki/index.ts";
import type { KeyAlgorithm } from "../../src/pki/index.ts";
import { makeCa, openssl, opensslResult, scratchDir, validity } from "./helpers.ts";
import type { TestCa } from "./helpers.ts";

const scratch = scratchDir();
let ca: TestCa;

beforeAll(async () => {
  ca = await makeCa();
});
afterAll(() => scratch.remove());

function expectCode(fn: () => unknown, code: string): void {
  try {
    fn();
  } catch (error) {
    expect(isMeshwardError(error) ? error.code : error).toBe(code);
    return;
  }
  throw new Error(`expected ${code}, nothing was thrown`);
}

describe("randomSerial / normalizeSerial", () => {
  it("makes positive 16-byte serials with a non-zero first byte", () => {
    for (let i = 0; i < 500; i++) {
      const serial = randomSerial();
      expect(serial.length).toBe(16);
      expect(serial[0]! & 0x80).toBe(0);
      expect(serial[0]).not.toBe(0);
    }
  });

  it("normalises the ways people type serials to node's form", () => {
    expect(normalizeSerial("0a:1b")).toBe("0A1B");
    expect(normalizeSerial("a1b")).toBe("0A1B");
    expect(normalizeSerial("0A1B")).toBe("0A1B");
    expect(normalizeSerial("00:ff")).toBe("FF");
    expect(normalizeSerial(" 0x7f01 ")).toBe("7F01");
    expect(normalizeSerial("0")).toBe("0");
    expectCode(() => normalizeSerial("xyz"), "E_SERIAL_INVALID");
    expectCode(() => normalizeSerial(""), "E_SERIAL_INVALID");
  });

  it("matches node's serialNumber for serials openssl writes", () => {
    for (const serial of ["0x0a1b", "0x8f", "0x0f"]) {
      const pem = openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "/dev/null", "-subj", "/CN=s", "-set_serial", serial, "-days", "1"]);
      expect(normalizeSerial(serial)).toBe(new X509Certificate(pem).serialNumber);
    }
  });
});

describe("CA certificates", () => {
  it("root and issuer carry CA:TRUE, key usages, the trust domain URI SAN and key ids", () => {
    const rootText = openssl(["x509", "-text", "-noout"], toPem(ca.root.der, "CERTIFICATE"));
    expect(rootText).toMatch(/Basic Constraints: critical\s+CA:TRUE\n/);
    expect(rootText).toMatch(/Key Usage: critical\s+Certificate Sign, CRL Sign/);
    expect(rootText).toContain("URI:spiffe://example.org\n");
    expect(rootText).toContain("Subject Key Identifier");
    const issuerText = openssl(["x509", "-text", "-noout"], toPem(ca.issuer.der, "CERTIFICATE"));
    expect(issuerText).toMatch(/Basic Constraints: critical\s+CA:TRUE, pathlen:0/);
    expect(issuerText).toMatch(/Key Usage: critical\s+Certificate Sign, CRL Sign/);
    expect(issuerText).toContain("Authority Key Identifier");
    expect(ca.issuer.certificate.checkIssued(ca.root.certificate)).toBe(true);
  });
});

describe("issueLeafCertificate", () => {
  it("issues an X509-SVID that openssl verifies and reads as specified", () => {
    const keys = generateKeyPair();
    const leaf = issueLeafCertificate({ ...validity(), spiffeId: "spiffe://example.org/ns/default/web", publicKey: keys.publicKey, signer: ca.issuer, dnsNames: ["web.default.svc"] });
    const x = new X509Certificate(leaf.der);
    expect(leaf.serial).toBe(x.serialNumber);
    const files = {
      root: scratch.file("root.pem", toPem(ca.root.der, "CERTIFICATE")),
      issuer: scratch.file("issuer.pem", toPem(ca.issuer.der, "CERTIFICATE")),
      leaf: scratch.file("leaf.pem", toPem(leaf.der, "CERTIFICATE")),
    };
    expect(openssl(["verify", "-CAfile", files.root, "-untrusted", files.issuer, files.leaf]).trim()).toBe(`${files.leaf}: OK`);
    // Without the issuer the chain must not build: proves openssl checks what we hand it.
    expect(opensslResult(["verify", "-CAfile", files.root, files.leaf]).status).not.toBe(0);

    const text = openssl(["x509", "-in", files.leaf, "-text", "-noout"]);
    expect(text).toMatch(/Basic Constraints: critical\s+CA:FALSE/);
    expect(text).toMatch(/Key Usage: critical\s+Digital Signature\n/);
    expect(text).toMatch(/Extended Key Usage: \s*\n\s+TLS Web Server Authentication, TLS Web Client Authentication/);
    expect(text).toContain("URI:spiffe://example.org/ns/default/web, DNS:web.default.svc");
    expect(text).toContain("Signature Algorithm: ecdsa-with-SHA256");
    expect(text).toContain("Subject: O = SPIFFE");
    expect(text).toContain("Version: 3 (0x2)");
    const serialHex = /Serial Number:\s*\n\s*([0-9a-f:]+)/.exec(text)![1]!;
    expect(normalizeSerial(serialHex)).toBe(leaf.serial);
    expect(openssl(["x509", "-in", files.leaf, "-noout", "-ext", "authorityKeyIdentifier"])).toContain(
      openssl(["x509", "-in", files.issuer, "-noout", "-ext", "subjectKeyIdentifier"]).split("\n")[1]!.trim(),
    );
    // SKI = SHA-1 of the subjectPublicKey bits (RFC 5280 4.2.1.2 method 1), computed independently here.
    const keyBits = keys.publicKey.export({ type: "spki", format: "der" }).subarray(-65);
    const expectedSki = createHash("sha1").update(keyBits).digest("hex").toUpperCase().match(/../g)!.join(":");
    expect(openssl(["x509", "-in", files.leaf, "-noout", "-ext", "subjectKeyIdentifier"])).toContain(expectedSki);
    expect(openssl(["verify", "-CAfile", files.root, "-untrusted", files.issuer, "-purpose", "sslclient", files.leaf])).toContain("OK");
    expect(openssl(["verify", "-CAfile", files.root, "-untrusted", files.issuer, "-purpose", "sslserver", files.leaf])).toContain("OK");

    const info = inspectCertificate(leaf.der);
    expect(info.uris).toEqual(["spiffe://example.org/ns/default/web"]);
    expect(info.dnsNames).toEqual(["web.default.svc"]);
    expect(info.isCa).toBe(false);
  });

  it.each<[KeyAlgorithm, string, RegExp]>([
    ["ec-p384", "ecdsa-with-SHA384", /Digital Signature\n/],
    ["rsa-2048", "sha256WithRSAEncryption", /Digital Signature, Key Encipherment/],
  ])("signs with a %s CA using %s", async (algorithm, signatureName, usage) => {
    const other = await makeCa("rsa.example", algorithm);
    const keys = generateKeyPair(algorithm);
    const leaf = issueLeafCertificate({ ...validity(), spiffeId: "spiffe://rsa.example/w", publicKey: keys.publicKey, signer: other.issuer });
    const dir = scratchDir();
    try {
      const root = dir.file("root.pem", toPem(other.root.der, "CERTIFICATE"));
      const issuer = dir.file("issuer.pem", toPem(other.issuer.der, "CERTIFICATE"));
      const leafPath = dir.file("leaf.pem", toPem(leaf.der, "CERTIFICATE"));
      expect(openssl(["verify", "-CAfile", root, "-untrusted", issuer, leafPath])).toContain("OK");
      const text = openssl(["x509", "-in", leafPath, "-text", "-noout"]);
      expect(text).toContain(`Signature Algorithm: ${signatureName}`);
      expect(text).toMatch(usage);
    } finally {
      dir.remove();
    }
  });

  it("writes GeneralizedTime from 2050 and UTCTime before", () => {
    const keys = generateKeyPair();
    const leaf = issueLeafCertificate({ notBefore: new Date("2049-12-31T23:00:00Z"), notAfter: new Date("2050-01-02T00:00:00Z"), spiffeId: "spiffe://example.org/t", publicKey: keys.publicKey, signer: ca.issuer });
    const info = inspectCertificate(leaf.der);
    expect(info.notBefore.toISOString()).toBe("2049-12-31T23:00:00.000Z");
    expect(info.notAfter.toISOString()).toBe("2050-01-02T00:00:00.000Z");
    const asn1 = openssl(["asn1parse", "-inform", "DER"], leaf.der);
    expect(asn1).toContain("UTCTIME           :491231230000Z");
    expect(asn1).toContain("GENERALIZEDTIME   :20500102000000Z");
  });

  it("uses a given serial and reports it as node prints it", () => {
    const keys = generateKeyPair();
    const leaf = issueLeafCertificate({ ...validity(), spiffeId: "spiffe://example.org/s", publicKey: keys.publicKey, signer: ca.issuer, serial: Buffer.from("0a1b", "hex") });
    expect(leaf.serial).toBe("0A1B");
    expect(new X509Certificate(leaf.der).serialNumber).toBe("0A1B");
  });

  it("refuses bad templates", () => {
    const keys = generateKeyPair();
    const base = { ...validity(), publicKey: keys.publicKey, signer: ca.issuer };
    expectCode(() => issueLeafCertificate({ ...base, spiffeId: "spiffe://example.org" }), "E_SPIFFE_ID_INVALID");
    expectCode(() => issueLeafCertificate({ ...base, spiffeId: "https://example.org/x" }), "E_SPIFFE_ID_INVALID");
    expectCode(() => issueLeafCertificate({ ...base, spiffeId: "spiffe://example.org/x", dnsNames: ["bad name"] }), "E_DNS_NAME_INVALID");
    expectCode(() => issueLeafCertificate({ ...base, spiffeId: "spiffe://example.org/x", notAfter: base.notBefore }), "E_CERT_VALIDITY");
    // Ed25519 is accepted (Dapr >= 1.18); Ed448 is not.
    const ed448 = generateKeyPairSync("ed448").publicKey;
    expectCode(() => issueLeafCertificate({ ...base, spiffeId: "spiffe://example.org/x", publicKey: ed448 }), "E_KEY_WEAK");
  });

  it("refuses a signer that is not a CA or whose key does not match", async () => {
    const keys = generateKeyPair();
    const leaf = issueLeafCertificate({ ...validity(), spiffeId: "spiffe://example.org/a", publicKey: keys.publicKey, signer: ca.issuer });
    const leafSigner = { certificate: new X509Certificate(leaf.der), der: leaf.der, privateKey: keys.privateKey };
    expectCode(() => issueLeafCertificate({ ...validity(), spiffeId: "spiffe://example.org/b", publicKey: generateKeyPair().publicKey, signer: leafSigner }), "E_SIGNER_NOT_CA");
    const wrongKey = { ...ca.issuer, privateKey: generateKeyPair().privateKey };
    expectCode(() => issueLeafCertificate({ ...validity(), spiffeId: "spiffe://example.org/b", publicKey: keys.publicKey, signer: wrongKey }), "E_KEY_MISMATCH");
  });
});
