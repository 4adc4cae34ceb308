import { X509Certificate } from "node:crypto";
import { connect as netConnect, createServer } from "node:net";
import type { Server, Socket } from "node:net";
import { connect as tlsConnect } from "node:tls";
import type { DetailedPeerCertificate, TLSSocket } from "node:tls";
import { describeError, MeshwardError } from "../errors.ts";
import type { IdentitySource } from "../identity/source.ts";
import { pemBlocks } from "../pki/pem.ts";
import type { PemBlock } from "../pki/pem.ts";
import { parseSpiffeId } from "../spiffe/id.ts";
import { createMeshMetrics } from "../telemetry/metrics.ts";
import type { MeshMetrics, Metrics } from "../telemetry/metrics.ts";
import { markHandshakeCompleted, tlsAfterHandshakeFailure } from "../tls/after-handshake.ts";
import type { TlsLogger } from "../tls/logger.ts";
import { normalizeSerial, serverIssuerSerialsOf } from "../tls/verify.ts";
import { OWN_EXPIRY_MARGIN_MS } from "../transport/client-common.ts";
import { endTunnel } from "../transport/common.ts";
import { formatHostPort, isLoopbackListenHost, parseHostPort } from "../util/address.ts";
import { systemClock } from "../util/clock.ts";
import type { ClockTimer } from "../util/clock.ts";
import { listenOn } from "../util/listen.ts";
import { INPUT_LIMITS, readInputText } from "../util/read-input.ts";
import { DEFAULT_MAX_CONNECTIONS } from "../config/sidecar.ts";
import { LimitedWarnings } from "../telemetry/log-limiter.ts";
import { capConnections, listenerMetrics } from "./listener-cap.ts";
import { ClientPreamble, postgresErrorResponse, readBackendAnswer, SSL_REQUEST } from "./egress-postgres.ts";
import { backendRevocation, EgressTlsMaterials, rootSet } from "./egress-tls.ts";
import type { EgressTlsMaterial } from "./egress-tls.ts";

export type EgressProtocol = "tls" | "postgres";

export interface EgressEntry {
  /** HOST:PORT on loopback where the app connects in plaintext (port 0: any free port). */
  readonly listen: string;
  /** HOST:PORT of the TLS backend. */
  readonly backend: string;
  /** Name the backend certificate must carry (DNS or IP SAN). Default: the backend host. */
  readonly serverName?: string;
  /** PEM roots that verify the backend. Default: the mesh trust bundle of `identity`. */
  readonly caFile?: string;
  /** Present the workload identity as client certificate (mTLS). */
  readonly mtls?: boolean;
  /** Verify the backend by its SPIFFE ID (URI SAN) instead of its host name. */
  readonly expectSpiffeId?: string;
  /** "tls" (default; Redis, HTTP, most protocols) or "postgres" (SSLRequest preamble first). */
  readonly protocol?: EgressProtocol;
  /** TCP connect + TLS handshake deadline (default 10 s); for "postgres" also the app's preamble (up to its startup message). */
  readonly connectTimeoutMs?: number;
  /** Close a connection with no traffic either way for this long (default 1 h; 0 = never). */
  readonly idleTimeoutMs?: number;
  /** How long close() lets open connections finish before cutting them (default 10 s). */
  readonly drainTimeoutMs?: number;
  /** Open app connections accepted at once; past it a new one is closed when accepted (default 4096). */
  readonly maxConnections?: number;
  /**
   * End a connection this long after its backend was verified (default 0: no cap; the sidecar
   * passes limits.maxConnectionAge), so that what verified it is checked again on a new one.
   */
  readonly maxConnectionAgeMs?: number;
}

export interface EgressContext {
  /** Needed for `mtls`, and for verifying the backend when no `caFile` is given. */
  readonly identity?: IdentitySource;
  readonly logger: TlsLogger;
  readonly metrics?: Metrics;
}

