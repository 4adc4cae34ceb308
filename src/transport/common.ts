import type { X509Certificate } from "node:crypto";
import type { Socket } from "node:net";
import type { Server as TlsServer, TLSSocket } from "node:tls";
import { MeshwardError, describeError } from "../errors.ts";
import type { IdentitySource } from "../identity/source.ts";
import { compileMatcher, describeMatcher, normalizeMatcher } from "../spiffe/match.ts";
import type { SpiffeIdMatcher } from "../spiffe/match.ts";
import { SecureContextHolder } from "../tls/context.ts";
import { capHandshakeBytes, HANDSHAKE_TOO_LARGE, rawSocketOf, refusedByHandshakeCap } from "../tls/handshake-cap.ts";
import type { IdentityHealth } from "../tls/context.ts";
import { LogLimiter } from "../telemetry/log-limiter.ts";
import { classifyTlsError } from "../telemetry/tls-reason.ts";
import { consoleLogger } from "../tls/logger.ts";
import { systemClock } from "../util/clock.ts";
import type { ClockTimer } from "../util/clock.ts";
import type { TlsLogger } from "../tls/logger.ts";
import { revocationOf, verifyTlsPeer, verifyTlsPeerWithValidity, x509ChainOf } from "../tls/verify.ts";
import type { PeerIdentity, PeerPolicy } from "../tls/verify.ts";

/** The only way to weaken verification; its name is the warning. Logged on every use. */
export interface InsecureEscapeHatch {
  readonly iUnderstandThisDisablesSecurity: true;
}

export interface CommonOptions {
  readonly identity: IdentitySource;
  readonly logger?: TlsLogger;
  /** Local debugging only: skips SPIFFE ID checks (servers also accept callers without a certificate). */
  readonly insecure?: InsecureEscapeHatch;
}

/**
 * A logger that takes fields, then a message (pino's form). Given as `fieldLogger` (the sidecar passes
 * its pino logger), refused connections and failed handshakes are logged with fields a log query can
 * select on (`event`, `peer`, `reason`, `code`, `spiffeId`) instead of one line of text through `logger`.
 */
export interface FieldLogger {
  warn(fields: Record<string, unknown>, message: string): void;
}

export interface ServerCommonOptions extends CommonOptions {
  /** Log refusals and failed handshakes with fields through this logger (pino's `(fields, message)` form). */
  readonly fieldLogger?: FieldLogger;
  /** Which callers may connect. Default: any identity in this workload's own trust domain. */
  readonly authorize?: SpiffeIdMatcher;
  /** Close connections older than this (HTTP/2: GOAWAY) so revocation and root retirement reach them. Default 1 h; 0 = no cap. */
  readonly maxConnectionAgeMs?: number;
  /** Called when the identity becomes unhealthy (expired) or healthy again. */
  readonly onHealthChange?: (health: IdentityHealth) => void;
  readonly ticketKeyRotationMs?: number;
  readonly sessionTimeoutSeconds?: number;
  /**
   * Bytes a caller may send before its TLS handshake completes; a connection over it is reset before
   * any of its certificate chain is verified, and logged (`handshake_too_large`). Off by default
   * (absent or 0): no counting stream is installed and connections take Node's native TLS path. At
   * least 4096 turns it on, at a cost for every connection (docs/sdk.md; src/tls/handshake-cap.ts).
   */
  readonly maxHandshakeBytes?: number;
}

export interface ClientCommonOptions extends CommonOptions {
  /** The server identity this client expects: an ID, a list, { trustDomain, namespace?, appId? } or a predicate. Required. */
  readonly expect: SpiffeIdMatcher;
}

export const DEFAULT_MAX_CONNECTION_AGE_MS = 60 * 60 * 1000;

/** Options meshward sets itself; passing them would bypass or weaken its policy. */
const POLICY_OWNED = [
  "rejectUnauthorized",
  "requestCert",
  "checkServerIdentity",
  "secureContext",
  "ca",
  "cert",
  "key",
  "pfx",
  "ciphers",
  "minVersion",
  "maxVersion",
  "secureProtocol",
  "secureOptions",
  "allowHTTP1",
  "ecdhCurve",
] as const;

