import { constants as http2Constants, createSecureServer, type Http2SecureServer, type Http2ServerRequest, type Http2ServerResponse, type ServerHttp2Session } from "node:http2";
import type { AddressInfo } from "node:net";
import type { Logger } from "pino";
import { existsSync } from "node:fs";
import type { Registry } from "prom-client";
import type { CaConfig } from "../config/ca.ts";
import { describeError, isMeshwardError, MeshwardError } from "../errors.ts";
import { issueLeafCertificate, normalizeSerial } from "../pki/certificate.ts";
import { encodePrivateKey, generateKeyPair } from "../pki/keys.ts";
import { toPem } from "../pki/pem.ts";
import { formatWorkloadId } from "../spiffe/id.ts";
import { openSqliteStore, openStore, parseStoreUrl } from "../store/index.ts";
import type { LeaderLock, Store } from "../store/store.ts";
import { parseHostPort } from "../util/address.ts";
import { checkCaDir } from "../util/dir-safety.ts";
import { formatCertificateTime } from "../util/duration.ts";
import { listenOn } from "../util/listen.ts";
import { caLayout, loadAnchors, type LoadedAnchors } from "./anchors.ts";
import { describeRootTrustingEveryCa, rootsTrustingEveryCa } from "./root-scope.ts";
import type { Attestor } from "./attest/attestor.ts";
import { insecureAttestor } from "./attest/insecure.ts";
import { joinTokenAttestor } from "./attest/join-token.ts";
import { daprAttestors } from "./attest/dapr.ts";
import type { KubeApiBreakerEvent } from "./attest/kube-api-breaker.ts";
import { svidAttestor } from "./attest/svid.ts";
import { inClusterApiServer, kubeApiConnection, type KubeApiConnection } from "./attest/kube-api.ts";
import { DAPR_TRUST_BUNDLE_SYNC_RESULTS, syncDaprTrustBundle, type DaprTrustBundleSync } from "./dapr-trust-bundle-sync.ts";
import { CertificateAuthority, type ValidatorName } from "./authority.ts";
import { CRL_VALIDITY_MS, CrlPublisher } from "./crl-publisher.ts";
import { BUFFERED_REQUESTS, handleGrpc, type GrpcRefusal } from "./api/grpc.ts";
import { handleHttp } from "./api/http.ts";
import { SECURE_OPTIONS } from "../tls/policy.ts";
import { capHandshakeBytes, HANDSHAKE_TOO_LARGE, rawSocketOf, refusedByHandshakeCap } from "../tls/handshake-cap.ts";
import { createCaMetrics } from "./metrics.ts";
import { createMeshMetrics, createMetrics } from "../telemetry/metrics.ts";
import { trustBundleVersion } from "../telemetry/bundle-version.ts";
import { describeHandshakeFailure } from "../telemetry/metrics.ts";
import { JwtSvidIssuer } from "./jwt-svid.ts";
import { join } from "node:path";
import { systemClock } from "../util/clock.ts";
import { anchorFilesSignature, watchAnchors } from "./anchor-watcher.ts";
import { directoryFiles, storeStateFiles, transactCaState, type AnchorFiles } from "./anchor-files.ts";
import { replicatedState, watchStoreState } from "./state-watcher.ts";
import { createRotationManager } from "./rotation-manager.ts";
import { caDirLocked, pairSwitchPending, tryLockCaDir } from "./dir-lock.ts";
import { defaultSigningWorkers, inlineSigning, SigningPool } from "./signing-pool.ts";
import { caStatus } from "../dashboard/ca-feed.ts";
import { createStatusRecorder } from "../dashboard/feed.ts";
import { createStatusRoutes } from "../dashboard/routes.ts";
import { resolveStatusToken } from "../dashboard/token.ts";
import { createHealth, createOpsServer, type BoundAddress, type OpsServer } from "../telemetry/health.ts";
import { LimitedWarnings } from "../telemetry/log-limiter.ts";
import { AddressSlots } from "../util/address-slots.ts";
import { ConnectionGate, gatedListener, sourceAddress } from "../util/connection-gate.ts";
import { addressShare, HeldBudget } from "../util/held-budget.ts";
import { enforceRequestDeadlines } from "../util/request-deadlines.ts";
import { openFileLimit } from "../util/open-file-limit.ts";
import { SignRateLimiter } from "./sign-rate-limit.ts";

/** The CA's own identity, presented on its API port. */
export const CA_NAMESPACE = "meshward-system";
export const CA_APP_ID = "meshward-ca";
const SERVING_CERT_TTL_MS = 24 * 3_600_000;
/** HTTP/2 streams one connection may have open at once. */
export const MAX_CONCURRENT_STREAMS = 16;
/**
 * HTTP/2 streams open at once on the API port, from everyone and from one source address (a
 * node's pods behind SNAT share one). A workload has one call in flight; ~11 KB each, so the
 * whole figure is ~22 MB. Over either, a new stream is refused with REFUSED_STREAM, which gRPC
 * clients retry.
 */
export const MAX_OPEN_STREAMS = 2048;
export const MAX_OPEN_STREAMS_PER_ADDRESS = 256;
/** File descriptors kept apart from API connections: the store, logs, worker threads, the status port. */
const RESERVED_FILES = 64;
/** A CRL refresh still running after this long marks the store unready (each query times out after 5 s). */
const STORE_STALL_MS = 10_000;
/** Distinct (reason, address) pairs whose refusals are logged apart; more share one budget. */
const LOGGED_PEERS = 100;
/**
 * After an issuer change that drops the outgoing issuer's CRL (`--now`), how long a sign request
 * waits for the CRL set naming the new issuer before the new issuer signs it anyway (the leader
 * publishes that set within a refresh; a replica whose store stalls keeps the CA answering).
 */
export const ISSUER_SWITCH_WAIT_MS = 5_000;
/** TLS 1.2 only with ECDHE + AEAD; TLS 1.3 suites are all AEAD. */
const TLS12_CIPHERS = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305:@SECLEVEL=2";

export interface CaServerOptions {
  /** The CA directory (from `initAnchors`); refused when another user owns it or group/others can write it (E_CA_DIR_UNSAFE). */
  readonly dir: string;
  readonly config: CaConfig;
  readonly passphrase?: string;
  readonly logger: Logger;
  readonly clock?: () => Date;
  /** Open store to use instead of config.store (tests). */
  readonly store?: Store;
  /** How long sign requests wait for the CRL set naming a new issuer after `--now` (tests); ISSUER_SWITCH_WAIT_MS by default. */
  readonly issuerSwitchWaitMs?: number;
  /** The retry backoff of the dapr-trust-bundle writer (tests; default 1 s doubling to 5 min). */
  readonly daprTrustBundleBackoff?: { readonly initialMs?: number; readonly maxMs?: number };
}

export interface CaServer {
  readonly host: string;
  readonly port: number;
  /** host:port as clients should dial it. */
  readonly address: string;
  readonly spiffeId: string;
  readonly authority: CertificateAuthority;
  readonly registry: Registry;
  readonly store: Store;
  /** The status page / ops port, when configured. */
  readonly status?: BoundAddress;
  close(): Promise<void>;
}

