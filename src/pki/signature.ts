import { constants, sign, verify } from "node:crypto";
import type { KeyObject } from "node:crypto";
import { MeshwardError } from "../errors.ts";
import { assertAcceptableKey, describePublicKey } from "./keys.ts";
import { children, content, DerError, NULL, oid, readBigInt, readOid, readTlv, sequence, TAG } from "./der.ts";
import type { Tlv } from "./der.ts";
import { OID } from "./oids.ts";

/** How a signer key signs: the AlgorithmIdentifier DER that goes into TBS and the sync signing function. */
export interface SigningAlgorithm {
  readonly algorithmIdentifier: Buffer;
  readonly name: string;
  sign(data: Uint8Array): Buffer;
}

/** ecdsa-with-SHA256 for P-256, ecdsa-with-SHA384 for P-384, sha256WithRSAEncryption for RSA. */
export function signingAlgorithmFor(privateKey: KeyObject): SigningAlgorithm {
  if (privateKey.type !== "private") throw new MeshwardError("E_KEY_INVALID", "the signer needs a private key");
  assertAcceptableKey(privateKey);
  const description = describePublicKey(privateKey);
  if (privateKey.asymmetricKeyType === "ec") {
    const hash = description.curve === "P-384" ? "sha384" : "sha256";
    const algorithmIdentifier = sequence(oid(hash === "sha384" ? OID.ecdsaWithSha384 : OID.ecdsaWithSha256));
    // DER (what X.509 wants) is node's default ECDSA encoding. The KeyObject is passed bare: Node
    // 24 takes ~25 µs longer per call when it comes wrapped in an options object (measured on
    // 24.21: 34.2k signs/s bare, 18.8k wrapped; 20, 22 and 26 show no difference).
    return { algorithmIdentifier, name: `ecdsa-with-${hash.toUpperCase()}`, sign: (data) => sign(hash, data, privateKey) };
  }
  if (privateKey.asymmetricKeyType === "ed25519") {
    // RFC 8410 §3: the AlgorithmIdentifier has no parameters; the signature is over the message itself.
    return { algorithmIdentifier: ED25519_ALGORITHM, name: "Ed25519", sign: (data) => sign(null, data, privateKey) };
  }
  if (privateKey.asymmetricKeyType === "rsa") {
    const algorithmIdentifier = sequence(oid(OID.sha256WithRsa), NULL);
    return { algorithmIdentifier, name: "sha256WithRSAEncryption", sign: (data) => sign("sha256", data, privateKey) };
  }
  throw new MeshwardError("E_KEY_UNSUPPORTED", `a ${description.label} key cannot sign certificates here; use ECDSA P-256, P-384, Ed25519 or RSA`);
}

const ED25519_ALGORITHM = sequence(oid(OID.ed25519));

/** Signature algorithm we cannot (or will not) verify, e.g. SHA-1 based. */
export class UnsupportedSignatureAlgorithm extends Error {
  override readonly name = "UnsupportedSignatureAlgorithm";
}

const ECDSA_HASH: Record<string, string> = {
  [OID.ecdsaWithSha256]: "sha256",
  [OID.ecdsaWithSha384]: "sha384",
  [OID.ecdsaWithSha512]: "sha512",
};
const RSA_HASH: Record<string, string> = {
  [OID.sha256WithRsa]: "sha256",
  [OID.sha384WithRsa]: "sha384",
  [OID.sha512WithRsa]: "sha512",
};
const DIGEST_HASH: Record<string, string> = {
  [OID.sha256]: "sha256",
  [OID.sha384]: "sha384",
  [OID.sha512]: "sha512",
};

interface PssParams {
  readonly hash: string;
  readonly saltLength: number;
}

function readPssParams(buf: Uint8Array, params: Tlv | undefined): PssParams {
  if (params === undefined || params.tag !== TAG.SEQUENCE) throw new UnsupportedSignatureAlgorithm("RSA-PSS without parameters (SHA-1) is not accepted");
  let hash = "sha1";
  let mgfHash = "sha1";
  let saltLength = 20;
  for (const field of children(buf, params)) {
    const inner = readTlv(buf, field.contentStart, field.end);
    if (field.tag === 0xa0) {
      hash = DIGEST_HASH[readOid(buf, children(buf, inner)[0], "PSS hash")] ?? "unsupported";
    } else if (field.tag === 0xa1) {
      const [mgfOid, mgfParams] = children(buf, inner);
      if (readOid(buf, mgfOid, "PSS MGF") !== OID.mgf1 || mgfParams === undefined) throw new UnsupportedSignatureAlgorithm("RSA-PSS with an MGF other than MGF1");
      mgfHash = DIGEST_HASH[readOid(buf, children(buf, mgfParams)[0], "MGF1 hash")] ?? "unsupported";
    } else if (field.tag === 0xa2) {
      saltLength = Number(readBigInt(buf, inner, "PSS salt length"));
    } else if (field.tag === 0xa3) {
      if (readBigInt(buf, inner, "PSS trailer") !== 1n) throw new UnsupportedSignatureAlgorithm("RSA-PSS trailer field other than 1");
    }
  }
  if (hash === "sha1" || hash === "unsupported") throw new UnsupportedSignatureAlgorithm("RSA-PSS needs SHA-256, SHA-384 or SHA-512");
  if (mgfHash !== hash) throw new UnsupportedSignatureAlgorithm("RSA-PSS with an MGF1 hash different from the message hash");
  return { hash, saltLength };
}

/**
 * Verifies `signature` over `data` per the AlgorithmIdentifier element `algorithm` inside `buf`.
 * Returns false when the signature does not verify (including a key of the wrong type);
 * throws UnsupportedSignatureAlgorithm for algorithms we do not accept.
 */
export function verifySignature(buf: Uint8Array, algorithm: Tlv, publicKey: KeyObject, data: Uint8Array, signature: Uint8Array): boolean {
  const [algOid, params] = children(buf, algorithm);
  const id = readOid(buf, algOid, "signature algorithm");
  const keyType = publicKey.asymmetricKeyType;
  try {
    const ecdsaHash = ECDSA_HASH[id];
    if (ecdsaHash !== undefined) {
      if (keyType !== "ec") return false;
      return verify(ecdsaHash, data, publicKey, signature); // DER signature: node's default; bare key as in signingAlgorithmFor
    }
    const rsaHash = RSA_HASH[id];
    if (rsaHash !== undefined) {
      if (keyType !== "rsa") return false;
      if (params !== undefined && !(params.tag === TAG.NULL && content(buf, params).length === 0)) return false;
      return verify(rsaHash, data, publicKey, signature);
    }
    if (id === OID.ed25519) {
      if (params !== undefined) throw new UnsupportedSignatureAlgorithm("Ed25519 with parameters (RFC 8410 says they are absent)");
      if (keyType !== "ed25519") return false;
      return verify(null, data, publicKey, signature);
    }
    if (id === OID.rsaPss) {
      if (keyType !== "rsa" && keyType !== "rsa-pss") return false;
      const { hash, saltLength } = readPssParams(buf, params);
      return verify(hash, data, { key: publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength }, signature);
    }
  } catch (error) {
    if (error instanceof UnsupportedSignatureAlgorithm || error instanceof DerError) throw error;
    return false;
  }
  throw new UnsupportedSignatureAlgorithm(`signature algorithm ${id} is not accepted`);
}
