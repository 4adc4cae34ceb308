import type { KeyObject, X509Certificate } from "node:crypto";
import { isMeshwardError, MeshwardError } from "../errors.ts";
import { issueLeafCertificate } from "../pki/certificate.ts";
import { verifyChain } from "../pki/chain.ts";
import { generateKeyPair } from "../pki/keys.ts";
import { signerContext } from "../pki/signer.ts";

/**
 * What `ca serve` does with an issuer, done once at import so that an import never succeeds
 * only for the server to refuse it later: the signer context (CA flag, key match, a key that
 * can sign: ECDSA P-256/P-384, Ed25519, RSA >= 2048), then a trial leaf, signed as the CA
 * signs and verified up to the root (key usage, path length, validity). E_IMPORT_INVALID.
 */
export function assertIssuerUsable(options: { issuerChain: readonly X509Certificate[]; issuerKey: KeyObject; roots: readonly X509Certificate[]; now: Date; what: string; trustDomain: string }): void {
  const [issuer, ...intermediates] = options.issuerChain;
  if (issuer === undefined) throw new MeshwardError("E_IMPORT_INVALID", `${options.what} holds no certificate`);
  try {
    const signer = { certificate: issuer, der: issuer.raw, privateKey: options.issuerKey };
    signerContext(signer);
    const trial = issueLeafCertificate({
      // A workload ID of the CA's own trust domain, as the CA issues: an issuer (or root) whose
      // nameConstraints permit only that trust domain's URIs passes, one that excludes it does not.
      spiffeId: `spiffe://${options.trustDomain}/ns/import-check/trial`,
      publicKey: generateKeyPair().publicKey,
      signer,
      notBefore: options.now,
      notAfter: new Date(Math.min(options.now.getTime() + 60_000, new Date(issuer.validTo).getTime())),
    });
    verifyChain({ leaf: trial.der, intermediates: [issuer, ...intermediates], roots: options.roots, at: options.now });
  } catch (error) {
    if (!isMeshwardError(error)) throw error;
    throw new MeshwardError("E_IMPORT_INVALID", `${options.what} cannot sign as 'meshward ca serve' needs (${error.code}): ${error.message}`, { cause: error, details: { check: error.code } });
  }
}
