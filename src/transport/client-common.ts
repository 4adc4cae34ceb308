import { connect as tlsConnect } from "node:tls";
import type { ConnectionOptions, TLSSocket } from "node:tls";
import { describeError, MeshwardError } from "../errors.ts";
import type { IdentitySource } from "../identity/source.ts";
import { compileMatcher, describeMatcher, normalizeMatcher } from "../spiffe/match.ts";
import type { NormalizedMatcher } from "../spiffe/match.ts";
import { SecureContextHolder } from "../tls/context.ts";
import { markHandshakeCompleted, tlsAfterHandshakeFailure } from "../tls/after-handshake.ts";
import { consoleLogger } from "../tls/logger.ts";
import type { TlsLogger } from "../tls/logger.ts";
import { peerChainOf, revocationOf, sentChainRefusal, spiffeCheckServerIdentity, verifyRememberedPeer, verifyTlsPeerWithValidity } from "../tls/verify.ts";
import type { PeerIdentity, PeerPolicy } from "../tls/verify.ts";
import { systemClock } from "../util/clock.ts";
import { assertSecureOptions, endTunnel, setPeer, warnInsecure } from "./common.ts";
import type { ClientCommonOptions } from "./common.ts";

const holders = new WeakMap<IdentitySource, Promise<SecureContextHolder>>();

/** One client context holder per identity source, shared by every client built on it. */
export function clientHolderFor(identity: IdentitySource, logger: TlsLogger): Promise<SecureContextHolder> {
  let holder = holders.get(identity);
  if (holder === undefined) {
    holder = SecureContextHolder.create(identity, { role: "client", logger });
    holders.set(identity, holder);
    holder.catch(() => holders.delete(identity));
  }
  return holder;
}

const predicateIds = new WeakMap<object, number>();
let nextPredicateId = 1;

/** A stable key per expected identity: session caches and agents are never shared across keys. */
export function matcherKey(matcher: NormalizedMatcher): string {
  switch (matcher.kind) {
    case "predicate": {
      let id = predicateIds.get(matcher.predicate);
      if (id === undefined) predicateIds.set(matcher.predicate, (id = nextPredicateId++));
      return `fn#${id}`;
    }
    case "id":
      return `id:${matcher.id}`;
    case "ids":
      return `ids:${matcher.ids.join(",")}`;
    case "pattern":
      return `td:${matcher.trustDomain}/${matcher.namespace ?? "*"}/${matcher.appId ?? "*"}`;
  }
}

export interface ClientRuntime {
  readonly holder: SecureContextHolder;
  readonly policy: PeerPolicy;
  readonly logger: TlsLogger;
  readonly insecure: boolean;
  readonly key: string;
  /** Told of each connection whose server was verified (full or resumed handshake): the sidecar counts its outbound handshakes. */
  readonly onVerified?: () => void;
}

export async function prepareClient(options: ClientCommonOptions, what: string, hooks: { readonly onVerified?: () => void } = {}): Promise<ClientRuntime> {
  const { insecure } = assertSecureOptions(options, what, "client");
  const logger = options.logger ?? consoleLogger;
  const holder = await clientHolderFor(options.identity, logger);
  // The policy and the key under which agents and sessions are pooled come from one copy.
  const expected = insecure ? undefined : normalizeMatcher(options.expect);
  const policy: PeerPolicy = {
    accepts: expected === undefined ? () => true : compileMatcher(expected),
    expected: expected === undefined ? "anything (insecure)" : describeMatcher(expected),
    revokedSerials: () => holder.revokedSerials(),
    peerRole: "server",
  };
  return { holder, policy, logger, insecure, key: expected === undefined ? "insecure" : matcherKey(expected), ...(hooks.onVerified !== undefined ? { onVerified: hooks.onVerified } : {}) };
}

