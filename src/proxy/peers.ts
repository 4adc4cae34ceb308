import { connect as http2Connect } from "node:http2";
import type { ClientHttp2Session } from "node:http2";
import type { TLSSocket } from "node:tls";
import type { IdentitySource } from "../identity/source.ts";
import { isMeshwardError, MeshwardError } from "../errors.ts";
import { formatWorkloadId } from "../spiffe/id.ts";
import type { TlsLogger } from "../tls/logger.ts";
import { dialTls, prepareClient, retireAtCertificateExpiry, retireTunnelWhenStale, serverStillTrusted, SessionCache } from "../transport/client-common.ts";
import type { ClientRuntime } from "../transport/client-common.ts";
import { peerOf } from "../transport/common.ts";
import { parseHostPort } from "../util/address.ts";
import { Http1Pool } from "./http1/pool.ts";
import { closeWhenIdle } from "./connections.ts";

/** A peer sidecar: where it listens and the SPIFFE ID it must present. */
export interface PeerTarget {
  readonly appId: string;
  readonly namespace: string;
  readonly host: string;
  readonly port: number;
  readonly expectedId: string;
}

export interface PeerDirectory {
  readonly trustDomain: string;
  readonly namespace: string;
  readonly peers: Readonly<Record<string, string>>;
  readonly peerTemplate?: string | undefined;
  readonly peerPort: number;
}

/**
 * Resolves an app id ("orders", or "orders.shop" for another namespace) to its sidecar: the
 * static table first (its keys matched exactly), then the DNS template. Undefined when neither
 * knows it. The app id and namespace keep their case: SPIFFE IDs compare case-sensitively, and
 * so do Dapr's app ids (self-hosted; on Kubernetes Dapr's injector allows lower-case DNS labels
 * only), so `Orders` expects spiffe://<td>/ns/<ns>/Orders and never another workload's `orders`.
 */
export function resolvePeer(directory: PeerDirectory, name: string): PeerTarget | undefined {
  const dot = name.indexOf(".");
  const appId = dot > 0 ? name.slice(0, dot) : name;
  const namespace = dot > 0 ? name.slice(dot + 1) : directory.namespace;
  let address = Object.hasOwn(directory.peers, name) ? directory.peers[name] : undefined;
  if (address === undefined && directory.peerTemplate !== undefined) {
    address = directory.peerTemplate.replaceAll("{appId}", appId).replaceAll("{namespace}", namespace).replaceAll("{port}", String(directory.peerPort));
  }
  if (address === undefined) return undefined;
  let expectedId: string;
  try {
    expectedId = formatWorkloadId({ trustDomain: directory.trustDomain, namespace, appId });
  } catch {
    return undefined;
  }
  const { host, port } = parseHostPort(address, `address of peer ${name}`);
  return { appId, namespace, host, port, expectedId };
}

/** Where a request's app name leads: a peer, no known peer, or (Host routing) more than one table entry. */
export type RouteResult =
  | { readonly target: PeerTarget | undefined; readonly ambiguous?: undefined }
  | { readonly target: undefined; readonly ambiguous: readonly string[] };

/**
 * Resolves the app a request names. From `dapr-app-id` (fromHost false): resolvePeer, exact.
 * From the Host/:authority (fromHost true): a host name is case-insensitive, so the static table
 * is searched ignoring case and the matched entry's own key (its app id and namespace, never the
 * Host's spelling) makes the expected SPIFFE ID: `Host: Orders` reaches `orders`, and Node's
 * fetch (which sends `mybackend`) reaches `MyBackEnd`. Two entries that differ only in case are
 * two apps a host name cannot tell apart: `ambiguous` lists them and the caller must use
 * dapr-app-id. With no table entry, the DNS template gets the name lower-cased (a host name's
 * canonical form; a mixed-case app id without a table entry is reached by dapr-app-id only).
 */
export function resolveRoute(directory: PeerDirectory, name: string, fromHost: boolean): RouteResult {
  if (!fromHost) return { target: resolvePeer(directory, name) };
  const folded = name.toLowerCase();
  const keys = Object.keys(directory.peers).filter((key) => key.toLowerCase() === folded);
  if (keys.length > 1) return { target: undefined, ambiguous: keys.sort() };
  return { target: resolvePeer(directory, keys[0] ?? folded) };
}

/** How long dialVerified waits for TCP + TLS + the identity check when no deadline is given (the sidecar's default handshakeTimeout). */
export const DEFAULT_PEER_DIAL_TIMEOUT_MS = 10_000;

/**
 * Dials mTLS and resolves once dialTls's identity checks passed (it destroys the socket otherwise).
 * A peer that does not finish TCP + TLS within `timeoutMs` (one that accepts TCP and never answers
 * the ClientHello: a hung sidecar, a port of a server-speaks-last service) is cut: the promise
 * rejects with E_PEER_UNREACHABLE and the socket is destroyed, so nothing waits on it for ever.
 */