export const kPeer: unique symbol = Symbol.for("meshward.peer");
type WithPeer = { [kPeer]?: PeerIdentity };

/** The verified peer of a connection accepted or opened by a meshward server or client. */
export function peerOf(socket: unknown): PeerIdentity | undefined {
  return socket !== null && typeof socket === "object" ? (socket as WithPeer)[kPeer] : undefined;
}

export function setPeer(socket: TLSSocket, peer: PeerIdentity): void {
  (socket as unknown as WithPeer)[kPeer] = peer;
}

/** Throws E_INSECURE_CONFIG for anything that could allow plaintext or skip verification. */
export function assertSecureOptions(options: unknown, what: string, role: "server" | "client"): { insecure: boolean } {
  if (options === null || typeof options !== "object") {
    throw new MeshwardError("E_INSECURE_CONFIG", `${what} needs options with an identity source`);
  }
  const record = options as Record<string, unknown>;
  const identity = record.identity as IdentitySource | undefined;
  if (identity === undefined || identity === null || typeof identity.ready !== "function" || typeof identity.subscribe !== "function") {
    throw new MeshwardError("E_INSECURE_CONFIG", `${what} needs an identity source (options.identity), e.g. createIdentity(...) or staticIdentity(...)`);
  }
  for (const key of POLICY_OWNED) {
    if (record[key] !== undefined) {
      throw new MeshwardError(
        "E_INSECURE_CONFIG",
        `${what}: option "${key}" is set by meshward's TLS policy and cannot be overridden; use "identity", "${role === "client" ? "expect" : "authorize"}" or, for local debugging only, insecure: { iUnderstandThisDisablesSecurity: true }`,
      );
    }
  }
  for (const key of ["plaintext", "allowPlaintext", "permissive"]) {
    if (record[key] !== undefined && record[key] !== false) {
      throw new MeshwardError("E_INSECURE_CONFIG", `${what}: "${key}" is not supported; meshward SDK connections are always mutual TLS`);
    }
  }
  let insecure = false;
  if (record.insecure !== undefined) {
    const hatch = record.insecure as Partial<InsecureEscapeHatch> | null;
    if (hatch === null || typeof hatch !== "object" || hatch.iUnderstandThisDisablesSecurity !== true) {
      throw new MeshwardError("E_INSECURE_CONFIG", `${what}: "insecure" must be exactly { iUnderstandThisDisablesSecurity: true }`);
    }
    insecure = true;
  }
  if (role === "client" && record.expect === undefined && !insecure) {
    throw new MeshwardError(
      "E_INSECURE_CONFIG",
      `${what} needs "expect": the SPIFFE ID (or matcher) of the server it talks to; being signed by our CA is not enough`,
    );
  }
  return { insecure };
}

export function warnInsecure(logger: TlsLogger, what: string): void {
  logger.warn(`INSECURE: ${what} skips SPIFFE ID verification (insecure.iUnderstandThisDisablesSecurity); never use this outside local debugging`);
}

export interface ServerRuntime {
  readonly holder: SecureContextHolder;
  readonly policy: PeerPolicy;
  readonly logger: TlsLogger;
  /** When set, refusals and failed handshakes are logged through it with fields (see FieldLogger). */
  readonly fieldLogger: FieldLogger | undefined;
  readonly insecure: boolean;
  readonly maxConnectionAgeMs: number;
  /** Refusals any peer can cause at will (failed handshakes, refused callers) are logged through it: 5 per reason and address every 10 s, the rest counted (`sweepRefusals`). */
  readonly refusalLog: LogLimiter;
  /** Bytes a caller may send before its TLS handshake completes (capHandshakeBytes); undefined: no cap. */
  readonly maxHandshakeBytes: number | undefined;
}

