import { createHash, createPrivateKey, createPublicKey } from "node:crypto";
import { readFileSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { isMeshwardError } from "../../src/errors.ts";
import * as der from "../../src/pki/der.ts";
import { OID } from "../../src/pki/oids.ts";
import { signingAlgorithmFor } from "../../src/pki/signature.ts";
import { spkiOf } from "../../src/pki/spki.ts";
import { assertAcceptableKey, createCsr, generateKeyPair, keysMatch, parseCsr, pemBlocks, toPem } from "../../src/pki/index.ts";
import { csrWithRawDnsNames, openssl, opensslResult, scratchDir } from "./helpers.ts";

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

describe("parseCsr refuses a DNS name that is not printable ASCII, escaping it in the message", () => {
  const keyPair = generateKeyPair();

  it("accepts printable ASCII DNS names in a CSR built the same way (control)", () => {
    expect(parseCsr(csrWithRawDnsNames(keyPair, ["app.example.org", "*.svc.cluster.local"])).dnsNames).toEqual(["app.example.org", "*.svc.cluster.local"]);
  });

  it.each([
    ["NUL", "app\u0000.example.org", "app\\x00.example.org"],
    ["a newline", "app.example.org\nforged log line", "app.example.org\\x0aforged\\x20log\\x20line"],
    ["DEL", "app\u007f.example.org", "app\\x7f.example.org"],
    ["a C1 control (CSI)", "app\u009b31m.example.org", "app\\x9b31m.example.org"],
    ["a non-ASCII letter (UTF-8 \u00e9)", Buffer.from("caf\u00e9.example.org", "utf8"), "caf\\xc3\\xa9.example.org"],
    ["a non-ASCII letter (Latin-1 \u00e9)", "caf\u00e9.example.org", "caf\\xe9.example.org"],
    ["a space", "app .example.org", "app\\x20.example.org"],
  ])("refuses %s with E_CSR_INVALID, the name escaped", (_name, name, shown) => {
    const message = expectCode(() => parseCsr(csrWithRawDnsNames(keyPair, ["ok.example.org", name])), "E_CSR_INVALID");
    expect(message).toContain(`"${shown}"`);
    expect(message).toMatch(/^[\x20-\x7e]+$/);
  });

  it("refuses an empty DNS name, and shows at most 80 characters of a long one", () => {
    expect(expectCode(() => parseCsr(csrWithRawDnsNames(keyPair, [""])), "E_CSR_INVALID")).toContain('""');
    const message = expectCode(() => parseCsr(csrWithRawDnsNames(keyPair, [`\u0000${"a".repeat(5000)}`])), "E_CSR_INVALID");
    expect(message).toContain(`"\\x00${"a".repeat(79)}"...`);
    expect(message.length).toBeLessThan(400);
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

  // Go's x509 CheckSignature refuses SHA-1 (and MD5) signatures as insecure (crypto/x509
  // x509.go, InsecureAlgorithmError); so does meshward, naming the algorithm.
  it.each([
    ["ECDSA with SHA-1", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-sha1"], /1\.2\.840\.10045\.4\.1/],
    ["RSA with SHA-1", ["-newkey", "rsa:2048", "-sha1"], /1\.2\.840\.113549\.1\.1\.5/],
    ["RSA with MD5", ["-newkey", "rsa:2048", "-md5"], /1\.2\.840\.113549\.1\.1\.4/],
  ])("refuses a CSR signed with %s (E_CSR_INVALID naming it); SHA-256 is accepted", (_name, keyOptions, algorithm) => {
    const pem = opensslCsr(keyOptions);
    expect(expectCode(() => parseCsr(pem), "E_CSR_INVALID")).toMatch(algorithm);
    expect(parseCsr(opensslCsr(keyOptions.filter((o) => !o.startsWith("-sha1") && o !== "-md5"))).requestsCa).toBe(false);
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

/**
 * Keys whose SubjectPublicKeyInfo Go's crypto/x509 (Dapr's daprd and Sentry, SPIRE) refuses, or
 * whose proof of possession can be forged without a private key. Go: src/crypto/x509/parser.go
 * parsePublicKey reads the EC parameters as a namedCurve OID only and unmarshals the point with
 * elliptic.Unmarshal (uncompressed only); src/crypto/rsa/rsa.go checkPub refuses e < 2 and
 * e > 2^31-1. RFC 5480 §2.1.1: specifiedCurve (explicit parameters) MUST NOT be used in PKIX.
 * A leaf carrying such a key would be refused by every Go peer, so the CA refuses the CSR.
 */
describe("parseCsr refuses keys a Go peer would refuse in the leaf", () => {
  it("refuses explicit EC parameters (even of P-256) with E_KEY_WEAK; the same key as a named curve is accepted", () => {
    const explicit = scratch.file("explicit.pem", openssl(["ecparam", "-name", "prime256v1", "-param_enc", "explicit", "-genkey", "-noout"]));
    const named = scratch.file("named.pem", openssl(["ec", "-in", explicit, "-param_enc", "named_curve"]));
    const request = (key: string) => openssl(["req", "-new", "-key", key, "-subj", "/CN=x"]);
    expect(openssl(["req", "-text", "-noout"], request(explicit))).toMatch(/Field Type: prime-field/);
    expect(expectCode(() => parseCsr(request(explicit)), "E_KEY_WEAK")).toMatch(/explicit parameters/);
    const accepted = parseCsr(request(named));
    expect(accepted.publicKey.asymmetricKeyDetails?.namedCurve).toBe("prime256v1");
  });

  it("refuses a compressed EC point with E_CSR_INVALID; the same key uncompressed is accepted", () => {
    const key = scratch.file("uncompressed.pem", openssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout"]));
    const compressed = scratch.file("compressed.pem", openssl(["ec", "-in", key, "-conv_form", "compressed"]));
    const request = (k: string) => openssl(["req", "-new", "-key", k, "-subj", "/CN=x"]);
    expect(openssl(["req", "-text", "-noout"], request(compressed))).toMatch(/pub:\s+0[23]:/);
    expect(expectCode(() => parseCsr(request(compressed)), "E_CSR_INVALID")).toMatch(/compressed/);
    expect(parseCsr(request(key)).publicKey.asymmetricKeyDetails?.namedCurve).toBe("prime256v1");
  });

  const bytesOf = (value: bigint) => {
    const hex = value.toString(16);
    return Buffer.from(hex.length % 2 === 1 ? `0${hex}` : hex, "hex");
  };

  /** An RSA CSR for modulus n and exponent e, "signed" with the PKCS#1 v1.5 encoding itself: with e = 1 that is a valid signature, and no private key is involved. */
  function rsaCsrWithoutPrivateKey(exponent: number): Buffer {
    const n = Buffer.from(generateKeyPair("rsa-2048").publicKey.export({ format: "jwk" }).n as string, "base64url");
    const e = bytesOf(BigInt(exponent));
    const spki = der.sequence(der.sequence(der.oid(OID.rsaEncryption), der.NULL), der.bitString(der.sequence(der.unsignedInteger(n), der.unsignedInteger(e))));
    const info = der.sequence(der.integer(0), der.sequence(), spki, der.explicit(0, Buffer.alloc(0)));
    const digestInfo = Buffer.concat([Buffer.from("3031300d060960864801650304020105000420", "hex"), createHash("sha256").update(info).digest()]);
    const encoded = Buffer.concat([Buffer.of(0, 1), Buffer.alloc(256 - 3 - digestInfo.length, 0xff), Buffer.of(0), digestInfo]);
    return der.sequence(info, der.sequence(der.oid(OID.sha256WithRsa), der.NULL), der.bitString(encoded));
  }

  it("refuses RSA public exponent 1 (a proof of possession anyone can forge) with E_KEY_WEAK; e = 3 and 65537 are accepted", () => {
    // Control: the forgery is a real one. With e = 1, s^e mod n = s, so OpenSSL verifies the CSR.
    const forged = rsaCsrWithoutPrivateKey(1);
    const verified = opensslResult(["req", "-in", scratch.file("forged.csr", toPem(forged, "CERTIFICATE REQUEST")), "-verify", "-noout"]);
    expect(verified.output).toMatch(/verify OK|Certificate request self-signature verify OK/);
    expect(expectCode(() => parseCsr(forged), "E_KEY_WEAK")).toMatch(/public exponent 1/);
    // The same forgery with any usable exponent does not verify (the key is then a real one).
    expectCode(() => parseCsr(rsaCsrWithoutPrivateKey(65537)), "E_CSR_SIGNATURE");
    const e3 = scratch.file("rsa-e3.pem", openssl(["genrsa", "-3", "2048"]));
    expect(parseCsr(openssl(["req", "-new", "-key", e3, "-subj", "/CN=x"])).publicKey.asymmetricKeyDetails?.publicExponent).toBe(3n);
    expect(parseCsr(opensslCsr(["-newkey", "rsa:2048"])).publicKey.asymmetricKeyDetails?.publicExponent).toBe(65537n);
  });

  // Go's crypto/tls verifies no RSA key over 8192 bits in a handshake (handshake_client.go and
  // handshake_server.go, defaultMaxRSAKeySize, CVE-2023-29409); cert-manager caps keys there too
  // (pkg/util/pki MaxRSAKeySize). A bigger leaf key is refused by every Go peer and costs the CA
  // ~13x a P-256 CSR to verify (16384 bits: 1.3 ms per parse, measured here).
  it("refuses an RSA modulus over 8192 bits, in a CSR before its signature is checked; 8192 bits is accepted", () => {
    const modulus = (bits: number) => {
      const n = Buffer.alloc(bits / 8, 0xa5);
      n[0] = 0xc0;
      n[n.length - 1] = 0x01;
      return n;
    };
    const spki = (bits: number) => der.sequence(der.sequence(der.oid(OID.rsaEncryption), der.NULL), der.bitString(der.sequence(der.unsignedInteger(modulus(bits)), der.unsignedInteger(Buffer.of(1, 0, 1)))));
    const info = der.sequence(der.integer(0), der.sequence(), spki(8200), der.explicit(0, Buffer.alloc(0)));
    const csr = der.sequence(info, der.sequence(der.oid(OID.sha256WithRsa), der.NULL), der.bitString(Buffer.alloc(1025, 1)));
    expect(expectCode(() => parseCsr(csr), "E_KEY_WEAK")).toMatch(/RSA 8200/);
    const key = (bits: number) => createPublicKey({ key: { kty: "RSA", n: modulus(bits).toString("base64url"), e: "AQAB" }, format: "jwk" });
    expect(expectCode(() => assertAcceptableKey(key(8200)), "E_KEY_WEAK")).toMatch(/at most 8192/);
    expect(() => assertAcceptableKey(key(8192))).not.toThrow();
  });

  // id-RSASSA-PSS (RFC 4055 §1.2) in the SubjectPublicKeyInfo: node reads it as an "rsa-pss" key,
  // Go's crypto/x509 parsePublicKey knows no such algorithm, so a leaf carrying it is unparseable
  // for every Go peer (Dapr, SPIRE). An RSA key (rsaEncryption) with PSS *signatures* stays fine.
  it("refuses an RSA-PSS (id-RSASSA-PSS) key with E_KEY_WEAK, in a CSR and as a signer or leaf key; rsaEncryption keys are accepted", () => {
    const pssKey = scratch.file("pss.key", openssl(["genpkey", "-algorithm", "RSA-PSS", "-pkeyopt", "rsa_keygen_bits:2048"]));
    const pem = openssl(["req", "-new", "-key", pssKey, "-subj", "/CN=pss"]);
    // Control: a well-formed CSR whose proof of possession verifies, with the PSS key algorithm.
    expect(opensslResult(["req", "-in", scratch.file("pss.csr", pem), "-verify", "-noout"]).output).toMatch(/verify OK/);
    expect(openssl(["req", "-text", "-noout"], pem)).toMatch(/Public Key Algorithm: rsassaPss/);
    expect(expectCode(() => parseCsr(pem), "E_KEY_WEAK")).toMatch(/key RSA-PSS is not accepted/);
    const privateKey = createPrivateKey(readFileSync(pssKey));
    expect(privateKey.asymmetricKeyType).toBe("rsa-pss");
    expect(expectCode(() => assertAcceptableKey(createPublicKey(privateKey)), "E_KEY_WEAK")).toMatch(/RSA-PSS 2048/);
    expect(expectCode(() => signingAlgorithmFor(privateKey), "E_KEY_WEAK")).toMatch(/RSA-PSS 2048/);
    expect(parseCsr(opensslCsr(["-newkey", "rsa:2048", "-sigopt", "rsa_padding_mode:pss"])).publicKey.asymmetricKeyType).toBe("rsa");
  });

  it("refuses an RSA key with an even or an over-large public exponent (Go: e > 2^31-1), and a signer or leaf key alike", () => {
    for (const [e, label] of [[4n, /public exponent 4/], [2n ** 31n + 1n, /public exponent 2147483649/]] as const) {
      const n = generateKeyPair("rsa-2048").publicKey.export({ format: "jwk" }).n as string;
      const key = createPublicKey({ key: { kty: "RSA", n, e: bytesOf(e).toString("base64url") }, format: "jwk" });
      expect(expectCode(() => assertAcceptableKey(key), "E_KEY_WEAK")).toMatch(label);
    }
    expect(() => assertAcceptableKey(generateKeyPair("rsa-2048").publicKey)).not.toThrow();
  });
});

/**
 * Ed25519 public keys of small order (RFC 8032 §5.1.7 checks the cofactored or cofactorless
 * equation [S]B = R + [k]A; with A in the torsion subgroup, S = 0 and R = -[k]A satisfy it): a
 * "signature" that needs no private key, accepted by OpenSSL 3.0 (Node 20, Debian's openssl, and
 * every TLS peer on them; newer OpenSSL refuses small-order keys when verifying) and Go's
 * crypto/ed25519. The eight torsion points are found here from the curve itself: [L]P
 * for a point P on the curve is in the torsion subgroup; one of order 8 generates all eight.
 */
describe("Ed25519 keys of small order", () => {
  const p = 2n ** 255n - 19n;
  const L = 2n ** 252n + 27742317777372353535851937790883648493n;
  const mod = (a: bigint) => ((a % p) + p) % p;
  const pow = (base: bigint, exponent: bigint) => {
    let result = 1n;
    for (let b = mod(base), e = exponent; e > 0n; e >>= 1n, b = (b * b) % p) if (e & 1n) result = (result * b) % p;
    return result;
  };
  const inv = (a: bigint) => pow(a, p - 2n);
  const d = mod(-121665n * inv(121666n));
  type Point = readonly [bigint, bigint];
  const add = ([x1, y1]: Point, [x2, y2]: Point): Point => {
    const t = mod(d * x1 * x2 * y1 * y2);
    return [mod((x1 * y2 + y1 * x2) * inv(1n + t)), mod((y1 * y2 + x1 * x2) * inv(1n - t))];
  };
  const times = (k: bigint, point: Point): Point => {
    let result: Point = [0n, 1n];
    for (let q = point, n = k; n > 0n; n >>= 1n, q = add(q, q)) if (n & 1n) result = add(result, q);
    return result;
  };
  const sqrt = (a: bigint) => {
    let x = pow(a, (p + 3n) / 8n);
    if (mod(x * x - a) !== 0n) x = mod(x * pow(2n, (p - 1n) / 4n));
    return mod(x * x - a) === 0n ? x : undefined;
  };
  /** RFC 8032 §5.1.2: y little-endian, the sign of x in the top bit; y may be given >= p (non-canonical). */
  const encode = (y: bigint, sign: number) => {
    const bytes = Buffer.alloc(32);
    for (let i = 0, v = y; i < 32; i++, v >>= 8n) bytes[i] = Number(v & 0xffn);
    bytes[31]! |= sign << 7;
    return bytes;
  };
  let generator: Point | undefined;
  for (let y = 2n; generator === undefined; y++) {
    const x = sqrt(mod((y * y - 1n) * inv(d * y * y + 1n)));
    if (x === undefined) continue;
    const t = times(L, [x, y]);
    if (times(4n, t)[1] !== 1n) generator = t; // order 8
  }
  const torsion = Array.from({ length: 8 }, (_, k) => times(BigInt(k), generator!));
  // Every encoding that decodes to one of them: both sign bits (x = 0 with the sign bit set is
  // invalid per RFC 8032 but OpenSSL reads it), and y + p where that still fits (y = 0 and y = 1).
  const encodings = new Map<string, Buffer>();
  for (const [, y] of torsion) {
    for (const value of y < 19n ? [y, y + p] : [y]) for (const sign of [0, 1]) encodings.set(encode(value, sign).toString("hex"), encode(value, sign));
  }
  const canonicalR = torsion.map(([x, y]) => encode(y, Number(x & 1n)));

  /** RFC 8032 §5.1.3 decoding, as OpenSSL reads a key: y without the top bit, reduced mod p; x from the curve, its sign from that bit (x = 0 stays 0). */
  const decode = (encoded: Buffer): Point => {
    let y = 0n;
    for (let i = 31; i >= 0; i--) y = (y << 8n) | BigInt(i === 31 ? encoded[i]! & 0x7f : encoded[i]!);
    y = mod(y);
    let x = sqrt(mod((y * y - 1n) * inv(d * y * y + 1n)))!;
    if (x !== 0n && Number(x & 1n) !== encoded[31]! >> 7) x = p - x;
    return [x, y];
  };
  const littleEndian = (bytes: Buffer) => {
    let value = 0n;
    for (let i = bytes.length - 1; i >= 0; i--) value = (value << 8n) | BigInt(bytes[i]!);
    return value;
  };
  /** RFC 8032 §5.1.7 with S = 0: the signature (R, 0) of `message` verifies when R + [k]A is the identity. */
  const verifiesWithoutKey = (r: Buffer, publicKey: Buffer, message: Buffer) => {
    const k = littleEndian(createHash("sha512").update(r).update(publicKey).update(message).digest()) % L;
    const [x, y] = add(decode(r), times(k, decode(publicKey)));
    return x === 0n && y === 1n;
  };

  /**
   * A CSR for public key A "signed" with (R, 0) for some small-order R: no private key involved.
   * The forgery is checked by the curve arithmetic above, not by node:crypto: OpenSSL 3.0 (Node 20,
   * Debian's openssl) accepts such a signature, newer OpenSSL releases (Node 26 bundles 3.5) refuse
   * small-order keys when verifying, and meshward must refuse them whatever its Node verifies.
   */
  function forgedCsr(publicKey: Buffer): Buffer | undefined {
    const spki = der.sequence(der.sequence(der.oid(OID.ed25519)), der.bitString(publicKey));
    for (let attempt = 0; attempt < 64; attempt++) {
      const subject = der.sequence(der.set(der.sequence(der.oid(OID.commonName), der.utf8String(`forged-${attempt}`))));
      const info = der.sequence(der.integer(0), subject, spki, der.explicit(0, Buffer.alloc(0)));
      for (const r of canonicalR) {
        if (verifiesWithoutKey(r, publicKey, info)) return der.sequence(info, der.sequence(der.oid(OID.ed25519)), der.bitString(Buffer.concat([r, Buffer.alloc(32)])));
      }
    }
    return undefined;
  }

  it("finds the 14 encodings of the 8 small-order points, and each signs a CSR with no private key (Debian's OpenSSL 3.0 verifies it)", () => {
    expect(new Set(torsion.map(([x, y]) => `${x},${y}`)).size).toBe(8);
    expect(encodings.size).toBe(14);
    expect(encodings.has(`01${"00".repeat(31)}`)).toBe(true); // the identity
    for (const [hex, encoded] of encodings) expect(forgedCsr(encoded), hex).toBeDefined();
    const identity = forgedCsr(encodings.get(`01${"00".repeat(31)}`)!)!;
    expect(opensslResult(["req", "-in", scratch.file("ed-forged.csr", toPem(identity, "CERTIFICATE REQUEST")), "-verify", "-noout"]).output).toMatch(/verify OK/);
  });

  it("refuses each with E_KEY_WEAK, in a CSR and as a leaf or signer key; real Ed25519 keys are accepted", () => {
    for (const [hex, encoded] of encodings) {
      expect(expectCode(() => parseCsr(forgedCsr(encoded)!), "E_KEY_WEAK"), hex).toMatch(/Ed25519 with a small-order public key/);
      const key = createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: encoded.toString("base64url") }, format: "jwk" });
      expect(expectCode(() => assertAcceptableKey(key), "E_KEY_WEAK"), hex).toMatch(/small-order/);
    }
    for (let i = 0; i < 20; i++) expect(() => assertAcceptableKey(generateKeyPair("ed25519").publicKey)).not.toThrow();
    const signer = generateKeyPair("ed25519");
    expect(() => signingAlgorithmFor(signer.privateKey)).not.toThrow();
    expect(parseCsr(opensslCsr(["-newkey", "ed25519"])).publicKey.asymmetricKeyType).toBe("ed25519");
  });
});

/**
 * PKCS#10 (RFC 2986 §4.1) carries requested extensions in one extensionRequest attribute (PKCS#9,
 * RFC 2985 §5.4.2: single-valued). A CSR with two must not have the second overwrite what the
 * first asked for: parseCsr once kept only the last one's SAN and basicConstraints, so CA:TRUE or a
 * DNS name in the first slipped past the CA's checks unseen (never into the leaf, but silently).
 */
describe("parseCsr reads one extensionRequest", () => {
  const keys = generateKeyPair();
  const extensionRequest = (...extensions: Buffer[]) => der.sequence(der.oid(OID.extensionRequest), der.set(der.sequence(...extensions)));
  const basicConstraintsCa = der.sequence(der.oid(OID.basicConstraints), der.boolean(true), der.octetString(der.sequence(der.boolean(true))));
  const san = (dns: string) => der.sequence(der.oid(OID.subjectAltName), der.octetString(der.sequence(der.implicit(2, Buffer.from(dns, "latin1")))));
  const csrWith = (...attributes: Buffer[]) => {
    const info = der.sequence(der.integer(0), der.sequence(), spkiOf(keys.publicKey), der.explicit(0, Buffer.concat(attributes)));
    const algorithm = signingAlgorithmFor(keys.privateKey);
    return der.sequence(info, algorithm.algorithmIdentifier, der.bitString(algorithm.sign(info)));
  };

  it("refuses two extensionRequest attributes with E_CSR_INVALID; one holding the same extensions is read whole", () => {
    const twice = csrWith(extensionRequest(basicConstraintsCa, san("admin.internal")), extensionRequest(san("app.example.org")));
    expect(opensslResult(["req", "-in", scratch.file("twice.csr", toPem(twice, "CERTIFICATE REQUEST")), "-verify", "-noout"]).output).toMatch(/verify OK/);
    expect(expectCode(() => parseCsr(twice), "E_CSR_INVALID")).toMatch(/extensionRequest/);
    const once = parseCsr(csrWith(extensionRequest(basicConstraintsCa, san("admin.internal"))));
    expect(once.requestsCa).toBe(true);
    expect(once.dnsNames).toEqual(["admin.internal"]);
  });

  // Review ca-api HIGH-1: a CSR is parsed before attestation (no token needed), and a 62 KB OID
  // cost the signing worker ~0.25 s (quadratic). Each place a CSR carries an OID refuses it unread.
  it("refuses a 40 KB OID as an attribute type, an extension id, a subject attribute type or the key algorithm with E_CSR_INVALID", () => {
    const hugeOid = der.tlv(der.TAG.OID, Buffer.concat([Buffer.from([0x2a]), Buffer.alloc(40_000, 0xff), Buffer.from([0x7f])]));
    const signed = (info: Buffer) => {
      const algorithm = signingAlgorithmFor(keys.privateKey);
      return der.sequence(info, algorithm.algorithmIdentifier, der.bitString(algorithm.sign(info)));
    };
    const attribute = csrWith(der.sequence(hugeOid, der.set(der.NULL)));
    const extension = csrWith(extensionRequest(der.sequence(hugeOid, der.octetString(der.NULL))));
    const subject = signed(der.sequence(der.integer(0), der.sequence(der.set(der.sequence(hugeOid, der.utf8String("x")))), spkiOf(keys.publicKey), der.explicit(0, Buffer.alloc(0))));
    const spki = signed(der.sequence(der.integer(0), der.sequence(), der.sequence(der.sequence(hugeOid), der.bitString(Buffer.alloc(65, 4))), der.explicit(0, Buffer.alloc(0))));
    for (const csr of [attribute, extension, subject, spki]) {
      expect(expectCode(() => parseCsr(csr), "E_CSR_INVALID")).toMatch(/OID too long \(40002 bytes; at most 128 are read\)/);
    }
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
