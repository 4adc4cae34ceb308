import type { KeyObject } from "node:crypto";
import { MeshwardError } from "../errors.ts";

export type KeyAlgorithm = "ec-p256" | "ec-p384" | "rsa-2048" | "rsa-3072" | "rsa-4096";

export interface KeyPair {
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
}

export interface KeyDescription {
  readonly type: "ec" | "rsa" | "other";
  readonly curve?: "P-256" | "P-384" | "P-521";
  readonly bits?: number;
  /** For people: "ECDSA P-256", "RSA 2048". */
  readonly label: string;
}

/** Synchronous (node:crypto); ECDSA P-256 by default. */
export function generateKeyPair(algorithm: KeyAlgorithm = "ec-p256"): KeyPair {
  void algorithm;
  throw new MeshwardError("E_NOT_IMPLEMENTED", "generateKeyPair");
}

/** PKCS#8 PEM; encrypted (PBES2, AES-256-CBC) when a passphrase is given. */
export function encodePrivateKey(key: KeyObject, passphrase?: string): string {
  void key; void passphrase;
  throw new MeshwardError("E_NOT_IMPLEMENTED", "encodePrivateKey");
}

/**
 * Parses a PKCS#8 / SEC1 / PKCS#1 private key PEM. Errors: E_KEY_INVALID,
 * E_KEY_PASSPHRASE_REQUIRED (encrypted, none given), E_KEY_PASSPHRASE_WRONG.
 * Messages never contain key material.
 */
export function decodePrivateKey(pem: string, passphrase?: string): KeyObject {
  void pem; void passphrase;
  throw new MeshwardError("E_NOT_IMPLEMENTED", "decodePrivateKey");
}

export function isEncryptedPrivateKeyPem(pem: string): boolean {
  void pem;
  throw new MeshwardError("E_NOT_IMPLEMENTED", "isEncryptedPrivateKeyPem");
}

export function describePublicKey(key: KeyObject): KeyDescription {
  void key;
  throw new MeshwardError("E_NOT_IMPLEMENTED", "describePublicKey");
}

/** ECDSA P-256/P-384 or RSA >= 2048 bits; anything else throws E_KEY_WEAK naming what was found. */
export function assertAcceptableKey(key: KeyObject): void {
  void key;
  throw new MeshwardError("E_NOT_IMPLEMENTED", "assertAcceptableKey");
}

/** True when the private key belongs to the public key (sign/verify round trip). */
export function keysMatch(privateKey: KeyObject, publicKey: KeyObject): boolean {
  void privateKey; void publicKey;
  throw new MeshwardError("E_NOT_IMPLEMENTED", "keysMatch");
}
