/**
 * The one place that loads @peculiar/x509, lazily: only the rare async paths (CA certificates,
 * CSR creation) need it, and loading it costs a noticeable part of CLI start-up. tsyringe (its
 * DI container) needs the reflect-metadata polyfill first; the library must use Node's WebCrypto.
 */
import type * as X509 from "@peculiar/x509";
import { webcrypto } from "node:crypto";
import type { KeyObject } from "node:crypto";
import { MeshwardError } from "../errors.ts";
import { describePublicKey } from "./keys.ts";

export type X509Module = typeof X509;

let loading: Promise<X509Module> | undefined;

export function loadX509(): Promise<X509Module> {
  loading ??= (async () => {
    await import("reflect-metadata");
    const loaded = (await import("@peculiar/x509")) as unknown as Partial<X509Module> & { default?: X509Module };
    // Node gives the CommonJS build's exports as named exports; a bundle (dist/bundle) as `default`.
    const x509 = (loaded.cryptoProvider !== undefined ? loaded : loaded.default!) as X509Module;
    x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);
    return x509;
  })();
  return loading;
}

type WebCryptoKey = webcrypto.CryptoKey;

/** WebCrypto import/sign parameters for a node key (ECDSA P-256/P-384, RSA PKCS#1 v1.5). */
export function webCryptoAlgorithms(key: KeyObject): { importAlgorithm: webcrypto.EcKeyImportParams | webcrypto.RsaHashedImportParams | webcrypto.Algorithm; signingAlgorithm: webcrypto.EcdsaParams | webcrypto.Algorithm } {
  const description = describePublicKey(key);
  if (description.type === "ed25519") return { importAlgorithm: { name: "Ed25519" }, signingAlgorithm: { name: "Ed25519" } };
  if (description.type === "ec" && (description.curve === "P-256" || description.curve === "P-384")) {
    return {
      importAlgorithm: { name: "ECDSA", namedCurve: description.curve },
      signingAlgorithm: { name: "ECDSA", hash: description.curve === "P-384" ? "SHA-384" : "SHA-256" },
    };
  }
  if (key.asymmetricKeyType === "rsa") {
    return {
      importAlgorithm: { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" },
      signingAlgorithm: { name: "RSASSA-PKCS1-v1_5" },
    };
  }
  throw new MeshwardError("E_KEY_UNSUPPORTED", `a ${description.label} key is not supported here; use ECDSA P-256, P-384, Ed25519 or RSA`);
}

export async function toWebCryptoPrivateKey(key: KeyObject): Promise<WebCryptoKey> {
  const { importAlgorithm } = webCryptoAlgorithms(key);
  return webcrypto.subtle.importKey("pkcs8", key.export({ type: "pkcs8", format: "der" }), importAlgorithm, false, ["sign"]);
}

export async function toWebCryptoPublicKey(key: KeyObject): Promise<WebCryptoKey> {
  const { importAlgorithm } = webCryptoAlgorithms(key);
  return webcrypto.subtle.importKey("spki", key.export({ type: "spki", format: "der" }), importAlgorithm, true, ["verify"]);
}
