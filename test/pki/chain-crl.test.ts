import { sign as nodeSign, webcrypto, X509Certificate } from "node:crypto";
import type { KeyObject } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isMeshwardError } from "../../src/errors.ts";
import { createCrl, generateKeyPair, inspectCertificate, issueLeafCertificate, parseCrl, toPem, toX509, verifyChain } from "../../src/pki/index.ts";
import type { IssuedCertificate } from "../../src/pki/index.ts";
import * as der from "../../src/pki/der.ts";
import { loadX509 } from "../../src/pki/peculiar.ts";
import type { X509Module } from "../../src/pki/peculiar.ts";
import { parseCertificateParts } from "../../src/pki/x509der.ts";
import { DAY, HOUR, makeCa, openssl, opensslResult, scratchDir, validity } from "./helpers.ts";
import type { TestCa } from "./helpers.ts";

const scratch = scratchDir();
let ca: TestCa;
let other: TestCa;
let leaf: IssuedCertificate;
let x509: X509Module;

beforeAll(async () => {
  x509 = await loadX509();
  ca = await makeCa();
  other = await makeCa();
  leaf = issueLeafCertificate({ ...validity(Date.now() - HOUR, DAY), spiffeId: "spiffe://example.org/ns/a/web", publicKey: generateKeyPair().publicKey, signer: ca.issuer });
});
afterAll(() => scratch.remove());

function codeOf(fn: () => unknown, messagePattern?: RegExp): string {
  try {
    fn();
  } catch (error) {
    if (!isMeshwardError(error)) throw error;
    if (messagePattern !== undefined) expect(error.message).toMatch(messagePattern);
    return error.code;
  }
  return "no error";
}

