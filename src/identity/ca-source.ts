import { createHash, type X509Certificate } from "node:crypto";
import { checkTokenFile } from "../util/files.ts";
import { INPUT_LIMITS, readInputText } from "../util/read-input.ts";
import type { Logger } from "pino";
import { describeError, isMeshwardError, MeshwardError } from "../errors.ts";
import { verifyChain } from "../pki/chain.ts";
import { createCsr } from "../pki/csr.ts";
import { normalizeSerial } from "../pki/certificate.ts";
import { parseCrl, type ParsedCrl } from "../pki/crl.ts";
import { inspectCertificate, toX509 } from "../pki/inspect.ts";
import { generateKeyPair } from "../pki/keys.ts";
import { certificatesFromPem, toPem } from "../pki/pem.ts";
import { formatWorkloadId, parseSpiffeId } from "../spiffe/id.ts";
import { systemClock, type Clock, type ClockTimer, type Rng } from "../util/clock.ts";
import { fetchFromCa, fetchFromCaWithChain, raisedBeforeVerifiedCa, requestCertificate, type CaConnection, type ValidatorChoice } from "./ca-client.ts";
import { avoidCaEndpoint, parseCaAddresses } from "./ca-endpoints.ts";
import { newestCrl, staleCrlWarning } from "./instrument.ts";
import { checkSignedSvid } from "./svid-check.ts";
import { backoffDelay, DEFAULT_BACKOFF, DEFAULT_RENEWAL_TIMING, renewalDelay, type Backoff, type RenewalTiming } from "./schedule.ts";
import { sameCrls, type IdentityEvent, type IdentitySnapshot, type IdentitySource, type Svid, type TrustBundle } from "./source.ts";
import { holdEventLoopUntilSettled } from "../util/event-loop-hold.ts";

/** How often a CRL from an unknown issuer may make the identity renew (see refreshBundle). */
const CRL_RENEWAL_COOLDOWN_MS = 5 * 60_000;
/** How often an identity that needs a new token tries again (a token file may be replaced meanwhile). */
export const NEEDS_TOKEN_RETRY_MS = 5 * 60_000;

export interface CaIdentityOptions {
  /**
   * CA address, HOST:PORT; CA replicas as a comma-separated list or an array (a DNS name may
   * resolve to several addresses). A request the replica could not serve is retried on the next.
   */
  readonly ca: string | readonly string[];
  /** Bootstrap trust bundle (PEM): the CA's certificate must chain to it. */
  readonly bundlePem: string;
  /** Read from the bundle's root when omitted. */
  readonly trustDomain?: string;
  /** Asked for, and checked against what the CA issues, when given. */
  readonly namespace?: string;
  readonly appId?: string;
  readonly token?: string;
  /** Re-read before each use, so rotating tokens (Kubernetes projected tokens) keep working. */
  readonly tokenFile?: string;
  readonly validator?: ValidatorChoice;
  readonly dnsNames?: readonly string[];
  /**
   * A still-valid certificate from an earlier run (`identity --out DIR` after a restart): the
   * first certificate is renewed with it (SVID validator), so a spent join token is not needed
   * again. If the CA refuses it (revoked, untrusted), the token is used instead.
   */
  readonly resume?: Svid;
  readonly timing?: RenewalTiming;
  readonly backoff?: Backoff;
  /** How often the bundle and CRL are fetched from the CA (default 60 s). */
  readonly bundleRefreshMs?: number;
  readonly requestTimeoutMs?: number;
  readonly clock?: Clock;
  readonly rng?: Rng;
  readonly logger?: Logger;
  /**
   * The caller ends when ready() rejects (the `identity`, `sidecar` and `injector` commands): every
   * failure that rejects ready() then also stops the identity, and its log line says "not
   * retrying". Default (an SDK process, which may outlive a rejected ready()): a failure about who
   * answered at the CA's address (E_CA_NOT_TLS, E_CA_UNTRUSTED, E_SPIFFE_MISMATCH of the CA's
   * identity check: raisedBeforeVerifiedCa) rejects ready() but retries with backoff, and the
   * identity becomes ready (current(), a `rotated` event) once the genuine CA answers; only the CA's
   * own refusals over a verified connection and local configuration errors stop it.
   */
  readonly stopsWhenReadyRejects?: boolean;
}

export interface CaIdentitySource extends IdentitySource {
  /** Renews at once (e.g. after a root rotation): a renewal that began before the call is waited for, not taken as this one. */
  renewNow(): Promise<void>;
  /** Fetches the bundle and CRL at once. */
  refreshBundle(): Promise<void>;
  /**
   * Why the identity is not ready, undefined when it is: stopped for good (`stopped, not retrying:
   * …`), its certificate revoked, a new token needed, or, while it holds no valid certificate (none
   * yet, or expired) and keeps retrying, the latest failed attempt (its code, a hint when what
   * answered at the CA's address was not the CA, and when the next attempt is due). Cleared by the
   * next certificate.
   */
  problem(): string | undefined;
}

/**
 * A workload identity from the meshward CA that keeps itself fresh: renews at ~50% of its
 * life (jittered), retries with capped exponential backoff while the CA is down, keeps
 * serving the current certificate until it expires, then reports `expired` and stops
 * offering it. Renewal proves identity with the current certificate, so a single-use join
 * token is needed only once.
 */
export function createIdentity(options: CaIdentityOptions): CaIdentitySource {
  return new CaSource(options);
}

/**
 * The CA's answers to a renewal with the current certificate that no retry with it can change
 * (src/ca/attest/svid.ts): the identity attests with its token instead, at once.
 */
const SVID_REFUSED_FOR_GOOD = new Set(["E_CERT_REVOKED", "E_ATTESTATION_NOT_ISSUED", "E_ATTESTATION_UNTRUSTED", "E_CERT_EXPIRED"]);

class CaSource implements CaIdentitySource {
  readonly #options: CaIdentityOptions;
  readonly #clock: Clock;
  readonly #rng: Rng;
  readonly #trustDomain: string;
  readonly #expectedId: string | undefined;
  readonly #listeners = new Set<(event: IdentityEvent) => void>();
  #snapshot: IdentitySnapshot | undefined;
  /** Last good SVID even after expiry, to tell the CA who we were. */
  #svid: Svid | undefined;
  /** The chain this workload held before #svid: its issuer may still sign the CA's CRL for a moment after a rotation. */
  #previousChainPem: string | undefined;
  /** #svid is options.resume, not yet renewed: a refusal of it falls back to the token. */
  #resuming = false;
  /** The CA refused to renew with #svid for good (revoked, not issued here, untrusted): attest with the token instead, until a new one arrives. */
  #svidRefused = false;
  /** The current certificate's serial, while the CRL in force lists it (until a new certificate arrives). */
  #ownRevoked: string | undefined;
  /** The CA refused for good (a spent or expired token, an unknown identity) and no certificate is left to renew with. */
  #needsToken: MeshwardError | undefined;
  /**
   * The last failed attempt to get or renew a certificate and when the next one is due, until an
   * attempt succeeds: problem() reports it while no valid certificate is held (before the first,
   * after expiry), so that a caller polling problem() or a status page sees why, also while an
   * identity whose ready() rejected keeps retrying in the background.
   */
  #lastFailure: { readonly error: unknown; readonly first: boolean; readonly failures: number; readonly retryAt: number } | undefined;
  /** When a CRL from an issuer this certificate does not chain to last made it renew. */
  #crlRenewedAt = Number.NEGATIVE_INFINITY;
  /**
   * The CRL set in force, one for the whole CA (the CRL number is CA-wide: every CRL of a set
   * carries the same one): a later fetch numbered below it (a lagging replica, whatever issuer
   * signs it) never replaces it nor removes a revocation. Undefined before the first CRL.
   */
  #crlInForce: CrlSetInForce | undefined;
  /** The CRL numbers already logged as crl-older-ignored (each is logged once). */
  #olderLogged = new Set<string>();
  /** The nextUpdate (ms) of the stale CRL last reported (crl-stale), so that each CRL is logged once. */
  #staleReported: number | undefined;
  /** When (identity clock) the current SVID arrived. */
  #receivedAt = 0;
  #bundle: TrustBundle;
  #attempt = 0;
  #renewTimer: ClockTimer | undefined;
  #expiryTimer: ClockTimer | undefined;
  #bundleTimer: ClockTimer | undefined;
  #renewing: Promise<void> | undefined;
  #closed = false;
  /**
   * Why the identity stopped: a refusal before the first certificate that only a new token or
   * configuration fixes rejected ready(), and nothing is tried again (no renewal, no bundle
   * refresh); create a new identity once it is fixed.
   */
  #stopped: MeshwardError | undefined;
  #resolveReady!: (snapshot: IdentitySnapshot) => void;
  #rejectReady!: (error: Error) => void;
  readonly #ready: Promise<IdentitySnapshot>;