export async function startCaServer(options: CaServerOptions): Promise<CaServer> {
  const { config, logger } = options;
  const clock = options.clock ?? (() => new Date());
  const issuerSwitchWaitMs = options.issuerSwitchWaitMs ?? ISSUER_SWITCH_WAIT_MS;
  // Before anything in it is read or created (ca.db, jwt-keys.json): the CLI checks --dir too,
  // this is for SDK users, who would otherwise serve from a directory others can write.
  checkCaDir(options.dir, "startCaServer dir");
  // Checked before anything starts: a status page off loopback needs a token.
  const statusAt = config.status === undefined ? undefined : parseHostPort(config.status, "--status");
  const statusToken = statusAt === undefined ? undefined : resolveStatusToken(statusAt.host, config.statusTokenFile);
  const recorder = createStatusRecorder();
  // Checked before anything starts too: out of a pod, daprTrustBundle needs its apiServer.
  const daprApiServer = config.daprTrustBundle === undefined ? undefined : (config.daprTrustBundle.apiServer ?? daprInClusterApiServer());
  // Started once the CA serves (below); adopt() may run before that (a rotation step due at start).
  let daprSync: DaprTrustBundleSync | undefined;
  let daprConnection: KubeApiConnection | undefined;
  // What an interrupted rotation left in the directory (a half-switched issuer, temp files) is put
  // in order before the anchors are read, when no other process holds the directory.
  repairCaDir(options.dir, logger, "'meshward ca serve' starting");
  // Taken before the anchors are read: another process on the same directory may rotate them meanwhile.
  const anchorsSignature = anchorFilesSignature(caLayout(options.dir));
  let anchors: LoadedAnchors = loadAnchors({ dir: options.dir, ...(options.passphrase !== undefined ? { passphrase: options.passphrase } : {}) });
  if (config.trustDomain !== undefined && config.trustDomain !== anchors.trustDomain) {
    throw new MeshwardError(
      "E_CONFIG_INVALID",
      `the configuration names trust domain ${config.trustDomain} but ${options.dir} holds a CA for ${anchors.trustDomain}`,
    );
  }
  const store = options.store ?? (await openCaStore(config.store ?? `sqlite:${anchors.layout.database}`, options.dir));
  await store.migrate();
  // Several replicas on one PostgreSQL (issue 17): what changes after init is read from the store
  // (DIR may be read-only), one leader rotates and signs the CRL, the others follow.
  const replicated = replicatedState(store);
  const loadFromStore = async () => {
    stateFiles = await storeStateFiles(store, options.dir);
    return loadAnchors({ dir: options.dir, files: stateFiles, ...(options.passphrase !== undefined ? { passphrase: options.passphrase } : {}) });
  };
  let stateFiles: AnchorFiles = directoryFiles;
  // One leader among the processes sharing the store, PostgreSQL or SQLite (several `ca serve` on
  // one CA directory: its lock file beside ca.db). Only the leader rotates and signs the CRL; the
  // others read the CRL it publishes and, on SQLite, the files it rotates in the directory.
  let lock: LeaderLock | undefined;
  let leader = false;
  try {
    lock = store.leaderLock?.({ sessionTimeoutMs: config.leaderTimeout });
    if (replicated !== undefined) anchors = await loadFromStore();
    leader = lock === undefined || (await lock.tryAcquire());
  } catch (error) {
    await lock?.release();
    if (options.store === undefined) await store.close();
    throw error;
  }

  // Said at every start, not only when the root was imported: whoever runs the CA later may not know.
  for (const entry of rootsTrustingEveryCa(anchors)) {
    logger.warn(
      { event: "root-trusts-every-ca", root: entry.root.fingerprint256, trustDomain: anchors.trustDomain, ...(entry.acceptedAt !== undefined ? { acceptedAt: entry.acceptedAt } : {}) },
      `${describeRootTrustingEveryCa(entry, anchors.trustDomain)}; see docs/threat-model.md#other-cas-under-an-imported-root`,
    );
  }

  const telemetry = createMetrics({ processMetrics: true });
  const registry = telemetry.registry;
  // meshward_ca_held_request_bytes reads the API's request budget (made with the API server, below) when scraped.
  const metrics = createCaMetrics(telemetry, { heldRequestBytes: () => budget.used });
  const mesh = createMeshMetrics(telemetry);
  metrics.leader.set(leader ? 1 : 0);
  // Root CRLs (root-crl.ts): one per root whose key this CA holds, for OpenSSL's whole-chain CRL check.
  const crl = new CrlPublisher(store, () => anchors.issuer, clock, lock === undefined ? undefined : { isLeader: () => leader }, () => anchors.previousIssuer?.signer, () => anchors);
  const reportPreviousIssuer = (loaded: LoadedAnchors) => {
    if (loaded.previousIssuerProblem !== undefined) {
      logger.warn({ event: "previous-issuer-unusable", error: loaded.previousIssuerProblem }, "the previous issuer (issuer.prev.*) cannot sign its CRL; workloads still on it renew at their next bundle refresh");
    }
    if (loaded.retiredIssuersProblem !== undefined) {
      logger.error({ event: "root-crl-unusable", error: loaded.retiredIssuersProblem }, "no root CRL is published: the list of retired issuers cannot be read; nginx ssl_crl and HAProxy crl-file refuse every peer without one");
    }
  };
  /** Roots whose key could not be read for their CRL, said once per root and reason. */
  const reportedRootProblems = new Set<string>();
  const reportRootCrlProblems = () => {
    for (const [root, error] of crl.rootCrlProblems) {
      if (reportedRootProblems.has(`${root}\n${error}`)) continue;
      reportedRootProblems.add(`${root}\n${error}`);
      logger.error({ event: "root-crl-unsigned", root, error }, "cannot sign the CRL of a root whose key this CA holds; nginx ssl_crl and HAProxy crl-file refuse peers under that root");
    }
  };
  reportPreviousIssuer(anchors);
  await crl.refresh();
  reportRootCrlProblems();
  // Revocations missing from the CRL in force for longer than a leader takeover (a silent leader's
  // session lasts leaderTimeout) plus a few refreshes: nobody is signing them, say so.
  const unsignedAfterMs = 2 * config.leaderTimeout + 5 * config.crlRefresh;

  const attestors = new Map<ValidatorName, Attestor>();
  attestors.set("join-token", joinTokenAttestor(store));
  attestors.set("svid", svidAttestor({
    trust: () => ({
      roots: anchors.roots,
      intermediates: [anchors.issuer.certificate],
      revoked: crl.current?.revokedSerials ?? new Set(),
    }),
    issued: (serial) => store.getIssuance(serial),
  }));
  attestors.set("insecure", insecureAttestor({
    trustDomain: anchors.trustDomain,
    allowed: config.allowInsecureDev,
    warn: (message, fields) => logger.warn({ event: "insecure-validator", ...fields }, message),
  }));
  const servingId = config.servingSpiffeId ?? formatWorkloadId({ trustDomain: anchors.trustDomain, namespace: CA_NAMESPACE, appId: CA_APP_ID });
  const onBreakerChange = (event: KubeApiBreakerEvent) => {
    metrics.kubernetesApiCircuitOpen.set(event.state === "open" ? 1 : 0);
    if (event.state === "open") {
      logger.warn(
        { event: "kubernetes-api-unavailable", apiServer: event.apiServer, failures: event.failures, error: event.lastError, retryAt: event.retryAt.toISOString() },
        `the Kubernetes API server failed ${event.failures} calls in a row: the CA sends it no TokenReview or pod read until ${event.retryAt.toISOString()}, then one at a time until one succeeds; KUBERNETES attestations are refused E_KUBERNETES_UNAVAILABLE meanwhile`,
      );
    } else {
      logger.info(
        { event: "kubernetes-api-recovered", apiServer: event.apiServer, unavailableForMs: event.openForMs, refused: event.refused },
        `the Kubernetes API server answers again (after ${Math.round(event.openForMs / 1000)} s; ${event.refused} KUBERNETES attestations refused meanwhile without a call)`,
      );
    }
  };
  for (const [name, attestor] of daprAttestors(config, anchors.trustDomain, servingId, undefined, { now: () => clock().getTime(), onBreakerChange })) attestors.set(name, attestor);
  if (config.allowInsecureDev) {
    logger.warn({ event: "insecure-validator-enabled" }, "the INSECURE validator is enabled (--allow-insecure-dev): any caller can get any identity. Never use this outside development.");
  }
  const defaultValidator: ValidatorName = config.defaultValidator;
  // The insecure attestor is always registered so that a request naming it gets
  // E_VALIDATOR_DISABLED; the start-up log lists only what would issue a certificate.
  const enabledValidators = [...attestors.keys()].filter((name) => name !== "insecure" || config.allowInsecureDev);

  const signingWorkers = config.signingWorkers ?? defaultSigningWorkers();
  const pool = signingWorkers === 0 ? undefined : new SigningPool(signingWorkers);
  const signing = pool ?? inlineSigning;
  await pool?.ready().catch(async (error: unknown) => {
    await pool.close();
    throw new MeshwardError("E_SIGNING_START", `the signing worker threads did not start: ${describeError(error)}`, { cause: error });
  });
  // The JWT-SVID issuer URL needs the bound port: filled in once listening.
  let jwtIssuerUrl = config.jwtSvid.issuer ?? "";
  // Replicas never write to the CA directory (it may be a read-only Secret): each keeps the
  // retired JWT-SVID keys it saw in memory only (each derives them from the issuer it rotated from).
  const jwtSvids = config.jwtSvid.enabled
    ? new JwtSvidIssuer({
        algorithm: config.jwtSvid.algorithm,
        ttlMs: config.jwtSvid.ttl,
        issuer: () => jwtIssuerUrl,
        clock,
        // Issuers retired with --now (listed in their root's CRL): their keys are never published.
        revokedIssuers: () => anchors.retiredIssuers,
        ...(replicated === undefined ? { stateFile: join(options.dir, "jwt-keys.json") } : {}),
      })
    : undefined;
  /** Log lines a caller can cause at will (refused connections and sign requests, failed handshakes), rate-limited per reason and address. */
  const warnings = new LimitedWarnings(logger, { maxKeys: LOGGED_PEERS });
  const notices = new LimitedWarnings({ warn: (fields, message) => logger.info(fields, message) }, { maxKeys: LOGGED_PEERS });
  // Workloads refuse a renewed certificate whose issuer the CRL set in force does not publish
  // (ca-source.ts, E_ISSUER_RETIRED: the defence against a replica still signing with a retired
  // issuer). So after an issuer change (automatic activate, rotate-issuer, import-issuer, root
  // activate) the new issuer signs nothing, leaves or the serving certificate, until the CRL set
  // this CA serves publishes its CRL: the leader (or a single CA) signs and publishes that set at
  // once; a replica that does not lead waits until it adopts the set the leader published. Until
  // then the outgoing issuer keeps signing (`held`), whose CRL the set in force publishes and the
  // next one keeps publishing (the rotation kept it as issuer.prev.*, retained while certificates
  // it signed are live). After `--now` it is not kept: requests wait for the new set instead (at
  // most issuerSwitchWaitMs, ISSUER_SWITCH_WAIT_MS by default, then the new issuer signs anyway).
  let held: LoadedAnchors | undefined;
  const switchWaiters: (() => void)[] = [];
  let switchTimer: NodeJS.Timeout | undefined;
  const signingAnchors = (): LoadedAnchors =>
    held === undefined ? anchors : { ...anchors, issuer: held.issuer, issuerChainPem: held.issuerChainPem, issuerRoot: held.issuerRoot };
  /** Whether the held issuer may keep signing: the CA state kept it as the previous issuer, whose CRL stays published. */
  const heldKept = (): boolean => held !== undefined && anchors.previousIssuer?.signer.certificate.fingerprint256 === held.issuer.certificate.fingerprint256;
  const issuerSwitched = (signal?: AbortSignal): Promise<void> => {
    if (held === undefined || heldKept()) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const done = () => {
        signal?.removeEventListener("abort", done);
        resolve();
      };
      switchWaiters.push(done);
      signal?.addEventListener("abort", done, { once: true });
    });
  };
  /** The new issuer signs from now on; `reason` is logged. */
  const endHold = (event: "issuer-switched" | "issuer-switch-unpublished", message: string) => {
    if (held === undefined) return;
    const from = held.issuer.certificate.fingerprint256;
    held = undefined;
    clearTimeout(switchTimer);
    for (const wake of switchWaiters.splice(0)) wake();
    const fields = { event, from, issuer: anchors.issuer.certificate.fingerprint256, ...(crl.current !== undefined ? { crlThisUpdate: crl.current.thisUpdate.toISOString() } : {}) };
    if (event === "issuer-switched") logger.info(fields, message);
    else logger.warn(fields, message);
    renewServing();
  };
  /** Ends the hold once the set in force publishes the new issuer (or no longer the held one). */
  const syncSigning = () => {
    if (held === undefined) return;
    if (crl.publishes(anchors.issuer.certificate)) {
      endHold("issuer-switched", "the CRL set in force publishes the new issuer's CRL: now signing with the new issuer");
    } else if (!crl.publishes(held.issuer.certificate) || !anchors.roots.some((root) => root.fingerprint256 === held!.issuerRoot.fingerprint256)) {
      endHold("issuer-switch-unpublished", "the issuer signing until now is no longer published or trusted, and the new issuer's CRL is not in force yet: now signing with the new issuer; workloads refuse its certificates (renewal-issuer-retired) until the set naming it is in force");
    }
  };
  /** Called as the anchors change to `next` (before `anchors` is set): whether the outgoing issuer keeps signing for now. */
  const holdIssuer = (previous: LoadedAnchors, next: LoadedAnchors) => {
    const outgoing = held ?? previous;
    if (outgoing.issuer.certificate.fingerprint256 === next.issuer.certificate.fingerprint256 || crl.publishes(next.issuer.certificate) || !crl.publishes(outgoing.issuer.certificate)) {
      return false;
    }
    if (held === undefined) {
      held = outgoing;
      clearTimeout(switchTimer);
      switchTimer = setTimeout(() => {
        if (!heldKept()) endHold("issuer-switch-unpublished", `no CRL set naming the new issuer came into force within ${issuerSwitchWaitMs / 1000} s and the previous issuer was retired (--now): now signing with the new issuer; workloads refuse its certificates (renewal-issuer-retired) until the set naming it is in force`);
      }, issuerSwitchWaitMs);
      switchTimer.unref();
    }
    return true;
  };
  /** The code of the last issuance write the store failed, until a write succeeds again (see storeCheck). */
  let writeFailure: string | undefined;
  const authority = new CertificateAuthority({
    ...(jwtSvids !== undefined ? { jwtSvids } : {}),
    servingSpiffeId: servingId,
    ...(config.signRateLimit === false ? {} : { rateLimit: new SignRateLimiter(config.signRateLimit) }),
    signing,
    anchors: () => signingAnchors(),
    beforeSign: (signal) => issuerSwitched(signal),
    store,
    attestors,
    defaultValidator,
    policy: { workloadTtlMs: config.workloadTtl, clockSkewMs: config.clockSkew },
    crl,
    metrics,
    logger,
    clock,
    refusalWarnings: warnings,
    onStoreWrite: (failure) => {
      writeFailure = failure?.code;
    },
    onRefused: ({ reason, message, remoteAddress, requested }) => {
      // The CA's page charts refused sign requests where a sidecar's charts policy denials.
      recorder.recordDenial({ rule: reason });
      recorder.recordRefusal({ peer: remoteAddress ?? "(address not known)", reason: `sign refused${requested === "" ? "" : ` for ${requested}`}: ${reason}: ${message}` });
    },
  });

  const spiffeId = servingId;
  const tlsOptions = () => {
    const keys = generateKeyPair();
    const now = clock();
    const signer = signingAnchors();
    const notAfter = new Date(Math.min(now.getTime() + SERVING_CERT_TTL_MS, new Date(signer.issuer.certificate.validTo).getTime()));
    const leaf = issueLeafCertificate({
      spiffeId,
      publicKey: keys.publicKey,
      signer: signer.issuer,
      dnsNames: config.dnsNames,
      notBefore: new Date(now.getTime() - config.clockSkew),
      notAfter,
    });
    return {
      options: {
        key: encodePrivateKey(keys.privateKey),
        cert: toPem(leaf.der, "CERTIFICATE") + signer.issuerChainPem,
        ca: anchors.rootsPem,
        // Workloads renewing with their current SVID present it; first-time callers have none.
        requestCert: true,
        rejectUnauthorized: false,
        minVersion: "TLSv1.2" as const,
        ciphers: TLS12_CIPHERS,
        ecdhCurve: "X25519:P-256:P-384",
        honorCipherOrder: true,
        secureOptions: SECURE_OPTIONS,
      },
      notAfter,
      // As node:crypto prints it, and without leading zeros (the forms revocations are kept in;
      // the same for the random serials meshward makes, whose first byte is never zero).
      serials: [leaf.serial, normalizeSerial(leaf.serial)] as const,
    };
  };

  let serving = tlsOptions();
  let rotationWarnings: () => readonly string[] = () => [];
  // Streams per connection are bounded (Node's default is 2^32-1; Go's net/http2 server allows
  // 250), and so are the request bytes buffered across all connections (see RequestBudget).
  // Node's default handshake timeout is 120 s (so is grpc-go's ConnectionTimeout, under Dapr
  // Sentry): a caller without a certificate could hold a connection that long for each byte it
  // never sends. The CA's is handshakeTimeout (10 s by default, like the sidecar's).
  const server: Http2SecureServer = createSecureServer({
    ...serving.options,
    handshakeTimeout: config.handshakeTimeout,
    allowHTTP1: true,
    ALPNProtocols: ["h2", "http/1.1"],
    settings: { maxConcurrentStreams: MAX_CONCURRENT_STREAMS },
  });
  // Each source address may hold its share of the budget (as of connections: 1/16 at the
  // defaults, 1 MiB), at least one whole request: one address cannot leave the others E_CA_BUSY.
  const requestBytes = config.maxRequestBytes * BUFFERED_REQUESTS;
  const budget = new HeldBudget(requestBytes, addressShare(requestBytes, config.maxConnections, config.maxConnectionsPerAddress, config.maxRequestBytes + 5));
  // HTTP/1.1 callers come through the gated listener too, where Node's headersTimeout never
  // fires: a head (and a body, which the HTTP API never reads) gets requestTimeout to arrive.
  enforceRequestDeadlines(server, { headersMs: config.requestTimeout, bodyMs: config.requestTimeout });
  // Idle sessions (and slow clients that never finish a request) are closed.
  server.setTimeout(60_000);
  const httpContext = {
    anchors: () => anchors,
    crl: () => crl.current,
    registry,
    readiness: () => readiness(anchors, crl, clock(), storeCheck(), rotationWarnings(), unsignedAfterMs),
    ...(jwtSvids !== undefined ? { jwtSvid: { discovery: () => jwtSvids.discovery(), jwks: () => jwtSvids.jwks({ privateKey: anchors.issuer.privateKey, serial: anchors.issuer.certificate.serialNumber }) } } : {}),
  };
  const streams = new AddressSlots(MAX_OPEN_STREAMS, MAX_OPEN_STREAMS_PER_ADDRESS);
  /** A SignCertificate call refused before the authority saw it (request budget, size, deadlines): counted, logged per reason and address, shown on the status page. */
  const grpcRefused = ({ reason, code, address }: { reason: GrpcRefusal; code: string; address: string }) => {
    metrics.apiRequestsRefused.inc({ reason });
    warnings.warn(`request-refused|${reason}|${address}`, { event: "request-refused", reason, code, peer: address }, "refused a SignCertificate call before attestation");
    recorder.recordRefusal({ peer: address, reason: `request refused: ${code} (${reason})` });
  };
  server.on("request", (req: Http2ServerRequest, res: Http2ServerResponse) => {
    if (req.httpVersion === "2.0") {
      const address = sourceAddress(req.socket.remoteAddress);
      const refused = streams.take(address);
      if (refused !== undefined) {
        metrics.connectionsRefused.inc({ reason: refused });
        warnings.warn(`stream-refused|${refused}|${address}`, { event: "stream-refused", reason: refused, peer: address }, "refused an HTTP/2 stream over the CA's stream cap");
        res.stream.close(http2Constants.NGHTTP2_REFUSED_STREAM);
        return;
      }
      res.stream.once("close", () => streams.release(address));
    }
    const isGrpc = req.httpVersion === "2.0" && (req.headers["content-type"] ?? "").startsWith("application/grpc");
    if (isGrpc) {
      handleGrpc(req, res, authority, { maxRequestBytes: config.maxRequestBytes, budget, requestTimeoutMs: config.requestTimeout, onRefused: grpcRefused });
      return;
    }
    handleHttp(req, res, httpContext).catch((error) => {
      logger.error({ event: "http-error", error: describeError(error) }, "HTTP handler failed");
      if (!res.headersSent) res.writeHead(500);
      res.end();
    });
  });
  // Node cannot bound the client chain OpenSSL verifies during the handshake, on this event loop
  // (the port asks every caller for a certificate): a caller may send at most maxHandshakeBytes
  // before its handshake completes, and one over it is reset before any of its chain is verified.
  // On the CA it is on by default: a Node release whose node:tls internals the cap cannot hook
  // serves without it, said at start, rather than not at all.
  try {
    capHandshakeBytes(server, {
      maxBytes: config.maxHandshakeBytes,
      onRefused: (raw, maxBytes) => {
        metrics.connectionsRefused.inc({ reason: HANDSHAKE_TOO_LARGE });
        const address = sourceAddress(raw.remoteAddress);
        recorder.recordRefusal({ peer: address, reason: `handshake: ${HANDSHAKE_TOO_LARGE}: more than maxHandshakeBytes (${maxBytes}) sent before the TLS handshake completed` });
        warnings.warn(
          `connection-refused|${HANDSHAKE_TOO_LARGE}|${address}`,
          { event: "connection-refused", reason: HANDSHAKE_TOO_LARGE, peer: address, limit: maxBytes },
          "refused a connection: it sent more than maxHandshakeBytes before its TLS handshake completed (a client certificate chain that large is never verified)",
        );
      },
    });
  } catch (error) {
    if (!(error instanceof MeshwardError && error.code === "E_RUNTIME_UNSUPPORTED")) throw error;
    logger.warn({ event: "handshake-cap-unavailable", err: error.message }, "maxHandshakeBytes is not enforced: a client certificate chain of any length is verified during the handshake");
  }
  // A client that resets during the handshake leaves no address on its TLS socket: remember
  // each connection's peer when it arrives (the raw socket) so refusals can still name it.
  const peers = new WeakMap<object, string>();
  server.on("connection", (raw: import("node:net").Socket) => {
    if (raw.remoteAddress !== undefined) peers.set(raw, `${raw.remoteAddress.includes(":") ? `[${raw.remoteAddress}]` : raw.remoteAddress}:${raw.remotePort}`);
  });
  server.on("tlsClientError", (error, socket) => {
    // Counted once, as handshake_too_large (the reset that follows is not a failed handshake).
    if (refusedByHandshakeCap(socket)) return;
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ERR_TLS_HANDSHAKE_TIMEOUT") metrics.connectionsRefused.inc({ reason: "handshake_timeout" });
    const reason = mesh.handshakeFailed("inbound", error, socket as import("node:tls").TLSSocket);
    const described = describeHandshakeFailure(reason, error);
    recorder.recordHandshakeFailure({ reason: described });
    const raw = rawSocketOf(socket) ?? (socket as unknown as { _parent?: object })._parent;
    const peer =
      socket.remoteAddress !== undefined
        ? `${socket.remoteAddress.includes(":") ? `[${socket.remoteAddress}]` : socket.remoteAddress}:${socket.remotePort}`
        : ((raw !== undefined ? peers.get(raw) : undefined) ?? peers.get(socket) ?? "(address not known: the client closed the connection)");
    recorder.recordRefusal({ peer, reason: `handshake: ${described}` });
    notices.warn(`tls-handshake-failed|${code ?? reason}|${peer.replace(/:\d+$/, "")}`, { event: "tls-handshake-failed", peer, reason: code ?? error.message }, "TLS handshake failed");
  });
  // Successes counted where failures are (tlsClientError): the alert's ratio needs both.
  server.on("secureConnection", () => mesh.handshakeSucceeded("inbound"));
  server.on("sessionError", () => undefined);
  // Node 20's Http2SecureServer.close() leaves open sessions alone: stop() closes them itself.
  const sessions = new Set<ServerHttp2Session>();
  server.on("session", (session: ServerHttp2Session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
  });

  // The API port is open to callers without a certificate (first-time workloads have none), so
  // connections are counted before any TLS work: over a cap, the socket is reset on accept.
  const active = mesh.connectionsActive.labels({ direction: "inbound" });
  const gate = new ConnectionGate({ maxConnections: config.maxConnections, maxConnectionsPerAddress: config.maxConnectionsPerAddress, onChange: (open) => active.set(open) });
  active.set(0);
  const listener = gatedListener(gate, server, (refused, raw) => {
    metrics.connectionsRefused.inc({ reason: refused });
    const address = sourceAddress(raw.remoteAddress);
    warnings.warn(
      `connection-refused|${refused}|${refused === "max_connections" ? "" : address}`,
      { event: "connection-refused", reason: refused, peer: address, open: gate.open, limit: refused === "max_connections" ? config.maxConnections : config.maxConnectionsPerAddress },
      refused === "max_connections"
        ? "refused a connection: the CA API has maxConnections open"
        : "refused a connection: this address has maxConnectionsPerAddress open",
    );
  });
  const files = openFileLimit();
  if (files !== undefined && files < config.maxConnections + RESERVED_FILES) {
    logger.warn(
      { event: "open-file-limit-low", openFileLimit: files, maxConnections: config.maxConnections },
      `the process may open ${files} files but maxConnections is ${config.maxConnections}: new connections will fail before the cap is reached; raise the limit (ulimit -n) or lower maxConnections to ${Math.max(1, files - RESERVED_FILES)}`,
    );
  }

  const listen = parseHostPort(config.listen, "--listen");
  await listenOn(listener, listen, "the CA API").catch(async (error: unknown) => {
    warnings.close();
    notices.close();
    await signing.close();
    if (options.store === undefined) await store.close();
    throw error;
  });
  // After listen: a failure to listen is listenOn's E_LISTEN_FAILED, not a log line.
  listener.on("error", (error) => logger.error({ event: "listener-error", error: describeError(error) }, "CA API listener error"));
  const bound = listener.address() as AddressInfo;
  if (jwtIssuerUrl === "") jwtIssuerUrl = `https://${config.dnsNames[0] ?? "localhost"}:${bound.port}`;

  const setExpiryGauges = () => {
    const earliestRoot = Math.min(...anchors.roots.map((r) => new Date(r.validTo).getTime()));
    metrics.certExpiry.set({ kind: "root" }, earliestRoot / 1000);
    metrics.certExpiry.set({ kind: "issuer" }, new Date(anchors.issuer.certificate.validTo).getTime() / 1000);
    metrics.revocations.set(crl.current?.revokedSerials.size ?? 0);
    // Whole seconds, as the CRL's thisUpdate is written (UTCTime): workloads export the same figure read back from it.
    if (crl.current !== undefined) {
      mesh.crlThisUpdate.set({ kind: "ca" }, Math.floor(crl.current.thisUpdate.getTime() / 1000));
      mesh.crlNextUpdate.set({ kind: "ca" }, Math.floor((crl.current.thisUpdate.getTime() + CRL_VALIDITY_MS) / 1000));
    }
    mesh.bundleVersion.set(trustBundleVersion(anchors.roots.map((r) => r.fingerprint256)));
  };
  setExpiryGauges();

  // The store's health as the CRL refresh sees it: the last refresh failed, or the one running
  // has not finished within STORE_STALL_MS (a server that stopped answering without closing the
  // connection). One refresh at a time from this timer: a hung one is not joined by more.
  // Reads keep working while writes fail (WAL mode with another process holding SQLite's write
  // lock, a read-only PostgreSQL), so the issuance writes report too: after a failed one the CA
  // is not ready until a write succeeds, an issuance or the write probe each refresh then makes.
  let storeHealthy = true;
  let refreshingSince: number | undefined;
  const storeCheck = (): { ok: boolean; detail: string } => {
    if (refreshingSince !== undefined && Date.now() - refreshingSince > STORE_STALL_MS) {
      return { ok: false, detail: `the store has not answered the refresh started ${Math.round((Date.now() - refreshingSince) / 1000)} s ago` };
    }
    if (writeFailure !== undefined) return { ok: false, detail: `the last write failed (${writeFailure}): sign requests fail until a write succeeds` };
    return storeHealthy ? { ok: true, detail: "reachable" } : { ok: false, detail: "the last refresh failed" };
  };
  const probeWrite = async () => {
    if (writeFailure === undefined || store.probeWrite === undefined) return;
    try {
      await store.probeWrite();
      writeFailure = undefined;
      logger.info({ event: "store-writable" }, "the store accepts writes again");
    } catch (error) {
      writeFailure = isMeshwardError(error) ? error.code : "E_STORE_WRITE";
    }
  };
  const crlTimer = setInterval(() => {
    if (refreshingSince !== undefined) return;
    refreshingSince = Date.now();
    crl.refresh().then(
      (changed) => {
        storeHealthy = true;
        if (changed) logger.info({ event: "crl-signed", revoked: crl.current?.revokedSerials.size }, "signed a new CRL");
        reportRootCrlProblems();
        setExpiryGauges();
      },
      (error) => {
        storeHealthy = false;
        logger.error({ event: "crl-refresh-failed", error: describeError(error) }, "could not refresh the CRL from the store");
      },
    ).then(probeWrite).finally(() => {
      refreshingSince = undefined;
    });
  }, config.crlRefresh);
  crlTimer.unref();

  // Renew the CA's own serving certificate at half its life (setSecureContext takes the full option set).
  let servingTimer: NodeJS.Timeout | undefined;
  const renewServing = () => {
    serving = tlsOptions();
    server.setSecureContext(serving.options);
    logger.info({ event: "serving-certificate-renewed", notAfter: serving.notAfter.toISOString() }, "renewed the CA's serving certificate");
    scheduleServingRenewal();
  };
  const scheduleServingRenewal = () => {
    clearTimeout(servingTimer);
    const delay = Math.max(1000, (serving.notAfter.getTime() - clock().getTime()) / 2);
    servingTimer = setTimeout(renewServing, Math.min(delay, 2 ** 31 - 1));
    servingTimer.unref();
  };
  scheduleServingRenewal();
  // Workloads refuse a CA whose serving certificate the CRL set in force lists (E_CA_CERT_REVOKED,
  // ca-client.ts servingChainRefusal). Serving certificates are not issuance records, so `cert
  // revoke` cannot list one; should its serial reach the CRL anyway (a store write, a restored
  // backup), the CA must not keep serving it until its half-life renewal (up to 12 h), in which
  // every workload holding that CRL would be refused: it renews it as soon as that CRL is in force.
  const renewServingIfRevoked = () => {
    const revoked = crl.current?.revokedSerials;
    if (revoked === undefined || revoked.size === 0) return;
    if (!serving.serials.some((serial) => revoked.has(serial))) return;
    logger.warn({ event: "serving-certificate-revoked", serial: serving.serials[0] }, "the CRL in force lists the CA's serving certificate: renewing it now (workloads refuse a revoked one)");
    renewServing();
  };

  const passphrase = options.passphrase;
  const loadCurrent = () => loadAnchors({ dir: options.dir, ...(passphrase !== undefined ? { passphrase } : {}) });
  const adopt = (next: LoadedAnchors) => {
    const previous = anchors;
    const holding = holdIssuer(previous, next);
    anchors = next;
    const issuerChanged = previous.issuer.certificate.fingerprint256 !== next.issuer.certificate.fingerprint256;
    const rootsChanged = previous.rootsPem !== next.rootsPem;
    logger.info(
      { event: "anchors-reloaded", issuer: next.issuer.certificate.fingerprint256, issuerNotAfter: formatCertificateTime(new Date(next.issuer.certificate.validTo)), roots: next.roots.map((r) => r.fingerprint256), issuerChanged, rootsChanged, ...(holding ? { signingWith: held?.issuer.certificate.fingerprint256 } : {}) },
      holding
        ? heldKept()
          ? "trust anchors changed: the new issuer signs once the CRL set in force publishes its CRL; until then the previous issuer, still published, signs"
          : "trust anchors changed: the new issuer signs once the CRL set in force publishes its CRL; sign requests wait for it meanwhile (the previous issuer was retired)"
        : "trust anchors changed: now signing with the new set",
    );
    if (issuerChanged) recorder.recordRotation({ kind: "issuer", result: "ok", serial: next.issuer.certificate.serialNumber });
    // The previous JWT-SVID key stays published for the JWT-SVID TTL, unless its issuer was
    // retired with --now (next.retiredIssuers): whoever holds that key derives the JWT key too.
    if (issuerChanged && jwtSvids !== undefined) {
      void jwtSvids.retire({ privateKey: previous.issuer.privateKey, serial: previous.issuer.certificate.serialNumber }).then(
        (outcome) => {
          if (outcome === "withdrawn") logger.warn({ event: "jwt-key-withdrawn", issuerSerial: previous.issuer.certificate.serialNumber }, "the previous issuer was retired (--now): its JWT-SVID key is no longer published, so JWT-SVIDs it signed stop validating");
        },
        (error: unknown) => logger.error({ event: "jwt-key-retire-failed", error: describeError(error) }, "could not keep the previous JWT-SVID key published"),
      );
    }
    if (rootsChanged) recorder.recordRotation({ kind: "root", result: "ok", serial: next.issuerRoot.serialNumber });
    reportPreviousIssuer(next);
    // Dapr's dapr-trust-bundle ConfigMap follows (a read, and a write only when it differs).
    void daprSync?.sync();
    renewServing();
    setExpiryGauges();
    // The set in force may already name the new issuer (a replica that adopted the leader's set first).
    syncSigning();
    void crl.refresh().catch((error) => logger.error({ event: "crl-refresh-failed", error: describeError(error) }, "could not re-sign the CRL"));
  };
  crl.onChange = () => {
    syncSigning();
    renewServingIfRevoked();
  };
  const watcher = replicated !== undefined ? await watchStoreState({
    store: replicated,
    intervalMs: config.anchorPoll,
    version: () => anchors.stateVersion ?? 0,
    load: loadFromStore,
    onChange: adopt,
    onCrlChange: () => void crl.refresh().then(setExpiryGauges, (error: unknown) => logger.error({ event: "crl-refresh-failed", error: describeError(error) }, "could not read the CRL from the store")),
    onRefused: (error) => {
      mesh.rotations.inc({ kind: "issuer", result: "error" });
      recorder.recordRotation({ kind: "issuer", result: "error", error: errorCode(error) });
      logger.error({ event: "anchors-refused", error: describeError(error) }, "refused the CA state changed in the store; still signing with the previous issuer");
    },
  }) : watchAnchors({
    layout: anchors.layout,
    loadedSignature: anchorsSignature,
    intervalMs: config.anchorPoll,
    clock: systemClock,
    load: loadCurrent,
    onChange: adopt,
    onRefused: (error) => {
      mesh.rotations.inc({ kind: "issuer", result: "error" });
      recorder.recordRotation({ kind: "issuer", result: "error", error: errorCode(error) });
      logger.error({ event: "anchors-refused", error: describeError(error) }, "refused the changed trust-anchor files; still signing with the previous issuer");
    },
  });
  const rotation = createRotationManager({
    dir: options.dir,
    passphrase,
    config,
    store,
    logger,
    rotations: mesh.rotations,
    anchors: () => anchors,
    reload: () => watcher.check(),
    clock,
    onFailed: (kind, error) => recorder.recordRotation({ kind, result: "error", error: errorCode(error) }),
    ...(replicated !== undefined
      ? { transact: <T>(step: (files: AnchorFiles) => Promise<T>) => transactCaState(store, options.dir, step), exists: (path: string) => stateFiles.exists(path) }
      : {
          // The CA directory's lock, as every command takes it: a command holding it defers the step (E_CA_DIR_LOCKED) to the next check.
          transact: <T>(step: (files: AnchorFiles) => Promise<T>) => {
            const held = tryLockCaDir(options.dir, ROTATION_HOLDER);
            if (!("release" in held)) return Promise.reject(caDirLocked(options.dir, held.heldBy));
            for (const line of held.repaired) logger.warn({ event: "ca-dir-repaired", dir: options.dir, detail: line }, line);
            return step(directoryFiles).finally(() => held.release());
          },
          repair: async () => {
            if (pairSwitchPending(options.dir, existsSync)) repairCaDir(options.dir, logger, ROTATION_HOLDER);
          },
        }),
  });
  rotationWarnings = rotation.warnings;
  // With several processes on one store only the leader rotates (the others' warnings stay empty).
  if (leader) await rotation.check();
  // A rotation step just taken (an issuer due while the CA was down): serve from the start with the
  // CRL set that names the new issuer, so the first requests are signed by it (see `held`).
  if (held !== undefined) await crl.refresh().catch(() => undefined);
  const rotationTimer = setInterval(() => {
    if (leader) void rotation.check();
  }, config.rotationCheck);
  rotationTimer.unref();
  // A lost leader (process killed: PostgreSQL drops its session lock, the kernel its file lock) is
  // replaced within a poll; a silent one (partitioned, frozen) once PostgreSQL ends its session
  // after leaderTimeout. The poll is also the leader's proof of life: at least three within it.
  // One attempt at a time: one that hangs (a server that stopped answering) is not joined by more
  // on the same connection; the lock's query timeout ends it.
  let acquiring = false;
  const leaderTimer = lock === undefined ? undefined : setInterval(() => {
    if (acquiring) return;
    acquiring = true;
    void lock.tryAcquire().finally(() => {
      acquiring = false;
    }).then((held) => {
      if (held === leader) return;
      leader = held;
      metrics.leader.set(held ? 1 : 0);
      logger.info({ event: held ? "leader-elected" : "leader-lost" }, held ? "this replica is now the leader: it rotates and signs the CRL" : "this replica is no longer the leader");
      if (held) {
        void rotation.check();
        void crl.refresh().catch(() => undefined);
      }
    });
  }, Math.min(config.anchorPoll, 1_000, Math.floor(config.leaderTimeout / 3)));
  leaderTimer?.unref();

  // Dapr's dapr-trust-bundle ConfigMap, when asked: brought to the current bundle now, then at
  // every change adopt() sees and every resync. Its failures are logged and retried, never fatal.
  if (config.daprTrustBundle !== undefined && daprApiServer !== undefined) {
    const settings = config.daprTrustBundle;
    for (const result of DAPR_TRUST_BUNDLE_SYNC_RESULTS) metrics.daprTrustBundleSyncs.inc({ result }, 0);
    daprConnection = kubeApiConnection({ apiServer: daprApiServer, tokenFile: settings.tokenFile, caFile: settings.caFile, maxSockets: 2 });
    daprSync = syncDaprTrustBundle({
      namespace: settings.namespace,
      connection: daprConnection,
      roots: () => anchors.roots,
      stateVersion: () => anchors.stateVersion,
      ...(replicated !== undefined ? { storeVersion: () => replicated.caStateVersion() } : {}),
      logger,
      resyncMs: settings.resync,
      ...(options.daprTrustBundleBackoff !== undefined ? { backoff: options.daprTrustBundleBackoff } : {}),
      onResult: (result) => metrics.daprTrustBundleSyncs.inc({ result }),
      clock,
    });
  }

  let ops: OpsServer | undefined;
  let status: BoundAddress | undefined;
  /** Stops everything started above; `graceMs` lets in-flight API requests finish first. */
  const stop = async (graceMs: number) => {
    await ops?.close();
    clearInterval(crlTimer);
    clearInterval(rotationTimer);
    clearInterval(leaderTimer);
    await lock?.release();
    clearTimeout(servingTimer);
    clearTimeout(switchTimer);
    crl.onChange = undefined;
    for (const wake of switchWaiters.splice(0)) wake();
    watcher.close();
    daprSync?.close();
    daprConnection?.close();
    await new Promise<void>((resolve) => {
      // Stop accepting; the callback comes once every connection has closed.
      listener.close(() => resolve());
      // HTTP/2 sessions get GOAWAY and close once their streams finish; HTTP/1 keep-alive
      // connections (curl, health checks) are cut with the rest after the grace period.
      server.close();
      for (const session of sessions) session.close();
      setTimeout(() => resolve(), graceMs).unref();
    });
    // What is left after the grace period (a handshake in progress, a request still running) is cut.
    gate.destroyAll();
    warnings.close();
    notices.close();
    await signing.close();
    if (options.store === undefined) await store.close();
  };
  if (statusAt !== undefined) {
    try {
      const health = createHealth();
      const check = (name: keyof ReturnType<typeof readiness>["checks"]) => () => readiness(anchors, crl, clock(), storeCheck(), rotationWarnings(), unsignedAfterMs).checks[name];
      for (const name of ["issuer", "crl", "store", "expiry"] as const) health.register(name, check(name));
      // A posture, not unreadiness: the CA signs correctly either way.
      health.register("root-scope", () => {
        const trusting = rootsTrustingEveryCa(anchors);
        return { ok: true, detail: trusting.length === 0 ? `no root of the bundle was imported without nameConstraints that confine identities to spiffe://${anchors.trustDomain}` : trusting.map((entry) => describeRootTrustingEveryCa(entry, anchors.trustDomain)).join("; ") };
      });
      health.register("alive", () => ({ ok: true }), ["liveness"]);
      const provider = caStatus({
        certificates: () => ({ trustDomain: anchors.trustDomain, servingChainPem: String(serving.options.cert), issuerPem: anchors.issuerChainPem, rootsPem: anchors.rootsPem }),
        health,
        recorder,
        liveByRoot: cachedLiveCounts(store, clock),
        // On the page and in status.json, not in /readyz: the CA serves whatever the ConfigMap holds.
        daprTrustBundle: () => daprSync?.status(),
      });
      const routes = createStatusRoutes(provider, statusToken === undefined ? {} : { token: statusToken }).routes;
      ops = createOpsServer({ host: statusAt.host, port: statusAt.port, metrics: telemetry, health, extraRoutes: routes, logger, maxConnections: config.statusMaxConnections, maxConnectionsPerAddress: config.statusMaxConnectionsPerAddress });
      status = await ops.start();
    } catch (error) {
      await stop(0);
      throw error;
    }
  }

  const host = bound.address;
  logger.info(
    { event: "ca-started", address: `${host}:${bound.port}`, trustDomain: anchors.trustDomain, spiffeId, issuerNotAfter: formatCertificateTime(new Date(anchors.issuer.certificate.validTo)), validators: enabledValidators, ...(replicated !== undefined ? { replicated: true } : {}), ...(lock !== undefined ? { leader } : {}) },
    "meshward CA serving",
  );
  return {
    host,
    port: bound.port,
    address: host.includes(":") ? `[${host}]:${bound.port}` : `${host}:${bound.port}`,
    spiffeId,
    authority,
    registry,
    store,
    ...(status !== undefined ? { status } : {}),
    close: () => stop(2000),
  };
}

