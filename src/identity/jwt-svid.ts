import { createLocalJWKSet, decodeProtectedHeader, errors as joseErrors, jwtVerify, type JSONWebKeySet, type JWTPayload, type JWTVerifyOptions } from "jose";
import { MeshwardError } from "../errors.ts";
import { parseSpiffeId } from "../spiffe/id.ts";
import { fetchFromCa, type CaConnection } from "./ca-client.ts";
import { rootCrlRevocations } from "./ca-source.ts";

/** The JWK member naming the serial of the X.509 issuer a meshward CA's key was derived from (src/ca/jwt-svid.ts JWK_ISSUER_SERIAL). */
const JWK_ISSUER_SERIAL = "meshward_issuer_serial";

/** JWT-SVID spec §3: RS/PS/ES families; EdDSA as meshward's CA can sign it. Never HS* or none. */
const ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"];

export interface JwtSvidValidatorOptions {
  /**
   * The CA (address, bundle, trust domain, optionally its SPIFFE ID): keys are fetched from its
   * /.well-known/jwks.json. The CA's serving chain is checked at each connection against
   * `ca.revokedSerials` (give `() => identity.current()?.bundle.revokedSerials` beside an identity
   * source); without it, the validator fetches the CA's CRL set after each key fetch and keeps the
   * serials its root CRLs list (the issuers retired with `--now`), so that from its next
   * connection on a server presenting the CA's identity under a retired issuer is refused
   * (E_CA_ISSUER_RETIRED) and its keys are not taken.
   */
  readonly ca: Omit<CaConnection, "clientCertificate">;
  /** Only tokens for SPIFFE IDs in this trust domain pass (default: the CA's). */
  readonly trustDomain?: string;
  /** Do not try to refetch the keys more often than this (a token naming an unknown kid, a failed refetch). Default 30 s. */
  readonly refreshCooldownMs?: number;
  /**
   * The keys are fetched again before a validation once they are this old, so a key the CA has
   * withdrawn stops validating (default 60 s, the CA's Cache-Control max-age for its JWKS).
   */
  readonly keysMaxAgeMs?: number;
  /**
   * While the CA cannot be reached, keys older than keysMaxAgeMs are still used until they are this
   * old, then every token is refused with E_JWKS_STALE until a fetch succeeds (default 1 h, the
   * CA's default JWT-SVID lifetime).
   */
  readonly keysMaxStaleMs?: number;
  readonly clock?: () => Date;
}

export interface ValidatedJwtSvid {
  readonly spiffeId: string;
  readonly audiences: readonly string[];
  readonly expiresAt: Date;
  readonly claims: JWTPayload;
}

export interface JwtSvidValidator {
  /**
   * Verifies a JWT-SVID for `audience`, the one audience this service answers to (signature, exp,
   * aud, sub); E_TOKEN_* when it does not pass. `audience` must be a non-empty string: anything else
   * (undefined from an unset option, an array) is refused with E_USAGE, as it would weaken the check.
   */
  validate(token: string, audience: string): Promise<ValidatedJwtSvid>;
  /** Fetches the CA's JWKS now (also done on first use, once the keys are keysMaxAgeMs old, and when a token names an unknown key). */
  refresh(): Promise<void>;
}

/**
 * Validates JWT-SVIDs (SPIFFE JWT-SVID spec §3–§5) against the keys the meshward CA publishes,
 * fetched over TLS from the CA verified by its SPIFFE ID. A token signed with a key the cached
 * set lacks triggers one refetch (the CA rotates its JWT key with its issuer); the set is
 * replaced once it is keysMaxAgeMs old, so that a key the CA stopped publishing (an issuer
 * rotated after a leak) stops validating too, and not only when the process restarts.
 */