export async function prepareServer(options: ServerCommonOptions, what: string): Promise<ServerRuntime> {
  const { insecure } = assertSecureOptions(options, what, "server");
  const logger = options.logger ?? consoleLogger;
  const holder = await SecureContextHolder.create(options.identity, {
    role: "server",
    logger,
    ...(options.onHealthChange ? { onHealthChange: options.onHealthChange } : {}),
    ...(options.ticketKeyRotationMs !== undefined ? { ticketKeyRotationMs: options.ticketKeyRotationMs } : {}),
    ...(options.sessionTimeoutSeconds !== undefined ? { sessionTimeoutSeconds: options.sessionTimeoutSeconds } : {}),
  });
  const authorize = normalizeMatcher(options.authorize ?? { trustDomain: holder.trustDomain() });
  const policy: PeerPolicy = {
    accepts: compileMatcher(authorize),
    expected: describeMatcher(authorize),
    revokedSerials: () => holder.revokedSerials(),
    peerRole: "client",
  };
  if (insecure) warnInsecure(logger, what);
  return { holder, policy, logger, fieldLogger: options.fieldLogger, insecure, maxConnectionAgeMs: options.maxConnectionAgeMs ?? DEFAULT_MAX_CONNECTION_AGE_MS, refusalLog: new LogLimiter(), maxHandshakeBytes: maxHandshakeBytesOf(options.maxHandshakeBytes, what) };
}

function maxHandshakeBytesOf(value: number | undefined, what: string): number | undefined {
  if (value === undefined || value === 0) return undefined;
  if (!Number.isSafeInteger(value) || value < 4096) throw new MeshwardError("E_INSECURE_CONFIG", `${what}: maxHandshakeBytes must be 0 (off) or a whole number of at least 4096 (a client's first flight with its certificate chain must fit)`);
  return value;
}

/**
 * Caps what a caller may send before its handshake completes (src/tls/handshake-cap.ts) when
 * maxHandshakeBytes is set; a refusal is logged through the refusal limiter. Unset (the default),
 * nothing is installed: connections keep Node's native TLS path.
 */
export function capServerHandshakes(server: TlsServer, runtime: ServerRuntime, what: string): void {
  const maxBytes = runtime.maxHandshakeBytes;
  if (maxBytes === undefined) return;
  capHandshakeBytes(server, {
    maxBytes,
    onRefused: (raw, maxBytes) => {
      const from = raw.remoteAddress ?? "?";
      const unlogged = runtime.refusalLog.admit(refusalKey("refused", HANDSHAKE_TOO_LARGE, from));
      if (unlogged === undefined) return;
      logRefusal(
        runtime,
        { event: "connection-refused", peer: peerAddress(from, raw.remotePort), reason: HANDSHAKE_TOO_LARGE, limit: maxBytes },
        `${what}: refused a connection from ${from}: more than ${maxBytes} bytes (maxHandshakeBytes) sent before its TLS handshake completed; its certificate chain was not verified${unlogged > 0 ? ` (${unlogged} more like it not logged)` : ""}`,
      );
    },
  });
}

/** How long a retired tunnel's other side has to close it after our end, before it is destroyed. */
export const TUNNEL_END_GRACE_MS = 5_000;

/**
 * Retires a connection that carries a byte stream (a TCP tunnel, a WebSocket, a raw TLS socket):
 * there is no request boundary to wait for, so it is ended at once (no byte is sent after this)
 * and destroyed `graceMs` later if the other side holds it open.
 */
export function endTunnel(socket: Socket, graceMs = TUNNEL_END_GRACE_MS): void {
  if (socket.destroyed) return;
  socket.end();
  const deadline = setTimeout(() => socket.destroy(), graceMs);
  deadline.unref();
  socket.once("close", () => clearTimeout(deadline));
}

/**
 * The caller's certificate as verified (its issuerCertificate links hold the chain it presented),
 * walked only when a root leaves the bundle. A resumed session may show the leaf alone (a session
 * keeps no intermediates): its connection then counts as resting on the removed root, and ends.
 */
const callerCertificate = new WeakMap<TLSSocket, X509Certificate>();

