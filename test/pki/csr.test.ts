import { afterAll, describe, expect, it } from "vitest";
import { isMeshwardError } from "../../src/errors.ts";
import { createCsr, generateKeyPair, keysMatch, parseCsr, pemBlocks, toPem } from "../../src/pki/index.ts";
import { openssl, opensslResult, scratchDir } from "./helpers.ts";

const scratch = scratchDir();
afterAll(() => scratch.remove());

function expectCode(fn: () => unknown, code: string): string {
  try {
    fn();
  } catch (error) {
    expect(isMeshwardError(error) ? error.code : error).toBe(code);
    return (error as Error).message;
  }
  throw new Error(`expected ${code}, nothing was thrown`);
}

/** A CSR made by the openssl CLI with the given key options, subject CN=meshward-test and a SPIFFE URI SAN. */
function opensslCsr(keyOptions: readonly string[], extra: readonly string[] = []): string {
  const key = scratch.file(`key-${Math.random().toString(36).slice(2)}.pem`, "");
  return openssl([
    "req", "-new", "-nodes", ...keyOptions, "-keyout", key, "-subj", "/CN=meshward-test",
    "-addext", "subjectAltName=URI:spiffe://example.org/ns/default/app,DNS:app.example.org", ...extra,
  ]);
}

function derOf(pem: string): Buffer {
  return pemBlocks(pem)[0]!.der;
}

describe("parseCsr with CSRs from openssl req", () => {
  it.each([
    ["EC P-256", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"], "ECDSA P-256"],
    ["EC P-384", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"], "ECDSA P-384"],
    ["RSA-2048", ["-newkey", "rsa:2048"], "RSA"],
    ["RSA-2048 with RSA-PSS signature", ["-newkey", "rsa:2048", "-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:32"], "RSA"],
  ])("parses and verifies %s", (_name, keyOptions) => {
    const pem = opensslCsr(keyOptions);
    const csr = parseCsr(pem);
    expect(csr.subject).toBe("CN=meshward-test");
    expect(csr.uris).toEqual(["spiffe://example.org/ns/default/app"]);
    expect(csr.dnsNames).toEqual(["app.example.org"]);
    expect(csr.requestsCa).toBe(false);
    // The same request as DER parses the same.
    expect(parseCsr(derOf(pem)).publicKey.export({ type: "spki", format: "der" })).toEqual(csr.publicKey.export({ type: "spki", format: "der" }));
    expect(csr.der).toEqual(derOf(pem));
  });

  it("sees a request for CA:TRUE", () => {
    const pem = opensslCsr(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"], ["-addext", "basicConstraints=critical,CA:TRUE"]);
    expect(parseCsr(pem).requestsCa).toBe(true);
  });

  it.each([
    ["RSA-1024", ["-newkey", "rsa:1024"], /RSA 1024/],
    ["secp256k1", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp256k1"], /secp256k1/],
    ["P-192", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime192v1"], /P-192/],
    ["Ed448", ["-newkey", "ed448"], /Ed448/],
  ])("refuses a %s key with E_KEY_WEAK naming it", (_name, keyOptions, label) => {
    const pem = opensslCsr(keyOptions);
    expect(expectCode(() => parseCsr(pem), "E_KEY_WEAK")).toMatch(label);
  });
});

describe("parseCsr refusals", () => {
  const pem = opensslCsr(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]);
  const der = derOf(pem);

  it("refuses a CSR whose signature byte was flipped", () => {
    const tampered = Buffer.from(der);
    tampered[tampered.length - 1]! ^= 0x01;
    expectCode(() => parseCsr(tampered), "E_CSR_SIGNATURE");
    expectCode(() => parseCsr(toPem(tampered, "CERTIFICATE REQUEST")), "E_CSR_SIGNATURE");
  });

  it("refuses a CSR whose subject was changed after signing", () => {
    const tampered = Buffer.from(der);
    const at = tampered.indexOf("meshward-test");
    expect(at).toBeGreaterThan(0);
    tampered[at] = "n".charCodeAt(0);
    expectCode(() => parseCsr(tampered), "E_CSR_SIGNATURE");
  });

  it("refuses a CSR whose SAN was changed after signing", () => {
    const tampered = Buffer.from(der);
    const at = tampered.indexOf("default/app");
    tampered[at] = "D".charCodeAt(0);
    expectCode(() => parseCsr(tampered), "E_CSR_SIGNATURE");
  });

  it("refuses a CSR whose public key point is not on the curve", () => {
    const tampered = Buffer.from(der);
    const point = tampered.indexOf(Buffer.from("03420004", "hex")) + 4;
    tampered[point + 10]! ^= 0x01;
    expectCode(() => parseCsr(tampered), "E_CSR_INVALID");
  });

  it("refuses malformed input with E_CSR_INVALID", () => {
    expectCode(() => parseCsr(Buffer.concat([der, Buffer.of(0)])), "E_CSR_INVALID");
    expectCode(() => parseCsr(der.subarray(0, der.length - 5)), "E_CSR_INVALID");
    expectCode(() => parseCsr(toPem(der, "CERTIFICATE")), "E_CSR_INVALID");
    expectCode(() => parseCsr(pem.replace(/\n[A-Za-z0-9+/]{10}/, "\n!!!!!!!!!!")), "E_CSR_INVALID");
    expectCode(() => parseCsr("hello"), "E_CSR_INVALID");
    expectCode(() => parseCsr(Buffer.alloc(0)), "E_CSR_INVALID");
    expectCode(() => parseCsr(Buffer.of(0x30, 0x03, 0x02, 0x01, 0x00)), "E_CSR_INVALID");
  });
});

describe("createCsr", () => {
  it("makes a CSR that openssl verifies and parseCsr reads back", async () => {
    const keys = generateKeyPair();
    const pem = await createCsr({ keyPair: keys, spiffeId: "spiffe://example.org/ns/a/b", dnsNames: ["b.example.org"], commonName: "b" });
    const file = scratch.file("ours.csr", pem);
    const verified = opensslResult(["req", "-in", file, "-verify", "-noout"]);
    expect(verified.status).toBe(0);
    expect(verified.output).toMatch(/verify OK/);
    const text = openssl(["req", "-text", "-noout"], pem);
    expect(text).toContain("URI:spiffe://example.org/ns/a/b, DNS:b.example.org");
    const csr = parseCsr(pem);
    expect(csr.uris).toEqual(["spiffe://example.org/ns/a/b"]);
    expect(csr.dnsNames).toEqual(["b.example.org"]);
    expect(csr.subject).toBe("CN=b");
    expect(keysMatch(keys.privateKey, csr.publicKey)).toBe(true);
  });

  it("works for P-384 and RSA keys and without any names", async () => {
    for (const algorithm of ["ec-p384", "rsa-2048"] as const) {
      const keys = generateKeyPair(algorithm);
      const csr = parseCsr(await createCsr({ keyPair: keys }));
      expect(csr.uris).toEqual([]);
      expect(csr.subject).toBe("");
      expect(keysMatch(keys.privateKey, csr.publicKey)).toBe(true);
    }
  });
});
