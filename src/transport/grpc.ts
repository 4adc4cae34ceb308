import { credentials, Metadata, ServerCredentials, ServerInterceptingCall, status } from "@grpc/grpc-js";
import type { ChannelCredentials, ChannelOptions, ServerInterceptingCallInterface, ServerInterceptor } from "@grpc/grpc-js";
import { isIP } from "node:net";
import { inspect } from "node:util";
import type { Socket } from "node:net";
import type { ServerHttp2Session } from "node:http2";
import { Server as TlsServer, TLSSocket } from "node:tls";
import type { PeerCertificate } from "node:tls";
import { describeError, MeshwardError } from "../errors.ts";
import type { IdentitySource } from "../identity/source.ts";
import { disposableSecrets } from "../tls/policy.ts";
import type { SecureOptions } from "../tls/policy.ts";
import { normalizeSerial, peerChainOf, readSvidIdentity, rememberedIssuerSerials, revocationOf, serverIssuerSerialsOf, spiffeCheckServerIdentity, verifyPeerCertificate } from "../tls/verify.ts";
import type { PeerIdentity } from "../tls/verify.ts";
import type { IdentityHealth } from "../tls/context.ts";
import { classifyTlsError } from "../telemetry/tls-reason.ts";
import { admitConnection, capServerHandshakes, ConnectionRegistry, logHandshakeFailures, logRefusal, prepareServer, refusalKey, sweepRefusals } from "./common.ts";
import type { ClientCommonOptions, ServerCommonOptions } from "./common.ts";
import { closeWhenRevoked, prepareClient, recordCertificateExpiry, retireAtCertificateExpiry } from "./client-common.ts";
import type { ClientRuntime } from "./client-common.ts";
import type { ServerRuntime } from "./common.ts";

export type GrpcServerCredentialsOptions = Omit<ServerCommonOptions, "identity" | "maxConnectionAgeMs">;

/** How long a GOAWAY'd connection's calls may take to finish before it is destroyed (root removal, the caller's certificate expiring). */
export const GRPC_RETIRE_GRACE_MS = 30_000;
/** How long a connection whose caller was refused a call keeps its other calls' answers going out before it is destroyed. */
export const GRPC_REFUSED_GRACE_MS = 1_000;

type CredsWatcher = (options: SecureOptions | null) => void;

/**
 * grpc-js server credentials on a meshward identity. grpc-js registers a watcher per bound
 * port and calls `http2Server.setSecureContext(options)` when we publish, so rotations and
 * bundle updates reach new connections; publishing `null` (identity expired) makes grpc-js
 * drop new connections.
 * Callers are checked as by the node servers: in the handshake (`secureConnection`: SPIFFE ID,
 * revocation, `authorize`; a refused caller's socket is destroyed before HTTP/2 starts), and
 * open connections are closed when a new CRL revokes their caller, when a root leaves the bundle
 * (GOAWAY) and when the caller's certificate expires (GOAWAY). grpc-js keeps its http2 server to
 * itself: it is found through the watcher grpc-js hands us (`serverOfWatcher`). Each call is
 * checked again by an interceptor before any handler runs; a refused call also ends its
 * connection (GOAWAY, destroyed GRPC_REFUSED_GRACE_MS later). Failed handshakes (which grpc-js only
 * traces) are logged on that server as by the node servers (`logHandshakeFailures`).
 * `_getInterceptors`, `_addWatcher` and `_equals` are grpc-js internals (server.js calls them when
 * a port is bound), and so are the interceptor call's `stream.session` and the watcher calling
 * `setSecureContext` on the server: if a release stopped the first, callers would be checked by TLS
 * alone; if it stopped the others, callers would be checked per call only and keep their
 * connections. package.json therefore takes grpc-js patch releases only (~1.14), and
 * test/transport/grpc-http2.test.ts and grpc-refused-peer.test.ts fail if any of them is lost.
 */
export class MeshwardServerCredentials extends ServerCredentials {
  readonly #runtime: ServerRuntime;
  readonly #interceptor: ServerInterceptor;
  readonly #off: () => void;