export function createJwtSvidValidator(options: JwtSvidValidatorOptions): JwtSvidValidator {
  const trustDomain = options.trustDomain ?? options.ca.trustDomain;
  const clock = options.clock ?? (() => new Date());
  const cooldown = options.refreshCooldownMs ?? 30_000;
  const maxAge = options.keysMaxAgeMs ?? 60_000;
  const maxStale = Math.max(maxAge, options.keysMaxStaleMs ?? 3_600_000);
  let keys: ReturnType<typeof createLocalJWKSet> | undefined;
  /** The last key set fetched, and the issuer serial each key names (by kid). */
  let jwksDocument: JSONWebKeySet | undefined;
  /** Which keys `keys` leaves out (kids of keys whose issuer is revoked), to rebuild it only when that changes. */
  let excludedKids = "";
  /** When the keys in use were fetched, when a fetch was last tried, and when one last failed. */
  let fetchedAt = -Infinity;
  let triedAt = -Infinity;
  let failedAt = -Infinity;
  let inflight: Promise<void> | undefined;
  /**
   * Without `ca.revokedSerials`: the serials the CA's root CRLs listed at any fetch so far (only
   * grows: a retired issuer stays retired), verified with the bundle's roots. An impostor cannot
   * forge a root CRL, only withhold one: a validator that never reached the genuine CA since the
   * retirement holds none (as an identity source on its first start).
   */
  const rootRevoked = new Set<string>();
  const connection: Omit<CaConnection, "clientCertificate"> = options.ca.revokedSerials !== undefined ? options.ca : { ...options.ca, revokedSerials: () => rootRevoked };
  const fetchRootRevocations = async () => {
    if (options.ca.revokedSerials !== undefined) return;
    try {
      for (const serial of rootCrlRevocations(await fetchFromCa(connection, "/v1/crl?format=set"), options.ca.bundlePem)) rootRevoked.add(serial);
    } catch {
      // No CRL set (a CA that publishes none, a Dapr sentry), or the CA unreachable since the key
      // fetch: the revocations held are kept, and the next key fetch says what is wrong.
    }
  };

  const refresh = async () => {
    inflight ??= (async () => {
      triedAt = Date.now();
      try {
        const body = await fetchFromCa(connection, "/.well-known/jwks.json", 1 << 20);
        let jwks: JSONWebKeySet;
        try {
          jwks = JSON.parse(body.toString("utf8")) as JSONWebKeySet;
          createLocalJWKSet(jwks);
          jwksDocument = jwks;
          keys = undefined;
        } catch (error) {
          throw new MeshwardError("E_JWKS_INVALID", `the CA's /.well-known/jwks.json is not a JWKS: ${(error as Error).message}`);
        }
        fetchedAt = Date.now();
        // After the keys, so that a CA that is down costs one timeout, not two: judges the next connection.
        await fetchRootRevocations();
      } catch (error) {
        failedAt = Date.now();
        throw error;
      } finally {
        inflight = undefined;
      }
    })();
    return inflight;
  };

  /**
   * The keys to verify with: fetched on first use and again once maxAge old. When that fetch
   * fails (the CA is down), the old set serves until maxStale, tried again once per cooldown.
   */
  const currentKeys = async () => {
    if (jwksDocument === undefined) return void (await refresh());
    if (Date.now() - fetchedAt < maxAge) return;
    if (inflight !== undefined || Date.now() - failedAt >= cooldown) {
      try {
        return void (await refresh());
      } catch (error) {
        if (Date.now() - fetchedAt < maxStale) return;
        throw error;
      }
    }
    if (Date.now() - fetchedAt < maxStale) return;
    throw new MeshwardError("E_JWKS_STALE", `the CA's JWT-SVID keys were last fetched ${Math.round((Date.now() - fetchedAt) / 1000)} s ago and could not be fetched since: no token is accepted with keys that old`);
  };

  /** The revocations the CA connection is judged with (the caller's, or the root CRLs fetched). */
  const revokedNow = (): ReadonlySet<string> | undefined => (typeof connection.revokedSerials === "function" ? connection.revokedSerials() : connection.revokedSerials);
  /** The issuer serial a published key names, when the revocations list it. */
  const revokedIssuerOf = (key: { [member: string]: unknown }, revoked: ReadonlySet<string> | undefined): string | undefined => {
    const serial = key[JWK_ISSUER_SERIAL];
    return typeof serial === "string" && revoked?.has(serial) === true ? serial : undefined;
  };
  /**
   * The keys to verify with, without those whose issuer the revocations list (an issuer retired
   * with --now: whoever holds its key derives its JWT key), so that a token without a kid cannot
   * reach one either. Rebuilt when the key set or what it leaves out changes.
   */
  const usableKeys = (): ReturnType<typeof createLocalJWKSet> => {
    const revoked = revokedNow();
    const excluded = jwksDocument!.keys.filter((k) => revokedIssuerOf(k, revoked) !== undefined).map((k) => k.kid ?? "");
    const signature = excluded.join("\n");
    if (keys === undefined || signature !== excludedKids) {
      keys = createLocalJWKSet({ keys: jwksDocument!.keys.filter((k) => revokedIssuerOf(k, revoked) === undefined) });
      excludedKids = signature;
    }
    return keys;
  };
  /** E_TOKEN_ISSUER_RETIRED when the token's kid names a key whose issuer the revocations list. */
  const refuseRetiredKey = (token: string) => {
    let kid: unknown;
    try {
      kid = decodeProtectedHeader(token).kid;
    } catch {
      return; // jose says what is wrong with it
    }
    if (typeof kid !== "string") return;
    const revoked = revokedNow();
    for (const key of jwksDocument?.keys ?? []) {
      const serial = key.kid === kid ? revokedIssuerOf(key, revoked) : undefined;
      if (serial !== undefined) {
        throw new MeshwardError("E_TOKEN_ISSUER_RETIRED", `the JWT-SVID is signed with the key of issuer ${serial}, which the CA's root CRL lists as retired (rotate-issuer --now): whoever holds that issuer's key can sign such tokens`);
      }
    }
  };

  const verify = async (token: string, audience: string) => {
    await currentKeys();
    refuseRetiredKey(token);
    const at = clock();
    const options: JWTVerifyOptions = { audience, algorithms: ALGORITHMS, currentDate: at, requiredClaims: ["exp", "sub", "aud"] };
    try {
      return await jwtVerify(token, usableKeys(), options);
    } catch (error) {
      if (error instanceof joseErrors.JWKSNoMatchingKey && Date.now() - triedAt >= cooldown) {
        await refresh();
        refuseRetiredKey(token);
        return await jwtVerify(token, usableKeys(), options);
      }
      throw error;
    }
  };

  return {
    refresh,
    async validate(token, audience) {
      // jose checks aud only when an audience is given, and takes an array as any one of them.
      if (typeof audience !== "string" || audience.length === 0) {
        throw new MeshwardError("E_USAGE", `validate(token, audience): audience must be a non-empty string, the one audience this service answers to; got ${Array.isArray(audience) ? "an array" : JSON.stringify(audience) ?? typeof audience}`);
      }
      if (typeof token !== "string" || token.length === 0 || token.length > 16 * 1024) throw new MeshwardError("E_TOKEN_INVALID", "the JWT-SVID is empty or too long");
      let result;
      try {
        result = await verify(token.trim(), audience);
      } catch (error) {
        throw classify(error);
      }
      const { payload, protectedHeader } = result;
      if (protectedHeader.typ !== undefined && protectedHeader.typ !== "JWT" && protectedHeader.typ !== "JOSE") {
        throw new MeshwardError("E_TOKEN_INVALID", `the JWT-SVID's typ header is ${JSON.stringify(protectedHeader.typ)} (JWT-SVID §2.3: JWT or JOSE)`);
      }
      let spiffeId;
      try {
        spiffeId = parseSpiffeId(payload.sub as string);
      } catch {
        throw new MeshwardError("E_TOKEN_CLAIMS", "the JWT-SVID's sub is not a SPIFFE ID");
      }
      if (spiffeId.path === "") throw new MeshwardError("E_TOKEN_CLAIMS", "the JWT-SVID's sub names a trust domain, not a workload");
      if (spiffeId.trustDomain !== trustDomain) {
        throw new MeshwardError("E_TRUST_DOMAIN_MISMATCH", `the JWT-SVID is for ${spiffeId.toString()}, outside trust domain ${trustDomain}`);
      }
      const aud = payload.aud;
      return { spiffeId: spiffeId.toString(), audiences: Array.isArray(aud) ? aud : [aud as string], expiresAt: new Date((payload.exp as number) * 1000), claims: payload };
    },
  };
}

function classify(error: unknown): MeshwardError {
  if (error instanceof MeshwardError) return error;
  if (error instanceof joseErrors.JWTExpired) return new MeshwardError("E_TOKEN_EXPIRED", "the JWT-SVID has expired");
  if (error instanceof joseErrors.JWTClaimValidationFailed) {
    if (error.claim === "aud") return new MeshwardError("E_TOKEN_AUDIENCE", "the JWT-SVID was issued for another audience");
    return new MeshwardError("E_TOKEN_CLAIMS", `the JWT-SVID's ${error.claim} claim is not acceptable: ${error.reason}`);
  }
  if (error instanceof joseErrors.JWSSignatureVerificationFailed || error instanceof joseErrors.JWKSNoMatchingKey) {
    return new MeshwardError("E_TOKEN_SIGNATURE", "the JWT-SVID's signature does not verify with the CA's published keys");
  }
  if (error instanceof joseErrors.JOSEAlgNotAllowed) return new MeshwardError("E_TOKEN_SIGNATURE", "the JWT-SVID uses a signature algorithm JWT-SVIDs do not allow");
  return new MeshwardError("E_TOKEN_INVALID", "the JWT-SVID is malformed");
}