export interface EgressStats {
  readonly active: number;
  /** Connections that reached the backend over verified TLS. */
  readonly established: number;
  /** Connections refused or failed before the backend was reached (by reason). */
  readonly failed: Readonly<Record<string, number>>;
}

export interface Egress {
  /** HOST:PORT actually bound. */
  readonly address: string;
  stats(): EgressStats;
  /** Stops accepting, lets open connections finish for drainTimeoutMs, then cuts them. */
  close(): Promise<void>;
}

const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
const DEFAULT_IDLE_TIMEOUT_MS = 60 * 60 * 1000;
const DEFAULT_DRAIN_TIMEOUT_MS = 10_000;

type FailureReason = "identity_unavailable" | "connect_failed" | "backend_no_tls" | "tls_failed" | "timeout" | "client_error";

export interface EgressMetrics {
  readonly mesh: MeshMetrics;
  connection(result: "ok" | FailureReason): void;
  active(delta: number): void;
}

export function egressMetrics(metrics: Metrics, backend: string): EgressMetrics {
  const mesh = createMeshMetrics(metrics);
  const connections = metrics.counter({
    name: "meshward_egress_connections_total",
    help: "Egress (TLS origination) connections by backend and result (ok, identity_unavailable, connect_failed, backend_no_tls, tls_failed, timeout, client_error).",
    labelNames: ["backend", "result"],
  });
  const active = metrics.gauge({
    name: "meshward_egress_connections_active",
    help: "Open egress connections by backend.",
    labelNames: ["backend"],
  });
  for (const result of ["ok", "identity_unavailable", "connect_failed", "backend_no_tls", "tls_failed", "timeout", "client_error"]) {
    connections.inc({ backend, result }, 0);
  }
  active.inc({ backend }, 0);
  return {
    mesh,
    connection: (result) => connections.inc({ backend, result }),
    active: (delta) => active.inc({ backend }, delta),
  };
}

/** Validates the entry; throws E_INSECURE_CONFIG / E_ADDRESS_INVALID with an actionable message. */
function checkEntry(entry: EgressEntry, ctx: EgressContext): void {
  const listen = parseHostPort(entry.listen, "egress listen address");
  if (!isLoopbackListenHost(listen.host)) {
    throw new MeshwardError(
      "E_INSECURE_CONFIG",
      `egress listen address ${entry.listen} is not loopback: the app side of an egress is plaintext, so it may only listen on 127.0.0.1, ::1 or localhost`,
    );
  }
  parseHostPort(entry.backend, "egress backend address");
  if (entry.mtls && ctx.identity === undefined) {
    throw new MeshwardError("E_INSECURE_CONFIG", `egress to ${entry.backend}: mtls needs a workload identity (ctx.identity)`);
  }
  if (entry.caFile === undefined && ctx.identity === undefined) {
    throw new MeshwardError("E_INSECURE_CONFIG", `egress to ${entry.backend}: nothing to verify the backend with; give caFile or a workload identity (its trust bundle)`);
  }
  if (entry.expectSpiffeId !== undefined) parseSpiffeId(entry.expectSpiffeId);
  if (entry.protocol !== undefined && entry.protocol !== "tls" && entry.protocol !== "postgres") {
    throw new MeshwardError("E_CONFIG_INVALID", `egress to ${entry.backend}: protocol must be "tls" or "postgres", not ${JSON.stringify(entry.protocol)}`);
  }
}

/**
 * OpenSSL skips a CERTIFICATE block it cannot parse: a truncated or mangled caFile would leave an
 * empty trust store, and every backend would be refused as unverified. Each block must parse.
 * The file's content is never echoed (only the block's position).
 */
