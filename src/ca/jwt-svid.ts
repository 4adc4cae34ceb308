import { createECDH, createPrivateKey, createPublicKey, hkdfSync, type JsonWebKey, type KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";
import { calculateJwkThumbprint, SignJWT, type JWK } from "jose";
import { MeshwardError } from "../errors.ts";
import { normalizeSerial } from "../pki/certificate.ts";
import { parseSpiffeId } from "../spiffe/id.ts";
import { writeFileAtomic } from "../util/files.ts";

export type JwtSvidAlgorithm = "ES256" | "EdDSA";

/** At most this many audiences per request, each at most this long (they go into signed tokens). */
export const MAX_JWT_AUDIENCES = 10;
const MAX_AUDIENCE_LENGTH = 256;
const P256_ORDER = BigInt("0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
const ED25519_PKCS8_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex");

/**
 * The JWK member naming the serial (upper-case hex, as root CRLs list it) of the X.509 issuer a
 * published key was derived from, so that a validator holding the root CRLs can refuse the key of
 * an issuer retired with `--now` (RFC 7517 §4: members a consumer does not understand are ignored).
 */
export const JWK_ISSUER_SERIAL = "meshward_issuer_serial";

interface DerivedKey {
  readonly privateKey: KeyObject;
  readonly publicJwk: JWK;
  readonly kid: string;
}

interface PublishedKey {
  readonly jwk: JWK;
  /** Seconds since the epoch after which no token signed with it is valid. */
  readonly until: number;
  /** Serial of the issuer it was derived from (normalised); absent in jwt-keys.json written before version 2. */
  readonly issuer?: string;
}

/** An issuer retired with `--now` (the CA's issuers-retired.json: listed in its root's CRL). */
export interface RevokedIssuer {
  readonly serial: string;
  readonly revokedAt: Date;
}

/** The X.509 issuer a JWT key is derived from: its private key and certificate serial. */
export interface JwtKeySource {
  readonly privateKey: KeyObject;
  readonly serial: string;
}

export interface JwtSvidIssuerOptions {
  readonly algorithm: JwtSvidAlgorithm;
  readonly ttlMs: number;
  /** The `iss` claim, and the OIDC issuer (where /.well-known/openid-configuration is served). */
  readonly issuer: () => string;
  readonly clock: () => Date;
  /** Public keys of retired issuers, kept across restarts (the CA directory's jwt-keys.json). */
  readonly stateFile?: string;
  /**
   * The issuers retired with `--now` (listed in a root CRL): the key derived from one is never
   * published, whenever it was retired, and is dropped from `stateFile` (read at each use).
   */
  readonly revokedIssuers?: () => readonly RevokedIssuer[];
}

export interface IssuedJwtSvids {
  /** aud: the trust domain and every requested audience (dapr/kit parses it for the trust domain). */
  readonly jwt: string;
  readonly perAudience: Record<string, string>;
  readonly expiresAt: Date;
}

/**
 * JWT-SVIDs (SPIFFE JWT-SVID spec: sub is the SPIFFE ID, aud required, exp required; signed
 * with ES256 or EdDSA, kid in the header, keys published as a JWKS).
 *
 * The signing key is derived from the current X.509 issuer's private key (HKDF-SHA256, one
 * label per algorithm): it changes exactly when the issuer changes, every replica and every
 * restart derives the same key, and nothing new is stored secret. The JWT key reveals nothing
 * about the issuer key. When the issuer changes, the previous key stays published until every
 * token it signed has expired (now + TTL), in memory and in `stateFile` — unless the previous
 * issuer was retired with `--now` (a leaked key: whoever holds it derives this key too), whose
 * key is withdrawn at once, as is a kept key whose issuer is retired with `--now` later.
 */
export class JwtSvidIssuer {
  readonly #options: JwtSvidIssuerOptions;
  readonly #derived = new WeakMap<KeyObject, DerivedKey>();
  #retired: PublishedKey[] = [];

  constructor(options: JwtSvidIssuerOptions) {
    this.#options = options;
    if (options.stateFile !== undefined) this.#retired = readRetired(options.stateFile);
    this.#withdrawRevoked();
  }

  /** Signs the JWT-SVIDs for `spiffeId`; exp is capped by `notAfter` (the X509-SVID's). */
  async issue(issuerKey: KeyObject, spiffeId: string, audiences: readonly string[], notAfter: Date): Promise<IssuedJwtSvids> {
    const trustDomain = parseSpiffeId(spiffeId).trustDomain;
    const unique = checkJwtAudiences(audiences);
    const key = await this.#key(issuerKey);
    const now = this.#options.clock();
    const exp = Math.floor(Math.min(now.getTime() + this.#options.ttlMs, notAfter.getTime()) / 1000);
    const iat = Math.floor(now.getTime() / 1000);
    const sign = (aud: string[]) =>
      new SignJWT({})
        .setProtectedHeader({ alg: this.#options.algorithm, kid: key.kid, typ: "JWT" })
        .setSubject(spiffeId)
        .setAudience(aud)
        .setIssuer(this.#options.issuer())
        .setIssuedAt(iat)
        .setExpirationTime(exp)
        .sign(key.privateKey);
    const jwt = await sign([trustDomain, ...unique.filter((a) => a !== trustDomain)]);
    const perAudience: Record<string, string> = {};
    for (const audience of unique) perAudience[audience] = await sign([audience]);
    return { jwt, perAudience, expiresAt: new Date(exp * 1000) };
  }

  /**
   * The issuer changed: keep the previous key published until its tokens have expired, unless
   * its issuer was retired with `--now` ("withdrawn": no longer published, also not from `stateFile`).
   */
  async retire(previous: JwtKeySource): Promise<"kept" | "withdrawn"> {
    const key = await this.#key(previous.privateKey);
    const issuer = normalizeSerial(previous.serial);
    const others = this.#retired.filter((k) => k.jwk.kid !== key.kid);
    if (this.#revokedSerials().has(issuer)) {
      this.#retired = others;
      this.#persist();
      return "withdrawn";
    }
    const until = Math.ceil((this.#options.clock().getTime() + this.#options.ttlMs) / 1000);
    this.#retired = [...others, { jwk: withIssuer(key.publicJwk, issuer), until, issuer }];
    this.#persist();
    return "kept";
  }

  /**
   * The JWKS: the current key, then retired keys whose tokens may still be valid and whose issuer
   * was not retired with `--now`. Each key names its issuer's serial (JWK_ISSUER_SERIAL).
   */
  async jwks(current: JwtKeySource): Promise<{ keys: JWK[] }> {
    const key = await this.#key(current.privateKey);
    this.#withdrawRevoked();
    const now = this.#options.clock().getTime() / 1000;
    const live = this.#retired.filter((k) => k.until > now && k.jwk.kid !== key.kid);
    if (live.length !== this.#retired.length) {
      this.#retired = this.#retired.filter((k) => k.until > now);
      this.#persist();
    }
    return { keys: [withIssuer(key.publicJwk, normalizeSerial(current.serial)), ...live.map((k) => k.jwk)] };
  }

  /** Serials of the issuers retired with `--now`. */
  #revokedSerials(): Set<string> {
    return new Set((this.#options.revokedIssuers?.() ?? []).map((r) => normalizeSerial(r.serial)));
  }

  /**
   * Drops the retired keys whose issuer is retired with `--now`. A key recorded without its issuer
   * (jwt-keys.json written before version 2) cannot be told apart: it is dropped when an issuer was
   * retired with `--now` within a TTL before the key was retired, or since (the CA retired the
   * leaked issuer's key a poll after the rotation), and kept otherwise.
   */
  #withdrawRevoked(): void {
    const revoked = this.#options.revokedIssuers?.() ?? [];
    if (revoked.length === 0 || this.#retired.length === 0) return;
    const serials = new Set(revoked.map((r) => normalizeSerial(r.serial)));
    const ttl = this.#options.ttlMs / 1000;
    const lastRevoked = Math.max(...revoked.map((r) => r.revokedAt.getTime() / 1000));
    const kept = this.#retired.filter((k) => (k.issuer !== undefined ? !serials.has(k.issuer) : lastRevoked < k.until - 2 * ttl));
    if (kept.length === this.#retired.length) return;
    this.#retired = kept;
    this.#persist();
  }

  /** OpenID Connect discovery (only what a relying party verifying tokens needs). */
  discovery(): object {
    const issuer = this.#options.issuer();
    return {
      issuer,
      jwks_uri: `${issuer.replace(/\/$/, "")}/.well-known/jwks.json`,
      response_types_supported: ["id_token"],
      subject_types_supported: ["public"],
      id_token_signing_alg_values_supported: [this.#options.algorithm],
      claims_supported: ["sub", "aud", "exp", "iat", "iss"],
    };
  }

  async #key(issuerKey: KeyObject): Promise<DerivedKey> {
    const cached = this.#derived.get(issuerKey);
    if (cached !== undefined) return cached;
    const derived = await deriveKey(issuerKey, this.#options.algorithm);
    this.#derived.set(issuerKey, derived);
    return derived;
  }

  #persist(): void {
    if (this.#options.stateFile === undefined) return;
    writeFileAtomic(this.#options.stateFile, `${JSON.stringify({ version: 2, retired: this.#retired }, null, 2)}\n`);
  }
}

/** Refuses bad audiences before anything is spent (E_REQUEST_INVALID); returns them without duplicates. */
export function checkJwtAudiences(audiences: readonly string[]): string[] {
  const unique = [...new Set(audiences)];
  if (unique.length > MAX_JWT_AUDIENCES) throw new MeshwardError("E_REQUEST_INVALID", `at most ${MAX_JWT_AUDIENCES} JWT audiences may be asked for, got ${unique.length}`);
  for (const audience of unique) {
    if (audience.length === 0 || audience.length > MAX_AUDIENCE_LENGTH || !/^[\x21-\x7e]+$/.test(audience)) {
      throw new MeshwardError("E_REQUEST_INVALID", `JWT audience ${JSON.stringify(audience.slice(0, 80))} must be 1 to ${MAX_AUDIENCE_LENGTH} printable ASCII characters without spaces`);
    }
  }
  return unique;
}

async function deriveKey(issuerKey: KeyObject, algorithm: JwtSvidAlgorithm): Promise<DerivedKey> {
  const ikm = issuerKey.export({ type: "pkcs8", format: "der" });
  const okm = Buffer.from(hkdfSync("sha256", ikm, "meshward jwt-svid key v1", algorithm, 48));
  let privateKey: KeyObject;
  if (algorithm === "EdDSA") {
    privateKey = createPrivateKey({ key: Buffer.concat([ED25519_PKCS8_PREFIX, okm.subarray(0, 32)]), format: "der", type: "pkcs8" });
  } else {
    // FIPS 186-4 B.4.1: 64 extra bits, reduced mod n-1, plus one: a uniform scalar in [1, n-1].
    const d = (BigInt(`0x${okm.toString("hex")}`) % (P256_ORDER - 1n)) + 1n;
    const dBytes = Buffer.from(d.toString(16).padStart(64, "0"), "hex");
    const ecdh = createECDH("prime256v1");
    ecdh.setPrivateKey(dBytes);
    const point = ecdh.getPublicKey();
    const jwk: JsonWebKey = { kty: "EC", crv: "P-256", d: dBytes.toString("base64url"), x: point.subarray(1, 33).toString("base64url"), y: point.subarray(33).toString("base64url") };
    privateKey = createPrivateKey({ key: jwk, format: "jwk" });
  }
  const publicJwk = createPublicKey(privateKey).export({ format: "jwk" }) as JWK;
  const kid = await calculateJwkThumbprint(publicJwk);
  return { privateKey, kid, publicJwk: { ...publicJwk, kid, alg: algorithm, use: "sig" } };
}

/** A public JWK naming the serial of the issuer it was derived from. */
function withIssuer(jwk: JWK, serial: string): JWK {
  return { ...jwk, [JWK_ISSUER_SERIAL]: serial } as JWK;
}

function readRetired(file: string): PublishedKey[] {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    return [];
  }
  try {
    const parsed = JSON.parse(text) as { retired?: PublishedKey[] };
    return (parsed.retired ?? [])
      .filter((k) => typeof k?.until === "number" && typeof k.jwk?.kid === "string" && k.jwk.d === undefined)
      .map((k) => {
        let issuer: string | undefined;
        try {
          issuer = typeof k.issuer === "string" ? normalizeSerial(k.issuer) : undefined;
        } catch {
          issuer = undefined;
        }
        return { jwk: k.issuer === undefined || issuer === undefined ? k.jwk : withIssuer(k.jwk, issuer), until: k.until, ...(issuer !== undefined ? { issuer } : {}) };
      });
  } catch {
    throw new MeshwardError("E_CA_CORRUPT", `${file} is not valid JSON; it lists the JWT-SVID keys still published (remove it to start over)`);
  }
}