function callerChain(socket: TLSSocket): Buffer[] {
  return x509ChainOf(callerCertificate.get(socket));
}

/** When the certificate a connection's caller was verified with expires (ms since the epoch). */
const peerNotAfter = new WeakMap<TLSSocket, number>();

/** Verifies a server-side connection; on refusal logs why and destroys it. Returns the peer or undefined. */
export function admitConnection(runtime: ServerRuntime, socket: TLSSocket, what: string): PeerIdentity | undefined {
  if (runtime.insecure) {
    warnInsecure(runtime.logger, `${what} accepted a connection without verifying the caller`);
    try {
      const peer = verifyTlsPeer(socket, { ...runtime.policy, accepts: () => true });
      setPeer(socket, peer);
      return peer;
    } catch {
      return undefined;
    }
  }
  try {
    const { peer, notAfter, certificate } = verifyTlsPeerWithValidity(socket, runtime.policy);
    setPeer(socket, peer);
    callerCertificate.set(socket, certificate);
    peerNotAfter.set(socket, notAfter.getTime());
    return peer;
  } catch (error) {
    const from = socket.remoteAddress ?? "?";
    const code = (error as { code?: string }).code ?? "other";
    const unlogged = runtime.refusalLog.admit(refusalKey("refused", code, from));
    if (unlogged !== undefined) {
      const message = `${what} refused a connection from ${from}: ${describeError(error)}${unlogged > 0 ? ` (${unlogged} more like it not logged)` : ""}`;
      // The certificate passed TLS verification (chain and validity): its SPIFFE ID is the CA's word, not the caller's.
      const details = (error as { details?: { spiffeId?: unknown; peer?: unknown } }).details;
      const spiffeId = details?.spiffeId ?? details?.peer;
      logRefusal(runtime, { event: "refused", peer: peerAddress(from, socket.remotePort), reason: classifyTlsError(error, socket), code, ...(typeof spiffeId === "string" ? { spiffeId } : {}), ...(unlogged > 0 ? { suppressed: unlogged } : {}) }, message);
    }
    socket.destroy();
    return undefined;
  }
}

/** `address:port` (`[v6]:port`) for a log field; the address alone when the port is unknown. */
function peerAddress(address: string, port: number | undefined): string {
  if (port === undefined) return address;
  return address.includes(":") ? `[${address}]:${port}` : `${address}:${port}`;
}

/** A refusal any peer can cause: with fields through `fieldLogger` when there is one, else as text through `logger`. */
export function logRefusal(runtime: ServerRuntime, fields: Record<string, unknown>, message: string): void {
  if (runtime.fieldLogger !== undefined) runtime.fieldLogger.warn(fields, message);
  else runtime.logger.warn(message);
}

/** How often the refusal limiter's ended windows are swept (and their left-out lines summed up in one line). */
export const REFUSAL_SWEEP_MS = 10_000;

type RefusalKind = "handshake" | "refused" | "grpc-call";
const REFUSAL_KINDS: Readonly<Record<RefusalKind, string>> = {
  handshake: "failed TLS handshakes",
  refused: "refused connections",
  "grpc-call": "refused calls",
};

/** The refusal limiter's key: kind, reason code and the peer's address (no port: one caller's reconnections share one budget). */
export function refusalKey(kind: RefusalKind, code: string, from: string): string {
  return `${kind}|${code}|${from}`;
}

/**
 * Sweeps the refusal limiter every REFUSAL_SWEEP_MS: each key whose window ended with lines left out
 * gets one summary line (`…: N more like it not logged`), so a flood is counted in the log even
 * when no line of its kind follows it. Returns the function that stops it.
 */