function checkCaFileCertificates(pem: string, caFile: string, backend: string): void {
  let blocks: PemBlock[];
  try {
    blocks = pemBlocks(pem);
  } catch (error) {
    throw new MeshwardError("E_CONFIG_INVALID", `egress to ${backend}: caFile ${caFile} is not valid PEM: ${describeError(error)}`);
  }
  const certificates = blocks.filter((block) => block.label === "CERTIFICATE");
  certificates.forEach((block, index) => {
    try {
      new X509Certificate(block.der);
    } catch {
      throw new MeshwardError("E_CONFIG_INVALID", `egress to ${backend}: caFile ${caFile}: certificate ${index + 1} of ${certificates.length} does not parse as an X.509 certificate; is the file truncated or damaged?`);
    }
  });
}

/**
 * TLS origination: the app talks plaintext to a loopback port, meshward opens TLS (mTLS with
 * the current workload identity when `mtls`) to the backend and verifies its chain and host
 * name (or SPIFFE ID). A connection is only relayed once the backend is verified; every
 * failure closes the app's connection and is counted.
 */
export async function startEgress(entry: EgressEntry, ctx: EgressContext): Promise<Egress> {
  checkEntry(entry, ctx);
  const listen = parseHostPort(entry.listen, "egress listen address");
  const backend = parseHostPort(entry.backend, "egress backend address");
  const protocol = entry.protocol ?? "tls";
  const connectTimeoutMs = entry.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  const idleTimeoutMs = entry.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
  const drainTimeoutMs = entry.drainTimeoutMs ?? DEFAULT_DRAIN_TIMEOUT_MS;
  const maxConnectionAgeMs = entry.maxConnectionAgeMs ?? 0;
  let fileRootsPem: string | undefined;
  if (entry.caFile !== undefined) {
    try {
      fileRootsPem = readInputText(entry.caFile, { what: "caFile", maxBytes: INPUT_LIMITS.pem });
    } catch (error) {
      throw new MeshwardError("E_CONFIG_INVALID", `egress to ${entry.backend}: cannot read caFile ${entry.caFile}: ${describeError(error)}`);
    }
    if (!fileRootsPem.includes("-----BEGIN CERTIFICATE-----")) {
      throw new MeshwardError("E_CONFIG_INVALID", `egress to ${entry.backend}: caFile ${entry.caFile} holds no PEM certificate`);
    }
    checkCaFileCertificates(fileRootsPem, entry.caFile, entry.backend);
  }
  const materials = new EgressTlsMaterials(
    { fileRootsPem, mtls: entry.mtls === true, serverName: entry.serverName ?? backend.host, expectSpiffeId: entry.expectSpiffeId },
    ctx.identity,
  );
  if (ctx.identity !== undefined) await ctx.identity.ready();
  const metrics = ctx.metrics ? egressMetrics(ctx.metrics, entry.backend) : undefined;
  const logger = ctx.logger;
  // Renamed with the bound address once listening (with port 0, or two egresses to one backend,
  // the configured one does not tell the listeners apart).
  let what = `egress ${entry.listen} -> ${entry.backend}`;
  const failed: Record<string, number> = {};
  let established = 0;
  const open = new Set<Relay>();

  // Refusals at the cap and failed connections are logged rate-limited; the TLS logger takes one string per line.
  const warnings = new LimitedWarnings({ warn: (fields, message) => logger.warn(`${what}: ${message}${typeof fields.suppressed === "number" ? ` (${fields.suppressed} like it left out before)` : ""}`) });
  const server: Server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) => {
    const relay = new Relay(client, {
      backend,
      protocol,
      connectTimeoutMs,
      idleTimeoutMs,
      maxConnectionAgeMs,
      materials,
      onRetired: (why) => logger.info(`${what}: ending a connection: ${why}`),
      onEstablished: () => {
        established++;
        metrics?.connection("ok");
        metrics?.mesh.handshakeSucceeded("outbound");
      },
      onRefusedAfterEstablished: (reason, error) => logger.warn(`${what}: closing the app's connection (${reason}; its backend was reached and counted as ok): ${describeError(error)}`),
      onFailed: (reason, error, socket) => {
        failed[reason] = (failed[reason] ?? 0) + 1;
        metrics?.connection(reason);
        if (reason === "tls_failed") metrics?.mesh.handshakeFailed("outbound", error, socket);
        // One per failed connection would be one per app retry against a backend (or a reset
        // injected on the path) that fails on purpose: rate-limited per reason; the metric counts all.
        warnings.warn(`connection-refused|${reason}`, {}, `connection refused (${reason}): ${describeError(error)}`);
      },
      onBrokenAfterHandshake: (error) => {
        // A reset or a broken pipe is the backend going away; a TLS alert is worth a line, since
        // nothing else would say why (e.g. a backend that renegotiates, which is refused).
        const afterHandshake = tlsAfterHandshakeFailure(error);
        if (afterHandshake !== undefined) logger.warn(`${what}: backend connection closed: ${afterHandshake}`);
      },
      onClose: () => {
        open.delete(relay);
        metrics?.active(-1);
      },
    });
    open.add(relay);
    metrics?.active(1);
    relay.start();
  });
  server.on("error", (error) => logger.error(`${what}: listener error: ${describeError(error)}`));
  const uncap = capConnections(server, `egress/${entry.backend}`, entry.maxConnections ?? DEFAULT_MAX_CONNECTIONS, ctx.metrics ? listenerMetrics(ctx.metrics) : undefined, warnings);
  let address: string;
  try {
    address = formatHostPort(await listenOn(server, listen, what));
  } catch (error) {
    uncap();
    warnings.close();
    throw error;
  }
  what = `egress ${address} -> ${entry.backend}`;
  logger.info(`${what}: listening on ${address} (${protocol}${entry.mtls ? ", mTLS" : ""}, verifying ${entry.expectSpiffeId ?? `host name ${entry.serverName ?? backend.host}`})`);
  // With the mesh's roots, TLS judged a backend once: its open connections are closed when the
  // CRL lists its certificate, and ended when a root they were verified with leaves the bundle
  // (new ones are refused by the handshake then).
  let rootsSeen = ctx.identity?.current()?.bundle.rootsPem;
  const unsubscribe =
    fileRootsPem !== undefined || ctx.identity === undefined
      ? () => undefined
      : ctx.identity.subscribe((event) => {
          if (event.type !== "bundle-updated" && event.type !== "rotated") return;
          const { rootsPem } = event.snapshot.bundle;
          if (rootsPem !== rootsSeen) {
            rootsSeen = rootsPem;
            const roots = rootSet(rootsPem);
            for (const relay of open) {
              const verifiedWith = relay.meshRoots;
              if (verifiedWith !== undefined && [...verifiedWith].some((root) => !roots.has(root))) relay.retire("the root its backend was verified with left the trust bundle");
            }
          }
          if (event.type !== "bundle-updated" || event.snapshot.bundle.revokedSerials.size === 0) return;
          for (const relay of open) {
            const serial = relay.backendSerial;
            if (serial === undefined) continue;
            // Its certificate, or its issuer (retired with --now: the root's CRL lists it).
            const revoked = backendRevocation(event.snapshot.bundle.revokedSerials, entry.expectSpiffeId ?? entry.serverName ?? backend.host, serial, relay.backendIssuerSerials);
            if (revoked === undefined) continue;
            logger.warn(`${what}: closing a connection: ${revoked.code}: ${revoked.message}`);
            relay.destroy();
          }
        });

  let closing: Promise<void> | undefined;
  return {
    address,
    stats: () => ({ active: open.size, established, failed: { ...failed } }),
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close();
        for (const relay of open) relay.drain();
        const finish = () => {
          clearTimeout(deadline);
          unsubscribe();
          uncap();
          warnings.close();
          resolve();
        };
        const deadline = setTimeout(() => {
          for (const relay of open) relay.destroy();
          finish();
        }, drainTimeoutMs);
        deadline.unref();
        const check = () => {
          if (open.size === 0) finish();
          else setTimeout(check, 20).unref();
        };
        check();
      });
      return closing;
    },
  };
}

