import type { IdentitySource } from "../../src/identity/source.ts";
import { verifyChain } from "../../src/pki/chain.ts";
import { certificatesFromPem } from "../../src/pki/pem.ts";

/** How many roots the identity's current trust bundle holds. */
export function bundleRootCount(source: IdentitySource): number {
  return certificatesFromPem(source.current()!.bundle.rootsPem).length;
}

/** Whether the identity's current certificate chain verifies up to the given root (PEM). */
export function svidChainsTo(source: IdentitySource, rootPem: string): boolean {
  const chain = certificatesFromPem(source.current()!.svid.certChainPem);
  try {
    verifyChain({ leaf: chain[0] as Buffer, intermediates: chain.slice(1), roots: certificatesFromPem(rootPem) });
    return true;
  } catch {
    return false;
  }
}
