import type { Logger } from "pino";
import { describeError, isMeshwardError, MeshwardError } from "../errors.ts";
import { toPem } from "../pki/pem.ts";
import { throwIfCancelled } from "../util/abort.ts";
import type { Store, TokenConsumption } from "../store/store.ts";
import type { LoadedAnchors } from "./anchors.ts";
import { checkJwtAudiences, type IssuedJwtSvids, type JwtSvidIssuer } from "./jwt-svid.ts";
import { isRefusedBeforeAnyCost, type Attestor } from "./attest/attestor.ts";
import { tokenRefusal } from "./attest/join-token.ts";
import type { PeerCertificate } from "./attest/peer.ts";
import { daprControlPlaneDnsNames } from "./attest/dapr-control-plane.ts";
import { routeValidator, trustDomainLimit } from "./attest/routing.ts";
import type { CrlPublisher } from "./crl-publisher.ts";
import type { SigningPolicy } from "./issuer.ts";
import type { LimitedWarnings } from "../telemetry/log-limiter.ts";
import type { CaMetrics } from "./metrics.ts";
import { inlineSigning, type CsrSigning } from "./signing-pool.ts";
import type { SignRateLimiter } from "./sign-rate-limit.ts";

export type ValidatorName = "join-token" | "jwks" | "kubernetes" | "insecure" | "svid";

export interface SignRequest {
  readonly csr: string | Uint8Array;
  readonly token: string;
  /** undefined: the CA's default validator (Dapr's UNKNOWN). */
  readonly validator: ValidatorName | undefined;
  readonly appId: string;
  readonly namespace: string;
  readonly trustDomain: string;
  /**
   * The certificate the caller presented on its TLS connection. A function is called only when
   * the request's validator reads it (svid renewal): the API port accepts any client certificate
   * (first-time workloads have none), so one nobody asked about is never parsed.
   */
  readonly peer: PeerCertificate | (() => PeerCertificate | undefined) | undefined;
  /** For logs: where the request came from. */
  readonly remoteAddress?: string;
  /** The source IP address, which the sign rate limit counts (not limited when omitted). */
  readonly sourceAddress?: string;
  /** Audiences of the JWT-SVIDs asked for alongside the certificate (Dapr's field 7). */
  readonly jwtAudiences?: readonly string[];
  /**
   * Aborted when the caller gives up (the gRPC stream is reset or closed, or its grpc-timeout
   * passes). Checked before each step and, last, by the store just before it spends a join
   * token's use: a request nobody waits for any more is refused with the abort's reason
   * (E_REQUEST_CANCELLED, E_REQUEST_TIMEOUT) instead of spending a use on a certificate that
   * would never be delivered.
   */
  readonly signal?: AbortSignal;
}

export interface SignResult {
  readonly spiffeId: string;
  readonly serial: string;
  /** PEM: the leaf, then the issuer chain (what a workload presents). */
  readonly certificateChainPem: string;
  /** PEM of each trusted root. */
  readonly trustAnchorsPem: readonly string[];
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** JWT-SVIDs, when audiences were asked for and the CA signs them. */
  readonly jwtSvids?: IssuedJwtSvids;
}

