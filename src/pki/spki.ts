/**
 * SubjectPublicKeyInfo → KeyObject on the hot path. On Node 20 / OpenSSL 3.0, importing a key
 * from SPKI DER costs ~170 µs (decoder framework), exporting it back ~160 µs; a P-256 or RSA
 * key imported as JWK is several times cheaper (P-384 is the opposite: its JWK import runs a
 * slow full key check). OpenSSL 3.5 turned that around for P-256: DER 14 µs, JWK 18 µs, and
 * the verify with the DER-imported key is faster too (measured on Node 26.12 / OpenSSL 3.5.9;
 * the Node 22 and 24 releases that ship OpenSSL 3.5 take the same path, not measured), so there
 * P-256 comes in as DER.
 * The SPKI bytes are remembered per KeyObject so that the leaf builder does not have to export
 * them again.
 */
import { createPublicKey } from "node:crypto";
import type { JsonWebKey, KeyObject } from "node:crypto";
import { children, DerError, expectTag, readBitString, readOid, readUnsignedInteger, readWhole, TAG } from "./der.ts";
import { rememberAcceptableKey } from "./keys.ts";
import { OID } from "./oids.ts";

const P256 = "1.2.840.10045.3.1.7";
const P384 = "1.3.132.0.34";

const KEY_ALGORITHM_LABELS: Record<string, string> = {
  "1.3.101.112": "Ed25519",
  "1.3.101.113": "Ed448",
  "1.2.840.10040.4.1": "DSA",
  "1.2.840.113549.1.1.10": "RSA-PSS",
};
const CURVE_LABELS: Record<string, string> = {
  "1.2.840.10045.3.1.1": "P-192",
  "1.3.132.0.33": "P-224",
  "1.3.132.0.10": "secp256k1",
  "1.3.132.0.35": "P-521",
};

/**
 * What an SPKI claims to hold, read without importing it: `acceptable` is true for
 * ECDSA P-256/P-384, Ed25519 and RSA (size is checked after import). For error messages and triage.
 */
export function spkiAlgorithm(spki: Buffer): { acceptable: boolean; label: string } {
  try {
    const [algorithm] = children(spki, readWhole(spki, TAG.SEQUENCE));
    const [algOid, params] = children(spki, expectTag(algorithm, TAG.SEQUENCE, "key algorithm"));
    const keyType = readOid(spki, algOid, "key algorithm");
    if (keyType === OID.rsaEncryption) return { acceptable: true, label: "RSA" };
    if (keyType === OID.ed25519) return { acceptable: true, label: "Ed25519" };
    if (keyType === OID.ecPublicKey) {
      const curve = params?.tag === TAG.OID ? readOid(spki, params, "curve") : "explicit parameters";
      if (curve === P256 || curve === P384) return { acceptable: true, label: `ECDSA ${curve === P256 ? "P-256" : "P-384"}` };
      return { acceptable: false, label: `EC ${CURVE_LABELS[curve] ?? curve}` };
    }
    return { acceptable: false, label: KEY_ALGORITHM_LABELS[keyType] ?? `key algorithm ${keyType}` };
  } catch {
    return { acceptable: false, label: "unreadable key" };
  }
}

/** A well-formed SPKI holding a key meshward does not accept (the caller says E_KEY_WEAK, naming spkiAlgorithm's label). */
export class UnacceptableKey extends Error {
  override readonly name = "UnacceptableKey";
}

/** Canonical P-256 SPKI header: SEQ { SEQ { ecPublicKey, prime256v1 }, BIT STRING (66 bytes) 00 04 ... }. */
const P256_PREFIX = Buffer.from("3059301306072a8648ce3d020106082a8648ce3d030107034200", "hex");

const spkiByKey = new WeakMap<KeyObject, Buffer>();

/** OpenSSL 3.5 or later: its SPKI decoder beats the JWK path for P-256. */
export function derImportIsFast(openssl: string = process.versions.openssl ?? ""): boolean {
  const [major = 0, minor = 0] = openssl.split(".").map((part) => Number.parseInt(part, 10));
  return major > 3 || (major === 3 && minor >= 5);
}
const P256_FROM_DER = derImportIsFast();

