import { MeshwardError } from "../../errors.ts";
import { parseWorkloadId } from "../../spiffe/id.ts";
import type { AttestationRequest } from "./attestor.ts";
import { trustDomainLimit } from "./routing.ts";

/**
 * A request may name the identity it wants (Dapr sends app id, namespace, trust domain).
 * When it does, it must be exactly the attested one: a token for `orders` never yields `payments`.
 */
export function assertRequestMatches(request: AttestationRequest, attestedSpiffeId: string): void {
  const attested = parseWorkloadId(attestedSpiffeId);
  const mismatch = (field: string, asked: string, proven: string) =>
    new MeshwardError(
      "E_IDENTITY_MISMATCH",
      `the request asks for ${field} ${JSON.stringify(asked)} but the token proves ${field} ${JSON.stringify(proven)}`,
      { details: { field } },
    );
  if (request.requestedAppId !== "" && request.requestedAppId !== attested.appId) {
    throw mismatch("app id", request.requestedAppId, attested.appId);
  }
  if (request.requestedNamespace !== "" && request.requestedNamespace !== attested.namespace) {
    throw mismatch("namespace", request.requestedNamespace, attested.namespace);
  }
  if (request.requestedTrustDomain !== "" && request.requestedTrustDomain !== attested.trustDomain) {
    throw trustDomainLimit(request.requestedTrustDomain, attested.trustDomain);
  }
}
