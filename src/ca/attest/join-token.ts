import { MeshwardError } from "../../errors.ts";
import type { Store } from "../../store/store.ts";
import { hashToken, JOIN_TOKEN_PREFIX } from "../tokens.ts";
import { refusedBeforeAnyCost, type AttestationRequest, type AttestedIdentity, type Attestor } from "./attestor.ts";
import { assertRequestMatches } from "./identity-check.ts";

const MAX_TOKEN_LENGTH = 256;

/** Single-use (by default), expiring tokens bound to one identity, stored hashed. */
export function joinTokenAttestor(store: Store): Attestor {
  return {
    name: "join-token",
    spends: true,
    async attest(request: AttestationRequest): Promise<AttestedIdentity> {
      const token = request.token.trim();
      // Refused before the store is read: these give the caller's signRateLimit share back; an
      // unknown, expired or used-up token (a store read) counts against its address.
      if (token === "") throw refusedBeforeAnyCost(new MeshwardError("E_TOKEN_MISSING", "no join token was sent; create one with 'meshward token create'"));
      if (token.length > MAX_TOKEN_LENGTH || !token.startsWith(JOIN_TOKEN_PREFIX)) {
        throw refusedBeforeAnyCost(new MeshwardError("E_TOKEN_INVALID", "the join token is malformed (expected the value printed by 'meshward token create')"));
      }
      // Only read here: the use is spent by the store in the same transaction that records the
      // certificate (CertificateAuthority), so a request refused later costs the workload nothing.
      const tokenHash = hashToken(token);
      const result = await store.checkToken(tokenHash, request.now);
      if (!result.ok) throw tokenRefusal(result.reason);
      assertRequestMatches(request, result.token.spiffeId);
      return {
        spiffeId: result.token.spiffeId,
        allowedDnsNames: result.token.dnsNames,
        method: "join-token",
        spendsToken: tokenHash,
        ...(result.token.commonName !== undefined ? { commonName: result.token.commonName } : {}),
      };
    },
  };
}

/** The error for a token that cannot be spent (at attestation, or when the use is spent with the issuance). */
export function tokenRefusal(reason: "unknown" | "expired" | "used-up"): MeshwardError {
  switch (reason) {
    case "unknown":
      return new MeshwardError("E_TOKEN_UNKNOWN", "the join token is not known to this CA");
    case "expired":
      return new MeshwardError("E_TOKEN_EXPIRED", "the join token has expired; create a new one with 'meshward token create'");
    case "used-up":
      return new MeshwardError("E_TOKEN_USED", "the join token was already used; join tokens are single-use unless created with --uses");
  }
}