describe("verifyChain", () => {
  it("returns leaf, issuer, root for a good chain in any input form", () => {
    const chain = verifyChain({ leaf: leaf.der, intermediates: [toPem(ca.issuer.der, "CERTIFICATE")], roots: [other.root.certificate, ca.root.certificate] });
    expect(chain.map((c) => c.serialNumber)).toEqual([new X509Certificate(leaf.der).serialNumber, ca.issuer.certificate.serialNumber, ca.root.certificate.serialNumber]);
  });

  it("refuses a chain to a root it was not given", () => {
    expect(codeOf(() => verifyChain({ leaf: leaf.der, intermediates: [ca.issuer.der], roots: [other.root.der] }))).toBe("E_CHAIN_UNTRUSTED");
    // The other CA's issuer has the same subject name as ours: the signature check must tell them apart.
    expect(codeOf(() => verifyChain({ leaf: leaf.der, intermediates: [other.issuer.der], roots: [ca.root.der] }))).toBe("E_CHAIN_UNTRUSTED");
    expect(codeOf(() => verifyChain({ leaf: leaf.der, roots: [ca.root.der] }))).toBe("E_CHAIN_UNTRUSTED");
  });

  it("checks validity at the given time", () => {
    const input = { leaf: leaf.der, intermediates: [ca.issuer.der], roots: [ca.root.der] };
    expect(codeOf(() => verifyChain({ ...input, at: new Date(Date.now() + 2 * DAY) }))).toBe("E_CERT_EXPIRED");
    expect(codeOf(() => verifyChain({ ...input, at: new Date(Date.now() - 2 * HOUR) }))).toBe("E_CERT_NOT_YET_VALID");
    expect(verifyChain({ ...input, at: new Date(Date.now() + HOUR) })).toHaveLength(3);
  });

  it("refuses a leaf used as an issuer, and a CA used as a leaf", () => {
    const leafKeys = generateKeyPair();
    const asIssuer = issueLeafCertificate({ ...validity(), spiffeId: "spiffe://example.org/rogue-signer", publicKey: leafKeys.publicKey, signer: ca.issuer });
    // issueLeafCertificate refuses non-CA signers, so sign by hand with the leaf's key, naming the leaf as issuer.
    const rogue = forgeLeaf(asIssuer.der, leafKeys.privateKey);
    expect(codeOf(() => verifyChain({ leaf: rogue, intermediates: [asIssuer.der, ca.issuer.der], roots: [ca.root.der] }), /signed a certificate but is not a CA/)).toBe("E_CHAIN_INVALID");
    expect(codeOf(() => verifyChain({ leaf: ca.issuer.der, roots: [ca.root.der] }), /is a CA certificate/)).toBe("E_CHAIN_INVALID");
  });

  it("enforces the issuer's pathlen 0", async () => {
    // A second-level CA under our pathlen:0 issuer, made with @peculiar/x509 as an independent builder.
    const subKeys = await x509Keys();
    const sub = await x509.X509CertificateGenerator.create({
      serialNumber: "01",
      subject: "CN=sub-ca",
      issuer: ca.issuer.certificate.subject.replace(/\n/g, ", "),
      notBefore: new Date(Date.now() - HOUR),
      notAfter: new Date(Date.now() + DAY),
      signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
      publicKey: subKeys.publicKey,
      signingKey: await webKey(ca.issuer.privateKey),
      extensions: [new x509.BasicConstraintsExtension(true, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true)],
    });
    const subDer = Buffer.from(sub.rawData);
    const subLeaf = forgeLeaf(subDer, subKeys.nodePrivate);
    expect(codeOf(() => verifyChain({ leaf: subLeaf, intermediates: [subDer, ca.issuer.der], roots: [ca.root.der] }), /allows 0 CA certificate\(s\) below it/)).toBe("E_CHAIN_INVALID");
    // The same shape under the root (no pathlen) is accepted: the refusal above is the pathlen, not the builder.
    const subUnderRoot = await x509.X509CertificateGenerator.create({
      serialNumber: "02",
      subject: "CN=sub-ca-2",
      issuer: ca.root.certificate.subject.replace(/\n/g, ", "),
      notBefore: new Date(Date.now() - HOUR),
      notAfter: new Date(Date.now() + DAY),
      signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
      publicKey: subKeys.publicKey,
      signingKey: await webKey(ca.root.privateKey),
      extensions: [new x509.BasicConstraintsExtension(true, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true)],
    });
    const subUnderRootDer = Buffer.from(subUnderRoot.rawData);
    expect(verifyChain({ leaf: forgeLeaf(subUnderRootDer, subKeys.nodePrivate), intermediates: [subUnderRootDer], roots: [ca.root.der] })).toHaveLength(3);
  });
});

