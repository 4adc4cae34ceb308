import type { KeyObject, X509Certificate } from "node:crypto";
import { MeshwardError } from "../errors.ts";
import * as der from "./der.ts";
import { keysMatch } from "./keys.ts";
import { OID } from "./oids.ts";
import { signingAlgorithmFor } from "./signature.ts";
import type { SigningAlgorithm } from "./signature.ts";
import { keyIdentifier, parseCertificateParts, readBasicConstraints, readSubjectKeyId } from "./x509der.ts";

/** A CA certificate with its private key, able to sign. */
export interface Signer {
  readonly certificate: X509Certificate;
  readonly der: Buffer;
  readonly privateKey: KeyObject;
}

export interface SignerContext {
  readonly subject: Buffer;
  readonly keyId: Buffer;
  readonly algorithm: SigningAlgorithm;
  readonly authorityKeyIdExtension: Buffer;
}

const signerContexts = new WeakMap<Signer, SignerContext>();

/** Parses the signer once: subject DER (copied verbatim as the issuer), SKI, signing algorithm. */
export function signerContext(signer: Signer): SignerContext {
  const cached = signerContexts.get(signer);
  if (cached !== undefined) return cached;
  let parts;
  try {
    parts = parseCertificateParts(signer.der);
  } catch (error) {
    throw new MeshwardError("E_CERT_INVALID", "the signer's certificate DER could not be parsed", { cause: error });
  }
  const basic = parts.extensions.get(OID.basicConstraints);
  if (basic === undefined || !readBasicConstraints(basic.value).ca) {
    throw new MeshwardError("E_SIGNER_NOT_CA", "the signer's certificate is not a CA certificate (basicConstraints CA:TRUE)");
  }
  if (!keysMatch(signer.privateKey, signer.certificate.publicKey)) {
    throw new MeshwardError("E_KEY_MISMATCH", "the signer's private key does not belong to its certificate");
  }
  const ski = parts.extensions.get(OID.subjectKeyIdentifier);
  const keyId = ski === undefined ? keyIdentifier(parts.spki) : readSubjectKeyId(ski.value);
  const context: SignerContext = {
    subject: parts.subject,
    keyId,
    algorithm: signingAlgorithmFor(signer.privateKey),
    authorityKeyIdExtension: der.sequence(der.oid(OID.authorityKeyIdentifier), der.octetString(der.sequence(der.implicit(0, keyId)))),
  };
  signerContexts.set(signer, context);
  return context;
}

