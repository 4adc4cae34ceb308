import { createLocalJWKSet, createRemoteJWKSet, customFetch, decodeProtectedHeader, errors as joseErrors, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from "jose";
import { fetch as undiciFetch } from "undici";
import { DEFAULT_JWT_CLOCK_TOLERANCE, type JwksValidatorConfig } from "../../config/ca.ts";
import { parseDuration } from "../../util/duration.ts";
import { INPUT_LIMITS, readInputText } from "../../util/read-input.ts";
import { MeshwardError } from "../../errors.ts";
import { formatWorkloadId, parseWorkloadId } from "../../spiffe/id.ts";
import { tlsAfterHandshakeFailure } from "../../tls/after-handshake.ts";
import { renegotiationRefusingAgent } from "../../tls/undici-agent.ts";
import { refusedBeforeAnyCost, type AttestationRequest, type AttestedIdentity, type Attestor } from "./attestor.ts";
import { failureCooldown } from "./failure-cooldown.ts";
import { assertRequestMatches } from "./identity-check.ts";
import { precheckJwt, type JwtPrecheckFailure } from "./jwt-precheck.ts";
import { kubernetesOidc } from "./kubernetes-oidc.ts";

const MAX_JWT_LENGTH = 16 * 1024;
/** `jwksUrl`: at most one refetch per this long for an unknown key id (jose's cooldownDuration), and none this long after a failed fetch. */
export const JWKS_URL_COOLDOWN_MS = 30_000;
/** Asymmetric only: a shared-secret (HS*) or `none` token is never accepted. */
const ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"];

/** The refusals jose's own checks give for the same faults (classifyJwtError). */
const PRECHECK_ERRORS: Record<JwtPrecheckFailure, () => MeshwardError> = {
  malformed: () => new MeshwardError("E_TOKEN_INVALID", "the JWT is malformed"),
  "exp-missing": () => new MeshwardError("E_TOKEN_CLAIMS", "the JWT's exp claim is not acceptable: missing"),
  expired: () => new MeshwardError("E_TOKEN_EXPIRED", "the JWT has expired"),
  audience: () => new MeshwardError("E_TOKEN_AUDIENCE", "the JWT was issued for another audience"),
};

export interface JwksAttestorOptions extends Omit<JwksValidatorConfig, "clockTolerance"> {
  readonly trustDomain: string;
  /** Milliseconds tolerated between the CA's clock and the issuer's for exp/nbf/iat (default 5 min, as Sentry). */
  readonly clockTolerance?: number;
  /** Audiences accepted when the configuration names none (the CA's serving SPIFFE ID, …). */
  readonly defaultAudiences?: readonly string[];
}

/**
 * JWTs (e.g. Kubernetes projected service-account tokens) checked with `jose` against a
 * JWKS file or URL, with issuer and audience, then mapped to a workload identity.
 */
export function jwksAttestor(options: JwksAttestorOptions, name = "jwks"): Attestor {
  const oidc = options.kubernetes === undefined ? undefined : kubernetesOidc(options.kubernetes);
  const keys = oidc?.getKey ?? loadKeySet(options);
  const audience = [...(options.audience ?? options.defaultAudiences ?? [])];
  if (audience.length === 0) throw new MeshwardError("E_CONFIG_INVALID", "the JWKS validator needs at least one audience");
  return {
    name,
    async attest(request: AttestationRequest): Promise<AttestedIdentity> {
      const token = request.token.trim();
      if (token === "") throw refusedBeforeAnyCost(new MeshwardError("E_TOKEN_MISSING", "no JWT was sent"));
      if (token.length > MAX_JWT_LENGTH) throw refusedBeforeAnyCost(new MeshwardError("E_TOKEN_INVALID", `the JWT is longer than ${MAX_JWT_LENGTH} bytes`));
      let payload: JWTPayload;
      // Seconds, for jose; config `jwks.clockTolerance` (5 min by default, as Sentry).
      const tolerance = (options.clockTolerance ?? parseDuration(DEFAULT_JWT_CLOCK_TOLERANCE)) / 1000;
      // In every mode (jwksUrl, jwks.kubernetes discovery, jwksFile): discovery and the JWKS are
      // network calls, and a signature check is work, so a token that could never pass is refused
      // before any of them (what jose would say of it, without the fetch). Such a refusal costs
      // the CA nothing and gives the caller's signRateLimit share back; any later one counts.
      // An algorithm jose would refuse first (none, HS*) is refused as jose refuses it.
      if (!algorithmAllowed(token)) throw refusedBeforeAnyCost(new MeshwardError("E_TOKEN_SIGNATURE", "the JWT uses a signature algorithm that is not allowed"));
      const failure = precheckJwt(token, { now: request.now, clockToleranceSeconds: tolerance, audiences: audience });
      if (failure !== undefined) throw refusedBeforeAnyCost(PRECHECK_ERRORS[failure]());
      try {
        const issuer = options.issuer ?? (oidc === undefined ? undefined : await oidc.issuer());
        ({ payload } = await jwtVerify(token, keys, {
          ...(issuer !== undefined ? { issuer } : {}),
          audience,
          algorithms: ALGORITHMS,
          currentDate: request.now,
          clockTolerance: tolerance,
          requiredClaims: ["exp"],
        }));
      } catch (error) {
        throw classifyJwtError(error);
      }
      // jose reads iat only to check its type; Sentry's jwx refuses a token issued in the future
      // beyond its skew (lestrrat-go/jwx jwt/validate.go, "iat not satisfied"), and so does meshward.
      if (typeof payload.iat === "number" && payload.iat > request.now.getTime() / 1000 + tolerance) {
        throw new MeshwardError("E_TOKEN_NOT_YET_VALID", `the JWT was issued in the future (iat ${new Date(payload.iat * 1000).toISOString()}); check the issuer's clock`);
      }
      if (options.mapping === "sentry") {
        const spiffeId = sentrySubject(payload);
        assertRequestMatches(request, spiffeId);
        return { spiffeId, allowedDnsNames: [], method: name };
      }
      const { namespace, appId } = mapClaims(payload, options.mapping);
      const spiffeId = formatWorkloadId({ trustDomain: options.trustDomain, namespace, appId });
      assertRequestMatches(request, spiffeId);
      return { spiffeId, allowedDnsNames: options.mapping === "kubernetes" ? serviceDnsNames(namespace, appId) : [], method: name };
    },
  };
}

/** False when the token's protected header names an algorithm outside ALGORITHMS; true otherwise (a header that cannot be read is the pre-check's to refuse). */
function algorithmAllowed(token: string): boolean {
  let alg: unknown;
  try {
    alg = decodeProtectedHeader(token).alg;
  } catch {
    return true;
  }
  return typeof alg !== "string" || ALGORITHMS.includes(alg);
}

/**
 * A Kubernetes service account may have the DNS names of the Service named like it in its
 * namespace (<account>.<namespace>.svc and .svc.cluster.local): what a webhook such as
 * `meshward injector` serves under. The name is already tied to the account that the token
 * proves; a pod cannot get another Service's name. Only when the account's name could be a
 * Service's, a DNS-1035 label: account names are DNS-1123 subdomains and may hold dots, and
 * `<pod>.<headless-service>` would get a StatefulSet pod's name (<pod>.<service>.<ns>.svc…).
 * A dotted account keeps its SPIFFE ID and gets no DNS name.
 */
export function serviceDnsNames(namespace: string, serviceAccount: string): string[] {
  if (!DNS_1035_LABEL.test(serviceAccount)) return [];
  return [`${serviceAccount}.${namespace}.svc`, `${serviceAccount}.${namespace}.svc.cluster.local`];
}

/** A Service name (Kubernetes validation IsDNS1035Label): lower-case letter first, no dots, at most 63. */
const DNS_1035_LABEL = /^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/;

function loadKeySet(options: JwksAttestorOptions): JWTVerifyGetKey {
  if (options.jwksFile !== undefined) {
    let jwks: unknown;
    try {
      jwks = JSON.parse(readInputText(options.jwksFile, { what: "JWKS file", maxBytes: INPUT_LIMITS.pem, pipes: false }));
    } catch (error) {
      throw new MeshwardError("E_JWKS_INVALID", `cannot read JWKS file ${options.jwksFile}: ${(error as Error).message}`);
    }
    try {
      return createLocalJWKSet(jwks as Parameters<typeof createLocalJWKSet>[0]);
    } catch (error) {
      throw new MeshwardError("E_JWKS_INVALID", `${options.jwksFile} is not a JWKS document: ${(error as Error).message}`);
    }
  }
  // jose refetches for every token while it holds no fresh key set (after a failed fetch too):
  // the failure cooldown (shared with kubernetes-oidc.ts) keeps a burst of tokens while the JWKS
  // server is down to one fetch per cooldown, the others answered E_JWKS_UNAVAILABLE at once.
  const failure = failureCooldown(JWKS_URL_COOLDOWN_MS);
  return createRemoteJWKSet(new URL(options.jwksUrl as string), {
    timeoutDuration: 5000,
    cooldownDuration: JWKS_URL_COOLDOWN_MS,
    [customFetch]: async (url: string, init: JwksFetchInit) => {
      failure.check();
      let response: Response;
      try {
        response = await jwksFetch(url, init);
      } catch (error) {
        throw failure.record(error); // refused, TLS, timeout (jose turns a TimeoutError into JWKSTimeout)
      }
      if (response.status !== 200) {
        failure.record(new MeshwardError("E_JWKS_UNAVAILABLE", `${url} answered HTTP ${response.status}`));
        return response; // jose refuses it (E_JWKS_UNAVAILABLE)
      }
      // Read here to know whether it is a key set; jose reads the copy handed on.
      let body: string;
      try {
        body = await response.text();
      } catch (error) {
        throw failure.record(error);
      }
      let keys: unknown;
      try {
        keys = (JSON.parse(body) as { keys?: unknown } | null)?.keys;
      } catch {
        // not JSON: below
      }
      if (!Array.isArray(keys)) failure.record(new MeshwardError("E_JWKS_UNAVAILABLE", `${url} answered with no JSON Web Key Set`));
      return new Response(body, { status: 200, headers: { "content-type": "application/json" } });
    },
  });
}

interface JwksFetchInit {
  headers: Headers;
  method: "GET";
  redirect: "manual";
  signal: AbortSignal;
}

/**
 * jose's own request (GET, its headers, redirects not followed, its abort signal), sent with
 * undici's fetch through a dispatcher whose TLS refuses renegotiation: the global fetch takes
 * no TLS options.
 */
async function jwksFetch(url: string, init: JwksFetchInit): Promise<Response> {
  try {
    const response = await undiciFetch(url, { method: init.method, redirect: init.redirect, signal: init.signal, headers: Object.fromEntries(init.headers), dispatcher: renegotiationRefusingAgent() });
    return response as unknown as Response;
  } catch (error) {
    // jose turns a TimeoutError into its JWKSTimeout; any other failure (refused, TLS) is named here, not taken for a bad token.
    if ((error as Error).name === "TimeoutError" || (error as Error).name === "AbortError") throw error;
    const cause = (error as Error).cause as NodeJS.ErrnoException | undefined;
    const reason = tlsAfterHandshakeFailure(error) ?? cause?.code ?? cause?.message ?? (error as Error).message;
    throw new MeshwardError("E_JWKS_UNAVAILABLE", `cannot fetch the JWKS from ${url}: ${reason}; try again`);
  }
}

/**
 * Dapr Sentry's JWKS validator (dapr/dapr pkg/sentry/server/validator/jwks/jwks.go): `sub` is the
 * requester's whole SPIFFE ID, spiffe://<td>/ns/<namespace>/<app-id>; `iss` is not checked there.
 */
function sentrySubject(payload: JWTPayload): string {
  const sub = payload.sub;
  if (typeof sub !== "string" || sub === "") throw new MeshwardError("E_TOKEN_CLAIMS", "the JWT has no sub claim (the sentry mapping expects the workload's SPIFFE ID there)");
  try {
    const id = parseWorkloadId(sub);
    return formatWorkloadId(id);
  } catch (error) {
    throw new MeshwardError("E_TOKEN_CLAIMS", `the JWT's sub is not a workload SPIFFE ID of the form spiffe://<td>/ns/<namespace>/<app-id>: ${(error as Error).message}`);
  }
}

function mapClaims(payload: JWTPayload, mapping: Exclude<JwksValidatorConfig["mapping"], "sentry">): { namespace: string; appId: string } {
  if (mapping === "kubernetes") {
    const k8s = payload["kubernetes.io"] as { namespace?: unknown; serviceaccount?: { name?: unknown } } | undefined;
    if (typeof k8s?.namespace === "string" && typeof k8s.serviceaccount?.name === "string") {
      return { namespace: k8s.namespace, appId: k8s.serviceaccount.name };
    }
    const legacy = /^system:serviceaccount:([^:]+):([^:]+)$/.exec(payload.sub ?? "");
    if (legacy) return { namespace: legacy[1] as string, appId: legacy[2] as string };
    throw new MeshwardError(
      "E_TOKEN_CLAIMS",
      "the JWT is not a Kubernetes service-account token (no kubernetes.io namespace/serviceaccount claims, no system:serviceaccount subject)",
    );
  }
  const namespace = claimAt(payload, mapping.namespaceClaim);
  const appId = claimAt(payload, mapping.appIdClaim);
  if (typeof namespace !== "string" || typeof appId !== "string") {
    throw new MeshwardError("E_TOKEN_CLAIMS", `the JWT lacks string claims ${mapping.namespaceClaim} and ${mapping.appIdClaim}`);
  }
  return { namespace, appId };
}

function claimAt(payload: JWTPayload, path: string): unknown {
  if (path in payload) return payload[path];
  return path.split(".").reduce<unknown>((value, key) => (value && typeof value === "object" ? (value as Record<string, unknown>)[key] : undefined), payload);
}

function classifyJwtError(error: unknown): MeshwardError {
  if (error instanceof MeshwardError) return error;
  if (error instanceof joseErrors.JWTExpired) return new MeshwardError("E_TOKEN_EXPIRED", "the JWT has expired");
  if (error instanceof joseErrors.JWTClaimValidationFailed) {
    const claim = error.claim;
    if (claim === "aud") return new MeshwardError("E_TOKEN_AUDIENCE", "the JWT was issued for another audience");
    if (claim === "iss") return new MeshwardError("E_TOKEN_ISSUER", "the JWT was issued by an untrusted issuer");
    if (claim === "nbf") return new MeshwardError("E_TOKEN_NOT_YET_VALID", "the JWT is not valid yet");
    return new MeshwardError("E_TOKEN_CLAIMS", `the JWT's ${claim} claim is not acceptable: ${error.reason}`);
  }
  if (error instanceof joseErrors.JWSSignatureVerificationFailed || error instanceof joseErrors.JWKSNoMatchingKey) {
    return new MeshwardError("E_TOKEN_SIGNATURE", "the JWT's signature does not verify against the configured JWKS");
  }
  if (error instanceof joseErrors.JWKSMultipleMatchingKeys) {
    return new MeshwardError("E_TOKEN_SIGNATURE", "several keys of the JWKS could have signed the JWT (it names no kid, or the JWKS lists its kid twice); the issuer must name its key with a unique kid");
  }
  if (error instanceof joseErrors.JOSEAlgNotAllowed) return new MeshwardError("E_TOKEN_SIGNATURE", "the JWT uses a signature algorithm that is not allowed");
  if (error instanceof joseErrors.JOSEError && error.code === "ERR_JOSE_GENERIC" && /JSON Web Key Set/.test(error.message)) {
    return new MeshwardError("E_JWKS_UNAVAILABLE", "the JWKS could not be fetched (the server did not answer 200 with JSON); try again");
  }
  if (error instanceof joseErrors.JWKSTimeout || error instanceof joseErrors.JOSEError && error.code === "ERR_JWKS_INVALID") {
    return new MeshwardError("E_JWKS_UNAVAILABLE", "the JWKS could not be fetched; try again");
  }
  return new MeshwardError("E_TOKEN_INVALID", "the JWT is malformed");
}