export function dialVerified(
  runtime: ClientRuntime,
  target: { host: string; port: number; alpn?: string[] },
  sessions: SessionCache,
  timeoutMs = DEFAULT_PEER_DIAL_TIMEOUT_MS,
  /** Told once when TCP connected but TLS or the identity check did not complete (a failed handshake). */
  onHandshakeFailed?: (error: Error) => void,
): Promise<TLSSocket> {
  return new Promise((resolveDial, rejectDial) => {
    let socket: TLSSocket;
    let tcpConnected = false;
    let settled = false;
    const resolve = (verified: TLSSocket) => {
      settled = true;
      resolveDial(verified);
    };
    const reject = (error: Error) => {
      if (settled) return;
      settled = true;
      if (tcpConnected) onHandshakeFailed?.(error);
      rejectDial(error);
    };
    try {
      socket = dialTls(runtime, { host: target.host, port: target.port, ...(target.alpn ? { ALPNProtocols: target.alpn } : {}) }, sessions);
      // Small request/response exchanges: Nagle + delayed ACK would add up to 40 ms each.
      socket.setNoDelay(true);
    } catch (error) {
      reject(isMeshwardError(error, "E_IDENTITY_EXPIRED") ? ownCertificateExpired(runtime, target) : (error as Error));
      return;
    }
    socket.once("connect", () => {
      tcpConnected = true;
    });
    const deadline = setTimeout(() => {
      reject(new MeshwardError("E_PEER_UNREACHABLE", `the sidecar at ${target.host}:${target.port} did not complete the TLS handshake within ${timeoutMs} ms (limits.handshakeTimeout)`));
      socket.destroy();
    }, timeoutMs);
    deadline.unref();
    const onError = (error: Error) => {
      clearTimeout(deadline);
      reject(error);
    };
    const onClose = () => {
      clearTimeout(deadline);
      reject(Object.assign(new Error(`the connection to ${target.host}:${target.port} closed before the peer was verified`), { code: "ECONNRESET" }));
    };
    socket.once("error", onError);
    socket.once("close", onClose);
    socket.once("secureConnect", () => {
      setImmediate(() => {
        clearTimeout(deadline);
        socket.removeListener("close", onClose);
        socket.removeListener("error", onError);
        if (socket.destroyed || peerOf(socket) === undefined) {
          reject(Object.assign(new Error(`the peer at ${target.host}:${target.port} did not present ${runtime.policy.expected}`), { code: "E_SPIFFE_MISMATCH" }));
          return;
        }
        resolve(socket);
      });
    });
  });
}

/** The code of the error a dial gets when this workload has no valid certificate: none yet, or its own expired (the outbound answers 503). */
export const NO_IDENTITY = "E_NO_IDENTITY";

/**
 * Our own certificate has expired (not renewed in time, e.g. the CA down for longer than its
 * lifetime): nothing was asked of the peer, so the dial fails with NO_IDENTITY, saying so and when.
 */
function ownCertificateExpired(runtime: ClientRuntime, target: { host: string; port: number }): MeshwardError {
  const { spiffeId, notAfter } = runtime.holder.health();
  return new MeshwardError(
    NO_IDENTITY,
    `this sidecar's own certificate (${spiffeId}) expired${notAfter === undefined ? "" : ` at ${notAfter.toISOString()}`} and has not been renewed (is the CA reachable?), so it cannot call the sidecar at ${target.host}:${target.port}; outbound calls are refused until a new certificate arrives (/readyz)`,
  );
}

/** The verified socket under each HTTP/2 session (session.socket is a proxy, not the socket dialTls recorded). */
const h2Sockets = new WeakMap<ClientHttp2Session, TLSSocket>();

interface PeerEntry {
  readonly key: string;
  readonly target: PeerTarget;
  /** Waits for this workload's first certificate: see #runtimeOf for the bounded wait. */
  readonly runtime: Promise<ClientRuntime>;
  /** The runtime, once `runtime` has resolved. */
  ready?: ClientRuntime;
  http1?: Http1Pool;
  h2?: Promise<ClientHttp2Session>;
  /** Stops watching for root removals. */
  off?: () => void;
  /** When it last served a request (a counter): the least recently used is evicted first. */
  used: number;
  /** Evicted: what still holds it finishes, nothing new is started through it. */
  evicted: boolean;
}

/**
 * Peers (address and expected identity) the pool keeps at once. Any local process can name a
 * peer per request (the `dapr-app-id` header, resolved through the peer template), and each kept
 * peer holds a pool, a timer and a listener: past this, the least recently used one is let go.
 */
