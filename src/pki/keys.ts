import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, sign, verify } from "node:crypto";
import type { JsonWebKey, KeyObject } from "node:crypto";
import { MeshwardError } from "../errors.ts";

export type KeyAlgorithm = "ec-p256" | "ec-p384" | "ed25519" | "rsa-2048" | "rsa-3072" | "rsa-4096";

export const KEY_ALGORITHMS: readonly KeyAlgorithm[] = ["ec-p256", "ec-p384", "ed25519", "rsa-2048", "rsa-3072", "rsa-4096"];

export interface KeyPair {
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
}

export interface KeyDescription {
  readonly type: "ec" | "rsa" | "ed25519" | "other";
  readonly curve?: "P-256" | "P-384" | "P-521";
  readonly bits?: number;
  /** For people: "ECDSA P-256", "RSA 2048". */
  readonly label: string;
}

export const MIN_RSA_BITS = 2048;
/** Go's crypto/tls verifies no larger RSA key in a handshake (defaultMaxRSAKeySize, CVE-2023-29409). */
export const MAX_RSA_BITS = 8192;

const CURVES: Record<string, "P-256" | "P-384" | "P-521"> = {
  prime256v1: "P-256",
  secp384r1: "P-384",
  secp521r1: "P-521",
};

const OTHER_CURVE_LABELS: Record<string, string> = {
  prime192v1: "P-192",
  secp224r1: "P-224",
  secp256k1: "secp256k1",
};

/**
 * Synchronous (node:crypto); ECDSA P-256 by default.
 *
 * The pair comes back as JWK and is imported again, so the KeyObjects returned share nothing with
 * Node's key-generation job. On Node 20 they would share its mutex: reading a generated key's
 * details (asymmetricKeyDetails, export) locks it and allocates, and when that allocation runs
 * the garbage collector just as it frees the finished job, the job's destructor waits for the
 * same mutex, and the process hangs for good (measured: 20,000 P-256 keys read back hung 2 runs
 * in 5; `meshward ca init` hung once in a test run). Node 26 does not hang. The round trip costs
 * ~70 µs per P-256 key.
 */
export function generateKeyPair(algorithm: KeyAlgorithm = "ec-p256"): KeyPair {
  const privateKey = createPrivateKey({ key: generatePrivateJwk(algorithm), format: "jwk" });
  return { privateKey, publicKey: createPublicKey(privateKey) };
}

function generatePrivateJwk(algorithm: KeyAlgorithm): JsonWebKey {
  const pair = (() => {
    switch (algorithm) {
      case "ec-p256":
        return generateKeyPairSync("ec", { namedCurve: "P-256", ...JWK_ENCODING });
      case "ec-p384":
        return generateKeyPairSync("ec", { namedCurve: "P-384", ...JWK_ENCODING });
      case "ed25519":
        return generateKeyPairSync("ed25519", JWK_ENCODING);
      case "rsa-2048":
      case "rsa-3072":
      case "rsa-4096":
        return generateKeyPairSync("rsa", { modulusLength: Number(algorithm.slice(4)), ...JWK_ENCODING });
      default:
        throw new MeshwardError("E_KEY_ALGORITHM", `unknown key algorithm ${JSON.stringify(algorithm)}; use ${KEY_ALGORITHMS.join(", ")}`);
    }
  })();
  // @types/node has no overload for the "jwk" encoding, which Node supports since 15.9.
  return pair.privateKey as unknown as JsonWebKey;
}

// Typed as the "der" encoding for @types/node's overloads; Node reads the format at run time.
const JWK_ENCODING = { privateKeyEncoding: { format: "jwk" }, publicKeyEncoding: { format: "jwk" } } as unknown as {
  privateKeyEncoding: { format: "der"; type: "pkcs8" };
  publicKeyEncoding: { format: "der"; type: "spki" };
};

/** The algorithm to generate a successor of this key with (rotation keeps the key type). */
export function keyAlgorithmOf(key: KeyObject): KeyAlgorithm {
  const description = describePublicKey(key);
  if (description.type === "ed25519") return "ed25519";
  if (description.type === "ec" && description.curve === "P-384") return "ec-p384";
  if (description.type === "rsa") return (description.bits ?? 0) >= 4096 ? "rsa-4096" : (description.bits ?? 0) >= 3072 ? "rsa-3072" : "rsa-2048";
  return "ec-p256";
}

/** PKCS#8 PEM; encrypted (PBES2, AES-256-CBC) when a passphrase is given. */
export function encodePrivateKey(key: KeyObject, passphrase?: string): string {
  if (key.type !== "private") throw new MeshwardError("E_KEY_INVALID", "expected a private key, got a public or secret key");
  if (passphrase === undefined) return key.export({ type: "pkcs8", format: "pem" }) as string;
  if (passphrase.length === 0) throw new MeshwardError("E_KEY_PASSPHRASE_EMPTY", "the passphrase is empty; give a non-empty passphrase or none");
  return key.export({ type: "pkcs8", format: "pem", cipher: "aes-256-cbc", passphrase }) as string;
}