/** SPKI DER of a public key: the bytes it was imported from when known, else node's export. */
export function spkiOf(publicKey: KeyObject): Buffer {
  return spkiByKey.get(publicKey) ?? publicKey.export({ type: "spki", format: "der" });
}

/** SEQ { SEQ { ecPublicKey, prime256v1 }, BIT STRING 00 04 X Y }, byte for byte: what every P-256 CSR carries. */
function isCanonicalP256(spki: Buffer): boolean {
  return spki.length === P256_PREFIX.length + 65 && spki[P256_PREFIX.length] === 4 && spki.compare(P256_PREFIX, 0, P256_PREFIX.length, 0, P256_PREFIX.length) === 0;
}

/** The hot path of every CSR: no DER walk, and the key is known to be P-256 without asking node:crypto. */
function importCanonicalP256(spki: Buffer): KeyObject {
  const key = importP256(spki, spki.subarray(P256_PREFIX.length));
  spkiByKey.set(key, Buffer.from(spki));
  rememberAcceptableKey(key);
  return key;
}

/** `point` is the uncompressed point (04 X Y); OpenSSL checks that it lies on the curve. */
function importP256(spki: Buffer, point: Buffer): KeyObject {
  if (P256_FROM_DER) return createPublicKey({ key: spki, format: "der", type: "spki" });
  const jwk: JsonWebKey = { kty: "EC", crv: "P-256", x: point.subarray(1, 33).toString("base64url"), y: point.subarray(33).toString("base64url") };
  return createPublicKey({ key: jwk, format: "jwk" });
}

/** Imports a public key from SPKI DER. Throws DerError when the structure is broken, UnacceptableKey for a form never accepted, or node's error when the key is. */
export function importSpki(spki: Buffer): KeyObject {
  if (isCanonicalP256(spki)) return importCanonicalP256(spki);
  const seq = readWhole(spki, TAG.SEQUENCE);
  const [algorithm, keyBits] = children(spki, seq);
  const [algOid, params] = children(spki, expectTag(algorithm, TAG.SEQUENCE, "key algorithm"));
  const keyType = readOid(spki, algOid, "key algorithm");
  const { bytes, unusedBits } = readBitString(spki, keyBits, "subjectPublicKey");
  if (unusedBits !== 0) throw new DerError("subjectPublicKey has unused bits");
  // id-RSASSA-PSS (RFC 4055 §1.2): node imports it as an "rsa-pss" key, but Go's crypto/x509 (Dapr,
  // SPIRE) cannot parse a certificate carrying one, so a leaf with it would be refused by every Go peer.
  if (keyType === OID.rsaPss) throw new UnacceptableKey("RSA-PSS (id-RSASSA-PSS) key; use an rsaEncryption RSA key");
  if (keyType === OID.ecPublicKey) {
    // RFC 5480 §2.1.1: namedCurve only (specifiedCurve MUST NOT be used); Go's crypto/x509 refuses
    // anything else, so a leaf carrying it would be refused by every Go peer (Dapr, SPIRE).
    if (params?.tag !== TAG.OID) throw new UnacceptableKey("EC key with explicit parameters instead of a named curve (RFC 5480 §2.1.1)");
    // RFC 5480 §2.2: uncompressed is the form every peer reads (Go's x509 reads no other).
    if (bytes[0] !== 4) throw new DerError("compressed EC points are not accepted; use the uncompressed form (RFC 5480 §2.2)");
  }
  let key: KeyObject;
  if (keyType === OID.ecPublicKey && params?.tag === TAG.OID && readOid(spki, params, "curve") === P256 && bytes.length === 65 && bytes[0] === 4) {
    key = importP256(spki, bytes);
  } else if (keyType === OID.rsaEncryption) {
    const rsa = readWhole(bytes, TAG.SEQUENCE);
    const [n, e] = children(bytes, rsa);
    const jwk: JsonWebKey = {
      kty: "RSA",
      n: readUnsignedInteger(bytes, n, "modulus").toString("base64url"),
      e: readUnsignedInteger(bytes, e, "exponent").toString("base64url"),
    };
    key = createPublicKey({ key: jwk, format: "jwk" });
  } else {
    key = createPublicKey({ key: spki, format: "der", type: "spki" });
  }
  return key;
}