/** A session ticket with the server identity verified on the full handshake that produced it. */
export interface ResumableSession {
  readonly ticket: Buffer;
  readonly peer: PeerIdentity;
  readonly notAfter: Date;
  /** The holder's rootsEpoch when the server was verified: a session outlives no root removal. */
  readonly rootsEpoch: number;
  /** The server's chain on that full handshake (leaf first, DER): a connection resumed with it ends only if a removed root was what it rested on. */
  readonly chain?: readonly Buffer[];
  /**
   * Serial of our own certificate on the full handshake: the server sees that one again on every
   * resumption, so once we have rotated, the session is not offered (the server would refuse it
   * when that certificate expires, and should see the current one anyway).
   */
  readonly ownSerial: string;
}

const kResumable = Symbol("meshward.resumable");

/** The latest resumable session of a verified meshward client connection. */
export function resumableSession(socket: TLSSocket): ResumableSession | undefined {
  return (socket as unknown as { [kResumable]?: ResumableSession })[kResumable];
}

/** Per expected identity and address: the last session, so resumption never crosses identities. */
export class SessionCache {
  readonly #sessions = new Map<string, ResumableSession>();
  constructor(private readonly limit = 256) {}
  get(key: string): ResumableSession | undefined {
    return this.#sessions.get(key);
  }
  set(key: string, session: ResumableSession): void {
    this.#sessions.delete(key);
    this.#sessions.set(key, session);
    if (this.#sessions.size > this.limit) this.#sessions.delete(this.#sessions.keys().next().value as string);
  }
  delete(key: string): void {
    this.#sessions.delete(key);
  }
}

export interface DialOptions {
  readonly host: string;
  readonly port: number;
  readonly servername?: string;
  readonly ALPNProtocols?: string[];
  readonly session?: ResumableSession;
}

/**
 * When a client connection is to stop taking requests (ms since the epoch): when the server's
 * certificate it verified expires, or a little before our own certificate on it does (the server
 * ends the connection then, and a request written just as it does would fail).
 */
const retireAt = new WeakMap<TLSSocket, number>();

/** How long before our own certificate on a connection expires the connection takes no new request. */
export const OWN_EXPIRY_MARGIN_MS = 2_000;

/**
 * Records when a verified connection must stop taking requests: when the server certificate it
 * was verified with expires, or OWN_EXPIRY_MARGIN_MS before our own certificate on it does.
 * dialTls records its sockets; a client that dials through another library (grpc-js) records its own.
 */
export function recordCertificateExpiry(socket: TLSSocket, serverNotAfter: Date, ownNotAfter: Date): void {
  retireAt.set(socket, Math.min(serverNotAfter.getTime(), ownNotAfter.getTime() - OWN_EXPIRY_MARGIN_MS));
}

/**
 * Calls `retire` when the connection must stop taking requests: the server certificate it was
 * verified with expires, or our own certificate on it is about to (TLS checks validity at the
 * handshake only, and a meshward server ends the connection when the client's certificate
 * expires). Call once the socket is verified (after dialTls's `secureConnect`); does nothing for
 * a socket whose expiry was not recorded (recordCertificateExpiry).
 */
export function retireAtCertificateExpiry(socket: TLSSocket, retire: () => void): void {
  const at = retireAt.get(socket);
  if (at === undefined || socket.destroyed) return;
  const timer = systemClock.setTimeout(retire, at - Date.now());
  socket.once("close", () => systemClock.clearTimeout(timer));
}

/**
 * Closes a verified client connection as soon as the certificate its server was verified with,
 * or its issuer (an issuer retired with --now), is revoked (a new CRL reaches the identity): TLS judged it at the handshake only, and a pooled
 * connection or an HTTP/2 session would otherwise go on carrying requests, and their credentials,
 * to a revoked server until its certificate expires. Servers recheck their callers the same way
 * (ConnectionRegistry.recheckAll). Requests in flight on it fail.
 */
export function closeWhenRevoked(socket: TLSSocket, server: Pick<PeerIdentity, "spiffeId" | "serial" | "issuerSerials">, runtime: ClientRuntime): void {
  if (runtime.insecure || socket.destroyed) return;
  const off = runtime.holder.onUpdate(() => {
    if (socket.destroyed) return;
    const error = revocationOf(runtime.policy, { trustDomain: "", namespace: undefined, appId: undefined, ...server }, "this connection's server");
    if (error === undefined) return;
    runtime.logger.warn(`closing the connection to ${socket.remoteAddress ?? "?"}:${socket.remotePort ?? "?"}: ${error.message}`);
    socket.destroy(error);
  });
  socket.once("close", off);
}

/** The holder's rootsEpoch whose roots verified a connection's server, and the chain it presented (dialTls records them). */
const verifiedServer = new WeakMap<TLSSocket, { readonly rootsEpoch: number; readonly chain: readonly Buffer[] | undefined }>();

/** Records what verified `socket`'s server, for a client that dials through another library (grpc-js). */
export function recordVerifiedServer(socket: TLSSocket, rootsEpoch: number, chain: readonly Buffer[] | undefined): void {
  verifiedServer.set(socket, { rootsEpoch, chain });
}

/**
 * Whether the server of a verified client connection is still vouched for by the roots held now:
 * no root has left the bundle since it was verified, or its chain verifies under a root that
 * stayed. A root rotation's end (retire) thus ends the connections to servers still on the old
 * root, not those to servers already under the new one (nor under any other root kept). A
 * connection whose verification was not recorded counts as not trusted (insecure ones excepted:
 * nothing was verified, nothing changes).
 */
export function serverStillTrusted(socket: TLSSocket, runtime: ClientRuntime): boolean {
  const verified = verifiedServer.get(socket);
  if (verified === undefined) return runtime.insecure;
  if (verified.rootsEpoch === runtime.holder.rootsEpoch()) return true;
  return runtime.holder.chainTrusted(verified.chain);
}

export interface TunnelRetirement {
  /** End the connection this long after it was verified; 0 or absent: no age cap. */
  readonly maxAgeMs?: number;
}

/**
 * Ends a verified client connection that carries a byte stream (a sidecar TCP tunnel or WebSocket,
 * an SDK `connectMtls` socket): when a root has left the bundle since its server was verified and
 * its server's chain no longer verifies under the roots that stayed (serverStillTrusted), when the server's certificate expires or ours on it is about to
 * (retireAtCertificateExpiry), and at `maxAgeMs`. Pooled HTTP connections stop taking requests at
 * the same moments; a tunnel has no request boundary, so it is ended (nothing more is sent) and
 * destroyed after the grace if the server holds it open (endTunnel). Revocation is
 * closeWhenRevoked's, at once, for every dialTls connection. Call once dialTls verified the socket.
 */
export function retireTunnelWhenStale(socket: TLSSocket, runtime: ClientRuntime, options: TunnelRetirement = {}): void {
  if (socket.destroyed) return;
  const server = `${socket.remoteAddress ?? "?"}:${socket.remotePort ?? "?"}`;
  const cleanups: (() => void)[] = [];
  let retired = false;
  const retire = (why: string) => {
    if (retired || socket.destroyed) return;
    retired = true;
    for (const cleanup of cleanups) cleanup();
    runtime.logger.info(`ending the connection to ${server}: ${why}`);
    endTunnel(socket);
  };
  socket.once("close", () => {
    for (const cleanup of cleanups) cleanup();
  });
  const verified = verifiedServer.get(socket);
  if (verified !== undefined) {
    // The chain is verified again once per root removal, not at every bundle update.
    let checked = verified.rootsEpoch;
    const rootRemoved = () => {
      const epoch = runtime.holder.rootsEpoch();
      if (epoch === checked) return;
      checked = epoch;
      if (!runtime.holder.chainTrusted(verified.chain)) retire("a root left the trust bundle since its server was verified, and the server's chain rests on no root still held");
    };
    cleanups.push(runtime.holder.onUpdate(rootRemoved));
    // The bundle may have changed between the handshake and this call.
    rootRemoved();
  }
  retireAtCertificateExpiry(socket, () => retire("the server's certificate on it, or this client's, is expiring"));
  if (options.maxAgeMs !== undefined && options.maxAgeMs > 0 && !retired) {
    const aged = systemClock.setTimeout(() => retire(`it reached the maximum connection age (${options.maxAgeMs} ms)`), options.maxAgeMs);
    cleanups.push(() => systemClock.clearTimeout(aged));
  }
}

/**
 * Opens a TLS connection with the client policy: our SVID, the bundle roots, SPIFFE ID
 * check on full handshakes (checkServerIdentity) and again on `secureConnect`, because Node
 * skips checkServerIdentity for resumed sessions.
 */
export function dialTls(runtime: ClientRuntime, dial: DialOptions, sessions?: SessionCache): TLSSocket {
  const sessionKey = `${runtime.key}|${dial.host}|${dial.port}|${dial.servername ?? ""}`;
  const resumable = runtime.insecure ? undefined : offerable(dial.session ?? sessions?.get(sessionKey), runtime, () => sessions?.delete(sessionKey));
  const checkIdentity = spiffeCheckServerIdentity(runtime.policy);
  // Node runs checkServerIdentity again (onConnectSecure on every 'secure') when OpenSSL reports
  // another handshake on the connection: the server asked to renegotiate, which
  // SSL_OP_NO_RENEGOTIATION refuses. By then getPeerCertificate() is empty on our sockets: on a
  // client, getPeerX509Certificate() (verifyTlsPeerWithValidity, below) deletes the leaf from
  // OpenSSL's own peer chain (X509Certificate::GetPeerCert, sk_X509_delete; nodejs/node#65579).
  // Failing on that closed the connection before the no_renegotiation alert went out, as
  // E_PEER_NO_SPIFFE_ID "the server sent no certificate". With no certificate after a verified
  // handshake there is nothing new to judge; one that is there is still checked. The server's
  // answer to the refusal is then named (afterHandshakeError).
  let verified: { peer: PeerIdentity; notAfter: Date; rootsEpoch: number; ownSerial: string; chain: readonly Buffer[] | undefined } | undefined;
  // The server's chain as the full handshake showed it to checkServerIdentity (a detailed
  // certificate Node builds anyway): read later, on a client, the leaf may be gone from it.
  let serverChain: readonly Buffer[] | undefined;
  // The certificate this connection presents: the one current as it is dialled (its secureContext;
  // a resumed session is offered only when it was made with this same certificate).
  const { serial: ownSerial, notAfter: ownNotAfter } = runtime.holder.snapshot().svid;
  // The roots this handshake verifies the server against: the secure context's, as it is dialled.
  const dialRootsEpoch = runtime.holder.rootsEpoch();
  const options: ConnectionOptions = {
    host: dial.host,
    port: dial.port,
    secureContext: runtime.holder.secureContext(),
    rejectUnauthorized: !runtime.insecure,
    checkServerIdentity: runtime.insecure
      ? () => undefined
      : (host, cert) => {
          if (verified !== undefined && !cert?.raw) return undefined;
          serverChain ??= peerChainOf(cert);
          // The SPIFFE ID and the leaf's revocation, then the rest of what the server sent (its
          // issuer, retired with --now): a refused server fails the handshake (sentChainRefusal).
          // secureConnect checks it all again (verifyTlsPeerWithValidity, from the same certificate).
          const refused = checkIdentity(host, cert);
          if (refused !== undefined || verified !== undefined) return refused;
          return sentChainRefusal(socket, runtime.policy);
        },
    ...(dial.servername !== undefined && isHostName(dial.servername) ? { servername: dial.servername } : {}),
    ...(dial.ALPNProtocols ? { ALPNProtocols: dial.ALPNProtocols } : {}),
    ...(resumable ? { session: resumable.ticket } : {}),
  };
  if (runtime.insecure) warnInsecure(runtime.logger, `a connection to ${dial.host}:${dial.port}`);
  const socket = tlsConnect(options);
  let pendingTicket: Buffer | undefined;
  const remember = (ticket: Buffer) => {
    const entry: ResumableSession = {
      ticket,
      peer: verified!.peer,
      notAfter: verified!.notAfter,
      rootsEpoch: verified!.rootsEpoch,
      ownSerial: verified!.ownSerial,
      ...(verified!.chain !== undefined ? { chain: verified!.chain } : {}),
    };
    (socket as unknown as { [kResumable]?: ResumableSession })[kResumable] = entry;
    sessions?.set(sessionKey, entry);
  };
  socket.once("secureConnect", () => {
    if (runtime.insecure) return markHandshakeCompleted(socket);
    try {
      if (socket.isSessionReused()) {
        // Node skipped checkServerIdentity and shows no peer certificate: check what the ticket was issued to.
        if (resumable === undefined) throw new MeshwardError("E_PEER_UNTRUSTED", "a session was resumed that this client did not offer");
        // A server that refuses the resumed session (a meshward server that no longer remembers the
        // chain it was made with: verify.ts rememberedIssuerSerials) closes it before any byte of
        // data: forget the ticket, so the next connection is a full handshake, not the same refusal.
        // (Whatever ticket it holds by then: the refusing server may have sent a new one first.)
        socket.once("close", () => {
          if (socket.bytesRead === 0) sessions?.delete(sessionKey);
        });
        verified = { peer: verifyRememberedPeer(resumable.peer, resumable.notAfter, runtime.policy), notAfter: resumable.notAfter, rootsEpoch: resumable.rootsEpoch, ownSerial: resumable.ownSerial, chain: resumable.chain };
      } else {
        verified = { ...verifyTlsPeerWithValidity(socket, runtime.policy), rootsEpoch: dialRootsEpoch, ownSerial, chain: serverChain };
      }
      setPeer(socket, verified.peer);
      recordCertificateExpiry(socket, verified.notAfter, ownNotAfter);
      verifiedServer.set(socket, { rootsEpoch: verified.rootsEpoch, chain: verified.chain });
      closeWhenRevoked(socket, verified.peer, runtime);
      // From here a TLS alert is not a handshake failure: marked, so that callers can name it.
      markHandshakeCompleted(socket);
      runtime.onVerified?.();
      if (pendingTicket !== undefined) remember(pendingTicket);
    } catch (error) {
      sessions?.delete(sessionKey);
      runtime.logger.warn(`refused server ${dial.host}:${dial.port}: ${describeError(error)}`);
      socket.destroy(error instanceof MeshwardError ? error : new MeshwardError("E_PEER_UNTRUSTED", describeError(error)));
    }
  });
  if (!runtime.insecure) {
    socket.on("session", (ticket: Buffer) => {
      if (verified) remember(ticket);
      else pendingTicket = ticket;
    });
  }
  return socket;
}

/**
 * `error` as the SDK's clients report it: a TLS failure after a completed, verified handshake
 * (e.g. the server asked to renegotiate, which meshward refuses, and ended the connection with an
 * alert) becomes E_TLS_AFTER_HANDSHAKE naming it, with the original as `cause`; anything else is
 * returned as it is.
 */
export function afterHandshakeError(error: Error, server: string): Error {
  const named = tlsAfterHandshakeFailure(error);
  return named === undefined ? error : new MeshwardError("E_TLS_AFTER_HANDSHAKE", `${server}: ${named}`, { cause: error });
}

/** A remembered session is offered only while its server certificate is still good for a while. */
const RESUME_MARGIN_MS = 5_000;

/**
 * The session to offer, or undefined (and forgotten) when resuming it would be refused after the
 * handshake anyway: its certificate expired or expires within the margin, was revoked, or is
 * not the identity expected now; or when a root was removed from the bundle since the server was
 * verified (its chain may rest on that root). A full handshake then sees the server's current
 * certificate and chain.
 */
function offerable(session: ResumableSession | undefined, runtime: ClientRuntime, forget: () => void): ResumableSession | undefined {
  if (session === undefined) return undefined;
  if (session.rootsEpoch !== runtime.holder.rootsEpoch() || session.ownSerial !== runtime.holder.snapshot().svid.serial) {
    forget();
    return undefined;
  }
  try {
    verifyRememberedPeer(session.peer, new Date(session.notAfter.getTime() - RESUME_MARGIN_MS), runtime.policy);
    return session;
  } catch {
    forget();
    return undefined;
  }
}

function isHostName(name: string): boolean {
  return name.length > 0 && !/^[\d.]+$/.test(name) && !name.includes(":");
}
