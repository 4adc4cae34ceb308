import { MeshwardError } from "../../errors.ts";
import { formatWorkloadId } from "../../spiffe/id.ts";
import { refusedBeforeAnyCost, type AttestationRequest, type AttestedIdentity, type Attestor } from "./attestor.ts";

/**
 * Believes whatever identity the request names. Development only: the CA refuses to
 * construct it unless started with --allow-insecure-dev, and warns on every use.
 */
export function insecureAttestor(options: { trustDomain: string; allowed: boolean; warn: (message: string, fields: object) => void }): Attestor {
  return {
    name: "insecure",
    async attest(request: AttestationRequest): Promise<AttestedIdentity> {
      if (!options.allowed) {
        throw refusedBeforeAnyCost(new MeshwardError("E_VALIDATOR_DISABLED", "the insecure validator is disabled; it is only available when the CA runs with --allow-insecure-dev"));
      }
      const spiffeId = formatWorkloadId({
        trustDomain: options.trustDomain,
        namespace: request.requestedNamespace || "default",
        appId: request.requestedAppId,
      });
      options.warn("INSECURE validator issued an identity without any proof (--allow-insecure-dev)", { spiffeId });
      return { spiffeId, allowedDnsNames: [], method: "insecure" };
    },
  };
}