export interface AuthorityOptions {
  /**
   * The anchors to sign with, read again right before each leaf is signed. After an issuer change
   * the server keeps answering the issuer the CRL set in force publishes until the set naming the
   * new one is in force (server.ts, signingAnchors).
   */
  readonly anchors: () => LoadedAnchors;
  /**
   * Awaited right before a leaf is signed: the server holds requests there for a moment while a
   * new issuer's CRL is being published and no issuer the set in force publishes may sign (after
   * `--now`). Resolves at once otherwise.
   */
  readonly beforeSign?: (signal?: AbortSignal) => Promise<void>;
  readonly store: Store;
  readonly attestors: ReadonlyMap<ValidatorName, Attestor>;
  readonly defaultValidator: ValidatorName;
  readonly policy: SigningPolicy;
  readonly crl: CrlPublisher;
  readonly metrics: CaMetrics;
  readonly logger: Logger;
  readonly clock: () => Date;
  /** Where CSRs are verified and leaves signed (a worker pool in the server); on this thread when omitted. */
  readonly signing?: CsrSigning;
  /** Signs JWT-SVIDs (off when omitted). */
  readonly jwtSvids?: JwtSvidIssuer;
  /**
   * The CA's own serving SPIFFE ID, which workloads check to know they talk to the CA (and daprd
   * to Sentry): never issued to a caller, whatever its attestation proves.
   */
  readonly servingSpiffeId?: string;
  /** Certificates per source address (config signRateLimit); unlimited when omitted. */
  readonly rateLimit?: SignRateLimiter;
  /**
   * Told of each issuance write: undefined when it committed, the error when the store failed it
   * (E_STORE_*: locked by another process, disk full, writer thread gone), for the readiness check.
   */
  readonly onStoreWrite?: (failure: MeshwardError | undefined) => void;
  /**
   * Where refusals (the caller's fault) are logged: a rate-limited warning per reason and source
   * address, since anyone who reaches the API can cause them at will; the CA's own failures a
   * rate-limited error per reason. Straight to the logger when omitted.
   */
  readonly refusalWarnings?: Pick<LimitedWarnings, "warn" | "error">;
  /** Told of each refused request (the status page's refusals). */
  readonly onRefused?: (event: {
    /** Error code, e.g. E_TOKEN_EXPIRED. */
    readonly reason: string;
    /** What the client was told (a refusal's message), at most 300 characters. */
    readonly message: string;
    readonly remoteAddress: string | undefined;
    /** "ns/<namespace>/<app id>" as the request asked, or "" when it named neither. */
    readonly requested: string;
  }) => void;
}

/** Attest, check the CSR, sign, record: protocol-independent (gRPC and tests call this). */
export class CertificateAuthority {
  readonly #signing: CsrSigning;

  constructor(private readonly options: AuthorityOptions) {
    this.#signing = options.signing ?? inlineSigning;
  }

  async sign(request: SignRequest): Promise<SignResult> {
    const started = process.hrtime.bigint();
    const { metrics, logger } = this.options;
    const validatorName = routeValidator(request.validator, request.token, this.options.defaultValidator);
    try {
      const result = await this.#sign(request, validatorName);
      metrics.signRequests.inc({ result: "ok", reason: "" });
      metrics.issued.inc({ validator: validatorName });
      metrics.signDuration.observe({ result: "ok" }, seconds(started));
      if (logger.isLevelEnabled("info")) {
        logger.info(
          { event: "certificate-issued", spiffeId: result.spiffeId, serial: result.serial, validator: validatorName, notAfter: result.notAfter.toISOString(), peer: request.remoteAddress },
          "issued workload certificate",
        );
      }
      return result;
    } catch (error) {
      const refused = isMeshwardError(error);
      const reason = refused ? error.code : "E_INTERNAL";
      // The caller's fault (credential, CSR, policy, its own limits) is a refusal; the CA's own
      // (store, issuer, signing workers, attestation backends, bugs) an error, which pages.
      const result = isCaFailure(reason) ? "error" : "refused";
      metrics.signRequests.inc({ result, reason });
      metrics.signDuration.observe({ result }, seconds(started));
      const fields = { event: result === "error" ? "sign-failed" : "sign-refused", reason, validator: validatorName, peer: request.remoteAddress, appId: request.appId.slice(0, 256), namespace: request.namespace.slice(0, 256) };
      const logged = refused ? error.message : `internal error while signing: ${describeError(error)}`;
      const warnings = this.options.refusalWarnings;
      if (warnings === undefined) (result === "error" ? logger.error : logger.warn).call(logger, fields, logged);
      // Both are rate-limited: callers repeat either at will (a failure too, while the JWKS is unreachable).
      else if (result === "error") warnings.error(`sign-failed|${reason}`, fields, logged);
      else warnings.warn(`sign-refused|${reason}|${request.sourceAddress ?? request.remoteAddress ?? ""}`, fields, logged);
      const message = refused ? error.message : "internal error while signing; see the CA's log";
      const requested = request.namespace === "" && request.appId === "" ? "" : `ns/${request.namespace.slice(0, 128) || "?"}/${request.appId.slice(0, 128) || "?"}`;
      this.options.onRefused?.({ reason, message: message.length > 300 ? `${message.slice(0, 300)}…` : message, remoteAddress: request.remoteAddress, requested });
      if (refused) throw error;
      throw new MeshwardError("E_INTERNAL", "the CA failed to sign the request; see the CA's log", { cause: error });
    }
  }

