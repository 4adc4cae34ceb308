import { MeshwardError } from "../../errors.ts";
import { verifyChain } from "../../pki/chain.ts";
import { inspectCertificate } from "../../pki/inspect.ts";
import { parseWorkloadId } from "../../spiffe/id.ts";
import type { AttestationRequest, AttestedIdentity, Attestor } from "./attestor.ts";
import { assertRequestMatches } from "./identity-check.ts";

export interface SvidAttestorOptions {
  /** Current trust anchors and the certificates that may sit between them and a leaf. */
  readonly trust: () => { roots: readonly Uint8Array[]; intermediates: readonly Uint8Array[]; revoked: ReadonlySet<string> };
}

/**
 * Renewal: a workload proves its identity with its current certificate on the mTLS
 * connection (SPIRE's agent does the same), so single-use join tokens are needed only once.
 */
export function svidAttestor(options: SvidAttestorOptions): Attestor {
  return {
    name: "svid",
    async attest(request: AttestationRequest): Promise<AttestedIdentity> {
      const peer = request.peerCertificate;
      if (peer === undefined) {
        throw new MeshwardError("E_ATTESTATION_NO_CERT", "renewal needs the current certificate presented on the TLS connection");
      }
      const trust = options.trust();
      try {
        verifyChain({ leaf: peer, intermediates: trust.intermediates, roots: trust.roots, at: request.now });
      } catch (error) {
        const code = (error as MeshwardError).code === "E_CERT_EXPIRED" ? "E_CERT_EXPIRED" : "E_ATTESTATION_UNTRUSTED";
        throw new MeshwardError(code, `the certificate presented for renewal is not acceptable: ${(error as Error).message}`, { cause: error });
      }
      const info = inspectCertificate(peer);
      if (trust.revoked.has(info.serial)) {
        throw new MeshwardError("E_CERT_REVOKED", `the certificate presented for renewal (serial ${info.serial}) is revoked`);
      }
      const [spiffeId, ...more] = info.uris;
      if (spiffeId === undefined || more.length > 0) {
        throw new MeshwardError("E_ATTESTATION_UNTRUSTED", "the certificate presented for renewal does not carry exactly one SPIFFE ID");
      }
      parseWorkloadId(spiffeId);
      assertRequestMatches(request, spiffeId);
      return { spiffeId, allowedDnsNames: info.dnsNames, method: "svid" };
    },
  };
}