describe("CRL", () => {
  it("creates a CRL openssl reads, and openssl refuses the revoked leaf with it", async () => {
    const revoked = issueLeafCertificate({ ...validity(), spiffeId: "spiffe://example.org/ns/a/bad", publicKey: generateKeyPair().publicKey, signer: ca.issuer });
    const now = new Date();
    const der = await createCrl({
      signer: ca.issuer,
      entries: [
        { serial: revoked.serial, revokedAt: now, reason: "keyCompromise" },
        { serial: "0a:1b", revokedAt: now },
      ],
      thisUpdate: new Date(now.getTime() - 60_000),
      nextUpdate: new Date(now.getTime() + DAY),
      crlNumber: 7n,
    });
    const files = {
      crl: scratch.file("issuer.crl.pem", toPem(der, "X509 CRL")),
      root: scratch.file("root.pem", toPem(ca.root.der, "CERTIFICATE")),
      issuer: scratch.file("issuer.pem", toPem(ca.issuer.der, "CERTIFICATE")),
      revoked: scratch.file("revoked.pem", toPem(revoked.der, "CERTIFICATE")),
      good: scratch.file("good.pem", toPem(leaf.der, "CERTIFICATE")),
    };
    const text = openssl(["crl", "-in", files.crl, "-text", "-noout"]);
    expect(text).toContain("Version 2 (0x1)");
    expect(text).toMatch(/X509v3 CRL Number:\s*\n\s*7/);
    expect(text).toContain("X509v3 Authority Key Identifier");
    expect(text).toContain(`Serial Number: ${revoked.serial}`);
    expect(text).toContain("Key Compromise");
    expect(text).toContain("Serial Number: 0A1B");
    expect(openssl(["crl", "-in", files.crl, "-noout", "-CAfile", files.issuer]).toString()).toBe("");

    const refused = opensslResult(["verify", "-crl_check", "-CRLfile", files.crl, "-CAfile", files.root, "-untrusted", files.issuer, files.revoked]);
    expect(refused.status).not.toBe(0);
    expect(refused.output).toContain("certificate revoked");
    const accepted = opensslResult(["verify", "-crl_check", "-CRLfile", files.crl, "-CAfile", files.root, "-untrusted", files.issuer, files.good]);
    expect(accepted.output).toContain("OK");
    expect(accepted.status).toBe(0);

    const parsed = parseCrl(toPem(der, "X509 CRL"), ca.issuer.certificate);
    expect(parsed.crlNumber).toBe(7n);
    expect(parsed.issuer).toBe(ca.issuer.certificate.subject);
    expect(parsed.revokedSerials.has(revoked.serial)).toBe(true);
    expect(parsed.revokedSerials.has("0A1B")).toBe(true);
    expect(parsed.revokedSerials.has(inspectCertificate(leaf.der).serial)).toBe(false);
    expect(parsed.entries[0]).toEqual({ serial: revoked.serial, revokedAt: new Date(Math.floor(now.getTime() / 1000) * 1000), reason: "keyCompromise" });
    expect(parsed.nextUpdate?.getTime()).toBe(Math.floor((now.getTime() + DAY) / 1000) * 1000);
  });

  it("parses a CRL made by openssl ca, and an empty one of ours", async () => {
    const empty = await createCrl({ signer: ca.root, entries: [], thisUpdate: new Date(), nextUpdate: new Date(Date.now() + DAY), crlNumber: 1n });
    const parsed = parseCrl(empty, ca.root.certificate);
    expect(parsed.entries).toEqual([]);
    expect(parsed.revokedSerials.size).toBe(0);
    // openssl-made CRL (independent encoder), signed by a throwaway CA.
    const dir = scratchDir();
    try {
      const key = dir.file("ca.key", openssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout"]));
      const cert = dir.file("ca.pem", openssl(["req", "-x509", "-key", key, "-subj", "/CN=openssl-ca", "-days", "1"]));
      dir.file("index.txt", "R\t301231000000Z\t240101000000Z,superseded\t0A1B\tunknown\t/CN=x\n");
      const conf = dir.file("ca.cnf", `[ca]\ndefault_ca=d\n[d]\ndatabase=${dir.dir}/index.txt\ncrlnumber=${dir.dir}/crlnumber\ndefault_md=sha256\ndefault_crl_days=1\ncrl_extensions=e\n[e]\nauthorityKeyIdentifier=keyid\n`);
      dir.file("crlnumber", "2A\n");
      const pem = openssl(["ca", "-config", conf, "-gencrl", "-keyfile", key, "-cert", cert]);
      const crl = parseCrl(pem, new X509Certificate(openssl(["x509", "-in", cert])));
      expect(crl.crlNumber).toBe(0x2an);
      expect(crl.entries).toEqual([{ serial: "0A1B", revokedAt: new Date("2024-01-01T00:00:00Z"), reason: "superseded" }]);
      expect(crl.issuer).toBe("CN=openssl-ca");
    } finally {
      dir.remove();
    }
  });

  it("refuses a CRL from another issuer, a tampered one and garbage", async () => {
    const der = await createCrl({ signer: ca.issuer, entries: [{ serial: "01", revokedAt: new Date() }], thisUpdate: new Date(), nextUpdate: new Date(Date.now() + DAY), crlNumber: 2n });
    expect(codeOf(() => parseCrl(der, other.issuer.certificate))).toBe("E_CRL_SIGNATURE");
    expect(codeOf(() => parseCrl(der, ca.root.certificate))).toBe("E_CRL_SIGNATURE");
    const tampered = Buffer.from(der);
    tampered[tampered.length - 1]! ^= 1;
    expect(codeOf(() => parseCrl(tampered, ca.issuer.certificate))).toBe("E_CRL_SIGNATURE");
    // Unverified parsing of the tampered copy still works (the caller chose not to check).
    expect(parseCrl(tampered).crlNumber).toBe(2n);
    expect(codeOf(() => parseCrl(Buffer.concat([der, Buffer.of(0)])))).toBe("E_CRL_INVALID");
    expect(codeOf(() => parseCrl("junk"))).toBe("E_CRL_INVALID");
    expect(codeOf(() => parseCrl(toPem(der, "CERTIFICATE")))).toBe("E_CRL_INVALID");
  });
});

describe("inspectCertificate", () => {
  it("reads URI SANs from the DER, not from node's quoted display string", async () => {
    const keys = await x509Keys();
    const tricky = "spiffe://example.org/a, DNS:evil.example";
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: "0badc0de",
      name: "CN=tricky",
      notBefore: new Date(Date.now() - HOUR),
      notAfter: new Date(Date.now() + DAY),
      signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
      keys: { privateKey: await webKey(keys.nodePrivate), publicKey: keys.publicKey },
      extensions: [new x509.SubjectAlternativeNameExtension([{ type: "url", value: tricky }])],
    });
    const node = new X509Certificate(Buffer.from(cert.rawData));
    expect(node.subjectAltName).toContain('"'); // node quotes it (CVE-2021-44532)
    const info = inspectCertificate(Buffer.from(cert.rawData));
    expect(info.uris).toEqual([tricky]);
    expect(info.dnsNames).toEqual([]);
    expect(info.serial).toBe("0BADC0DE");
  });

  it("refuses what is not a certificate", () => {
    expect(codeOf(() => toX509("no pem"))).toBe("E_CERT_INVALID");
    expect(codeOf(() => toX509(Buffer.of(0x30, 0x00)))).toBe("E_CERT_INVALID");
    expect(codeOf(() => toX509(Buffer.concat([leaf.der, Buffer.of(1)])))).toBe("E_CERT_INVALID");
  });
});

