import type { KeyObject } from "node:crypto";
import { MeshwardError } from "../errors.ts";
import { verifyChain } from "../pki/chain.ts";
import { inspectCertificate, toX509, type CertificateInfo } from "../pki/inspect.ts";
import { keysMatch } from "../pki/keys.ts";
import { certificatesFromPem } from "../pki/pem.ts";
import { parseSpiffeId } from "../spiffe/id.ts";

export interface SignedSvidCheck {
  /** The chain the CA returned, leaf first (PEM). */
  readonly certChainPem: string;
  /** The roots the CA returned with it (PEM). */
  readonly rootsPem: string;
  /** The key this workload generated for its CSR: the leaf must carry its public half. */
  readonly privateKey: KeyObject;
  readonly trustDomain: string;
  /** The SPIFFE ID this workload is, when known (configured, or its current certificate's). */
  readonly expectedId: string | undefined;
  readonly at: Date;
}

/**
 * Checks what the CA answered to a signing request before the workload uses it or writes it to
 * disk. The CA is authenticated, but a certificate for another key would be a certificate this
 * workload cannot use (and a file sink would write a mismatched cert/key pair), and an SVID of
 * another trust domain is not this workload's identity, whatever a misconfigured or compromised
 * replica says.
 */
export function checkSignedSvid(check: SignedSvidCheck): { spiffeId: string; leaf: CertificateInfo } {
  const chain = certificatesFromPem(check.certChainPem);
  const leafDer = chain[0];
  if (leafDer === undefined) throw new MeshwardError("E_SVID_INVALID", "the CA returned no certificate");
  const leaf = inspectCertificate(leafDer);
  verifyChain({ leaf: leafDer, intermediates: chain.slice(1), roots: certificatesFromPem(check.rootsPem), at: check.at });
  if (!keysMatch(check.privateKey, toX509(leafDer).publicKey)) {
    throw new MeshwardError("E_KEY_MISMATCH", "the CA returned a certificate for another key than the one this workload asked for; the certificate was not used");
  }
  const spiffeId = leaf.uris[0];
  if (spiffeId === undefined || leaf.uris.length !== 1) throw new MeshwardError("E_SVID_INVALID", "the CA returned a certificate without exactly one SPIFFE ID");
  let trustDomain: string;
  try {
    trustDomain = parseSpiffeId(spiffeId).trustDomain;
  } catch (error) {
    throw new MeshwardError("E_SVID_INVALID", `the CA returned a certificate whose URI is not a SPIFFE ID: ${(error as Error).message}`, { cause: error });
  }
  if (trustDomain !== check.trustDomain) {
    throw new MeshwardError("E_TRUST_DOMAIN_MISMATCH", `the CA issued ${spiffeId}, outside this workload's trust domain ${check.trustDomain}`);
  }
  if (check.expectedId !== undefined && spiffeId !== check.expectedId) {
    throw new MeshwardError("E_SPIFFE_MISMATCH", `the CA issued ${spiffeId} but this workload is ${check.expectedId}`);
  }
  return { spiffeId, leaf };
}