  async #sign(request: SignRequest, validatorName: ValidatorName): Promise<SignResult> {
    const { rateLimit } = this.options;
    const address = request.sourceAddress;
    if (rateLimit === undefined || address === undefined) return this.#signAttested(request, validatorName);
    const waitMs = rateLimit.take(address, this.options.clock().getTime());
    if (waitMs > 0) {
      throw new MeshwardError("E_RATE_LIMITED", `this address was issued its share of certificates (signRateLimit); retry in ${Math.ceil(waitMs / 1000)} s`);
    }
    const progress = { attesting: false };
    try {
      return await this.#signAttested(request, validatorName, progress);
    } catch (error) {
      if (!countsAgainstSignRateLimit(error, progress.attesting)) rateLimit.giveBack(address);
      throw error;
    }
  }

  /** `progress.attesting` is set once the validator is asked (see countsAgainstSignRateLimit). */
  async #signAttested(request: SignRequest, validatorName: ValidatorName, progress: { attesting: boolean } = { attesting: false }): Promise<SignResult> {
    const anchors = this.options.anchors();
    const now = this.options.clock();
    if (request.trustDomain !== "" && request.trustDomain !== anchors.trustDomain) {
      throw trustDomainLimit(request.trustDomain, anchors.trustDomain);
    }
    // As Sentry with JWTs enabled, a request naming one of Dapr's validators gets a JWT-SVID (aud:
    // the trust domain, then whatever jwt_audiences names), asked for or not (dapr/dapr
    // pkg/sentry/server/server.go, `if s.jwtEnabled { audiences := append([]string{td}, …) }`).
    // meshward's own clients (JOIN_TOKEN, SVID: daprd never sends these) get one only when they list
    // audiences: a token nobody reads would cost a signature on the CA's thread at every renewal.
    const fromMeshwardClient = request.validator === "join-token" || request.validator === "svid";
    const wantsJwt = this.options.jwtSvids !== undefined && (!fromMeshwardClient || (request.jwtAudiences?.length ?? 0) > 0);
    if (wantsJwt) checkJwtAudiences(request.jwtAudiences ?? []);
    const attestor = this.options.attestors.get(validatorName);
    const { signal } = request;
    throwIfCancelled(signal);
    // Parse and verify the CSR before attestation spends a single-use token on a bad request.
    const csr = attestor?.spends ? await this.#signing.parseCsr(request.csr, signal) : undefined;
    if (attestor === undefined) {
      throw new MeshwardError("E_VALIDATOR_DISABLED", `the ${validatorName} validator is not enabled on this CA`);
    }
    const peer = attestor.readsPeer === true ? (typeof request.peer === "function" ? request.peer() : request.peer) : undefined;
    progress.attesting = true;
    const attested = await attestor.attest({
      token: request.token,
      requestedAppId: request.appId,
      requestedNamespace: request.namespace,
      requestedTrustDomain: request.trustDomain,
      peer,
      now,
    });
    // Dapr's control-plane services get the DNS names Sentry gives them (the injector's webhook
    // name, …), decided here from the attested identity as Sentry decides them server side.
    const controlPlaneNames = daprControlPlaneDnsNames(attested.spiffeId, this.options.servingSpiffeId);
    const identity = controlPlaneNames.length === 0 ? attested : { ...attested, dnsNames: controlPlaneNames };
    if (!identity.spiffeId.startsWith(`spiffe://${anchors.trustDomain}/`)) {
      throw new MeshwardError("E_TRUST_DOMAIN_MISMATCH", `attested identity ${identity.spiffeId} is outside this CA's trust domain ${anchors.trustDomain}`);
    }
    if (identity.spiffeId === this.options.servingSpiffeId) {
      // A pod that may name its own app id (annotation mode) or runs as the CA's service account
      // would otherwise attest as the CA, and every workload would then take it for the CA.
      throw new MeshwardError(
        "E_IDENTITY_RESERVED",
        `${identity.spiffeId} is this CA's own serving identity: workloads authenticate the CA by it, so no caller is issued it (give the workload another app id or service account)`,
        { details: { spiffeId: identity.spiffeId } },
      );
    }
    throwIfCancelled(signal); // attestation may have waited on the Kubernetes API or a JWKS fetch
    await this.options.beforeSign?.(signal);
    throwIfCancelled(signal);
    // Read again: the issuer may have changed while the caller was attested.
    const signer = this.options.anchors();
    const signing = { identity, signer: signer.issuer, policy: this.options.policy, now, ...(signal !== undefined ? { signal } : {}) };
    const leaf = csr !== undefined ? await this.#signing.sign({ ...signing, csr }) : await this.#signing.issue({ ...signing, csr: request.csr });
    const leafPem = toPem(leaf.der, "CERTIFICATE");
    const jwtSvids = wantsJwt ? await this.options.jwtSvids?.issue(signer.issuer.privateKey, leaf.spiffeId, request.jwtAudiences ?? [], leaf.notAfter) : undefined;
    const record = {
      serial: leaf.serial,
      spiffeId: leaf.spiffeId,
      dnsNames: leaf.dnsNames,
      notBefore: leaf.notBefore,
      notAfter: leaf.notAfter,
      issuedAt: now,
      attestation: identity.method,
      issuerFingerprint: signer.issuer.certificate.fingerprint256,
      rootFingerprint: signer.issuerRoot.fingerprint256,
      certificatePem: leafPem,
      // A renewal proven with the current certificate retires it from the live count.
      ...(identity.method === "svid" && peer !== undefined ? { supersedes: peer.serial } : {}),
    };
    // A join token: every check passed and the leaf is signed: spend the use and record the certificate in one
    // transaction. Losing the race for a token's last use discards the leaf, never returned.
    // A caller that gave up meanwhile (daprd gives each attempt 3 s and then retries with the
    // same token: dapr/dapr pkg/security/sentry.go, retry.WithPerRetryTimeout) keeps its use:
    // the store checks the signal as late as it can (see Store.recordIssuanceSpendingToken).
    // What is left is the store's own commit: a caller giving up during it, or between the
    // commit and the response reaching it, leaves the use spent and the certificate logged.
    const spent = await this.#write<{ readonly ok: true } | Extract<TokenConsumption, { ok: false }>>(
      () =>
        identity.spendsToken === undefined
          ? this.options.store.recordIssuance(record).then(() => ({ ok: true }))
          : this.options.store.recordIssuanceSpendingToken(record, identity.spendsToken, now, signal === undefined ? {} : { signal }),
      (result) => result.ok,
    );
    if (!spent.ok) throw tokenRefusal(spent.reason);
    return {
      spiffeId: leaf.spiffeId,
      serial: leaf.serial,
      certificateChainPem: leafPem + signer.issuerChainPem,
      trustAnchorsPem: rootPems(signer),
      notBefore: leaf.notBefore,
      notAfter: leaf.notAfter,
      ...(jwtSvids !== undefined ? { jwtSvids } : {}),
    };
  }

  /**
   * Runs an issuance write, telling onStoreWrite how the store answered (a refusal such as a
   * cancelled request is not the store's failure). Only a write that `committed` tells it the
   * store writes again: a token found used up was answered by a read (PostgreSQL's UPDATE that
   * matched no row), which says nothing about whether the store accepts writes.
   */
  async #write<T>(write: () => Promise<T>, committed: (result: T) => boolean = () => true): Promise<T> {
    try {
      const result = await write();
      if (committed(result)) this.options.onStoreWrite?.(undefined);
      return result;
    } catch (error) {
      if (isMeshwardError(error) && error.code.startsWith("E_STORE_") && error.code !== "E_STORE_CONFLICT") this.options.onStoreWrite?.(error);
      throw error;
    }
  }

  /** Revoked serials known to this CA (from the last CRL it signed). */
  revokedSerials(): ReadonlySet<string> {
    return this.options.crl.current?.revokedSerials ?? new Set();
  }
}