export function isEncryptedPrivateKeyPem(pem: string): boolean {
  return pem.includes("-----BEGIN ENCRYPTED PRIVATE KEY-----") || /Proc-Type:\s*4,ENCRYPTED/.test(pem);
}

/**
 * Parses a PKCS#8 / SEC1 / PKCS#1 private key PEM. Errors: E_KEY_INVALID,
 * E_KEY_PASSPHRASE_REQUIRED (encrypted, none given), E_KEY_PASSPHRASE_WRONG.
 * Messages never contain key material.
 */
export function decodePrivateKey(pem: string, passphrase?: string): KeyObject {
  if (typeof pem !== "string" || !/-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----/.test(pem)) {
    throw new MeshwardError("E_KEY_INVALID", "no PRIVATE KEY PEM block found (expected PKCS#8, SEC1 or PKCS#1 PEM)");
  }
  const encrypted = isEncryptedPrivateKeyPem(pem);
  if (encrypted && (passphrase === undefined || passphrase.length === 0)) {
    throw new MeshwardError("E_KEY_PASSPHRASE_REQUIRED", "the private key is encrypted; give its passphrase");
  }
  try {
    // Node wants a passphrase argument only for encrypted keys; for a plain key it is ignored.
    return createPrivateKey(encrypted ? { key: pem, format: "pem", passphrase: passphrase as string } : { key: pem, format: "pem" });
  } catch (error) {
    // Only node's error code goes along: node's messages hold no key bytes, but we keep the cause out of logs anyway.
    const code = (error as { code?: unknown }).code;
    const details = typeof code === "string" ? { cause: code } : {};
    if (encrypted) {
      throw new MeshwardError("E_KEY_PASSPHRASE_WRONG", "the passphrase does not decrypt the private key (wrong passphrase or damaged file)", { details });
    }
    throw new MeshwardError("E_KEY_INVALID", "the private key PEM could not be decoded (damaged or unsupported key)", { details });
  }
}

export function describePublicKey(key: KeyObject): KeyDescription {
  const type = key.asymmetricKeyType;
  const details = key.asymmetricKeyDetails ?? {};
  if (type === "ec") {
    const named = details.namedCurve ?? "unknown curve";
    const curve = CURVES[named];
    if (curve !== undefined) return { type: "ec", curve, label: `ECDSA ${curve}` };
    return { type: "other", label: `EC ${OTHER_CURVE_LABELS[named] ?? named}` };
  }
  if (type === "rsa") {
    const bits = details.modulusLength ?? 0;
    const exponent = details.publicExponent;
    if (exponent !== undefined && !usableRsaExponent(exponent)) return { type: "rsa", bits, label: `RSA ${bits} with public exponent ${exponent}` };
    return { type: "rsa", bits, label: `RSA ${bits}` };
  }
  // An id-RSASSA-PSS key (RFC 4055 §1.2) is not an "rsa" key: Go's crypto/x509 (Dapr, SPIRE)
  // cannot parse a certificate carrying one, and node:crypto signs with it only with PSS padding.
  if (type === "rsa-pss") return { type: "other", bits: details.modulusLength, label: `RSA-PSS ${details.modulusLength ?? ""}`.trim() };
  if (type === "ed25519") return { type: "ed25519", label: "Ed25519" };
  if (type === "dsa") return { type: "other", bits: details.modulusLength, label: `DSA ${details.modulusLength ?? ""}`.trim() };
  const names: Record<string, string> = { ed25519: "Ed25519", ed448: "Ed448", x25519: "X25519", x448: "X448", dh: "DH" };
  return { type: "other", label: names[type ?? ""] ?? String(type ?? key.type) };
}

/**
 * An RSA public exponent a peer can use: odd, 3 to 2^31-1. With e = 1 a "signature" is the padded
 * message itself, so a CSR's proof of possession is forged without any private key; an even e is
 * never a real RSA key; Go's crypto/rsa (Dapr, SPIRE) refuses e < 2 and e > 2^31-1 (rsa.go checkPub).
 */
function usableRsaExponent(exponent: bigint): boolean {
  return exponent >= 3n && exponent <= 0x7fffffffn && exponent % 2n === 1n;
}

/** What is accepted, for error messages. */
export const ACCEPTED_KEYS = `ECDSA P-256 (recommended), ECDSA P-384 (named curve), Ed25519 or RSA (rsaEncryption, not RSA-PSS) with at least ${MIN_RSA_BITS} and at most ${MAX_RSA_BITS} bits (public exponent odd, 3 to 2^31-1)`;

/**
 * ECDSA P-256/P-384, Ed25519 (what Dapr >= 1.18 uses, per the issue this follows; not a
 * small-order point) or RSA (rsaEncryption) >= 2048 bits; anything else, RSA-PSS keys included,
 * throws E_KEY_WEAK naming what was found.
 */