  readonly #ca: string;

  #tokenFileWarned = false;

  constructor(options: CaIdentityOptions) {
    this.#options = options;
    // A token file others can read is refused at once, not at the first attempt (E_KEY_PERMISSIONS).
    if (options.tokenFile !== undefined) this.#checkTokenFile(options.tokenFile);
    this.#ca = typeof options.ca === "string" ? options.ca : options.ca.join(",");
    parseCaAddresses(this.#ca); // a bad address fails here, not at the first renewal
    this.#clock = options.clock ?? systemClock;
    this.#rng = options.rng ?? Math.random;
    this.#trustDomain = options.trustDomain ?? trustDomainOf(options.bundlePem);
    this.#expectedId =
      options.namespace && options.appId ? formatWorkloadId({ trustDomain: this.#trustDomain, namespace: options.namespace, appId: options.appId }) : undefined;
    this.#bundle = { trustDomain: this.#trustDomain, rootsPem: normalizeRoots(options.bundlePem), revokedSerials: new Set() };
    this.#ready = new Promise((resolve, reject) => {
      this.#resolveReady = resolve;
      this.#rejectReady = reject;
    });
    this.#ready.catch(() => undefined);
    holdEventLoopUntilSettled(this.#ready);
    if (options.resume !== undefined) {
      this.#svid = options.resume;
      this.#resuming = true;
      this.#log("info", { event: "resuming", spiffeId: options.resume.spiffeId, serial: options.resume.serial, notAfter: options.resume.notAfter.toISOString() }, "renewing with the certificate from the last run");
    }
    void this.#renew();
    this.#scheduleBundleRefresh();
  }

  ready(): Promise<IdentitySnapshot> {
    return this.#ready;
  }

  current(): IdentitySnapshot | undefined {
    // The expiry timer may not have run yet (a host that just woke from a suspend): an expired
    // certificate is never handed out.
    if (this.#snapshot !== undefined && this.#snapshot.svid.notAfter.getTime() <= this.#clock.now()) return undefined;
    return this.#snapshot;
  }

  problem(): string | undefined {
    if (this.#stopped !== undefined) return `stopped, not retrying: ${this.#stopped.message} (${this.#stopped.code}); create a new identity once a new token or configuration fixes it`;
    const needsToken =
      this.#needsToken === undefined
        ? undefined
        : `the CA refused to issue a certificate (${this.#needsToken.code}): a new join token is needed (meshward token create), or a valid --token-file; retrying every ${NEEDS_TOKEN_RETRY_MS / 60_000} minutes`;
    if (this.#ownRevoked !== undefined) {
      return `this workload's certificate serial ${this.#ownRevoked} was revoked (it is on the CA's CRL, and peers refuse it); ${needsToken ?? "renewing"}`;
    }
    if (needsToken !== undefined) return needsToken;
    // A failed renewal while the current certificate is still valid is no reason to stop serving
    // (the log and meshward_rotation_total{result="error"} say it): only without one is it reported.
    const failure = this.#lastFailure;
    if (failure === undefined || this.current() !== undefined) return undefined;
    const what = failure.first ? "could not get a workload certificate" : "the workload certificate expired and could not be renewed";
    const hint = raisedBeforeVerifiedCa(failure.error)
      ? `; what answered at the CA's address (${this.#ca}) is not the CA that bundlePem trusts: check the CA address and bundlePem`
      : "";
    const attempts = failure.failures === 1 ? "1 failed attempt" : `${failure.failures} failed attempts`;
    return `${what}: ${describeError(failure.error)}${hint}; ${attempts}, retrying with backoff (next at ${new Date(failure.retryAt).toISOString()})`;
  }

  subscribe(listener: (event: IdentityEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  async renewNow(): Promise<void> {
    if (this.#stopped !== undefined) throw this.#stopped;
    // A renewal already running began before this call (right after ready() the first one is
    // still settling): its certificate may predate the reason for calling. Wait for it, then
    // renew, joining only a renewal that began after this call.
    await this.#renewing;
    await this.#renew();
  }

  async refreshBundle(): Promise<void> {
    if (this.#stopped !== undefined) throw this.#stopped;
    const connection = this.#connection();
    const delivered = await fetchFromCaWithChain(connection, "/v1/bundle?format=spiffe");
    const published = parseBundleDocument(delivered.body);
    // A root set that leaves out the root this very connection was verified under is refused:
    // taking it would cut this workload off from its CA for good (see #acceptRoots).
    const rootsPem = this.#acceptRoots(normalizeRoots(published.rootsPem), delivered.servingChain, "bundle") ?? this.#bundle.rootsPem;
    // No CRL of this workload's own issuer (its issuer was retired with rotate-issuer --now, the
    // answer to a leaked issuer key, together with revocations; or a CA older than the CRL set,
    // which publishes the current issuer's CRL alone): renew onto the current issuer now and verify
    // again, so that it holds a certificate its CA still vouches for rather than waiting for the
    // scheduled renewal, hours away. At most once per CRL_RENEWAL_COOLDOWN_MS. A rotation that keeps
    // the previous issuer publishing its CRL (the default) leaves every workload on its scheduled
    // renewal: no renewal wave follows an issuer rotation.
    const renewForCrl = async (): Promise<boolean> => {
      if (this.#svid === undefined || this.#clock.now() - this.#crlRenewedAt < CRL_RENEWAL_COOLDOWN_MS) return false;
      this.#crlRenewedAt = this.#clock.now();
      this.#log("info", { event: "crl-issuer-changed" }, "the CA publishes no CRL of the issuer this certificate chains to (issuer retired); renewing now");
      await this.#renew();
      return true;
    };
    const fetched = await this.#fetchRevocations(connection)
      .then(async (result) => {
        if (result.ownIssuerPublished || !(await renewForCrl())) return result;
        return await this.#fetchRevocations(connection).catch(() => result);
      })
      .catch(async (error: unknown) => {
        if (isMeshwardError(error, "E_CRL_SIGNATURE") && (await renewForCrl())) {
          try {
            return await this.#fetchRevocations(connection);
          } catch (again) {
            error = again;
          }
        }
        // A root change must not wait on it: keep the last good revocation set, and say so.
        this.#log("warn", { event: "crl-refresh-failed", error: describeError(error) }, "could not verify the CA's CRL; keeping the last one");
        return { ...this.#lastRevocations(), ownIssuerPublished: true };
      });
    const { revokedSerials, crls } = fetched;
    // A CRL re-signed with the same revocations is a change too: the Workload API hands the CRL
    // itself on (X509SVIDResponse.crl), and a consumer that checks nextUpdate needs the fresh one.
    const changed = rootsPem !== this.#bundle.rootsPem || !sameSet(revokedSerials, this.#bundle.revokedSerials) || !sameCrls(crls, this.#bundle.crls);
    if (changed) {
      this.#bundle = { trustDomain: this.#trustDomain, rootsPem, revokedSerials, ...(crls !== undefined ? { crls } : {}) };
      this.#log("info", { event: "bundle-updated", roots: certificatesFromPem(rootsPem).length, revoked: revokedSerials.size }, "trust bundle updated");
      if (this.#svid !== undefined && this.current() !== undefined) {
        this.#snapshot = { svid: this.#svid, bundle: this.#bundle };
        this.#emit({ type: "bundle-updated", snapshot: this.#snapshot });
      }
    }
    this.#reportStaleCrl();
    // Our own certificate on the CRL: every peer refuses it from now on. Say so (not ready), and
    // renew now rather than at the scheduled renewal, hours away; the CA refuses a renewal with
    // a revoked certificate, and the identity then attests again with its token (#renewOnce).
    const svid = this.#svid;
    if (svid !== undefined && revokedSerials.has(svid.serial) && this.#ownRevoked !== svid.serial) {
      this.#ownRevoked = svid.serial;
      this.#log("error", { event: "own-certificate-revoked", serial: svid.serial, spiffeId: svid.spiffeId }, `this workload's certificate serial ${svid.serial} was revoked (it is on the CA's CRL); renewing now`);
      await this.#renew();
    }
    // `meshward ca rotate-root activate --reissue`: certificates under the old root renew now.
    if (published.reissueBeforeMs !== undefined && this.#svid !== undefined && this.#mustReissue(this.#svid, published, rootsPem)) {
      this.#log("info", { event: "reissue-requested" }, "the CA asked workloads to renew now (root rotation)");
      await this.#renew();
    }
  }

  /**
   * With the CA's active root named, the held certificate's chain decides, not a clock: a CA
   * clock ahead of this host's would otherwise renew this workload at every bundle refresh until
   * the clocks agree, one behind (or a renewal in flight while the CA switched roots) would leave
   * it on the old root, where `rotate-root retire` then waits for it. A CA that names no root
   * (older meshward) gets the time comparison.
   */
  #mustReissue(svid: Svid, published: PublishedBundle, rootsPem: string): boolean {
    if (published.reissueRootSha256 !== undefined) {
      const activeRoot = certificatesFromPem(rootsPem).find((der) => createHash("sha256").update(der).digest("hex") === published.reissueRootSha256);
      if (activeRoot !== undefined) return !chainsTo(svid.certChainPem, activeRoot);
    }
    return this.#receivedAt < published.reissueBeforeMs!;
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const timer of [this.#renewTimer, this.#expiryTimer, this.#bundleTimer]) if (timer) this.#clock.clearTimeout(timer);
    this.#rejectReady(new MeshwardError("E_IDENTITY_CLOSED", "the identity was closed before it got a certificate"));
    this.#listeners.clear();
  }

  #renew(): Promise<void> {
    // One renewal at a time; a second caller waits for the running one.
    this.#renewing ??= this.#renewOnce().finally(() => {
      this.#renewing = undefined;
    });
    return this.#renewing;
  }

  async #renewOnce(): Promise<void> {
    if (this.#closed) return;
    if (this.#renewTimer) this.#clock.clearTimeout(this.#renewTimer);
    // No certificate yet (or none from this run): the log says "issued", not "renewed".
    const first = this.#snapshot === undefined;
    try {
      const { svid, endpoint } = await this.#fetchSvid();
      if (this.#closed) return;
      if (this.#crlInForce === undefined) await this.#takeFirstCrl(svid, endpoint);
      else await this.#checkIssuerPublished(svid, endpoint);
      if (this.#closed) return;
      this.#attempt = 0;
      this.#resuming = false;
      this.#svidRefused = false;
      this.#ownRevoked = undefined;
      this.#needsToken = undefined;
      this.#lastFailure = undefined;
      if (this.#svid !== undefined && this.#svid.certChainPem !== svid.certChainPem) this.#previousChainPem = this.#svid.certChainPem;
      this.#svid = svid;
      this.#receivedAt = this.#clock.now();
      this.#snapshot = { svid, bundle: this.#bundle };
      this.#log("info", { event: "rotated", spiffeId: svid.spiffeId, serial: svid.serial, notAfter: svid.notAfter.toISOString() }, first ? "workload certificate issued" : "workload certificate renewed");
      this.#emit({ type: "rotated", snapshot: this.#snapshot });
      this.#resolveReady(this.#snapshot);
      this.#schedule(renewalDelay(this.#clock.now(), svid.notAfter.getTime(), this.#options.timing ?? DEFAULT_RENEWAL_TIMING, this.#rng));
      this.#scheduleExpiry(svid);
    } catch (error) {
      if (this.#closed) return;
      if (this.#resuming && isMeshwardError(error) && !/^E_CA_(UNAVAILABLE|NOT_TLS|UNTRUSTED|ISSUER_RETIRED|CERT_REVOKED)$/.test(error.code) && !raisedBeforeVerifiedCa(error)) {
        // The CA answered and refused the old certificate: attest with the token at once. Not when
        // something else answered at its address (a mesh workload's own SVID: E_SPIFFE_MISMATCH at
        // the handshake): that would drop a valid certificate and spend the token on nothing.
        this.#resuming = false;
        this.#svid = undefined;
        this.#log("warn", { event: "resume-refused", reason: error.code, error: describeError(error) }, "the CA refused the certificate from the last run; attesting with the token");
        this.#schedule(0);
        return;
      }
      if (!this.#svidRefused && this.#svid !== undefined && isMeshwardError(error) && SVID_REFUSED_FOR_GOOD.has(error.code)) {
        // Revoked (its own serial, or one it was renewed from: revocation follows renewals), not in
        // the CA's issuance log, or no longer under its roots. Every renewal with it would be
        // refused until it expires: attest again with the token at once (a Kubernetes workload's
        // service-account JWT; a join token only if it has a use left).
        this.#svidRefused = true;
        if (error.code === "E_CERT_REVOKED") {
          this.#log("warn", { event: "revoked", serial: this.#svid.serial, error: describeError(error) }, "the CA says this workload's certificate is revoked; attesting again with the token");
        } else {
          this.#log("warn", { event: "renewal-refused", reason: error.code, serial: this.#svid.serial, error: describeError(error) }, "the CA refuses renewals with this workload's certificate; attesting again with the token");
        }
        this.#schedule(0);
        return;
      }
      let retryInMs = backoffDelay(this.#attempt++, this.#options.backoff ?? DEFAULT_BACKOFF, this.#rng);
      if (needsNewToken(error) && this.#svid !== undefined && !this.#resuming && !this.#renewableWith(this.#svid)) {
        // Nothing left to renew with (expired or revoked) and the CA refuses the token for good:
        // only an operator can fix it. Say it once, fail readiness, and try again only slowly.
        if (this.#needsToken === undefined) {
          this.#log("error", { event: "needs-new-token", reason: error.code, error: describeError(error) }, "the CA refuses this workload's token and it has no valid certificate to renew with: give it a new join token");
        }
        this.#needsToken = error;
        retryInMs = Math.max(retryInMs, NEEDS_TOKEN_RETRY_MS);
      }
      // A refusal that fails ready() (a CLI daemon then exits) is not announced as a retry.
      const failsReady = isFatal(error) && (this.#svid === undefined || this.#resuming);
      // It stops the identity when only a person can fix it (the genuine CA's refusal over a
      // verified connection, a local configuration error), or when the caller ends anyway. A
      // failure about who answered at the CA's address (anything there can cause it, with no key)
      // rejects ready() but is retried: the genuine CA may answer next time.
      const stops = failsReady && (this.#options.stopsWhenReadyRejects === true || !raisedBeforeVerifiedCa(error));
      const what = first ? "could not get a workload certificate" : "could not renew the workload certificate";
      // No retry delay beside "not retrying": the identity stops (ready() rejects; a daemon waiting on it exits).
      this.#log(
        "warn",
        { event: "renewal-failed", reason: isMeshwardError(error) ? error.code : "E_INTERNAL", ...(stops ? { stopped: true } : { retryInMs }), ...(failsReady && !stops ? { readyRejected: true } : {}), error: describeError(error), ...(first ? { first: true } : {}) },
        stops
          ? `${what}; not retrying: the identity stopped (only a new token or configuration fixes this; create a new identity then)`
          : failsReady
            ? `${what}; ready() rejected, retrying (what answered at the CA's address is not the CA: the CA may answer next time)`
            : `${what}; retrying`,
      );
      this.#emit({ type: "renewal-failed", error: error as Error, retryInMs });
      if (stops) {
        this.#stop(error as MeshwardError);
        return;
      }
      if (failsReady) this.#rejectReady(error as Error);
      this.#lastFailure = { error, first, failures: (this.#lastFailure?.failures ?? 0) + 1, retryAt: this.#clock.now() + retryInMs };
      this.#schedule(retryInMs);
    }
  }

  /** Whether `svid` can still prove this workload's identity to the CA (not expired, not known revoked). */
  #renewableWith(svid: Svid): boolean {
    return !this.#svidRefused && svid.notAfter.getTime() > this.#clock.now();
  }

  async #fetchSvid(): Promise<{ svid: Svid; endpoint: string | undefined }> {
    const keyPair = generateKeyPair();
    const csrPem = await createCsr({ keyPair, dnsNames: this.#options.dnsNames ?? [] });
    const now = this.#clock.now();
    const current = this.#svid !== undefined && !this.#svidRefused && this.#svid.notAfter.getTime() > now ? this.#svid : undefined;
    const token = current === undefined ? this.#readToken() : "";
    const connection: CaConnection = {
      ...this.#connection(),
      ...(current ? { clientCertificate: { certChainPem: current.certChainPem, privateKey: current.privateKey } } : {}),
    };
    const signed = await requestCertificate(connection, {
      csrPem,
      token,
      validator: current ? "SVID" : (this.#options.validator ?? "JOIN_TOKEN"),
      namespace: this.#options.namespace ?? "",
      appId: this.#options.appId ?? "",
    });
    // The roots of the answer are taken only under the same rule as a bundle refresh; refused,
    // the leaf must verify against the roots this workload already holds.
    const rootsPem = this.#acceptRoots(normalizeRoots(signed.bundlePem), signed.servingChain, "sign") ?? this.#bundle.rootsPem;
    const { spiffeId, leaf } = checkSignedSvid({
      certChainPem: signed.certChainPem,
      rootsPem,
      privateKey: keyPair.privateKey,
      trustDomain: this.#trustDomain,
      expectedId: this.#svid?.spiffeId ?? this.#expectedId,
      at: new Date(now),
    });
    if (rootsPem !== this.#bundle.rootsPem) this.#bundle = { ...this.#bundle, rootsPem };
    return { svid: { spiffeId, certChainPem: signed.certChainPem, privateKey: keyPair.privateKey, notBefore: leaf.notBefore, notAfter: leaf.notAfter, serial: leaf.serial }, endpoint: signed.endpoint };
  }

  /**
   * A root set the CA delivered (a bundle refresh or a signing answer), or undefined when it is
   * refused. It is taken only when it holds a root under which the CA's serving chain on the
   * connection that delivered it verifies (one of the roots held now: the TLS handshake was
   * verified against them). A root rotation passes (prepare adds a root, activate moves the CA's
   * serving certificate to it, retire drops the old one, and each set holds the root of the
   * connection that delivered it); a set that drops the current root, or holds only a foreign
   * one (a replica restored from the wrong backup, a botched rotation, a compromised replica),
   * does not: taking it would make every later connection to the real CA E_CA_UNTRUSTED. A
   * refusal keeps the current set (nothing is emitted, so the SDK, the sidecar, the file sink
   * and the Workload API never see it), is logged as an error and emitted as `bundle-refused`
   * (meshward_identity_bundle_refused_total), and the next refresh tries again as usual.
   */
  #acceptRoots(offeredPem: string, servingChain: readonly Buffer[] | undefined, via: "bundle" | "sign"): string | undefined {
    if (offeredPem === this.#bundle.rootsPem) return offeredPem;
    const anchors = servingAnchors(servingChain, this.#bundle.rootsPem);
    const offered = certificatesFromPem(offeredPem);
    if (anchors.some((anchor) => offered.some((der) => der.equals(anchor)))) return offeredPem;
    const reason =
      anchors.length === 0
        ? "the CA's serving chain on that connection could not be matched to a held root"
        : `it leaves out the root the CA's connection was verified under (sha256 ${anchors.map(fingerprint).join(", ")})`;
    this.#log(
      "error",
      { event: "bundle-refused", via, reason, offered: offered.map(fingerprint), held: certificatesFromPem(this.#bundle.rootsPem).map(fingerprint) },
      `refused the root set the CA ${via === "bundle" ? "published" : "returned with a certificate"}: ${reason}; keeping the current roots and trying again at the next refresh`,
    );
    this.#emit({ type: "bundle-refused", reason });
    return undefined;
  }

  /**
   * The CRL, before the first certificate is handed out: until the first bundle refresh (a
   * minute later by default) a workload would otherwise enforce no revocation at all, and every
   * start or restart of a pod would accept revoked peers for that minute. When it cannot be had,
   * the certificate is kept (the retry renews with it: a single-use token is not needed again)
   * and the attempt fails like a failed renewal, with backoff; ready() waits.
   */
  async #takeFirstCrl(svid: Svid, endpoint: string | undefined): Promise<void> {
    try {
      const { revokedSerials, crls } = await this.#fetchRevocations(this.#connection(), svid.certChainPem);
      this.#bundle = { ...this.#bundle, revokedSerials, ...(crls !== undefined ? { crls } : {}) };
    } catch (error) {
      this.#keepForRetry(svid);
      throw new MeshwardError(
        isMeshwardError(error) && /^E_CA_/.test(error.code) ? error.code : "E_CRL_UNAVAILABLE",
        `got a certificate but not the CA's CRL, which a workload enforces from its first connection: ${describeError(error)}`,
        { cause: error },
      );
    }
    // The CRL set came from whichever replica answered: one up to date while the certificate came
    // from one behind (still signing with a retired issuer) publishes no CRL of that issuer.
    this.#refuseUnpublishedIssuer(svid, endpoint);
  }

  /**
   * A certificate from an issuer that no longer publishes a CRL is not taken (review crlset
   * HIGH-1): after `rotate-issuer --now` (the answer to a leaked issuer key) a CA replica that has
   * not yet seen the rotation still signs with the retired issuer. The CRL set in force (the
   * highest number seen) names the issuers the CA vouches for; a renewal onto one it does not
   * name is checked once more against the CA's set now (a rotation since the last refresh puts
   * the new issuer in it), and refused when the set in force still does not name it: the renewal
   * fails and is retried with backoff, at another replica first when several are configured.
   */
  async #checkIssuerPublished(svid: Svid, endpoint: string | undefined): Promise<void> {
    const inForce = this.#crlInForce;
    const issuer = issuerOf(svid.certChainPem);
    if (inForce === undefined || issuer === undefined || inForce.issuers.has(issuer)) return;
    try {
      // From the replica that signed it: with several replicas, another one may not have adopted
      // the set naming a new issuer yet, and its lower-numbered set would change nothing here.
      const connection = endpoint !== undefined ? { ...this.#connection(), address: endpoint } : this.#connection();
      this.#applyRevocations(await this.#fetchRevocations(connection, this.#svid?.certChainPem, svid.certChainPem));
    } catch (error) {
      this.#log("warn", { event: "crl-refresh-failed", error: describeError(error) }, "could not verify the CA's CRL; keeping the last one");
    }
    this.#refuseUnpublishedIssuer(svid, endpoint);
  }

  #refuseUnpublishedIssuer(svid: Svid, endpoint: string | undefined): void {
    const inForce = this.#crlInForce;
    const issuer = issuerOf(svid.certChainPem);
    if (inForce === undefined || issuer === undefined || inForce.issuers.has(issuer)) return;
    if (this.#snapshot === undefined) this.#keepForRetry(svid);
    if (endpoint !== undefined) avoidCaEndpoint(this.#ca, endpoint);
    this.#log(
      "error",
      { event: "renewal-issuer-retired", issuer, serial: svid.serial, crlNumber: inForce.number?.toString(), published: [...inForce.issuers], ...(endpoint !== undefined ? { ca: endpoint } : {}) },
      `refused the certificate the CA${endpoint !== undefined ? ` at ${endpoint}` : ""} returned: its issuer publishes no CRL in the CA's newest CRL set (number ${inForce.number?.toString() ?? "none"}), so it is retired (rotate-issuer --now) and that replica is behind the others; retrying`,
    );
    throw new MeshwardError(
      "E_ISSUER_RETIRED",
      `the CA${endpoint !== undefined ? ` at ${endpoint}` : ""} signed with an issuer its newest CRL set no longer publishes (retired; that replica is behind the others)`,
      { details: { issuer } },
    );
  }

  /** A certificate that is not handed out yet but is kept to renew with (a spent join token is not needed again). */
  #keepForRetry(svid: Svid): void {
    if (this.#closed) return;
    this.#svid = svid;
    this.#resuming = false;
    this.#svidRefused = false;
  }

  /** Hands a revocation set taken outside refreshBundle to the subscribers. */
  #applyRevocations(result: { revokedSerials: ReadonlySet<string>; crls?: readonly Buffer[] }): void {
    if (sameSet(result.revokedSerials, this.#bundle.revokedSerials) && sameCrls(result.crls, this.#bundle.crls)) return;
    this.#bundle = { ...this.#bundle, revokedSerials: result.revokedSerials, ...(result.crls !== undefined ? { crls: result.crls } : {}) };
    this.#log("info", { event: "bundle-updated", roots: certificatesFromPem(this.#bundle.rootsPem).length, revoked: result.revokedSerials.size }, "trust bundle updated");
    if (this.#svid !== undefined && this.current() !== undefined) {
      this.#snapshot = { svid: this.#svid, bundle: this.#bundle };
      this.#emit({ type: "bundle-updated", snapshot: this.#snapshot });
    }
  }

  /**
   * The revocations in effect and the CRLs they came from (handed on by the Workload API).
   *
   * The CA publishes a CRL per issuer whose certificates may still be valid, each signed by its own
   * issuer (`/v1/crl?format=set`, crl-publisher.ts); a CA older than that answers the current
   * issuer's CRL alone (DER). Revocations are the union of every CRL verified (each lists all the
   * CA's revocations), so a peer's certificate is checked against the CRL of its own issuer whatever
   * issuer this workload is on. `ownIssuerPublished` is false when no CRL of this workload's own
   * issuer verified: its issuer is no longer published (retired with `rotate-issuer --now`), and
   * refreshBundle renews onto the current one.
   *
   * Which signatures count (a CRL under any issuer chaining to a held root used to: a CRL signed by
   * another intermediate under the same root, an old issuer's or one made for something else,
   * could replace the set in force): a root CRL (root-crl.ts) verifies with a root of the bundle;
   * an issuer's CRL only with an issuer the CA vouches for to this workload (#vouchedIssuers): one
   * it signed this workload's certificate with (current or just signed), one whose CRL is in the
   * set in force, or the one that signed the CA's serving certificate on the connection that
   * delivered the answer (the CA signs it with its current issuer; the set names the previous one
   * only while it is in force here too); with a CA older than the set, also the issuer this
   * workload held a moment ago. An issuer a root CRL lists (retired with --now) never counts. An
   * entry that names its issuer (`issuer_chain`) is verified with that issuer only, and only when
   * it is vouched for; one that names none with the vouched issuers.
   */
  async #fetchRevocations(
    connection: CaConnection,
    chainPem = this.#svid?.certChainPem,
    /** A certificate just signed, not taken yet (checkSignedSvid verified it to a held root): its issuer may sign a CRL too. */
    candidateChainPem?: string,
  ): Promise<{ revokedSerials: ReadonlySet<string>; crls?: readonly Buffer[]; ownIssuerPublished: boolean }> {
    const delivered = await fetchFromCaWithChain(connection, "/v1/crl?format=set");
    const offered = parseCrlSet(delivered.body);
    const isSet = delivered.body[0] === 0x7b;
    const ownChain = chainPem !== undefined ? certificatesFromPem(chainPem).slice(1).map((d) => toX509(d)) : [];
    const issuers = [...ownChain];
    // Just after a renewal onto a new issuer (root or issuer rotation) a CA older than the set may
    // still serve the CRL its previous issuer signed, until its next refresh: that issuer is ours of
    // a moment ago and still chains to a root of the bundle, so its CRL holds, and is no reason to
    // renew again. (A CA that publishes the set names it, and it is in the set in force.)
    const previous = !isSet && chainPem !== undefined && chainPem === this.#svid?.certChainPem ? this.#previousChainPem : undefined;
    const roots = certificatesFromPem(this.#bundle.rootsPem).map((d) => toX509(d));
    const previousHeld = previous !== undefined && certificatesFromPem(this.#bundle.rootsPem).some((root) => chainsTo(previous, root));
    if (previousHeld) {
      for (const d of certificatesFromPem(previous).slice(1)) {
        const issuer = toX509(d);
        if (!issuers.some((held) => held.fingerprint256 === issuer.fingerprint256)) issuers.push(issuer);
      }
    }
    for (const d of candidateChainPem !== undefined ? certificatesFromPem(candidateChainPem).slice(1) : []) {
      const issuer = toX509(d);
      if (!issuers.some((held) => held.fingerprint256 === issuer.fingerprint256)) issuers.push(issuer);
    }
    const ownIssuer = ownChain[0]?.fingerprint256;
    const now = this.#clock.now();
    const verified: { der: Buffer; parsed: ParsedCrl; issuer: string; root: boolean; signer: X509Certificate; chain: readonly X509Certificate[] }[] = [];
    // Root CRLs first: the issuers they list count for nothing below.
    const rest: OfferedCrl[] = [];
    for (const entry of offered) {
      const root = entry.issuerChain.length === 0 ? firstSigner(entry.der, roots, (candidate) => candidate) : undefined;
      if (root !== undefined) verified.push({ der: entry.der, parsed: root.parsed, issuer: root.signer.fingerprint256, root: true, signer: root.signer, chain: [] });
      else rest.push(entry);
    }
    const revokedIssuer = retiredIssuerTest([...verified.map((v) => ({ root: v.signer, parsed: v.parsed })), ...this.#rootCrlsInForce(roots)]);
    const chainOf = (pem: string | undefined) => (pem === undefined ? [] : [certificatesFromPem(pem).slice(1).map((d) => toX509(d))]);
    const ownChains = [...chainOf(chainPem), ...(previousHeld ? chainOf(previous) : []), ...chainOf(candidateChainPem)];
    const vouched = this.#vouchedIssuers(ownChains, delivered.servingChain, roots, now, revokedIssuer);
    for (const entry of rest) {
      const named = entry.issuerChain[0] === undefined ? undefined : toX509(entry.issuerChain[0]);
      const candidates = named === undefined ? [...vouched.values()] : [vouched.get(named.fingerprint256)].filter((c): c is X509Certificate[] => c !== undefined);
      const found = firstSigner(entry.der, candidates, (candidate) => candidate[0]!);
      if (found !== undefined) verified.push({ der: entry.der, parsed: found.parsed, issuer: found.signer.fingerprint256, root: false, signer: found.signer, chain: found.candidate });
      else this.#logRefusedCrl(entry, named);
    }
    // Root CRLs list issuers, not workload certificates: alone they say nothing of the workloads'
    // revocations, so they never stand in for an issuer's CRL here.
    if (!verified.some((v) => !v.root)) {
      if (issuers.length === 0) return { ...this.#lastRevocations(), ownIssuerPublished: true };
      throw new MeshwardError("E_CRL_SIGNATURE", "none of the CA's CRLs is signed by this workload's issuer or by another issuer the CA vouches for (the set in force, the CA's serving certificate)");
    }
    // The set's version: the highest number among its CRLs (every CRL of a set shares it), and
    // the issuers whose CRL carries it.
    // Root CRLs (root-crl.ts) are left out of the version: a root's CRL is carried over unchanged
    // between re-signings, with the number it was signed at; they travel with the set they came in.
    const issuerCrls = verified.filter((v) => !v.root);
    const top = issuerCrls.reduce((best, v) => (compareCrl(crlVersionOf(v.parsed), best) > 0 ? crlVersionOf(v.parsed) : best), crlVersionOf(issuerCrls[0]!.parsed));
    const current = issuerCrls.filter((v) => compareCrl(crlVersionOf(v.parsed), top) === 0);
    const fetched: CrlSetInForce = {
      ...top,
      issuers: new Set(current.map((v) => v.issuer)),
      signers: new Map(current.map((v) => [v.issuer, v.chain])),
      // Issuers' CRLs first, then the roots': crl.pem, which nginx and HAProxy read with the whole-chain check.
      crls: new Map([...current, ...verified.filter((v) => v.root)].map((v) => [v.issuer, Buffer.from(v.der)])),
    };
    const fetchedRevoked = new Set<string>();
    for (const { parsed } of verified) for (const serial of parsed.revokedSerials) fetchedRevoked.add(serial);
    const inForce = this.#crlInForce;
    const order = inForce === undefined ? 1 : compareCrl(fetched, inForce);
    if (inForce !== undefined && order < 0) {
      // Numbered below the set in force, whatever issuer signs it: a replica behind the others
      // (also one still on an issuer retired since, review crlset HIGH-1). It replaces nothing.
      // Its revocations not in force are added (revocations in force only grow): a store restored
      // from a backup signs lower numbers with later revocations until it catches up.
      const added = [...fetchedRevoked].filter((serial) => !this.#bundle.revokedSerials.has(serial));
      const key = fetched.number?.toString() ?? `t${fetched.thisUpdate}`;
      if (!this.#olderLogged.has(key)) {
        if (this.#olderLogged.size > 64) this.#olderLogged.clear();
        this.#olderLogged.add(key);
        this.#log(
          "warn",
          { event: "crl-older-ignored", crlNumber: fetched.number?.toString(), inForce: inForce.number?.toString(), issuers: [...fetched.issuers], ...(added.length > 0 ? { added: added.length } : {}) },
          "the CA served an older CRL set than the one in force (a replica behind the others); keeping the newer one",
        );
      }
      const last = this.#lastRevocations();
      return { ...last, revokedSerials: added.length === 0 ? last.revokedSerials : new Set([...last.revokedSerials, ...added]), ownIssuerPublished: true };
    }
    let taken = fetched;
    let revokedSerials: Set<string> = fetchedRevoked;
    if (inForce !== undefined && order === 0) {
      // The same set (or the part of it this workload could verify this time): nothing in force is dropped.
      taken = {
        ...fetched,
        issuers: new Set([...fetched.issuers, ...inForce.issuers]),
        signers: new Map([...inForce.signers, ...fetched.signers]),
        crls: new Map([...fetched.crls, ...[...inForce.crls].filter(([issuer]) => !fetched.crls.has(issuer))]),
      };
      revokedSerials = new Set([...fetchedRevoked, ...this.#bundle.revokedSerials]);
    }
    // A higher number replaces the set in force: it lists every revocation the CA holds (the CA
    // drops none; were it to leave out certificates that have expired, that is what it says).
    this.#crlInForce = taken;
    const published = (issuer: string) => taken.issuers.has(issuer);
    const ownIssuerPublished = ownIssuer === undefined || published(ownIssuer) || (previous !== undefined && issuers.some((i) => published(i.fingerprint256)));
    return { revokedSerials, crls: [...taken.crls.values()], ownIssuerPublished };
  }

  /**
   * The issuers (by fingerprint256, each with its chain up to a root, issuer first) whose CRL this
   * workload takes (see #fetchRevocations): those of `own` (its chain, the one just signed, with a
   * CA older than the set the one held before), those of the set in force, and the issuer of the
   * CA's serving certificate on the connection that delivered the answer; each a CA certificate
   * valid now under a held root, none of its chain listed by a root CRL.
   */
  #vouchedIssuers(own: readonly X509Certificate[][], servingChain: readonly Buffer[], roots: readonly X509Certificate[], now: number, revoked: (issuer: X509Certificate) => boolean): Map<string, X509Certificate[]> {
    const vouched = new Map<string, X509Certificate[]>();
    const serving = servingChain.slice(1).map((d) => toX509(d)).filter((c) => !(c.subject === c.issuer && c.checkIssued(c)));
    const chains: (readonly X509Certificate[])[] = [...own, ...(this.#crlInForce?.signers.values() ?? []), ...(serving.length > 0 ? [serving] : [])];
    for (const chain of chains) {
      for (let index = 0; index < chain.length; index++) {
        const path = chain.slice(index);
        const issuer = path[0]!;
        if (vouched.has(issuer.fingerprint256) || path.some(revoked)) continue;
        // Up to a held root, directly or through the rest of the chain it came with.
        if (issuerChainTrusted([issuer], roots, now)) vouched.set(issuer.fingerprint256, [issuer]);
        else if (issuerChainTrusted(path, roots, now)) vouched.set(issuer.fingerprint256, path);
      }
    }
    return vouched;
  }

  /** The root CRLs of the set in force (parsed), which list the issuers retired with --now. */
  #rootCrlsInForce(roots: readonly X509Certificate[]): { root: X509Certificate; parsed: ParsedCrl }[] {
    const out: { root: X509Certificate; parsed: ParsedCrl }[] = [];
    for (const [issuer, der] of this.#crlInForce?.crls ?? []) {
      const root = roots.find((r) => r.fingerprint256 === issuer);
      if (root === undefined) continue;
      try {
        out.push({ root, parsed: parseCrl(der, root) });
      } catch {
        // not that root's (a root replaced since): it says nothing
      }
    }
    return out;
  }

  /** The CRLs an answer carried that no issuer this workload takes signed (logged once per CRL, as a warning). */
  #refusedLogged = new Set<string>();
  #logRefusedCrl(entry: OfferedCrl, named: X509Certificate | undefined): void {
    const key = fingerprint(entry.der);
    if (this.#refusedLogged.has(key)) return;
    if (this.#refusedLogged.size > 64) this.#refusedLogged.clear();
    this.#refusedLogged.add(key);
    this.#log(
      "warn",
      { event: "crl-issuer-not-vouched", ...(named !== undefined ? { named: named.fingerprint256 } : {}) },
      "the CA's CRL set holds a CRL signed by no issuer the CA vouches for to this workload (not its own issuer, not in the set in force, not the CA's serving issuer, or retired in a root CRL): not used",
    );
  }

  /**
   * Logs once per CRL (as an error) when the CRL in force is past its nextUpdate after a refresh:
   * no newer one could be had. It stays enforced (revocations are never dropped because their CRL
   * aged); revocations made since it was signed are unknown here. See staleCrlWarning.
   */
  #reportStaleCrl(): void {
    // Keyed by the CRL's nextUpdate, not its buffer: a bundle update for another reason (a root
    // change) hands the same CRL over in a new buffer, and that is no new stale CRL.
    const nextUpdate = newestCrl(this.#bundle)?.nextUpdate;
    const warning = staleCrlWarning(this.#bundle, this.#clock.now());
    if (warning === undefined || nextUpdate === undefined || nextUpdate === this.#staleReported) return;
    this.#staleReported = nextUpdate;
    this.#log("error", { event: "crl-stale", revoked: this.#bundle.revokedSerials.size }, warning.replace(/^WARNING: /, ""));
  }

  #lastRevocations(): { revokedSerials: ReadonlySet<string>; crls?: readonly Buffer[] } {
    return { revokedSerials: this.#bundle.revokedSerials, ...(this.#bundle.crls !== undefined ? { crls: this.#bundle.crls } : {}) };
  }

  /**
   * How this identity reaches its CA (every request: sign, bundle, CRL). The CA's serving chain is
   * checked at the handshake against the revocations in force here (ca-client.ts
   * servingChainRefusal): after `rotate-issuer --now` the root CRL lists the retired issuer, and
   * whoever holds its leaked key can mint a certificate with the CA's SPIFFE ID; such an endpoint
   * (or a replica still serving with that issuer) is refused before a token or CSR is sent, logged
   * (`ca-refused`), and the next CA endpoint is tried.
   */
  #connection(): CaConnection {
    return {
      address: this.#ca,
      bundlePem: this.#bundle.rootsPem,
      trustDomain: this.#trustDomain,
      revokedSerials: this.#bundle.revokedSerials,
      onRefused: (refusal, endpoint) => {
        this.#log(
          "error",
          { event: "ca-refused", reason: refusal.code, ca: endpoint, ...refusal.details },
          `refused the CA endpoint ${endpoint}: ${refusal.message}`,
        );
        // Counted (meshward_identity_ca_refused_total{reason}) by instrumentIdentity.
        this.#emit({ type: "ca-refused", reason: refusal.code, endpoint });
      },
      ...(this.#options.requestTimeoutMs !== undefined ? { timeoutMs: this.#options.requestTimeoutMs } : {}),
    };
  }

  #readToken(): string {
    if (this.#options.tokenFile !== undefined) {
      this.#checkTokenFile(this.#options.tokenFile);
      try {
        // Re-read at each attestation on the event loop: bounded, and never a pipe, which could stall it.
        return readInputText(this.#options.tokenFile, { what: "token file", maxBytes: INPUT_LIMITS.secret, pipes: false }).trim();
      } catch (error) {
        throw new MeshwardError("E_TOKEN_MISSING", `cannot read token file ${this.#options.tokenFile}: ${error instanceof MeshwardError ? error.message : ((error as NodeJS.ErrnoException).code ?? describeError(error))}`);
      }
    }
    if (this.#options.token === undefined || this.#options.token === "") {
      throw new MeshwardError("E_TOKEN_MISSING", "no valid certificate to renew with and no token to attest with");
    }
    return this.#options.token;
  }

  /** The token file's mode, before anything is read or sent (checkTokenFile); the warning for a platform's secret mount is logged once. */
  #checkTokenFile(path: string): void {
    checkTokenFile(path, (message) => {
      if (this.#tokenFileWarned) return;
      this.#tokenFileWarned = true;
      this.#log("warn", { event: "token-file-readable", path }, message);
    });
  }

  /** Stops every timer after a refusal that fails ready() (see #stopped); close() is still the caller's. */
  #stop(error: MeshwardError): void {
    this.#stopped = error;
    for (const timer of [this.#renewTimer, this.#expiryTimer, this.#bundleTimer]) if (timer) this.#clock.clearTimeout(timer);
    this.#renewTimer = this.#bundleTimer = undefined;
    this.#rejectReady(error);
  }

  #schedule(delayMs: number): void {
    if (this.#closed || this.#stopped !== undefined) return;
    if (this.#renewTimer) this.#clock.clearTimeout(this.#renewTimer);
    this.#renewTimer = this.#clock.setTimeout(() => void this.#renew(), delayMs);
  }

  #scheduleExpiry(svid: Svid): void {
    if (this.#expiryTimer) this.#clock.clearTimeout(this.#expiryTimer);
    this.#expiryTimer = this.#clock.setTimeout(() => {
      if (this.#svid !== svid || this.#closed) return;
      this.#snapshot = undefined;
      this.#log("error", { event: "expired", spiffeId: svid.spiffeId, notAfter: svid.notAfter.toISOString() }, "the workload certificate expired and could not be renewed; it is no longer presented");
      this.#emit({ type: "expired", spiffeId: svid.spiffeId });
    }, svid.notAfter.getTime() - this.#clock.now());
  }

  #scheduleBundleRefresh(): void {
    const every = this.#options.bundleRefreshMs ?? 60_000;
    this.#bundleTimer = this.#clock.setTimeout(() => {
      this.refreshBundle()
        .catch((error) => this.#log("warn", { event: "bundle-refresh-failed", error: describeError(error) }, "could not refresh the trust bundle"))
        .finally(() => {
          // Also when the refresh failed: a CA that cannot be reached is what lets a CRL go stale.
          this.#reportStaleCrl();
          if (!this.#closed && this.#stopped === undefined) this.#scheduleBundleRefresh();
        });
    }, every);
  }

  #emit(event: IdentityEvent): void {
    for (const listener of [...this.#listeners]) {
      try {
        listener(event);
      } catch (error) {
        this.#log("error", { event: "listener-failed", error: describeError(error) }, "an identity listener threw");
      }
    }
  }

  #log(level: "info" | "warn" | "error", fields: object, message: string): void {
    this.#options.logger?.[level](fields, message);
  }
}

/**
 * Errors that retrying cannot fix before a person acts: a token or a configuration the CA will
 * not accept (a DNS name the workload may not have, a CSR naming another identity), or a bundle
 * or address that reaches no CA. Before the first certificate they reject ready(). The identity
 * then stops (#stopped: nothing is retried) unless the error is about who answered at the CA's
 * address (raisedBeforeVerifiedCa: E_CA_NOT_TLS, E_CA_UNTRUSTED, the handshake's
 * E_SPIFFE_MISMATCH), which an SDK identity retries (see stopsWhenReadyRejects).
 */
function isFatal(error: unknown): boolean {
  return isMeshwardError(error) && /^E_(TOKEN_(USED|EXPIRED|UNKNOWN|MISSING|INVALID|AUDIENCE|SIGNATURE|ISSUER)|KEY_PERMISSIONS|IDENTITY_MISMATCH|SPIFFE_MISMATCH|VALIDATOR_DISABLED|TRUST_DOMAIN_MISMATCH|CA_UNTRUSTED|CA_NOT_TLS|CSR_DNS_NOT_ALLOWED|CSR_IDENTITY_MISMATCH)$/.test(error.code);
}

/** A refusal only a new token (or identity registration) fixes: retrying the same token cannot succeed. */
function needsNewToken(error: unknown): error is MeshwardError {
  return isMeshwardError(error) && /^E_(TOKEN_(USED|EXPIRED|UNKNOWN|MISSING|INVALID)|ATTESTATION_(UNTRUSTED|NOT_ISSUED))$/.test(error.code);
}

interface PublishedBundle {
  readonly rootsPem: string;
  readonly reissueBeforeMs: number | undefined;
  /** SHA-256 (hex) of the root the CA now issues under, published with the reissue request. */
  readonly reissueRootSha256: string | undefined;
}

/** The CA's SPIFFE bundle document (keys[].x5c) plus meshward's reissue hint. */
function parseBundleDocument(body: Buffer): PublishedBundle {
  let document: { keys?: unknown; meshward_reissue_before?: unknown; meshward_reissue_root_sha256?: unknown };
  try {
    document = JSON.parse(body.toString("utf8")) as typeof document;
  } catch {
    throw new MeshwardError("E_BUNDLE_INVALID", "the CA's bundle is not JSON");
  }
  const keys = Array.isArray(document.keys) ? document.keys : [];
  const roots = keys
    .filter((k): k is { use: string; x5c: string[] } => typeof k === "object" && k !== null && (k as { use?: unknown }).use === "x509-svid" && Array.isArray((k as { x5c?: unknown }).x5c))
    .map((k) => toPem(Buffer.from(String(k.x5c[0]), "base64"), "CERTIFICATE"));
  if (roots.length === 0) throw new MeshwardError("E_BUNDLE_INVALID", "the CA's bundle holds no X.509 roots");
  const reissue = document.meshward_reissue_before;
  const reissueRoot = document.meshward_reissue_root_sha256;
  return {
    rootsPem: roots.join(""),
    reissueBeforeMs: typeof reissue === "number" && Number.isFinite(reissue) ? reissue * 1000 : undefined,
    reissueRootSha256: typeof reissueRoot === "string" && /^[0-9a-f]{64}$/.test(reissueRoot) ? reissueRoot : undefined,
  };
}

/** Whether the certificate chain (leaf first) verifies up to `root` (DER) now. */
function chainsTo(certChainPem: string, root: Buffer): boolean {
  const [leaf, ...intermediates] = certificatesFromPem(certChainPem);
  if (leaf === undefined) return false;
  try {
    verifyChain({ leaf, intermediates, roots: [root] });
    return true;
  } catch {
    return false;
  }
}

/**
 * The held roots (DER) under which the chain a CA presented verifies: the roots that vouched
 * for what that connection delivered. The chain is leaf first; a root Node appended to it (from
 * the trusted store) is matched as a root, not used as an intermediate.
 */
function servingAnchors(servingChain: readonly Buffer[] | undefined, heldRootsPem: string): Buffer[] {
  const [leaf, ...rest] = servingChain ?? [];
  if (leaf === undefined) return [];
  const intermediates = rest.filter((der) => {
    const x509 = toX509(der);
    return x509.subject !== x509.issuer;
  });
  return certificatesFromPem(heldRootsPem).filter((root) => {
    try {
      verifyChain({ leaf, intermediates, roots: [root] });
      return true;
    } catch {
      return false;
    }
  });
}

function fingerprint(der: Buffer): string {
  return createHash("sha256").update(der).digest("hex");
}

function normalizeRoots(pem: string): string {
  return certificatesFromPem(pem).map((der) => toPem(der, "CERTIFICATE")).join("");
}

function sameSet(a: ReadonlySet<string>, b: ReadonlySet<string>): boolean {
  return a.size === b.size && [...a].every((v) => b.has(v));
}

function trustDomainOf(bundlePem: string): string {
  for (const der of certificatesFromPem(bundlePem)) {
    const uri = inspectCertificate(der).uris.find((u) => u.startsWith("spiffe://"));
    if (uri !== undefined) return parseSpiffeId(uri).trustDomain;
  }
  throw new MeshwardError("E_TRUST_DOMAIN_UNKNOWN", "no root in the bundle names a SPIFFE trust domain; pass trustDomain");
}

/** Which CRL set a workload holds: its cRLNumber and thisUpdate (ms). */
interface CrlVersion {
  readonly number: bigint | undefined;
  readonly thisUpdate: number;
}

/** The CRL set in force: its version, the issuers whose CRL of that version verified, and those CRLs (DER). */
interface CrlSetInForce extends CrlVersion {
  readonly issuers: ReadonlySet<string>;
  /** The chains (issuer first, up to a root) of `issuers`, by fingerprint256: they vouch for the next set (#vouchedIssuers). */
  readonly signers: ReadonlyMap<string, readonly X509Certificate[]>;
  readonly crls: ReadonlyMap<string, Buffer>;
}

function crlVersionOf(parsed: ParsedCrl): CrlVersion {
  return { number: parsed.crlNumber, thisUpdate: parsed.thisUpdate.getTime() };
}

/**
 * Orders CRL sets across issuers (review crlset HIGH-1): by cRLNumber, which is CA-wide (the
 * store's sequence; every CRL of a set carries the same one; a CA older than the set numbers its
 * DER CRL from the same sequence), so a replica behind the others is recognised whatever issuer
 * signs its answer. A CRL without a number (not meshward's) is ordered by thisUpdate.
 */
function compareCrl(a: CrlVersion, b: CrlVersion): number {
  if (a.number !== undefined && b.number !== undefined) return a.number < b.number ? -1 : a.number > b.number ? 1 : 0;
  return Math.sign(a.thisUpdate - b.thisUpdate);
}

/** The fingerprint of the certificate that signed the chain's leaf (the chain's second certificate). */
function issuerOf(certChainPem: string): string | undefined {
  const der = certificatesFromPem(certChainPem)[1];
  return der === undefined ? undefined : toX509(der).fingerprint256;
}

/** One CRL of the CA's set and the issuer chain (DER, issuer first) it names. */
interface OfferedCrl {
  readonly der: Buffer;
  readonly issuerChain: readonly Buffer[];
}

/**
 * The answer to `/v1/crl?format=set`: the JSON set, or (a CA older than the set, which ignores the
 * parameter) the current issuer's CRL as DER.
 */
function parseCrlSet(body: Buffer): OfferedCrl[] {
  if (body[0] !== 0x7b) return [{ der: body, issuerChain: [] }];
  let document: { crls?: unknown };
  try {
    document = JSON.parse(body.toString("utf8")) as typeof document;
  } catch {
    throw new MeshwardError("E_CRL_INVALID", "the CA's CRL set is not JSON");
  }
  if (!Array.isArray(document.crls)) throw new MeshwardError("E_CRL_INVALID", "the CA's CRL set has no crls list");
  return document.crls.flatMap((entry: unknown) => {
    const { crl, issuer_chain: chain } = (typeof entry === "object" && entry !== null ? entry : {}) as { crl?: unknown; issuer_chain?: unknown };
    if (typeof crl !== "string") return [];
    const issuerChain = Array.isArray(chain) ? chain.filter((c): c is string => typeof c === "string").map((c) => Buffer.from(c, "base64")) : [];
    return [{ der: Buffer.from(crl, "base64"), issuerChain }];
  });
}

/**
 * The serials the root CRLs of a CA's CRL set answer (`/v1/crl?format=set`) list, each CRL verified
 * with a root of `rootsPem` (root-crl.ts: they list the issuers retired with `rotate-issuer --now` /
 * `import-issuer --now`); CRLs no held root signed (the issuers' CRLs, a CA older than the set) are
 * left out. What a CA client that holds no identity (a JWT-SVID validator) keeps to judge the CA's
 * serving chain at its next connections (ca-client.ts servingChainRefusal), as an identity does
 * with the CRL set it holds.
 */
export function rootCrlRevocations(body: Buffer, rootsPem: string): Set<string> {
  const roots = certificatesFromPem(rootsPem).map((d) => toX509(d));
  const revoked = new Set<string>();
  for (const entry of parseCrlSet(body)) {
    if (entry.issuerChain.length > 0) continue;
    const found = firstSigner(entry.der, roots, (candidate) => candidate);
    for (const serial of found?.parsed.revokedSerials ?? []) revoked.add(serial);
  }
  return revoked;
}

/** The first candidate whose certificate verifies the CRL (DER), with the CRL parsed, or undefined. */
function firstSigner<T>(der: Buffer, candidates: readonly T[], certificateOf: (candidate: T) => X509Certificate): { candidate: T; signer: X509Certificate; parsed: ParsedCrl } | undefined {
  for (const candidate of candidates) {
    const signer = certificateOf(candidate);
    try {
      // Verified and parsed once: the parse is what the caller keeps.
      return { candidate, signer, parsed: parseCrl(der, signer) };
    } catch {
      // signed by another candidate (or none): try the next
    }
  }
  return undefined;
}

/**
 * Whether an issuer is listed as revoked in a root CRL (retired with --now): one of `rootCrls`
 * (each verified with its root) of the root that signed the issuer.
 */
function retiredIssuerTest(rootCrls: readonly { readonly root: X509Certificate; readonly parsed: ParsedCrl }[]): (issuer: X509Certificate) => boolean {
  return (issuer) => {
    const serial = normalizeSerial(issuer.serialNumber);
    return rootCrls.some(({ root, parsed }) => parsed.revokedSerials.has(serial) && issuer.checkIssued(root));
  };
}

/** Whether an issuer chain (issuer first) named by the CA is made of valid CA certificates, each signed by the next, the last by a held root. */
function issuerChainTrusted(chain: readonly X509Certificate[], roots: readonly X509Certificate[], now: number): boolean {
  try {
    for (const [index, certificate] of chain.entries()) {
      if (!certificate.ca) return false;
      if (now < new Date(certificate.validFrom).getTime() || now >= new Date(certificate.validTo).getTime()) return false;
      const parent = chain[index + 1];
      if (parent !== undefined && !(certificate.checkIssued(parent) && certificate.verify(parent.publicKey))) return false;
    }
    const top = chain[chain.length - 1]!;
    return roots.some((root) => top.checkIssued(root) && top.verify(root.publicKey));
  } catch {
    return false;
  }
}