/** inClusterApiServer(), its error naming daprTrustBundle.apiServer. */
function daprInClusterApiServer(): string {
  try {
    return inClusterApiServer();
  } catch {
    throw new MeshwardError("E_CONFIG_INVALID", "daprTrustBundle.apiServer is not set and KUBERNETES_SERVICE_HOST is empty (not running in a pod): name the API server, or leave daprTrustBundle (--dapr-trust-bundle-namespace) off and publish the ConfigMap with 'meshward ca dapr-trust-bundle --dir DIR | kubectl apply -f -'");
  }
}

function errorCode(error: unknown): string {
  return isMeshwardError(error) ? error.code : "E_INTERNAL";
}

/** SQLite commits (one fsync per group commit) run on a writer thread so they never stall the API. */
async function openCaStore(url: string, caDirectory: string): Promise<Store> {
  const location = parseStoreUrl(url);
  // A SQLite file is checked as the CA directory is (E_STORE_UNSAFE), its parents too when it is elsewhere.
  return location.kind === "sqlite" ? openSqliteStore(location.path, { writerThread: true, caDirectory }) : await openStore(url);
}

/**
 * A CRL nobody re-signs (no leader) is reported in the check's detail but leaves the replica
 * ready: issuance still works, and every replica shares the condition, so failing readiness would
 * take the whole CA tier out of its Service and stop renewals across the mesh too. The gauge
 * meshward_ca_leader and the alerts MeshwardCaNoLeader / MeshwardRevocationListBehind page.
 */