export function assertAcceptableKey(key: KeyObject): void {
  // A KeyObject never changes: one found acceptable stays so (a CSR's key is checked when the
  // CSR is parsed and again when its leaf is built).
  if (acceptedKeys.has(key)) return;
  const description = describePublicKey(key);
  if (description.type === "ed25519" && isSmallOrderEd25519(ed25519PublicBytes(key))) {
    const label = "Ed25519 with a small-order public key";
    throw new MeshwardError(
      "E_KEY_WEAK",
      `key ${label} (a point of order 1, 2, 4 or 8, for which signatures verify without any private key) is not accepted; use ${ACCEPTED_KEYS}`,
      { details: { key: label } },
    );
  }
  const acceptable =
    (description.type === "ec" && (description.curve === "P-256" || description.curve === "P-384")) ||
    description.type === "ed25519" ||
    (description.type === "rsa" &&
      key.asymmetricKeyType === "rsa" &&
      (description.bits ?? 0) >= MIN_RSA_BITS &&
      (description.bits ?? 0) <= MAX_RSA_BITS &&
      usableRsaExponent(key.asymmetricKeyDetails?.publicExponent ?? 65537n));
  if (acceptable) {
    acceptedKeys.add(key);
    return;
  }
  throw new MeshwardError(
    "E_KEY_WEAK",
    `key ${description.label} is not accepted; use ${ACCEPTED_KEYS}`,
    { details: { key: description.label } },
  );
}

/**
 * The y-coordinates (little-endian, RFC 8032 §5.1.2) of the eight points of small order on
 * edwards25519 (the torsion subgroup: orders 1, 2, 4 and 8), and the non-canonical encodings
 * (y >= p) of any of them. p = 2^255 - 19, d = -121665/121666, curve -x^2 + y^2 = 1 + d x^2 y^2:
 * - order 1: (0, 1); order 2: (0, -1); order 4: (±sqrt(-1), 0);
 * - order 8: doubling one gives an order-4 point (y = 0), i.e. x^2 = -y^2, so d y^4 + 2 y^2 - 1 = 0
 *   and y^2 = (-1 + sqrt(1 + d)) / d (the other root is not a square): y = ±y8 with
 *   y8 = 2707385501144840649318225287225658788936804267575313519463743609750303402022;
 * - non-canonical: y + p fits in 255 bits only for y < 19, so p (≡ 0) and p + 1 (≡ 1).
 * The top bit of the last byte is the sign of x and is ignored in the comparison: x = 0 with the
 * sign bit set (an invalid encoding some decoders accept as x = 0) and ±x alike stay small order.
 * With such a key A, [8]A is the identity, so the verification equation holds for a signature
 * (R, S = 0) with R = -[k]A — for the identity point, R = identity and every message.
 */
const SMALL_ORDER_ED25519_Y = new Set(
  [
    "0000000000000000000000000000000000000000000000000000000000000000", // y = 0: the two points of order 4
    "0100000000000000000000000000000000000000000000000000000000000000", // y = 1: the identity (order 1)
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // y = p - 1: order 2
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05", // y = y8: two points of order 8
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a", // y = p - y8: two points of order 8
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // y = p: non-canonical 0
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // y = p + 1: non-canonical 1
  ],
);

/** The 32-byte RFC 8032 encoding of an Ed25519 key's public point (of a private key too). */
function ed25519PublicBytes(key: KeyObject): Buffer {
  const x = (key.export({ format: "jwk" }) as JsonWebKey).x;
  return Buffer.from(typeof x === "string" ? x : "", "base64url");
}

/** True for an encoding of a point of order 1, 2, 4 or 8 (see SMALL_ORDER_ED25519_Y); anything not 32 bytes counts as one. */
function isSmallOrderEd25519(encoded: Uint8Array): boolean {
  if (encoded.length !== 32) return true;
  const y = Buffer.from(encoded);
  y[31] = y[31]! & 0x7f;
  return SMALL_ORDER_ED25519_Y.has(y.toString("hex"));
}

const acceptedKeys = new WeakSet<KeyObject>();

/**
 * Records a key as acceptable without reading its details back from node:crypto (~2.4 µs per
 * key on Node 26, once per CSR). Only for a key the caller imported itself from bytes that name
 * an accepted algorithm and size: importSpki's canonical P-256 SubjectPublicKeyInfo.
 */
export function rememberAcceptableKey(key: KeyObject): void {
  acceptedKeys.add(key);
}

/** True when the private key belongs to the public key (sign/verify round trip). */
export function keysMatch(privateKey: KeyObject, publicKey: KeyObject): boolean {
  try {
    const publicOnly = publicKey.type === "private" ? createPublicKey(publicKey) : publicKey;
    if (privateKey.type !== "private" || publicOnly.type !== "public") return false;
    if (privateKey.asymmetricKeyType !== publicOnly.asymmetricKeyType) return false;
    const challenge = randomBytes(32);
    const digest = privateKey.asymmetricKeyType === "ed25519" || privateKey.asymmetricKeyType === "ed448" ? null : "sha256";
    const signature = sign(digest, challenge, privateKey);
    return verify(digest, challenge, publicOnly, signature);
  } catch {
    return false;
  }
}
