import type { Logger } from "pino";
import { DEFAULT_INBOUND, type SidecarConfig } from "../config/sidecar.ts";
import { describeError, MeshwardError } from "../errors.ts";
import { readBundleFile } from "../identity/bundle-file.ts";
import { inspectCertificate } from "../pki/inspect.ts";
import { certificatesFromPem } from "../pki/pem.ts";
import { parseSpiffeId } from "../spiffe/id.ts";
import { createIdentity } from "../identity/ca-source.ts";
import { instrumentIdentity, staleCrlWarning } from "../identity/instrument.ts";
import { startFileSink } from "../identity/file-sink.ts";
import { prepareOutDir } from "../identity/local-paths.ts";
import { readResumableSvid } from "../identity/resume.ts";
import type { IdentitySource } from "../identity/source.ts";
import { createHealth, createOpsServer } from "../telemetry/health.ts";
import { identityStatus } from "../dashboard/identity-feed.ts";
import { createStatusRecorder, type StatusRecorder } from "../dashboard/feed.ts";
import { createStatusRoutes } from "../dashboard/routes.ts";
import { resolveStatusToken } from "../dashboard/token.ts";
import { createMeshMetrics, createMetrics } from "../telemetry/metrics.ts";
import type { Metrics } from "../telemetry/metrics.ts";
import { formatHostPort, parseHostPort } from "../util/address.ts";
import type { HostPort } from "../util/address.ts";
import { formatCertificateTime } from "../util/duration.ts";
import { reserveAddresses } from "../util/listen.ts";
import { startInbound } from "./inbound.ts";
import type { ProxyTelemetry, RefusalListener } from "./inbound.ts";
import { startOutbound } from "./outbound.ts";
import { compileOutboundHosts } from "./outbound-host.ts";
import { listenerMetrics } from "./listener-cap.ts";
import { watchForeignTrustDomains, watchPolicy } from "./policy-source.ts";

export interface SidecarDependencies {
  readonly logger: Logger;
  /** Default: a CA-backed identity built from the config (tests may pass their own). */
  readonly identity?: IdentitySource;
  readonly metrics?: Metrics;
  /** Aborting it while the sidecar waits for its first certificate stops the start (E_STOPPED). */
  readonly stopSignal?: AbortSignal;
}

export interface SidecarAddresses {
  readonly spiffeId: string;
  /** Undefined for an outbound-only sidecar (no app): it has no inbound listener. */
  readonly inbound: HostPort | undefined;
  readonly outbound: HostPort | undefined;
  readonly tcp: Readonly<Record<string, HostPort>>;
  readonly egress: readonly HostPort[];
  readonly status: HostPort | undefined;
}

export interface Sidecar {
  readonly addresses: SidecarAddresses;
  readonly metrics: Metrics;
  /** One line with every bound address, printed on stdout when ready. */
  readyLine(): string;
  /** Graceful: stop accepting, let in-flight requests finish up to limits.drainTimeout, then close everything. */
  drain(): Promise<void>;
  close(): Promise<void>;
}

export function sidecarTelemetry(logger: Logger, metrics: Metrics, recorder?: StatusRecorder): ProxyTelemetry {
  return {
    logger,
    ...(recorder === undefined ? {} : { refusals: refusalsToRecorder(recorder) }),
    mesh: createMeshMetrics(metrics),
    listeners: listenerMetrics(metrics),
    refused: metrics.counter({
      name: "meshward_sidecar_refused_total",
      help: "Connections and requests the sidecar refused itself, by direction and reason (plaintext, garbage, tls_<handshake reason>, header_timeout, header_too_large, body_timeout, policy, no_identity, …).",
      labelNames: ["direction", "reason"],
    }),
    droppedFields: metrics.counter({
      name: "meshward_sidecar_dropped_fields_total",
      help: "Request fields the sidecar removed before forwarding, by direction (headersWithUnderscores: drop; names holding '_').",
      labelNames: ["direction"],
    }),
    upstreamErrors: metrics.counter({
      name: "meshward_sidecar_upstream_errors_total",
      help: "Proxied requests that failed upstream, by direction and reason (app_unreachable, app_busy, app_timeout, peer_unreachable, peer_identity, peer_timeout, unknown_app).",
      labelNames: ["direction", "reason"],
    }),
  };
}