/**
 * Whether a request that ended without a certificate keeps the signRateLimit share it took (counts
 * against its source address) rather than giving it back. Given back, because they cost the CA
 * nothing beyond what the caller sent and a legitimate client makes them by mistake:
 * - refusals before attestation began (`attestationBegan` false): trust domain, JWT-SVID
 *   audiences, a disabled validator, a malformed CSR checked before a join token is read, a
 *   request cancelled before;
 * - refusals an attestor gives from its own local checks (refusedBeforeAnyCost): no or a
 *   malformed token, a JWT whose shape, exp or audience rule it out (jwt-precheck.ts), a
 *   renewal without a certificate;
 * - the CA's own failures (isCaFailure: E_INTERNAL, the store, the issuer, the signing workers,
 *   the JWKS or Kubernetes API unreachable; and E_CA_BUSY): a workload retrying after them is not
 *   the one at fault. A failed JWKS or discovery fetch is followed by a cooldown
 *   (failure-cooldown.ts), and failed Kubernetes API calls by a circuit breaker
 *   (kube-api-breaker.ts), so such retries do not each cost a fetch or a TokenReview.
 * Every other refusal counts: one from attestation past its local checks (a TokenReview that did
 * not authenticate the token, a signature that does not verify against the JWKS, an unknown or
 * used-up join token, an untrusted SVID, an identity other than the one requested) cost the CA
 * a remote call, a store read or a signature check, and a forged token of the right shape would
 * otherwise have the CA verify it without bound; so does one after attestation (the CSR refused
 * by the signing policy, a reserved identity, the caller giving up after the CA attested it).
 */