export const MAX_PEERS = 1024;

/** Half of the sidecar's default `limits.idleTimeout` (60 s), which a peer closes idle connections after. */
const DEFAULT_PEER_SESSION_IDLE_MS = 30_000;

/**
 * Pooled mTLS connections to peer sidecars, one pool per (address, expected identity):
 * HTTP/1.1 keep-alive connections for the relay and one multiplexed HTTP/2 session per peer
 * (TCP tunnels and WebSocket upgrades get a verified connection of their own, `socket`); TLS
 * sessions resumed.
 */
export class PeerPool {
  readonly #entries = new Map<string, PeerEntry>();
  #byTarget = new WeakMap<PeerTarget, PeerEntry>();
  readonly #sessions = new SessionCache(1024);
  #closed = false;
  #uses = 0;
  onVerified: (() => void) | undefined; // told of each verified handshake with a peer (outbound.ts counts them)
  onHandshakeFailed: ((error: Error) => void) | undefined; // told of each peer that took TCP and failed TLS or the identity check

  readonly #handshakeFailed = (error: Error) => this.onHandshakeFailed?.(error);

  constructor(
    private readonly identity: IdentitySource,
    private readonly logger: TlsLogger,
    private readonly maxPeers = MAX_PEERS,
    /** Deadline for each dial: TCP connect, TLS handshake and identity check (limits.handshakeTimeout). */
    private readonly dialTimeoutMs = DEFAULT_PEER_DIAL_TIMEOUT_MS,
    /** A connection handed out by `socket` is ended this long after it was verified (limits.maxConnectionAge); 0 = no cap. */
    private readonly tunnelMaxAgeMs = 0,
  ) {}

  /** Peers kept now. */
  get size(): number {
    return this.#entries.size;
  }

  #entry(target: PeerTarget): PeerEntry {
    // Callers resolve a target once and pass the same object for each request: found without
    // building its key.
    const known = this.#byTarget.get(target);
    if (known !== undefined && !known.evicted) {
      known.used = ++this.#uses;
      return known;
    }
    const key = `${target.expectedId}|${target.host}|${target.port}`;
    let entry = this.#entries.get(key);
    if (entry === undefined) {
      if (this.#entries.size >= this.maxPeers) this.#evictLeastRecentlyUsed();
      const created: PeerEntry = {
        key,
        target,
        runtime: prepareClient({ identity: this.identity, expect: target.expectedId, logger: this.logger }, "sidecar outbound", { onVerified: () => this.onVerified?.() }),
        used: 0,
        evicted: false,
      };
      created.runtime.then(
        (runtime) => {
          created.ready = runtime;
          if (this.#closed || created.evicted) return;
          // A root has left the bundle: pooled connections and the HTTP/2 session whose peer's
          // chain rested on it (verifies under no root still held) serve no new request
          // (in-flight ones finish); those to a peer under a root that stayed go on.
          let epoch = runtime.holder.rootsEpoch();
          created.off = runtime.holder.onUpdate(() => {
            if (runtime.holder.rootsEpoch() === epoch) return;
            epoch = runtime.holder.rootsEpoch();
            created.http1?.retireWhere((socket) => !serverStillTrusted(socket as TLSSocket, runtime));
            const h2 = created.h2;
            void h2?.then(
              (session) => {
                const socket = h2Sockets.get(session);
                if (socket !== undefined && serverStillTrusted(socket, runtime)) return;
                if (created.h2 === h2) delete created.h2;
                session.close();
              },
              () => undefined,
            );
          });
        },
        () => undefined,
      );
      entry = created;
      this.#entries.set(key, entry);
    }
    entry.used = ++this.#uses;
    this.#byTarget.set(target, entry);
    return entry;
  }

  /** Lets the least recently used peer go: idle connections close, busy ones after their exchange. */
  #evictLeastRecentlyUsed(): void {
    let oldest: PeerEntry | undefined;
    for (const entry of this.#entries.values()) if (oldest === undefined || entry.used < oldest.used) oldest = entry;
    if (oldest === undefined) return;
    this.#entries.delete(oldest.key);
    oldest.evicted = true;
    oldest.off?.();
    oldest.http1?.shutDown();
    const h2 = oldest.h2;
    delete oldest.h2;
    void h2?.then((session) => session.close(), () => undefined);
  }

  /**
   * The client runtime (this workload's certificate) for a dial. Before the first certificate
   * arrives there is nothing to present: the wait is part of the dial and has its deadline
   * (limits.handshakeTimeout), then fails with NO_IDENTITY rather than holding the request.
   */
  #runtimeOf(entry: PeerEntry): Promise<ClientRuntime> {
    if (entry.ready !== undefined) return Promise.resolve(entry.ready);
    return new Promise((resolve, reject) => {
      const deadline = setTimeout(() => {
        reject(
          new MeshwardError(
            NO_IDENTITY,
            `this sidecar has no identity yet (its first certificate did not arrive within ${this.dialTimeoutMs} ms, limits.handshakeTimeout), so it cannot call ${entry.target.appId}; retry once it is ready (/readyz)`,
          ),
        );
      }, this.dialTimeoutMs);
      deadline.unref();
      entry.runtime.then(
        (runtime) => {
          clearTimeout(deadline);
          resolve(runtime);
        },
        (error: unknown) => {
          clearTimeout(deadline);
          reject(error as Error);
        },
      );
    });
  }