// ---------------------------------------------------------------- helpers building certificates our API refuses to build

async function webKey(key: KeyObject): Promise<webcrypto.CryptoKey> {
  return webcrypto.subtle.importKey("pkcs8", key.export({ type: "pkcs8", format: "der" }), { name: "ECDSA", namedCurve: "P-256" }, false, ["sign"]);
}

async function x509Keys(): Promise<{ publicKey: webcrypto.CryptoKey; nodePrivate: KeyObject }> {
  const pair = generateKeyPair();
  const publicKey = await webcrypto.subtle.importKey("spki", pair.publicKey.export({ type: "spki", format: "der" }), { name: "ECDSA", namedCurve: "P-256" }, true, ["verify"]);
  return { publicKey, nodePrivate: pair.privateKey };
}

/** A minimal end-entity certificate whose issuer is `issuerDer`'s subject, signed with `key`. */
function forgeLeaf(issuerDer: Buffer, key: KeyObject): Buffer {
  const issuerSubject = parseCertificateParts(issuerDer).subject;
  const alg = der.sequence(der.oid("1.2.840.10045.4.3.2"));
  const tbs = der.sequence(
    der.explicit(0, der.integer(2)),
    der.integer(0x1234),
    alg,
    issuerSubject,
    der.sequence(der.time(new Date(Date.now() - HOUR)), der.time(new Date(Date.now() + DAY))),
    der.sequence(der.set(der.sequence(der.oid("2.5.4.3"), der.utf8String("forged")))),
    generateKeyPair().publicKey.export({ type: "spki", format: "der" }),
  );
  return der.sequence(tbs, alg, der.bitString(nodeSign("sha256", tbs, { key, dsaEncoding: "der" })));
}