export function sweepRefusals(runtime: ServerRuntime, what: string): () => void {
  const timer = setInterval(() => {
    runtime.refusalLog.sweep((key, suppressed) => {
      const [kind, code, ...address] = key.split("|");
      const about = kind !== undefined && kind in REFUSAL_KINDS && code !== undefined ? `${REFUSAL_KINDS[kind as RefusalKind]} from ${address.join("|") || "?"} (${code})` : "refusals from further addresses";
      const message = `${what}: ${about}: ${suppressed} more like it not logged`;
      if (runtime.fieldLogger !== undefined) runtime.fieldLogger.warn({ event: "log-suppressed", about: `${kind ?? "?"} ${code ?? "?"} from ${address.join("|") || "?"}`, suppressed }, message);
      else runtime.logger.warn(message);
    });
  }, REFUSAL_SWEEP_MS);
  timer.unref();
  return () => clearInterval(timer);
}

/**
 * Why a TLS handshake failed, for one log line: the client certificate's verification error when
 * there was one (Node then reports a bare ECONNRESET and keeps the reason on
 * `socket.authorizationError`), else the error's code and OpenSSL's reason text without its thread
 * id and source path. Only codes and OpenSSL's fixed texts: never bytes the peer sent.
 */
export function handshakeFailureOf(error: Error & { code?: string }, socket: TLSSocket | undefined): { readonly code: string; readonly detail: string } {
  const verifyError = (socket as { authorizationError?: unknown } | undefined)?.authorizationError;
  if (typeof verifyError === "string" && verifyError !== "") return { code: verifyError, detail: "(the client's certificate failed verification against the trust bundle)" };
  if (verifyError instanceof Error) return { code: (verifyError as { code?: string }).code ?? "E_PEER_UNTRUSTED", detail: "(the client's certificate failed verification against the trust bundle)" };
  // OpenSSL: "<thread>:error:<lib code>:SSL routines:<function>:<reason>:<file>:<line>:"
  const openssl = /:error:[0-9A-Fa-f]+:[^:]*:[^:]*:([^:]+):/.exec(error.message)?.[1];
  const detail = (openssl ?? error.message).replace(/[^\x20-\x7e]+/g, " ").trim().slice(0, 200);
  return { code: error.code ?? "other", detail };
}

/**
 * Logs each failed TLS handshake on `server` through the refusal limiter (anyone who can reach the
 * port can fail handshakes at will: 5 lines per reason and address every 10 s, the rest counted
 * into the key's next line or its summary) and destroys the socket. The raw connection's address is
 * noted as it arrives: a handshake that fails on the client's certificate leaves none on the TLS socket.
 */
export function logHandshakeFailures(server: TlsServer, runtime: ServerRuntime, what: string): void {
  const addresses = new WeakMap<object, { address: string; port: number | undefined }>();
  server.on("connection", (raw: Socket) => {
    if (raw.remoteAddress !== undefined) addresses.set(raw, { address: raw.remoteAddress, port: raw.remotePort });
  });
  server.on("tlsClientError", (error: Error & { code?: string }, socket: TLSSocket | undefined) => {
    // Logged once, as handshake_too_large (capServerHandshakes): its reset is no failed handshake.
    if (socket !== undefined && refusedByHandshakeCap(socket)) return;
    const parent = (socket === undefined ? undefined : rawSocketOf(socket)) ?? (socket as { _parent?: object } | undefined)?._parent;
    const noted = parent !== undefined ? addresses.get(parent) : undefined;
    const from = socket?.remoteAddress ?? noted?.address ?? "?";
    const port = socket?.remoteAddress !== undefined ? socket.remotePort : noted?.port;
    const { code, detail } = handshakeFailureOf(error, socket);
    const unlogged = runtime.refusalLog.admit(refusalKey("handshake", code, from));
    if (unlogged !== undefined) {
      const message = `${what}: TLS handshake from ${from} failed: ${code} ${detail}${unlogged > 0 ? ` (${unlogged} more like it not logged)` : ""}`;
      // No SPIFFE ID: a certificate that failed verification says nothing trustworthy about who sent it.
      logRefusal(runtime, { event: "tls-handshake-failed", peer: peerAddress(from, port), reason: classifyTlsError(error, socket), code }, message);
    }
    // A plain tls.Server leaves the socket open after a failed handshake, a timed-out one
    // included (the https and http2 servers add a listener that destroys it): one byte 0x16 then
    // held a connection, and its slot under the listener's cap, for good. Destroyed once every
    // listener of this event has read what it needs from it.
    process.nextTick(() => socket?.destroy());
  });
}