  /** Keep-alive HTTP/1.1 connections to a peer, each verified before its first request byte. */
  http1(target: PeerTarget, options: { maxHeaderBytes: number; idleMs: number }): Http1Pool {
    const entry = this.#entry(target);
    entry.http1 ??= new Http1Pool({
      dial: async () => {
        const socket = await dialVerified(await this.#runtimeOf(entry), { host: target.host, port: target.port }, this.#sessions, this.dialTimeoutMs, this.#handshakeFailed);
        retireAtCertificateExpiry(socket, () => entry.http1?.retire(socket));
        return socket;
      },
      authority: `${target.appId}.${target.namespace}`,
      maxHeaderBytes: options.maxHeaderBytes,
      idleMs: options.idleMs,
      maxIdle: 256,
    });
    return entry.http1;
  }

  /**
   * The shared HTTP/2 session to a peer, (re)opened when missing, closing or broken. Idle for
   * `idleMs` (below the peer's own idleTimeout), it is let go before the peer closes it: a
   * stream started as the peer's GOAWAY is on its way would be refused.
   */
  h2(target: PeerTarget, options: { idleMs: number } = { idleMs: DEFAULT_PEER_SESSION_IDLE_MS }): Promise<ClientHttp2Session> {
    const entry = this.#entry(target);
    if (entry.h2 !== undefined) return entry.h2;
    const opening = (async () => {
      const runtime = await this.#runtimeOf(entry);
      const socket = await dialVerified(runtime, { host: target.host, port: target.port, alpn: ["h2"] }, this.#sessions, this.dialTimeoutMs, this.#handshakeFailed);
      const session = http2Connect(`https://${target.appId}`, { createConnection: () => socket });
      h2Sockets.set(session, socket);
      const forget = () => {
        if (entry.h2 === opening) delete entry.h2;
      };
      session.once("close", forget);
      session.once("goaway", forget);
      session.once("error", forget);
      session.on("error", () => undefined);
      // A peer that completes TLS but never speaks HTTP/2 (no SETTINGS frame): the streams sent
      // on the session would wait for ever. Cut it after the same deadline as the dial.
      const settingsDeadline = setTimeout(() => {
        forget();
        session.destroy(new MeshwardError("E_PEER_UNREACHABLE", `the sidecar at ${target.host}:${target.port} sent no HTTP/2 settings within ${this.dialTimeoutMs} ms of the TLS handshake (limits.handshakeTimeout)`));
      }, this.dialTimeoutMs);
      settingsDeadline.unref();
      session.once("remoteSettings", () => clearTimeout(settingsDeadline));
      session.once("close", () => clearTimeout(settingsDeadline));
      closeWhenIdle(session, options.idleMs, forget);
      // The peer's certificate (or ours on this session) expires: open streams finish, the next call opens a new session.
      retireAtCertificateExpiry(socket, () => {
        forget();
        session.close();
      });
      if (this.#closed) session.close();
      return session;
    })();
    entry.h2 = opening;
    opening.catch(() => {
      if (entry.h2 === opening) delete entry.h2;
    });
    return opening;
  }

  /**
   * A verified raw mTLS socket of the caller's own (a TCP tunnel, a WebSocket). Nothing above can
   * drain it, so it is ended when a root leaves the bundle, when the peer's certificate (or ours on
   * it) expires and at the age cap (retireTunnelWhenStale); closed at once if the peer's
   * certificate is revoked (dialTls).
   */
  async socket(target: PeerTarget): Promise<TLSSocket> {
    const runtime = await this.#runtimeOf(this.#entry(target));
    const socket = await dialVerified(runtime, { host: target.host, port: target.port }, this.#sessions, this.dialTimeoutMs, this.#handshakeFailed);
    retireTunnelWhenStale(socket, runtime, { maxAgeMs: this.tunnelMaxAgeMs });
    return socket;
  }

  close(): void {
    this.#closed = true;
    for (const entry of this.#entries.values()) {
      entry.off?.();
      entry.http1?.close();
      void entry.h2?.then((s) => s.close(), () => undefined);
    }
    this.#entries.clear();
    this.#byTarget = new WeakMap();
  }
}