export function countsAgainstSignRateLimit(error: unknown, attestationBegan: boolean): boolean {
  if (!attestationBegan || isRefusedBeforeAnyCost(error)) return false;
  const code = isMeshwardError(error) ? error.code : "E_INTERNAL";
  return !isCaFailure(code) && code !== "E_CA_BUSY";
}

/**
 * Whether a sign request failed through the CA's fault rather than the caller's: the store, the
 * issuer (expired, not yet valid), the signing workers, the JWKS or Kubernetes API the CA
 * attests with, or a bug (E_INTERNAL). Counted result="error" (MeshwardCaSigningErrors).
 */
export function isCaFailure(code: string): boolean {
  return CA_FAILURE_PREFIXES.some((prefix) => code.startsWith(prefix)) || CA_FAILURES.has(code);
}

const CA_FAILURE_PREFIXES = ["E_STORE_", "E_ISSUER_", "E_SIGNING_"] as const;
const CA_FAILURES: ReadonlySet<string> = new Set(["E_INTERNAL", "E_JWKS_UNAVAILABLE", "E_KUBERNETES_UNAVAILABLE"]);

const rootPemCache = new WeakMap<LoadedAnchors, readonly string[]>();

/** Each root as PEM, encoded once per set of anchors rather than once per request. */
function rootPems(anchors: LoadedAnchors): readonly string[] {
  let pems = rootPemCache.get(anchors);
  if (pems === undefined) {
    pems = anchors.roots.map((root) => toPem(root.raw, "CERTIFICATE"));
    rootPemCache.set(anchors, pems);
  }
  return pems;
}

function seconds(started: bigint): number {
  return Number(process.hrtime.bigint() - started) / 1e9;
}