function refusalsToRecorder(recorder: StatusRecorder): RefusalListener {
  return {
    handshakeFailed({ reason, remote, spiffeId }) {
      recorder.recordHandshakeFailure({ reason });
      recorder.recordRefusal({ peer: remote, reason: `handshake: ${reason}`, ...(spiffeId !== undefined ? { spiffeId } : {}) });
    },
    denied({ rule, remote, spiffeId }) {
      recorder.recordDenial({ rule });
      recorder.recordRefusal({ peer: remote, reason: `policy denied (${rule})`, ...(spiffeId !== undefined ? { spiffeId } : {}) });
    },
    refused({ reason, remote }) {
      recorder.recordRefusal({ peer: remote, reason });
    },
  };
}

/**
 * The bootstrap trust bundle: the --bundle file, else the PEM in MESHWARD_TRUST_ANCHORS (the
 * Kubernetes injector puts the CA's current bundle there, as Dapr's does with DAPR_TRUST_ANCHORS).
 */
function bootstrapBundle(file: string | undefined): string {
  if (file !== undefined) return readBundleFile(file);
  const pem = process.env.MESHWARD_TRUST_ANCHORS;
  if (pem === undefined || pem.trim() === "") {
    throw new MeshwardError("E_USAGE", "no trust bundle: give --bundle FILE (the CA's bundle.pem) or set MESHWARD_TRUST_ANCHORS to its PEM");
  }
  try {
    certificatesFromPem(pem);
  } catch (error) {
    throw new MeshwardError("E_BUNDLE_INVALID", `MESHWARD_TRUST_ANCHORS is not usable (${describeError(error)}); set it to the CA's bundle.pem`);
  }
  return pem;
}