/**
 * The mesh root a verified backend's chain rests on (the end of the chain Node completes from the
 * trust store), as a one-root set; all of `roots` when it cannot be told.
 */
function anchorOf(tls: TLSSocket, roots: ReadonlySet<string> | undefined): ReadonlySet<string> | undefined {
  if (roots === undefined) return undefined;
  let cert = tls.getPeerCertificate(true) as DetailedPeerCertificate | undefined;
  for (let hops = 0; cert?.raw !== undefined && hops < 16; hops++) {
    const der = cert.raw.toString("base64");
    if (roots.has(der)) return new Set([der]);
    if (cert.issuerCertificate === undefined || cert.issuerCertificate === cert) break;
    cert = cert.issuerCertificate;
  }
  return roots;
}

/** How long a socket we have ended may wait for the other side's FIN before it is cut. */
const LINGER_MS = 5_000;

/** Drops whatever still arrives on `socket` and keeps it flowing until EOF. */
function finishReading<T extends Socket>(socket: T): T {
  socket.unpipe();
  socket.removeAllListeners("data");
  socket.on("data", () => undefined);
  socket.resume();
  return socket;
}

interface RelayOptions {
  readonly backend: { host: string; port: number };
  readonly protocol: EgressProtocol;
  readonly connectTimeoutMs: number;
  readonly idleTimeoutMs: number;
  /** 0: no cap. */
  readonly maxConnectionAgeMs: number;
  readonly materials: EgressTlsMaterials;
  /** An established connection is being ended (retire), and why. */
  readonly onRetired: (why: string) => void;
  readonly onEstablished: () => void;
  readonly onFailed: (reason: FailureReason, error: unknown, socket?: TLSSocket) => void;
  /** The app's side failed (its PostgreSQL preamble was refused) after onEstablished: logged, not counted again. */
  readonly onRefusedAfterEstablished: (reason: FailureReason, error: unknown) => void;
  /** The backend's TLS failed after a verified handshake (the connection then closes). */
  readonly onBrokenAfterHandshake: (error: Error) => void;
  readonly onClose: () => void;
}