function crlCheck(crl: CrlPublisher, now: Date, unsignedAfterMs: number): { ok: boolean; detail: string } {
  const current = crl.current;
  if (current === undefined) return { ok: false, detail: "not built" };
  const signed = `signed ${formatCertificateTime(current.thisUpdate)}`;
  const nextUpdate = new Date(current.thisUpdate.getTime() + CRL_VALIDITY_MS);
  if (now >= nextUpdate) return { ok: true, detail: `WARNING: ${signed}, past its nextUpdate ${formatCertificateTime(nextUpdate)}: no replica re-signed it (is there a leader? meshward_ca_leader)` };
  const unsigned = crl.unsigned;
  if (unsigned !== undefined && Date.now() - unsigned.since > unsignedAfterMs) {
    const seconds = Math.round((Date.now() - unsigned.since) / 1000);
    return {
      ok: true,
      detail: `WARNING: ${signed}; ${unsigned.count} revocation(s) in the store have been missing from it for ${seconds} s: no replica is signing CRLs (is there a leader? meshward_ca_leader, leader-elected/leader-lost in the logs)`,
    };
  }
  return { ok: true, detail: signed };
}

function readiness(anchors: LoadedAnchors, crl: CrlPublisher, now: Date, store: { ok: boolean; detail: string }, warnings: readonly string[], unsignedAfterMs: number) {
  const issuerNotAfter = new Date(anchors.issuer.certificate.validTo);
  const issuerNotBefore = new Date(anchors.issuer.certificate.validFrom);
  const issuerOk = now >= issuerNotBefore && now < issuerNotAfter;
  const checks = {
    issuer: { ok: issuerOk, detail: issuerOk ? `valid until ${formatCertificateTime(issuerNotAfter)}` : `not valid now (${formatCertificateTime(issuerNotBefore)} – ${formatCertificateTime(issuerNotAfter)})` },
    crl: crlCheck(crl, now, unsignedAfterMs),
    store,
    // Expiring anchors are a warning, not unreadiness: the CA still signs correctly.
    expiry: { ok: true, detail: warnings.length === 0 ? "no anchor expires soon" : warnings.join("; ") },
  };
  return { ready: Object.values(checks).every((c) => c.ok), checks };
}