/** Starts every part of the sidecar from a validated config; throws a MeshwardError a person can act on. */
export async function startSidecar(config: SidecarConfig, deps: SidecarDependencies): Promise<Sidecar> {
  const { logger } = deps;
  const metrics = deps.metrics ?? createMetrics({ processMetrics: true });
  // The status page's recorder exists before the listeners so it sees their first refusals.
  const recorder = config.status === undefined || !config.statusPage ? undefined : createStatusRecorder();
  const telemetry = sidecarTelemetry(logger, metrics, recorder);
  const closers: (() => Promise<void> | void)[] = [];
  const closeAll = async () => {
    for (const close of closers.splice(0).reverse()) {
      try {
        await close();
      } catch (error) {
        logger.warn({ err: describeError(error) }, "error while closing");
      }
    }
  };
  try {
    // Checked before anything starts: a status page off loopback needs a token.
    const statusAt = config.status === undefined ? undefined : parseHostPort(config.status, "status");
    const statusToken = statusAt === undefined || !config.statusPage ? undefined : resolveStatusToken(statusAt.host, config.statusTokenFile);
    const policy = watchPolicy(config.policy, { intervalMs: config.policyReloadInterval, logger, warn: (fields, message) => logger.warn(fields, message), protocol: config.protocol });
    closers.push(() => policy.close());

    // Local checks before the CA is contacted: a local mistake must not spend a single-use token.
    const outDir = config.out === undefined ? undefined : prepareOutDir(config.out, "out");
    // The listeners' fixed ports too: held until the listeners bind them, after the first certificate.
    const reserved = await reserveAddresses([
      ...(config.app === undefined ? [] : [{ at: parseHostPort(config.inbound ?? DEFAULT_INBOUND, "inbound"), what: "the inbound listener" }]),
      ...(config.outbound === undefined ? [] : [{ at: parseHostPort(config.outbound, "outbound"), what: "the outbound listener" }]),
      ...Object.entries(config.tcpUpstreams).map(([name, at]) => ({ at: parseHostPort(at, `tcpUpstreams.${name}`), what: `the TCP listener for ${name}` })),
      ...config.egress.map((entry) => ({ at: parseHostPort(entry.listen, "egress listen address"), what: "the egress listener" })),
      ...(statusAt === undefined ? [] : [{ at: statusAt, what: "the status endpoints" }]),
    ]);
    closers.push(() => reserved.release());
    let identity = deps.identity;
    if (identity === undefined) {
      const token = config.token ?? (config.tokenFile === undefined ? process.env.MESHWARD_TOKEN : undefined);
      const resume = outDir === undefined ? undefined : readResumableSvid(outDir, { namespace: config.namespace, appId: config.appId, now: new Date(), logger });
      if (token === undefined && config.tokenFile === undefined && config.validator !== "INSECURE" && resume === undefined) {
        throw new MeshwardError(
          "E_USAGE",
          `a token is needed for the first certificate: --token, --token-file, tokenFile in the config, or MESHWARD_TOKEN${outDir !== undefined ? ` (or a valid certificate and key from an earlier run in ${config.out})` : ""}`,
        );
      }
      const bundlePem = bootstrapBundle(config.bundle);
      const source = createIdentity({
        ca: config.ca,
        // It exits when ready() rejects: every such failure also stops the identity ("not retrying").
        stopsWhenReadyRejects: true,
        bundlePem,
        namespace: config.namespace,
        appId: config.appId,
        validator: config.validator,
        bundleRefreshMs: config.bundleRefreshInterval,
        logger,
        ...(config.trustDomain !== undefined ? { trustDomain: config.trustDomain } : {}),
        ...(token !== undefined ? { token } : {}),
        ...(config.tokenFile !== undefined ? { tokenFile: config.tokenFile } : {}),
        ...(config.dnsNames.length > 0 ? { dnsNames: config.dnsNames } : {}),
        ...(resume !== undefined ? { resume } : {}),
      });
      closers.push(() => source.close());
      identity = source;
    }
    const stopInstrumenting = instrumentIdentity(identity, telemetry.mesh);
    closers.push(stopInstrumenting);
    const snapshot = await untilStopped(identity.ready(), deps.stopSignal);
    const trustDomain = snapshot.bundle.trustDomain;
    if (config.policy !== undefined) {
      // Said at start, after each reload and after each change of the bundle's trust domains (a
      // federated one added or removed): a policy for another trust domain's callers denies them silently.
      const policyFile = config.policy;
      let rootsPem = snapshot.bundle.rootsPem;
      const foreign = watchForeignTrustDomains(policy, policyFile, trustDomain, rootTrustDomains(rootsPem), (warning) =>
        logger.warn({ event: "policy-foreign-trust-domain", policy: policyFile, trustDomain, foreignTrustDomains: warning.trustDomains, appIds: warning.appIds }, warning.message),
      );
      const unsubscribe = identity.subscribe((event) => {
        if (event.type !== "bundle-updated" && event.type !== "rotated") return;
        if (event.snapshot.bundle.rootsPem === rootsPem) return;
        rootsPem = event.snapshot.bundle.rootsPem;
        foreign.trusted(rootTrustDomains(rootsPem));
      });
      closers.push(() => {
        unsubscribe();
        foreign.close();
      });
    }
    if (outDir !== undefined) {
      const sink = startFileSink({ source: identity, dir: outDir, logger });
      closers.push(() => sink.close());
      await sink.ready();
    }

    await reserved.release();
    // No app, no inbound listener: an app that only calls others (Dapr: a sidecar without an app port).
    const inbound =
      config.app === undefined
        ? undefined
        : await startInbound({
            listen: parseHostPort(config.inbound ?? DEFAULT_INBOUND, "inbound"),
            app: parseHostPort(config.app, "app"),
            protocol: config.protocol,
            mode: config.mode,
            escapedSlashes: config.escapedSlashes,
            headersWithUnderscores: config.headersWithUnderscores,
            limits: config.limits,
            identity,
            policy,
            telemetry,
          });
    if (inbound !== undefined) closers.push(() => inbound.close());
    else logger.info({ event: "outbound-only" }, "no app configured: outbound only, no inbound listener");
    if (config.mode === "permissive") logger.warn({ event: "permissive" }, "PERMISSIVE mode: plaintext is accepted on the inbound port (counted in meshward_plaintext_connections_total)");

    const outbound = await startOutbound({
      listen: config.outbound === undefined ? undefined : parseHostPort(config.outbound, "outbound"),
      tcpUpstreams: config.tcpUpstreams,
      directory: { trustDomain, namespace: config.namespace, peers: config.peers, peerTemplate: config.peerTemplate, peerPort: config.peerPort },
      identity,
      limits: config.limits,
      escapedSlashes: config.escapedSlashes,
      headersWithUnderscores: config.headersWithUnderscores,
      allowedHosts: compileOutboundHosts(config.outboundAllowedHosts),
      telemetry,
    });
    closers.push(() => outbound.close());

    const egress: HostPort[] = [];
    if (config.egress.length > 0) {
      // Loaded only when configured: most sidecars have no egress, and every module costs memory.
      const { startEgress } = await import("./egress.ts");
      for (const entry of config.egress) {
        const running = await startEgress({ ...entry, drainTimeoutMs: config.limits.drainTimeout, maxConnections: config.limits.maxConnections, maxConnectionAgeMs: config.limits.maxConnectionAge }, { identity, logger, metrics });
        closers.push(() => running.close());
        egress.push(parseHostPort(running.address, "egress address"));
      }
    }

    let status: HostPort | undefined;
    let draining = false;
    if (statusAt !== undefined) {
      const health = createHealth();
      health.register("identity", () => {
        const h = inbound?.health();
        const current = identity.current();
        const problem = identity.problem?.();
        if (h?.healthy === false || current === undefined) {
          // The inbound's reason (expired) and the identity's (why renewing fails), both when both are known.
          const reasons = [h?.healthy === false ? h.reason : undefined, problem].filter((reason) => reason !== undefined);
          return { ok: false, detail: reasons.length > 0 ? reasons.join("; ") : "no valid certificate (expired or not yet issued)" };
        }
        if (problem !== undefined) return { ok: false, detail: problem };
        const stale = staleCrlWarning(current.bundle, Date.now());
        return { ok: true, detail: `${current.svid.spiffeId} valid until ${formatCertificateTime(current.svid.notAfter)}${stale === undefined ? "" : `; ${stale}`}` };
      });
      health.register("draining", () => (draining ? { ok: false, detail: "shutting down" } : { ok: true }));
      health.register("alive", () => ({ ok: true }), ["liveness"]);
      const page = identityStatus({ component: "sidecar", name: `${config.namespace}/${config.appId}`, source: identity, health, ...(recorder ? { recorder } : {}) });
      closers.push(() => page.stop());
      const routes = config.statusPage ? createStatusRoutes(page.provider, statusToken === undefined ? {} : { token: statusToken }).routes : {};
      const ops = createOpsServer({ host: statusAt.host, port: statusAt.port, metrics, health, extraRoutes: routes, logger, maxConnections: config.limits.statusMaxConnections, maxConnectionsPerAddress: config.limits.statusMaxConnectionsPerAddress });
      const bound = await ops.start();
      closers.unshift(() => ops.close());
      status = { host: bound.host, port: bound.port };
    }

    const addresses: SidecarAddresses = { spiffeId: snapshot.svid.spiffeId, inbound: inbound?.address, outbound: outbound.address, tcp: outbound.tcp, egress, status };
    let closing: Promise<void> | undefined;
    return {
      addresses,
      metrics,
      readyLine: () =>
        [
          `meshward sidecar ready: id=${addresses.spiffeId}`,
          ...(addresses.inbound ? [`inbound=${formatHostPort(addresses.inbound)}`] : []),
          ...(addresses.outbound ? [`outbound=${formatHostPort(addresses.outbound)}`] : []),
          ...Object.entries(addresses.tcp).map(([app, a]) => `tcp.${app}=${formatHostPort(a)}`),
          ...addresses.egress.map((a, i) => `egress.${i}=${formatHostPort(a)}`),
          ...(addresses.status ? [`status=${formatHostPort(addresses.status)}`] : []),
          `mode=${config.mode}`,
          `protocol=${config.protocol}`,
        ].join(" "),
      drain: () =>
        (closing ??= (async () => {
          draining = true;
          logger.info({ event: "draining", deadlineMs: config.limits.drainTimeout }, "draining: no new connections, waiting for in-flight requests");
          await Promise.all([inbound?.drain(config.limits.drainTimeout), outbound.drain(config.limits.drainTimeout)]);
          await closeAll();
        })()),
      close: () => (closing ??= closeAll()),
    };
  } catch (error) {
    await closeAll();
    throw error;
  }
}

/** The promise, or E_STOPPED as soon as the signal aborts (a CA that never answers must not keep Ctrl-C waiting). */
function untilStopped<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return promise;
  const stopped = () => new MeshwardError("E_STOPPED", "stopped before the first certificate arrived");
  if (signal.aborted) return Promise.reject(stopped());
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(stopped());
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

/** The trust domains the roots of a bundle name (their SPIFFE URI SANs): whose callers the sidecar can verify. */
function rootTrustDomains(rootsPem: string): Set<string> {
  const domains = new Set<string>();
  for (const der of certificatesFromPem(rootsPem)) {
    for (const uri of inspectCertificate(der).uris) {
      if (!uri.startsWith("spiffe://")) continue;
      try {
        domains.add(parseSpiffeId(uri).trustDomain);
      } catch {
        // not a SPIFFE ID this sidecar could verify a caller under
      }
    }
  }
  return domains;
}