/** One app connection and its TLS connection to the backend. */
class Relay {
  readonly #client: Socket;
  readonly #options: RelayOptions;
  #raw: Socket | undefined;
  #tls: TLSSocket | undefined;
  /** The serial of the backend certificate this connection was verified with (once established). */
  backendSerial: string | undefined;
  /** The serials of the other certificates the backend sent with its own (its issuer), when verified with the mesh's roots. */
  backendIssuerSerials: readonly string[] | undefined;
  /** The mesh root the backend's chain rests on (all the roots when it cannot be told; undefined with caFile). */
  meshRoots: ReadonlySet<string> | undefined;
  #retired = false;
  #preamble: ClientPreamble | undefined;
  /** Client bytes that arrived before the backend was ready (postgres preamble leftovers). */
  #pending: Buffer[] = [];
  #backendReady = false;
  #piping = false;
  #done = false;
  #closed = false;
  #failure: string | undefined;
  #connectTimer: NodeJS.Timeout | undefined;
  /** PostgreSQL: the app's preamble (SSLRequest/GSSENCRequest answers, then its startup message) must be done by then. */
  #preambleTimer: NodeJS.Timeout | undefined;

  constructor(client: Socket, options: RelayOptions) {
    this.#client = client;
    this.#options = options;
  }