/**
 * Live certificates per root for the status page, read from the store at most every 5 s
 * however many pages poll (each poll would otherwise be a query over the issuance log).
 */
function cachedLiveCounts(store: Store, clock: () => Date): () => Promise<ReadonlyMap<string, number>> {
  let cached: { at: number; counts: Promise<ReadonlyMap<string, number>> } | undefined;
  return () => {
    const now = Date.now();
    if (cached === undefined || now - cached.at > 5_000) {
      const counts = store.countValidByRoot(clock());
      cached = { at: now, counts };
      counts.catch(() => {
        if (cached?.counts === counts) cached = undefined;
      });
    }
    return cached.counts;
  };
}

const ROTATION_HOLDER = "the running CA's automatic rotation ('meshward ca serve')";

/**
 * Takes the CA directory lock for a moment to put in order what an interrupted writer left
 * (dir-lock.ts), logging each repair; does nothing when another process holds the lock (it is
 * the writer, or repairs it itself) or the directory cannot hold a lock (a read-only copy).
 */
function repairCaDir(dir: string, logger: Logger, holder: string): void {
  let held: ReturnType<typeof tryLockCaDir>;
  try {
    held = tryLockCaDir(dir, holder);
  } catch (error) {
    if (pairSwitchPending(dir, existsSync)) logger.warn({ event: "ca-dir-repair-failed", dir, error: describeError(error) }, "could not finish an interrupted key/certificate switch in the CA directory");
    return;
  }
  if (!("release" in held)) return;
  try {
    for (const line of held.repaired) logger.warn({ event: "ca-dir-repaired", dir, detail: line }, line);
  } finally {
    held.release();
  }
}