  readonly #rootsRemoved = new Set<() => void>();
  /** Watchers bound while the identity was expired: their servers are found once options are published. */
  readonly #unguarded = new Set<CredsWatcher>();
  readonly #registries = new Set<ConnectionRegistry>();

  constructor(runtime: ServerRuntime) {
    super({ requestCert: true, rejectUnauthorized: !runtime.insecure }, withoutSecrets(runtime.holder.options()));
    this.#runtime = runtime;
    let epoch = runtime.holder.rootsEpoch();
    this.#off = runtime.holder.onUpdate((options) => {
      // grpc-js accepts connections whenever the options are not null: while the SVID is expired
      // (a bundle update can still arrive then) they stay null, as applyHealth set them.
      if (runtime.holder.isExpired()) this.updateSecureContextOptions(null);
      else {
        // The watchers (one per bound port) call setSecureContext synchronously; what grpc-js keeps is zeroed.
        const secrets = disposableSecrets(options);
        for (const watcher of [...this.#unguarded]) this.#guard(watcher, secrets.options);
        this.updateSecureContextOptions(secrets.options);
        secrets.dispose();
      }
      if (runtime.holder.rootsEpoch() === epoch) return;
      epoch = runtime.holder.rootsEpoch();
      for (const listener of this.#rootsRemoved) {
        try {
          listener();
        } catch (error) {
          runtime.logger.error(`an onRootsRemoved listener failed: ${describeError(error)}`);
        }
      }
    });
    this.#interceptor = (_method, call) => authorizeCall(runtime, call);
  }