/**
 * Tracks verified connections so a bundle update (new revocations) and the age cap reach
 * connections that are already open. `onAged` closes one gracefully (GOAWAY, Connection: close…).
 */
export class ConnectionRegistry {
  readonly #open = new Map<TLSSocket, ClockTimer | undefined>();
  readonly #off: () => void;
  #rootsEpoch: number;

  constructor(
    private readonly runtime: ServerRuntime,
    private readonly onAged: (socket: TLSSocket) => void,
  ) {
    this.#rootsEpoch = runtime.holder.rootsEpoch();
    this.#off = runtime.holder.onUpdate(() => this.#onUpdate());
  }

  #onUpdate(): void {
    const epoch = this.runtime.holder.rootsEpoch();
    if (epoch !== this.#rootsEpoch) {
      this.#rootsEpoch = epoch;
      // A root left the bundle: a caller's chain may rest on it, and a verified connection is never
      // verified again. Each open connection whose caller's chain verifies under no root still
      // held ends as at the age cap (gracefully); that caller comes back with a full handshake
      // against the current roots. Callers under a root that stayed keep their connections.
      for (const socket of [...this.#open.keys()]) {
        if (this.runtime.insecure || !this.runtime.holder.chainTrusted(callerChain(socket))) this.onAged(socket);
      }
    }
    this.recheckAll();
  }

  /**
   * Tracks a verified connection until it closes. It is retired (`onAged`: GOAWAY, Connection:
   * close after the request in flight, end) at the age cap or when the certificate its caller was
   * verified with expires, whichever comes first: TLS verifies validity at the handshake only, so
   * without this a connection would go on serving a caller whose certificate has expired (for
   * ever with the age cap off).
   */
  add(socket: TLSSocket): void {
    const ageMs = this.runtime.maxConnectionAgeMs > 0 ? this.runtime.maxConnectionAgeMs : Number.POSITIVE_INFINITY;
    const notAfter = peerNotAfter.get(socket);
    const retireInMs = Math.min(ageMs, notAfter === undefined ? Number.POSITIVE_INFINITY : notAfter - Date.now());
    // systemClock's timers may wait past setTimeout's ~24.8-day limit (a longer delay would fire at once).
    const timer = Number.isFinite(retireInMs) ? systemClock.setTimeout(() => this.onAged(socket), retireInMs) : undefined;
    this.#open.set(socket, timer);
    socket.once("close", () => {
      const t = this.#open.get(socket);
      if (t !== undefined) systemClock.clearTimeout(t);
      this.#open.delete(socket);
    });
  }

  get size(): number {
    return this.#open.size;
  }

  /**
   * Closes open connections whose peer is now revoked (its certificate, or its issuer's: a
   * retired issuer's root CRL reaching the bundle) or no longer authorized. (Expiry needs no
   * recheck: `add` retires each connection when its caller's certificate expires.)
   */
  recheckAll(): void {
    if (this.runtime.insecure) return;
    for (const socket of this.#open.keys()) {
      const peer = peerOf(socket);
      if (peer === undefined) continue;
      try {
        // The identity verified at the handshake, with its chain's serials (a later
        // getPeerX509Certificate() would show the leaf alone): nothing is parsed again.
        const revoked = revocationOf(this.runtime.policy, peer);
        if (revoked !== undefined) throw revoked;
        if (!this.runtime.policy.accepts(peer.spiffeId)) throw new MeshwardError("E_SPIFFE_MISMATCH", `the caller ${peer.spiffeId} is not allowed (allowed: ${this.runtime.policy.expected})`);
      } catch (error) {
        this.runtime.logger.warn(`closing an open connection from ${peer.spiffeId}: ${describeError(error)}`);
        socket.destroy();
      }
    }
  }

  close(): void {
    this.#off();
    for (const timer of this.#open.values()) if (timer !== undefined) systemClock.clearTimeout(timer);
  }
}