  start(): void {
    const client = this.#client;
    client.on("error", () => this.destroy());
    client.once("close", () => this.#onClientClose());
    let material: EgressTlsMaterial;
    try {
      material = this.#options.materials.current();
    } catch (error) {
      this.#fail("identity_unavailable", error);
      return;
    }
    if (this.#options.protocol === "postgres") {
      const preamble = (this.#preamble = new ClientPreamble());
      const onData = (chunk: Buffer) => {
        const step = preamble.push(chunk);
        if (step.reply.length > 0) client.write(step.reply);
        if (step.error !== undefined) {
          clearTimeout(this.#preambleTimer);
          client.removeListener("data", onData);
          this.#fail("client_error", new MeshwardError("E_PROTOCOL", step.error));
          this.#sendPostgresError(); // no startup message will come to answer: say why now, and close
          return;
        }
        if (step.forward === undefined) return;
        clearTimeout(this.#preambleTimer);
        client.removeListener("data", onData);
        client.pause();
        this.#pending.push(step.forward);
        if (this.#failure !== undefined) this.#sendPostgresError();
        else this.#maybePipe();
      };
      client.on("data", onData);
      // A client that gives up during the preamble (e.g. it wanted TLS and got 'N') only half-closes:
      // its partial preamble is dropped. One whose preamble is complete may half-close at once: a
      // CancelRequest is written, flushed and followed by shutdown(SHUT_WR) (tokio-postgres), long
      // before the backend's handshake ends. Its held bytes still go to the backend, whose side is
      // then ended (client.pipe(tls) carries the FIN already seen), within the connect deadline.
      client.once("end", () => {
        if (!this.#piping && !preamble.done) this.destroy();
      });
      client.resume();
      // The backend's verified connection is held for the app: one that never sends its startup
      // message (or sends it slowly) is let go, whatever became of the backend meanwhile.
      this.#preambleTimer = setTimeout(() => {
        if (preamble.done || this.#closed) return;
        // Counted once per connection: one the backend already verified was counted as `ok`.
        if (!this.#done && !this.#backendReady) this.#fail("client_error", new MeshwardError("E_CLIENT_TIMEOUT", `the app sent no complete PostgreSQL startup message within ${this.#options.connectTimeoutMs} ms`));
        this.destroy();
      }, this.#options.connectTimeoutMs);
      this.#preambleTimer.unref();
    }
    this.#connectTimer = setTimeout(() => {
      this.#fail("timeout", new MeshwardError("E_BACKEND_TIMEOUT", `the backend ${formatHostPort(this.#options.backend)} did not complete TCP + TLS within ${this.#options.connectTimeoutMs} ms`));
    }, this.#options.connectTimeoutMs);
    this.#connectTimer.unref();
    const raw = (this.#raw = netConnect({ host: this.#options.backend.host, port: this.#options.backend.port }));
    raw.on("error", (error) => {
      if (!this.#backendReady) this.#fail(this.#tls === undefined ? "connect_failed" : "tls_failed", error);
    });
    raw.once("connect", () => {
      if (this.#done) return;
      if (this.#options.protocol !== "postgres") {
        this.#startTls(material);
        return;
      }
      raw.write(SSL_REQUEST);
      // A backend that closes instead of answering (a TCP load balancer with no healthy endpoint, a
      // server that drops unknown preambles) is refused at once, not at the connect deadline.
      const closedUnanswered = () =>
        this.#fail("backend_no_tls", new MeshwardError("E_BACKEND_NO_TLS", "the backend closed the connection without answering the SSLRequest (is it PostgreSQL, and is a server behind it?)"));
      raw.once("end", closedUnanswered);
      raw.once("close", closedUnanswered);
      raw.once("data", (chunk: Buffer) => {
        raw.removeListener("end", closedUnanswered);
        raw.removeListener("close", closedUnanswered);
        const answer = readBackendAnswer(chunk);
        if (!answer.ok) {
          this.#fail("backend_no_tls", new MeshwardError("E_BACKEND_NO_TLS", answer.reason));
          return;
        }
        this.#startTls(material);
      });
    });
  }

  #startTls(material: EgressTlsMaterial): void {
    if (this.#done) return;
    const tls = (this.#tls = tlsConnect({
      socket: this.#raw!,
      secureContext: material.secureContext,
      rejectUnauthorized: true,
      checkServerIdentity: material.checkServerIdentity,
      ...(material.servername !== undefined ? { servername: material.servername } : {}),
    }));
    tls.on("error", (error) => {
      if (!this.#backendReady) this.#fail("tls_failed", error, tls);
      else {
        this.#options.onBrokenAfterHandshake(error);
        this.destroy();
      }
    });
    // The backend closed its verified connection before the relay started (the app still in its
    // preamble): nothing can be relayed any more, so the app's connection is closed too.
    tls.once("close", () => {
      if (!this.#piping && this.#backendReady && !this.#done) this.destroy();
    });
    tls.once("secureConnect", () => {
      if (this.#done) return;
      if (!tls.authorized) {
        this.#fail("tls_failed", new MeshwardError("E_PEER_UNTRUSTED", `the backend certificate was not verified: ${String(tls.authorizationError)}`), tls);
        return;
      }
      const backendSerial = normalizeSerial(tls.getPeerCertificate().serialNumber ?? "");
      if (material.meshRoots !== undefined) {
        // checkServerIdentity judged the leaf; the rest of what the backend sent (its issuer, which
        // a CRL of the mesh root lists when retired with --now after a key leak) is judged here,
        // from every certificate sent (serverIssuerSerialsOf), before any of the app's bytes go out.
        try {
          this.backendIssuerSerials = serverIssuerSerialsOf(tls);
          const revoked = backendRevocation(material.revokedSerials, material.backendName, backendSerial, this.backendIssuerSerials);
          if (revoked !== undefined) throw revoked;
        } catch (error) {
          this.#fail("tls_failed", error, tls);
          return;
        }
      }
      clearTimeout(this.#connectTimer);
      markHandshakeCompleted(tls);
      this.backendSerial = backendSerial;
      this.meshRoots = anchorOf(tls, material.meshRoots);
      this.#retireWhenStale(tls, material);
      this.#backendReady = true;
      this.#options.onEstablished();
      this.#maybePipe();
    });
  }

  /**
   * TLS checked the backend's certificate (and the backend ours) at the handshake only: the
   * connection is ended when the backend's certificate expires, a little before ours on it does
   * (OWN_EXPIRY_MARGIN_MS, as the outbound's tunnels), and at maxConnectionAgeMs. Root removal
   * and revocation come from the identity's events (startEgress).
   */
  #retireWhenStale(tls: TLSSocket, material: EgressTlsMaterial): void {
    // getPeerCertificate, not getPeerX509Certificate: with the latter here, a TLS 1.2 backend's
    // renegotiation was no longer refused (test/proxy/egress.test.ts, cause not yet known).
    const backendNotAfter = Date.parse(tls.getPeerCertificate().valid_to ?? "");
    const ownNotAfter = material.ownNotAfter === undefined ? Infinity : material.ownNotAfter.getTime() - OWN_EXPIRY_MARGIN_MS;
    const at = Math.min(Number.isNaN(backendNotAfter) ? Infinity : backendNotAfter, ownNotAfter);
    const timers: ClockTimer[] = [];
    if (at !== Infinity) {
      const why = at === ownNotAfter ? "this workload's certificate on it is expiring" : "the backend's certificate expired";
      timers.push(systemClock.setTimeout(() => this.retire(why), at - Date.now()));
    }
    const maxAge = this.#options.maxConnectionAgeMs;
    if (maxAge > 0) timers.push(systemClock.setTimeout(() => this.retire(`it reached the maximum connection age (${maxAge} ms)`), maxAge));
    tls.once("close", () => {
      for (const timer of timers) systemClock.clearTimeout(timer);
    });
  }

  /**
   * Ends an established connection whose backend would no longer be accepted: nothing more of the
   * app's is sent, the backend gets close_notify + FIN and is cut after TUNNEL_END_GRACE_MS if it
   * holds its side open (endTunnel); what it sends meanwhile still reaches the app, whose
   * connection is then ended (and cut after LINGER_MS). One still in the PostgreSQL preamble is cut.
   */
  retire(why: string): void {
    if (this.#retired || this.#closed || this.#done || !this.#backendReady) return;
    this.#retired = true;
    this.#options.onRetired(why);
    const tls = this.#tls!;
    if (!this.#piping) {
      this.destroy();
      return;
    }
    const client = this.#client;
    client.unpipe(tls);
    tls.once("close", () => {
      if (!client.destroyed) setTimeout(() => client.destroy(), LINGER_MS).unref();
    });
    endTunnel(tls);
  }

  #maybePipe(): void {
    if (this.#piping || this.#done || !this.#backendReady) return;
    if (this.#preamble !== undefined && !this.#preamble.done) return;
    this.#piping = true;
    const client = this.#client;
    const tls = this.#tls!;
    for (const chunk of this.#pending) tls.write(chunk);
    this.#pending = [];
    if (this.#options.idleTimeoutMs > 0) {
      const idle = () => this.destroy();
      client.setTimeout(this.#options.idleTimeoutMs, idle);
      tls.setTimeout(this.#options.idleTimeoutMs, idle);
    }
    // Half-close travels both ways: the app's FIN ends our TLS write side (close_notify) and
    // the backend's end ends the app's connection; each direction drains first.
    client.pipe(tls);
    tls.pipe(client);
    tls.once("close", () => {
      // unpipe() paused the client: keep reading (and dropping) so its FIN is seen and it closes.
      if (!client.destroyed) finishReading(client).end();
    });
  }

  #fail(reason: FailureReason, error: unknown, socket?: TLSSocket): void {
    if (this.#done) return;
    this.#done = true;
    clearTimeout(this.#connectTimer);
    // Each connection is counted once: one whose backend was verified was counted as `ok`.
    if (this.#backendReady) this.#options.onRefusedAfterEstablished(reason, error);
    else this.#options.onFailed(reason, error, socket);
    this.#tls?.destroy();
    this.#raw?.destroy();
    this.#failure = `meshward egress could not reach ${formatHostPort(this.#options.backend)} securely (${reason}): ${describeError(error)}`;
    if (this.#preamble !== undefined) {
      // A PostgreSQL client waits for an answer to its startup message: tell it why.
      if (this.#preamble.done) this.#sendPostgresError();
      return; // otherwise sent once the startup message arrives (or the client goes away)
    }
    this.#client.destroy();
  }

  #sendPostgresError(): void {
    const client = this.#client;
    if (client.destroyed) return;
    finishReading(client).end(postgresErrorResponse(this.#failure ?? "meshward egress failed"));
    setTimeout(() => client.destroy(), LINGER_MS).unref();
  }

  #onClientClose(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#done = true;
    clearTimeout(this.#connectTimer);
    clearTimeout(this.#preambleTimer);
    const tls = this.#tls;
    if (tls !== undefined && !tls.destroyed) {
      if (this.#backendReady) {
        // close_notify + FIN to the backend, then read to its EOF (nobody is left to take the data).
        finishReading(tls).end();
        setTimeout(() => tls.destroy(), LINGER_MS).unref();
      } else tls.destroy();
    }
    if (!this.#backendReady) this.#raw?.destroy();
    this.#options.onClose();
  }

  /**
   * Graceful shutdown: a relay still connecting is cut; an established one is left to finish
   * (a byte stream has no request boundary to stop at) until close()'s deadline.
   */
  drain(): void {
    if (!this.#piping) this.destroy();
  }

  destroy(): void {
    this.#done = true;
    clearTimeout(this.#connectTimer);
    clearTimeout(this.#preambleTimer);
    this.#tls?.destroy();
    this.#raw?.destroy();
    this.#client.destroy();
  }
}