  /** @internal grpc-js hook: called once per bound port, right after its http2 server is created. */
  override _addWatcher(watcher: CredsWatcher): void {
    super._addWatcher(watcher);
    const options = super._getSecureContextOptions();
    if (options === null) {
      this.#unguarded.add(watcher); // the identity is expired: found at the next publication
      return;
    }
    const secrets = disposableSecrets(this.#runtime.holder.options());
    try {
      this.#guard(watcher, secrets.options);
    } finally {
      secrets.dispose();
    }
  }

  /** @internal grpc-js hook: called when the port's server closes. */
  override _removeWatcher(watcher: CredsWatcher): void {
    super._removeWatcher(watcher);
    this.#unguarded.delete(watcher);
  }

  /** Verified connections open on the servers these credentials are bound to. */
  openConnections(): number {
    let open = 0;
    for (const registry of this.#registries) open += registry.size;
    return open;
  }

  /**
   * Finds the http2 server behind `watcher` and checks its callers in the handshake, as
   * `secureServer` does for the node servers. If grpc-js no longer reveals it, calls are still
   * refused one by one (and end their connection), and this is said once in the log.
   */
  #guard(watcher: CredsWatcher, options: SecureOptions): void {
    this.#unguarded.delete(watcher);
    const runtime = this.#runtime;
    const server = serverOfWatcher(watcher, options);
    if (server === undefined) {
      runtime.logger.warn("gRPC server: this grpc-js release did not reveal its HTTP/2 server to meshward; callers are checked on each call only, and a refused caller's connection is closed at its first call");
      return;
    }
    const sessions = new WeakMap<TLSSocket, ServerHttp2Session>();
    const registry = new ConnectionRegistry(runtime, (socket) => {
      const session = sessions.get(socket);
      if (session === undefined) return void socket.destroy();
      retireSession(session, GRPC_RETIRE_GRACE_MS);
    });
    this.#registries.add(registry);
    let accepting: TLSSocket | undefined;
    // Runs before node:http2 makes a session of the connection (its listener was added first).
    server.prependListener("secureConnection", (socket: TLSSocket) => {
      accepting = socket;
      const peer = admitConnection(runtime, socket, "gRPC server");
      if (peer === undefined && !runtime.insecure) return;
      registry.add(socket);
    });
    server.on("session", (session: ServerHttp2Session) => {
      const socket = accepting;
      accepting = undefined;
      if (socket === undefined) return;
      if (socket.destroyed) return void session.destroy();
      sessions.set(socket, session);
    });
    // grpc-js only traces failed handshakes (another CA, expired, no certificate, TLS 1.1,
    // plaintext): logged as by the other SDK servers, through the same limiter.
    logHandshakeFailures(server, runtime, "gRPC server");
    capServerHandshakes(server, runtime, "gRPC server");
    const stopSweeping = sweepRefusals(runtime, "gRPC server");
    server.once("close", () => {
      stopSweeping();
      registry.close();
      this.#registries.delete(registry);
    });
  }

  /**
   * Calls `listener` when a bundle update removes a root. The credentials already send GOAWAY to
   * every open connection then (callers reconnect and are verified against the new bundle), so
   * this is for anything else the owner wants to do at that moment. Returns an unsubscribe function.
   */
  onRootsRemoved(listener: () => void): () => void {
    this.#rootsRemoved.add(listener);
    return () => this.#rootsRemoved.delete(listener);
  }

  /** @internal grpc-js hook */
  override _getInterceptors(): ServerInterceptor[] {
    return [this.#interceptor];
  }

  /**
   * @internal grpc-js hook: read as a port is bound, and used by that same synchronous call
   * (createSecureServer), so the secrets handed over are zeroed once it has returned.
   */
  override _getSecureContextOptions(): SecureOptions | null {
    if (super._getSecureContextOptions() === null) return null;
    const secrets = disposableSecrets(this.#runtime.holder.options());
    queueMicrotask(secrets.dispose);
    return secrets.options;
  }

  /** Never shows the options grpc-js keeps (they hold the identity's certificates; the key is zeroed). */
  [inspect.custom](): string {
    return `MeshwardServerCredentials { identity: ${this.#runtime.holder.ownSpiffeId()}, authorize: ${this.#runtime.policy.expected} }`;
  }

  toJSON(): { readonly type: string; readonly identity: string } {
    return { type: "MeshwardServerCredentials", identity: this.#runtime.holder.ownSpiffeId() };
  }

  override _equals(other: ServerCredentials): boolean {
    return other === this;
  }

  health(): IdentityHealth {
    return this.#runtime.holder.health();
  }

  /** Applies the health change: no options (refuse new connections) while expired. */
  applyHealth(health: IdentityHealth): void {
    if (!health.healthy) this.updateSecureContextOptions(null);
  }

  close(): void {
    this.#off();
    this.#rootsRemoved.clear();
    for (const registry of this.#registries) registry.close();
    this.#registries.clear();
    this.#runtime.holder.close();
  }
}

/** The options grpc-js stores before the first bind: no key or ticket keys at all (`_getSecureContextOptions` supplies them). */
function withoutSecrets(options: SecureOptions): SecureOptions {
  const { key: _key, ticketKeys: _ticketKeys, ...rest } = options;
  return rest;
}

/**
 * Finds the http2 server a grpc-js credentials watcher belongs to: the watcher calls
 * `setSecureContext(options)` on it synchronously, so it is called once with the current options
 * while TLS servers' `setSecureContext` notes its receiver (restored before this returns; nothing
 * else runs meanwhile). The server gets the options it already has.
 */
export function serverOfWatcher(watcher: CredsWatcher, options: SecureOptions): TlsServer | undefined {
  const proto = TlsServer.prototype;
  const original = proto.setSecureContext;
  let found: TlsServer | undefined;
  proto.setSecureContext = function (this: TlsServer, context: Parameters<typeof original>[0]) {
    found ??= this;
    return original.call(this, context);
  };
  try {
    watcher(options);
  } finally {
    proto.setSecureContext = original;
  }
  return found;
}

/** GOAWAY (calls in flight finish, new ones go to a new connection), destroyed `graceMs` later. */
function retireSession(session: ServerHttp2Session, graceMs: number): void {
  if (session.destroyed || session.closed) return;
  session.close();
  const timer = setTimeout(() => session.destroy(), graceMs);
  timer.unref();
  session.once("close", () => clearTimeout(timer));
}

/** The HTTP/2 session a call came on: `stream.session` of grpc-js's BaseServerInterceptingCall (the call the first interceptor gets). */
export function sessionOfCall(call: ServerInterceptingCallInterface): ServerHttp2Session | undefined {
  return (call as unknown as { stream?: { session?: ServerHttp2Session } }).stream?.session;
}

/** "addr:port" (grpc-js getPeer) without the port, so one caller's reconnections share one log budget. */
function addressOfPeer(peer: string): string {
  return peer.replace(/:\d+$/, "");
}

function authorizeCall(runtime: ServerRuntime, call: ServerInterceptingCallInterface): ServerInterceptingCall {
  /**
   * A refused call: logged through the refusal limiter (a refused peer can make calls at will),
   * answered, and its connection ended: its caller is refused whatever it calls, and the next
   * connection is checked in the handshake. With a `fieldLogger`, logged with the fields of a
   * refused connection (`event: "refused"`, `peer` with its port, `reason` as the handshake
   * failure metric names it, `code`, the caller's `spiffeId` from its certificate, which passed
   * verification at the handshake; `suppressed`), and `call: true`.
   */
  const refuse = (code: string, reason: string, grpcCode: status, details: string, cert?: PeerCertificate) => {
    const peer = call.getPeer();
    const from = addressOfPeer(peer);
    const unlogged = runtime.refusalLog.admit(refusalKey("grpc-call", code, from));
    if (unlogged !== undefined) {
      const message = `gRPC server refused a call from ${from} and closes its connection: ${reason}${unlogged > 0 ? ` (${unlogged} more like it not logged)` : ""}`;
      let spiffeId: string | undefined;
      try {
        spiffeId = cert?.raw ? readSvidIdentity(cert.raw).spiffeId : undefined;
      } catch {
        spiffeId = undefined;
      }
      const metricReason = code === "E_PEER_NO_SPIFFE_ID" ? "no_certificate" : classifyTlsError({ code });
      logRefusal(runtime, { event: "refused", call: true, peer, reason: metricReason, code, ...(spiffeId !== undefined ? { spiffeId } : {}), ...(unlogged > 0 ? { suppressed: unlogged } : {}) }, message);
    }
    call.sendStatus({ code: grpcCode, details, metadata: new Metadata() });
    const session = sessionOfCall(call);
    if (session !== undefined) retireSession(session, GRPC_REFUSED_GRACE_MS);
  };
  return new ServerInterceptingCall(call, {
    start: (next) => {
      next({
        onReceiveMetadata: (metadata, proceed) => {
          const cert = call.getAuthContext().sslPeerCertificate;
          if (runtime.insecure) return proceed(metadata);
          if (cert === undefined || !cert.raw) {
            return refuse("E_PEER_NO_SPIFFE_ID", "the caller presented no verified certificate", status.UNAUTHENTICATED, "E_PEER_NO_SPIFFE_ID: a client certificate is required");
          }
          // A call can arrive long after the handshake (connections live up to an hour) or on a
          // resumed session, which was never verified again: the certificate must still be valid.
          const now = Date.now();
          if (Date.parse(cert.valid_to) <= now || Date.parse(cert.valid_from) > now) {
            return refuse(
              "E_CERT_EXPIRED",
              `the caller's certificate (serial ${cert.serialNumber}) is outside its validity period (${cert.valid_from} .. ${cert.valid_to})`,
              status.UNAUTHENTICATED,
              "E_CERT_EXPIRED: the caller's certificate has expired since the connection was made; reconnect with a current one",
              cert,
            );
          }
          try {
            // With the chain remembered from the connection's full handshake (its issuer's serial):
            // a look-up by the fingerprint Node already computed, no parsing. Not found (pushed out
            // of the bounded memory), the leaf alone is checked here: the connection was judged
            // whole at admission, and is closed when a CRL revokes its issuer (ConnectionRegistry).
            verifyPeerCertificate(cert.raw, runtime.policy, rememberedIssuerSerials(cert.fingerprint256));
          } catch (error) {
            const code = error instanceof MeshwardError ? error.code : "E_PEER_UNTRUSTED";
            return refuse(code, describeError(error), status.PERMISSION_DENIED, `${code}: the caller is not allowed`, cert);
          }
          proceed(metadata);
        },
      });
    },
  });
}

/** Server credentials for `server.bindAsync(addr, creds, …)`; default `authorize`: the same trust domain. */
export async function grpcServerCredentials(identity: IdentitySource, options: GrpcServerCredentialsOptions = {}): Promise<MeshwardServerCredentials> {
  let creds: MeshwardServerCredentials | undefined;
  const runtime = await prepareServer(
    {
      ...options,
      identity,
      // The age cap is grpc-js's own (grpcServerOptions); the credentials still retire a connection
      // when its caller's certificate expires, when a root leaves the bundle and when a CRL revokes it.
      maxConnectionAgeMs: 0,
      onHealthChange: (health) => {
        creds?.applyHealth(health);
        options.onHealthChange?.(health);
      },
    },
    "grpcServerCredentials",
  );
  creds = new MeshwardServerCredentials(runtime);
  return creds;
}

/** grpc-js channel options that cap connection age on the server (GOAWAY), so revocation reaches old connections. */
export function grpcServerOptions(maxConnectionAgeMs = 60 * 60 * 1000, graceMs = 30_000): ChannelOptions {
  return { "grpc.max_connection_age_ms": maxConnectionAgeMs, "grpc.max_connection_age_grace_ms": graceMs };
}

export type GrpcChannelOptions = Omit<ClientCommonOptions, "identity">;

/**
 * Channel credentials that verify the server's SPIFFE ID. The secure context is looked up
 * on every new connection, so a rotated SVID or bundle is used by the next connection.
 * A connection is closed when the server's certificate expires, and OWN_EXPIRY_MARGIN_MS before
 * the client certificate it presented does (see `retireGrpcConnection`).
 */
export async function grpcChannelCredentials(identity: IdentitySource, options: GrpcChannelOptions): Promise<ChannelCredentials> {
  const runtime = await prepareClient({ ...options, identity }, "grpcChannelCredentials");
  return withMeshwardConnector(
    credentials.createFromSecureContext(runtime.holder.liveSecureContext(), {
      rejectUnauthorized: !runtime.insecure,
      checkServerIdentity: runtime.insecure ? () => undefined : spiffeCheckServerIdentity(runtime.policy),
    }),
    runtime,
  );
}

interface SecureConnectorInternals {
  connectionOptions?: { servername?: unknown };
  connect?: (socket: Socket) => Promise<{ socket: Socket; secure: boolean }>;
}
type CreateSecureConnector = (...args: unknown[]) => SecureConnectorInternals;

/**
 * Adapts the connector grpc-js makes for each subchannel. `_createSecureConnector`,
 * `connectionOptions` and `connect` are grpc-js internals, like `_getInterceptors` above;
 * test/transport/grpc-http2.test.ts and grpc-lifetime.test.ts fail on any Node if either
 * adaptation is lost.
 * - grpc-js (1.14) sends the target's host as the TLS server name even when it is an IP
 *   address. RFC 6066 forbids that; Node warns about it (DEP0123) and Node 26 refuses to connect
 *   ("Setting the TLS ServerName to an IP address is not permitted"). The SPIFFE ID check does
 *   not use the server name, so an IP target simply gets no SNI, as it does in node:tls clients.
 * - Each verified connection is closed at its certificates' expiry, when its server's is revoked, and when a root leaves the bundle (`retireGrpcConnection`).
 */
function withMeshwardConnector(creds: ChannelCredentials, runtime: ClientRuntime): ChannelCredentials {
  const internals = creds as unknown as { _createSecureConnector?: CreateSecureConnector };
  const create = internals._createSecureConnector;
  if (typeof create !== "function") return creds;
  internals._createSecureConnector = (...args: unknown[]) => {
    const connector = create.apply(creds, args);
    const connection = connector.connectionOptions;
    if (typeof connection?.servername === "string" && isIP(connection.servername) !== 0) delete connection.servername;
    const connect = connector.connect;
    if (typeof connect === "function" && !runtime.insecure) {
      connector.connect = async (tcp) => {
        // The certificate this connection presents: the one current as it is dialled (liveSecureContext).
        const ownNotAfter = runtime.holder.snapshot().svid.notAfter;
        const result = await connect.call(connector, tcp);
        if (result.socket instanceof TLSSocket) retireGrpcConnection(result.socket, ownNotAfter, runtime);
        return result;
      };
    }
    return connector;
  };
  return creds;
}

/**
 * TLS checks validity at the handshake only, and a grpc-js channel keeps its connection for as
 * long as the server does: calls would go on to a server whose certificate has expired, or, once
 * the client's own certificate on the connection expires, be refused by a meshward server
 * (E_CERT_EXPIRED) until the server's age cap ends the connection. grpc-js shows credentials
 * neither its HTTP/2 session nor its calls, so the connection cannot be drained from here: the
 * socket is closed. grpc-js then stops using it and connects anew for the next call (verified,
 * with the current certificate); calls still in flight end UNAVAILABLE.
 */
function retireGrpcConnection(socket: TLSSocket, ownNotAfter: Date, runtime: ClientRuntime): void {
  // Detailed: the chain is kept, so that a root leaving the bundle ends this connection only when
  // the server's chain rested on it.
  const certificate = socket.getPeerCertificate(true);
  const validTo = Date.parse(certificate.valid_to ?? "");
  if (!socket.authorized || Number.isNaN(validTo)) return;
  const chain = peerChainOf(certificate);
  const server = { spiffeId: certificate.subjectaltname?.replace(/^URI:/, "") ?? "?", serial: normalizeSerial(certificate.serialNumber ?? ""), issuerSerials: serverIssuerSerialsOf(socket) };
  // checkServerIdentity saw the leaf (and the detailed chain, which need not hold the issuer
  // OpenSSL verified it with: issuerSerialsOf): the server's issuer is judged here, before grpc-js
  // uses the connection. A refused one fails the connection attempt (the call: UNAVAILABLE).
  const revoked = revocationOf(runtime.policy, { trustDomain: "", namespace: undefined, appId: undefined, ...server });
  if (revoked !== undefined) {
    runtime.logger.warn(`refused gRPC server ${socket.remoteAddress ?? "?"}:${socket.remotePort ?? "?"}: ${revoked.message}`);
    socket.destroy();
    throw revoked;
  }
  // And at once when that certificate or its issuer is revoked (the same for every meshward client connection).
  closeWhenRevoked(socket, server, runtime);
  // And when a root leaves the bundle and the server's chain rests on no root still held (the
  // agents and HTTP/2 sessions retire their connections the same way).
  let checked = runtime.holder.rootsEpoch();
  const offRoots = runtime.holder.onUpdate(() => {
    if (socket.destroyed || runtime.holder.rootsEpoch() === checked) return;
    checked = runtime.holder.rootsEpoch();
    if (runtime.holder.chainTrusted(chain)) return;
    runtime.logger.info(`closing the gRPC connection to ${socket.remoteAddress ?? "?"}:${socket.remotePort ?? "?"}: a root left the trust bundle since its server was verified, and the server's chain rests on no root still held; the next call connects anew`);
    socket.destroy();
  });
  socket.once("close", offRoots);
  recordCertificateExpiry(socket, new Date(validTo), ownNotAfter);
  retireAtCertificateExpiry(socket, () => {
    const server = `${socket.remoteAddress ?? "?"}:${socket.remotePort ?? "?"}`;
    runtime.logger.info(`closing the gRPC connection to ${server}: the server's certificate on it, or this client's, is expiring; the next call connects anew`);
    socket.destroy();
  });
}

const peerCache = new Map<string, PeerIdentity>();

/** The verified caller of a gRPC call (unary, streaming, or an interceptor's call). */
export function peerIdentity(call: { getAuthContext(): { sslPeerCertificate?: PeerCertificate } }): PeerIdentity | undefined {
  const cert = call.getAuthContext().sslPeerCertificate;
  if (cert === undefined || !cert.raw) return undefined;
  const key = cert.fingerprint256;
  let peer = peerCache.get(key);
  if (peer === undefined) {
    try {
      peer = readSvidIdentity(cert.raw);
    } catch {
      return undefined;
    }
    if (peerCache.size > 1024) peerCache.clear();
    peerCache.set(key, peer);
  }
  return peer;
}
