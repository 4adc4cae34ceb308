import { JOIN_TOKEN_PREFIX } from "../tokens.ts";
import type { ValidatorName } from "../authority.ts";

/**
 * Which validator answers a request. daprd never sends a meshward validator: with
 * DAPR_SENTRY_TOKEN_FILE it sends the file's content as JWKS (self-hosted) or KUBERNETES (in a
 * cluster), and with no token at all it sends UNKNOWN (dapr/dapr pkg/security/token/token.go).
 * So a token carrying the join-token prefix goes to the join-token validator whatever the request
 * names among those three (it still has to be a live token in the store); UNKNOWN otherwise
 * follows the CA's default validator (`--default-validator`), never silently INSECURE.
 */
export function routeValidator(requested: ValidatorName | undefined, token: string, defaultValidator: ValidatorName): ValidatorName {
  if ((requested === undefined || requested === "jwks" || requested === "kubernetes") && token.trimStart().startsWith(JOIN_TOKEN_PREFIX)) return "join-token";
  return requested ?? defaultValidator;
}
