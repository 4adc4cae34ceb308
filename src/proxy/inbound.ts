import { connect as http2Connect, constants as h2constants, createServer as createH2Server } from "node:http2";
import type { ClientHttp2Session, IncomingHttpHeaders as H2Headers, ServerHttp2Session, ServerHttp2Stream } from "node:http2";
import { connect as netConnect, createServer as createNetServer } from "node:net";
import type { AddressInfo, Socket } from "node:net";
import { createServer as createTlsServer } from "node:tls";
import type { TLSSocket } from "node:tls";
import type { Logger } from "pino";
import type { Counter } from "prom-client";
import type { SidecarLimits } from "../config/sidecar.ts";
import { describeError } from "../errors.ts";
import type { IdentitySource } from "../identity/source.ts";
import { TCP_REQUEST, type Caller } from "../policy/index.ts";
import type { IdentityHealth } from "../tls/context.ts";
import { verifyTlsPeer } from "../tls/verify.ts";
import { loadOnce } from "../tls/policy.ts";
import type { PeerIdentity } from "../tls/verify.ts";
import type { MeshMetrics } from "../telemetry/metrics.ts";
import { endTunnel, peerOf, prepareServer } from "../transport/common.ts";
import { secureServer } from "../transport/tls.ts";
import type { HostPort } from "../util/address.ts";
import { systemClock } from "../util/clock.ts";
import { listenOn } from "../util/listen.ts";
import { LimitedWarnings } from "../telemetry/log-limiter.ts";
import { canonicalH2Request, h2HeaderLimits, h2RequestHeadBytes, isGrpcRequest, isRefusal } from "./canonical.ts";
import type { EscapedSlashAction, UnderscoreAction } from "./canonical.ts";
import { closeWhenIdle, ConnectionTracker } from "./connections.ts";
import { eventNow } from "./event-clock.ts";
import { methodOverrideInspector } from "./method-override-body.ts";
import type { BodyInspector } from "./method-override-body.ts";
import { AddressCaps, capConnections } from "./listener-cap.ts";
import { AppShare } from "./app-share.ts";
import { sourceAddress } from "../util/connection-gate.ts";
import type { ListenerMetrics } from "./listener-cap.ts";
import { forwardH2, forwardUpgrade, unreachableAnswer } from "./forward.ts";
import type { ForwardHooks } from "./forward.ts";
import { callerStamp, stampIdentityOf } from "./headers.ts";
import type { CallerStamp, StampIdentity } from "./headers.ts";
import type { PolicySource } from "./policy-source.ts";
import { forwardH2ToHttp1 } from "./http1/h2-bridge.ts";
import { H2Intake } from "./h2-intake.ts";
import { h2StreamWindow, HeldBudget, perAddressShare, SIDECAR_BUSY } from "./held-budget.ts";
import type { HeldAccount } from "./held-budget.ts";
import { H2Deadlines } from "./h2-deadline.ts";
import { Http1Pool, POOL_TIMEOUT } from "./http1/pool.ts";
import { Http1Relay } from "./http1/relay.ts";
import type { ClientErrorReason } from "./http1/relay.ts";
import { checkHttp1Parser } from "./http1/llhttp.ts";
import { answerH2, answerRawHttp1, answerText, GrpcStatus, observeDuration, resetAfterAnswer, statusClass } from "./respond.ts";
import type { ProxyAnswer } from "./respond.ts";
import { sniffFirstBytes } from "./sniff.ts";
import { capHandshakeBytes, HANDSHAKE_TOO_LARGE, refusedByHandshakeCap } from "../tls/handshake-cap.ts";
import { joinTunnel } from "./tunnel.ts";
import { isUpstreamTimeout, upstreamTimeoutAnswer } from "./stream-idle.ts";
import type { RevokeStream, StreamIdleRule } from "./stream-idle.ts";

export interface ProxyTelemetry {
  readonly logger: Logger;
  readonly mesh: MeshMetrics;
  /** meshward_sidecar_refused_total{direction,reason}: connections/requests the sidecar refused itself. */
  readonly refused: Counter<"direction" | "reason">;
  /** meshward_sidecar_dropped_fields_total{direction}: fields removed before forwarding (headersWithUnderscores: drop). */
  readonly droppedFields?: Counter<"direction">;
  /** meshward_sidecar_upstream_errors_total{direction,reason}. */
  readonly upstreamErrors: Counter<"direction" | "reason">;
  /** Told of each refusal as it happens (the status page's recent refusals and charts). */
  readonly refusals?: RefusalListener;
  /** Open connections, cap and overflow of each listener (limits.maxConnections). */
  readonly listeners?: ListenerMetrics;
}

/** What the inbound side refused, with the remote address and the caller when known. */
export interface RefusalListener {
  handshakeFailed(event: { reason: string; remote: string; spiffeId?: string }): void;
  denied(event: { rule: string; remote: string; spiffeId?: string }): void;
  refused(event: { reason: string; remote: string }): void;
}

const remoteOf = (socket: Socket): string => (socket.remoteFamily === "IPv6" ? `[${socket.remoteAddress}]:${socket.remotePort}` : `${socket.remoteAddress}:${socket.remotePort}`);

export interface InboundOptions {
  readonly listen: HostPort;
  readonly app: HostPort;
  readonly protocol: "http" | "tcp";
  readonly mode: "strict" | "permissive";
  readonly escapedSlashes: EscapedSlashAction;
  /** Field names holding '_' (Envoy's headers_with_underscores_action); default reject. */
  readonly headersWithUnderscores?: UnderscoreAction;
  readonly limits: SidecarLimits;
  readonly identity: IdentitySource;
  readonly policy: PolicySource;
  readonly telemetry: ProxyTelemetry;
}

export interface Inbound {
  readonly address: HostPort;
  health(): IdentityHealth;
  /** Stops accepting, lets in-flight requests finish (up to `deadlineMs`), then closes. */
  drain(deadlineMs: number): Promise<void>;
  close(): Promise<void>;
}

const kPlaintext = Symbol("meshward.plaintext");
const kSourceAddress = Symbol("meshward.sourceAddress");

/** The caller's address as the per-address caps count it (sourceAddress), worked out once per connection, not per request. */
function sourceOf(socket: Socket): string {
  const held = socket as Socket & { [kSourceAddress]?: string };
  return (held[kSourceAddress] ??= sourceAddress(socket.remoteAddress));
}

/**
 * What the policy allowed a tunnel or a forwarded stream on: its caller, and the canonical path
 * and method of its request (empty for a TCP-mode tunnel; the verb is empty for gRPC).
 */
interface AllowedRequest {
  readonly peer: PeerIdentity | undefined;
  readonly operation: string;
  readonly verb: string;
  readonly rpcOverHttp?: boolean;
}

/** A forwarded HTTP/2 stream until its exchange is over; `revoke` is set once it is forwarded. */
interface OpenStream extends AllowedRequest {
  readonly socket: Socket;
  revoke: RevokeStream | undefined;
}

function callerOf(peer: PeerIdentity | undefined): Caller | undefined {
  if (peer === undefined || peer.namespace === undefined || peer.appId === undefined) return undefined;
  return { trustDomain: peer.trustDomain, namespace: peer.namespace, appId: peer.appId };
}

/** Largest response header block accepted from an upstream (Node's client default is 16 KiB). */
export const RESPONSE_HEADER_BYTES = 64 * 1024;
/** Idle keep-alive connections (and the HTTP/2 session) to the app close after this, below Node's default server keep-alive (5 s). */
const APP_IDLE_MS = 4_000;

/** The relay settings both sides take from the limits and the path rules. */
export function relaySettings(
  limits: SidecarLimits,
  escapedSlashes: EscapedSlashAction,
  headersWithUnderscores: UnderscoreAction = "reject",
): { maxHeaderBytes: number; headersTimeout: number; idleTimeout: number; escapedSlashes: EscapedSlashAction; headersWithUnderscores: UnderscoreAction } {
  return { maxHeaderBytes: limits.maxHeaderBytes, headersTimeout: limits.headersTimeout, idleTimeout: limits.idleTimeout, escapedSlashes, headersWithUnderscores };
}

/**
 * What a side does with the fields it removed (headersWithUnderscores: drop): counted in
 * meshward_sidecar_dropped_fields_total and logged, rate-limited per caller address like the other warnings a caller can cause.
 */
export function droppedFieldsReporter(telemetry: ProxyTelemetry, warnings: LimitedWarnings, direction: "inbound" | "outbound"): (names: readonly string[], socket: Socket | undefined) => void {
  return (names, socket) => {
    telemetry.droppedFields?.inc({ direction }, names.length);
    warnings.warn(`dropped-fields|${direction}|${socket?.remoteAddress}`, { event: "dropped-fields", direction, remote: socket?.remoteAddress, fields: names.slice(0, 8).map((name) => name.slice(0, 64)) }, "removed request fields whose name holds '_' (headersWithUnderscores: drop)");
  };
}

/**
 * An HTTP/2 request whose header block is over limits.maxHeaderBytes (h2RequestHeadBytes), refused
 * before the policy and the app: 431 as over HTTP/1.1, or for gRPC RESOURCE_EXHAUSTED (what gRPC
 * servers answer metadata over their limit with).
 */
export const H2_HEADER_TOO_LARGE: ProxyAnswer = { status: 431, grpcStatus: GrpcStatus.RESOURCE_EXHAUSTED, code: "E_HEADER_TOO_LARGE", message: "Request Header Fields Too Large: the request's header block is larger than maxHeaderBytes" };

/** An HTTP/2 request refused before the policy could judge it (not canonical, CONNECT). */
export function h2Refusal(status: 400 | 405, message: string): ProxyAnswer {
  return { status, grpcStatus: GrpcStatus.INTERNAL, code: status === 405 ? "E_CONNECT_UNSUPPORTED" : "E_AMBIGUOUS_REQUEST", message };
}

const STRICT_REFUSAL: ProxyAnswer = {
  status: 400,
  grpcStatus: GrpcStatus.UNAUTHENTICATED,
  code: "E_MTLS_REQUIRED",
  message: "this port accepts mutual TLS only (meshward sidecar in STRICT mode); call it through your own meshward sidecar or with a workload certificate",
};

/** An allowed request, and whether its body must be read for `_method` (the policy's answer depends on the method). */
interface Allowed {
  readonly verbSensitive: boolean;
}
const ALLOWED: Allowed = Object.freeze({ verbSensitive: false });
const ALLOWED_VERB_SENSITIVE: Allowed = Object.freeze({ verbSensitive: true });
const NOT_READ: { inspector?: BodyInspector } = Object.freeze({});

/**
 * The sidecar's inbound side: one TCP listener whose first byte decides what follows — a TLS
 * handshake (mutual TLS, caller's SPIFFE ID verified, hot-swapped certificate), or plaintext
 * (refused with an explanation in STRICT mode, accepted and counted in PERMISSIVE mode).
 * HTTP mode forwards HTTP/1.1, HTTP/2 and gRPC to the app after a per-request policy decision;
 * TCP mode decides once per connection and pipes bytes.
 */
export async function startInbound(options: InboundOptions): Promise<Inbound> {
  const { telemetry, limits, policy } = options;
  const { logger, mesh } = telemetry;
  if (options.protocol === "http") checkHttp1Parser(logger);
  const runtime = await prepareServer({ identity: options.identity, logger, fieldLogger: logger, maxConnectionAgeMs: limits.maxConnectionAge }, "sidecar inbound");
  const ownId = () => runtime.holder.ownSpiffeId();
  let own: StampIdentity | undefined;
  /** What the app is told about a verified caller (XFCC, Dapr's caller headers): built once per connection. */
  const stamps = new WeakMap<PeerIdentity, CallerStamp>();
  const stampFor = (peer: PeerIdentity): CallerStamp => {
    const ownSpiffeId = ownId();
    const known = stamps.get(peer);
    if (known !== undefined && known.ownId === ownSpiffeId) return known;
    if (own?.spiffeId !== ownSpiffeId) own = stampIdentityOf(ownSpiffeId);
    const stamp = callerStamp(own, peer);
    stamps.set(peer, stamp);
    return stamp;
  };
  const activeConnections = mesh.connectionsActive.labels({ direction: "inbound" }); // bound once: a labelled inc hashes the labels each call
  const tracker = new ConnectionTracker((delta) => activeConnections.inc(delta));
  /** Every accepted TCP connection, until it closes. */
  const pending = new Set<Socket>();
  const appLabel = `${options.app.host}:${options.app.port}`;

  /** Warnings a caller can cause at will (denials, refusals), rate-limited per caller and reason. */
  const warnings = new LimitedWarnings(logger);
  const reportDropped = droppedFieldsReporter(telemetry, warnings, "inbound");

  // --- upstream: the app on loopback ---------------------------------------------------
  let appH2: ClientHttp2Session | undefined;
  const appSession = (): ClientHttp2Session => {
    if (appH2 !== undefined && !appH2.closed && !appH2.destroyed) return appH2;
    const session = http2Connect(`http://${appLabel}`);
    session.on("error", () => undefined);
    const forget = () => {
      if (appH2 === session) appH2 = undefined;
    };
    session.once("close", forget);
    session.once("goaway", forget);
    session.once("error", forget);
    // Let go like an idle HTTP/1 connection to the app: a gRPC server that closes idle
    // connections itself (max-connection-idle) would refuse a stream started as its GOAWAY comes.
    closeWhenIdle(session, APP_IDLE_MS, forget);
    appH2 = session;
    return session;
  };
  const appError = (error: Error): ProxyAnswer => {
    if ((error as { code?: unknown }).code === POOL_TIMEOUT) {
      // Every connection the app may have (limits.maxConnections) stayed busy for limits.idleTimeout.
      telemetry.upstreamErrors.inc({ direction: "inbound", reason: "app_busy" });
      warnings.warn("app-busy", { event: "app-busy", app: appLabel, err: error.message }, "a request waited too long for a connection to the app");
      return { status: 503, grpcStatus: GrpcStatus.UNAVAILABLE, code: "E_APP_BUSY", message: `the app at ${appLabel} is busy: ${error.message}` };
    }
    if (isUpstreamTimeout(error)) {
      // A request the app had whole and sent no response to for limits.idleTimeout: 504.
      telemetry.upstreamErrors.inc({ direction: "inbound", reason: "app_timeout" });
      warnings.warn("app-timeout", { event: "app-timeout", app: appLabel, err: error.message }, "the app sent no response in time");
      return upstreamTimeoutAnswer(`the app at ${appLabel}`, error);
    }
    telemetry.upstreamErrors.inc({ direction: "inbound", reason: "app_unreachable" });
    // One line per request while the app is down (a crash loop, a slow start) would be one per caller's retry: rate-limited, as app-busy.
    warnings.warn("app-unreachable", { event: "app-unreachable", app: appLabel, err: describeError(error) }, "the app could not be reached");
    return unreachableAnswer(`the app at ${appLabel} is not reachable`, error, 503);
  };

  // --- policy --------------------------------------------------------------------------
  /**
   * The policy's refusal, or whether an allowed request's body must be read (constants: this runs
   * per request). A gRPC-Web or Connect call (`rpcOverHttp`) is a gRPC method call to servers that
   * speak those protocols and plain HTTP to others: it must pass the gRPC rules and the HTTP rules.
   */
  const judge = (peer: PeerIdentity | undefined, socket: Socket, operation: string, verb: string, rpcOverHttp = false): { refusal: ProxyAnswer } | Allowed => {
    if (rpcOverHttp) {
      const asGrpc = judge(peer, socket, operation, "");
      if ("refusal" in asGrpc) return asGrpc;
    }
    const decision = policy.current().decide({ caller: callerOf(peer), operation, verb });
    if (decision.allowed) return decision.verbSensitive === true ? ALLOWED_VERB_SENSITIVE : ALLOWED;
    const caller = peer?.spiffeId ?? "unverified";
    mesh.policyDenials.inc({ caller, rule: decision.rule });
    telemetry.refusals?.denied({ rule: decision.rule, remote: remoteOf(socket), ...(peer ? { spiffeId: peer.spiffeId } : {}) });
    warnings.warn(`policy-denied|${caller}|${decision.rule}`, { event: "policy-denied", caller, rule: decision.rule, operation, verb, reason: decision.reason }, "request denied by the access policy");
    return { refusal: { status: 403, grpcStatus: GrpcStatus.PERMISSION_DENIED, code: "E_POLICY_DENIED", message: decision.reason, extra: { rule: decision.rule, caller } } };
  };
  const denied = (peer: PeerIdentity | undefined, socket: Socket, operation: string, verb: string, rpcOverHttp = false): ProxyAnswer | undefined => {
    const judged = judge(peer, socket, operation, verb, rpcOverHttp);
    return "refusal" in judged ? judged.refusal : undefined;
  };
  /**
   * Open tunnels — TCP-mode connections and upgraded HTTP/1.1 connections (WebSocket) — with the
   * request the policy allowed them on. The policy decides once per tunnel; a reload that denies
   * it ends the open tunnel too (as a new one is refused), rather than leaving it open until the
   * age cap.
   */
  const tunnels = new Map<Socket, AllowedRequest>();
  const holdTunnel = (socket: Socket, opened: AllowedRequest) => {
    if (socket.destroyed) return;
    tunnels.set(socket, opened);
    socket.once("close", () => tunnels.delete(socket));
  };
  /**
   * HTTP/2 streams forwarded to the app, until their exchange is over, with the request each was
   * allowed on: judged again on reload like tunnels. (Forwarded HTTP/1 exchanges are the relay's:
   * http1.revalidate.)
   */
  const streams = new Set<OpenStream>();
  /** Holds `open` until the exchange is over: the returned `done` lets go of it, then calls `done`. */
  const holdStream = (open: OpenStream, done: (status: number) => void): ((status: number) => void) => {
    streams.add(open);
    return (status) => {
      streams.delete(open);
      done(status);
    };
  };
  /** The current policy's refusal of a request it allowed before (logged and counted as a denial and a refusal). */
  const revoked = (peer: PeerIdentity | undefined, socket: Socket, operation: string, verb: string, rpcOverHttp = false): ProxyAnswer | undefined => {
    const refusal = denied(peer, socket, operation, verb, rpcOverHttp);
    if (refusal !== undefined) telemetry.refused.inc({ direction: "inbound", reason: "policy" });
    return refusal;
  };
  /**
   * Where the policy's answer for this operation depends on the method, a POST body that makes
   * the app run another method (`_method`) must not get past it: such bodies are read on the way.
   */
  const bodyCheck = (verbSensitive: boolean, method: string, rawHeaders: readonly string[], socket: Socket): { refusal: ProxyAnswer } | { inspector?: BodyInspector } => {
    const made = verbSensitive ? methodOverrideInspector(method, rawHeaders) : undefined;
    if (made === undefined) return NOT_READ;
    if ("refused" in made) return { refusal: bodyRefusal(made.refused, socket) };
    return { inspector: made };
  };
  const bodyRefusal = (problem: string, socket: Socket): ProxyAnswer => {
    clientError("ambiguous_request", `the request is refused: ${problem}`, socket);
    return { status: 400, grpcStatus: 13, code: "E_AMBIGUOUS_REQUEST", message: `the request is refused: ${problem}` };
  };
  /** Counts the request in flight on its connection (drain waits for it) and times it; call once it is answered. */
  const begin = (socket: Socket, protocol: string): ((status: number) => void) => {
    const end = tracker.begin(socket);
    const started = eventNow();
    return (status) => {
      end();
      observeDuration(mesh.requestDuration, "inbound", protocol, statusClass(status), started);
    };
  };
  const hooksFor = (peer: PeerIdentity | undefined, socket: Socket, protocol: string): ForwardHooks => ({
    setHeaders: peer === undefined ? {} : stampFor(peer).fields,
    onUpstreamError: appError,
    done: begin(socket, protocol),
  });
  const peerFor = (socket: Socket): PeerIdentity | undefined => ((socket as { [kPlaintext]?: boolean })[kPlaintext] ? undefined : peerOf(socket));

  // --- HTTP/1.1 -------------------------------------------------------------------------
  const appPool = new Http1Pool({
    dial: () => netConnect({ host: options.app.host, port: options.app.port, noDelay: true }),
    authority: appLabel,
    maxHeaderBytes: RESPONSE_HEADER_BYTES,
    idleMs: APP_IDLE_MS,
    maxIdle: 256,
    // Every HTTP/1 request and non-gRPC HTTP/2 stream takes a connection to the app: bounded like a listener.
    maxConnections: limits.maxConnections,
    // A request waits for one of those at most as long as an exchange may stay idle: then 503 E_APP_BUSY.
    maxWaitMs: limits.idleTimeout,
  });
  // One caller address holds at most limits.maxConnectionsPerAddress of those at once.
  const appShare = new AppShare(limits.maxConnectionsPerAddress, limits.idleTimeout);
  const clientError = (reason: ClientErrorReason, detail: string, socket: Socket) => {
    telemetry.refused.inc({ direction: "inbound", reason });
    warnings.warn(`client-error|${reason}|${socket.remoteAddress}`, { event: "client-error", reason, remote: socket.remoteAddress, err: detail }, "refused a malformed, ambiguous or slow request");
  };
  // Request bytes held for callers, all connections together (limits.maxHeldRequestBytes): HTTP/2
  // header blocks and held bodies, HTTP/1 bodies held before they have a connection to the app.
  const heldBudget = new HeldBudget(limits.maxHeldRequestBytes, perAddressShare(limits.maxHeldRequestBytes, limits.maxConnections, limits.maxConnectionsPerAddress));
  const overBudget = (socket: Socket) => clientError("max_held_request_bytes", `the listener holds limits.maxHeldRequestBytes (${heldBudget.max}) of unfinished requests, or this address its share (${heldBudget.perAddress})`, socket);
  const http1 = new Http1Relay({
    ...relaySettings(limits, options.escapedSlashes, options.headersWithUnderscores),
    droppedFields: reportDropped,
    heldAccount: (socket) => heldBudget.account(sourceOf(socket)),
    decide: (request, socket) => {
      const peer = peerFor(socket);
      const judged = judge(peer, socket, request.target.path, request.method, request.rpcOverHttp);
      if ("refusal" in judged) return { answer: judged.refusal, done: tracker.begin(socket) };
      const body = bodyCheck(judged.verbSensitive, request.method, request.head.rawHeaders, socket);
      if ("refusal" in body) return { answer: body.refusal, done: tracker.begin(socket) };
      const finished = begin(socket, "http");
      const release = appShare.hold(sourceOf(socket));
      return {
        upstream: appPool,
        addHeaders: peer === undefined ? "" : stampFor(peer).lines,
        onUpstreamError: appError,
        done: (status: number) => {
          release();
          finished(status);
        },
        ...(body.inspector === undefined ? {} : { bodyInspector: body.inspector }),
      };
    },
    upgrade: (request, socket, rest) => {
      const peer = peerFor(socket);
      const refusal = denied(peer, socket, request.target.path, request.method, request.rpcOverHttp);
      if (refusal !== undefined) return void answerRawHttp1(socket, refusal, limits.idleTimeout);
      // Registered before the app answers: a reload while the 101 is on its way judges it too.
      holdTunnel(socket, { peer, operation: request.target.path, verb: request.method, rpcOverHttp: request.rpcOverHttp });
      const app = netConnect({ host: options.app.host, port: options.app.port, noDelay: true });
      forwardUpgrade({ method: request.method, target: request.target.target, rawHeaders: request.head.rawHeaders }, socket, rest, app, {
        ...hooksFor(peer, socket, "http"),
        idleMs: limits.idleTimeout,
        upgradeIdleMs: limits.upgradeIdleTimeout,
        upgradeIdle: (idleMs) =>
          logger.info(
            { event: "upgrade-idle", direction: "inbound", remote: socket.remoteAddress, caller: peer?.spiffeId ?? "unverified", path: request.target.path, idleMs },
            "closed an upgraded connection (WebSocket) with no byte either way for limits.upgradeIdleTimeout",
          ),
      });
    },
    clientError,
    closeAfterResponse: (socket) => tracker.draining || tracker.retiring(socket),
  });

  // --- HTTP/2 and gRPC -----------------------------------------------------------------
  // Streams are bounded per connection: each non-gRPC one takes a connection to the app. A
  // session's memory stays at Node's default bound (10 MB; past it new streams are refused),
  // as on the outbound. node:http2's own header-block limits sit above maxHeaderBytes (h2HeaderLimits),
  // so that a block over it gets meshward's 431, not node:http2's reset.
  // Each stream's flow-control window (h2StreamWindow) is sized so that a connection's streams,
  // each backed up by a slow app, fit the caller address's share of limits.maxHeldRequestBytes.
  const headerLimits = h2HeaderLimits(limits.maxHeaderBytes);
  const h2 = createH2Server({
    maxHeaderListPairs: headerLimits.maxHeaderListPairs,
    settings: { maxHeaderListSize: headerLimits.maxHeaderListSize, maxConcurrentStreams: limits.maxConcurrentStreams, initialWindowSize: h2StreamWindow(heldBudget.perAddress, limits.maxConcurrentStreams) },
  });
  let handing: Socket | undefined;
  const sessionSocket = new WeakMap<ServerHttp2Session, Socket>();
  // headersTimeout for HTTP/2 (a header block that never completes) and idleTimeout counted in open streams.
  const h2Deadlines = new H2Deadlines({ headersTimeout: limits.headersTimeout, idleTimeout: limits.idleTimeout, headerTimedOut: (socket, detail) => clientError("header_timeout", detail, socket) });
  h2.on("session", (session: ServerHttp2Session) => {
    const socket = handing;
    handing = undefined;
    if (socket === undefined) return;
    sessionSocket.set(session, socket);
    tracker.attachSession(socket, session);
    h2Deadlines.watch(session, socket);
    closeWhenIdle(session, limits.idleTimeout);
    session.on("error", () => undefined);
  });
  h2.on("stream", (stream: ServerHttp2Stream, headers: H2Headers, flags: number, rawHeaders: string[]) => {
    const socket = sessionSocket.get(stream.session as ServerHttp2Session);
    if (socket === undefined) return void stream.close();
    stream.on("error", () => undefined);
    const headBytes = h2RequestHeadBytes(rawHeaders);
    if (headBytes > limits.maxHeaderBytes) {
      clientError("header_too_large", "the request's HTTP/2 header block is larger than maxHeaderBytes", socket);
      answerH2(stream, H2_HEADER_TOO_LARGE, isGrpcRequest(String(headers[":method"]), headers["content-type"]));
      return;
    }
    // The header block is held as long as the stream is open, and its body while it waits: both
    // count against limits.maxHeldRequestBytes, given back when the stream closes.
    const account: HeldAccount = heldBudget.account(sourceOf(socket));
    // on, not once: 'close' comes once, and once() wraps the listener in two objects per stream.
    stream.on("close", () => account.close());
    if (!account.take(headBytes)) {
      overBudget(socket);
      answerH2(stream, SIDECAR_BUSY, isGrpcRequest(String(headers[":method"]), headers["content-type"]));
      resetAfterAnswer(stream);
      return;
    }
    const peer = peerFor(socket);
    const request = canonicalH2Request(headers, options.escapedSlashes, options.headersWithUnderscores);
    if (isRefusal(request)) {
      clientError(request.status === 405 ? "connect" : "ambiguous_request", request.refused, socket);
      answerH2(stream, h2Refusal(request.status, request.refused), false);
      return;
    }
    if (request.dropped.length > 0) reportDropped(request.dropped, socket);
    const { grpc } = request;
    const operation = request.target.path;
    const verb = grpc ? "" : request.method;
    const judged = judge(peer, socket, operation, verb, request.rpcOverHttp);
    if ("refusal" in judged) {
      answerH2(stream, judged.refusal, grpc);
      return;
    }
    const hooks = hooksFor(peer, socket, grpc ? "grpc" : "http");
    const endStream = (flags & h2constants.NGHTTP2_FLAG_END_STREAM) !== 0;
    const idle: StreamIdleRule = { ms: limits.idleTimeout, bodyTimedOut: (detail) => clientError("body_timeout", detail, socket) };
    const body = grpc ? NOT_READ : bodyCheck(judged.verbSensitive, request.method, request.rawHeaders, socket);
    if ("refusal" in body) {
      answerH2(stream, body.refusal, false);
      hooks.done(400);
      return;
    }
    const open: OpenStream = { peer, socket, operation, verb, rpcOverHttp: request.rpcOverHttp, revoke: undefined };
    const done = holdStream(open, hooks.done);
    if (!endStream) {
      // Its body is read through one H2Intake (made here, before the forward takes it), whose held bytes count too.
      H2Intake.of(stream, {
        account,
        over: () => {
          overBudget(socket);
          if (open.revoke !== undefined) return open.revoke(SIDECAR_BUSY);
          answerH2(stream, SIDECAR_BUSY, grpc);
          resetAfterAnswer(stream);
        },
      });
    }
    if (grpc) {
      open.revoke = forwardH2(stream, headers, request, flags, appSession(), { ...hooks, done, idle });
    } else {
      // Each stream to an HTTP/1 app takes a connection to it: within this caller address's share
      // (AppShare), waiting for one of its own exchanges to end when the share is taken. Meanwhile
      // its body is held as bytes, a flow-control window at most (H2Intake), not as frames.
      H2Intake.of(stream);
      let waiting = true;
      const withdraw = appShare.enter(
        sourceOf(socket),
        (release) => {
          waiting = false;
          if (stream.closed || stream.destroyed) {
            release();
            return done(0);
          }
          open.revoke = forwardH2ToHttp1(stream, request, endStream, appPool, {
            addHeaders: peer === undefined ? "" : stampFor(peer).lines,
            onUpstreamError: appError,
            done: (status) => {
              release();
              done(status);
            },
            idle,
            ...(body.inspector === undefined ? {} : { bodyCheck: { inspector: body.inspector, refused: (problem: string) => bodyRefusal(problem, socket) } }),
          });
        },
        (error) => {
          waiting = false;
          answerH2(stream, appError(error), false);
          resetAfterAnswer(stream);
          done(503);
        },
      );
      if (waiting) {
        // Not forwarded yet: a reload that denies it, or its caller leaving, ends the wait.
        open.revoke = (answer) => {
          if (!waiting) return;
          waiting = false;
          withdraw();
          answerH2(stream, answer, false);
          resetAfterAnswer(stream);
          done(answer.status);
        };
        stream.once("close", () => {
          if (!waiting) return;
          waiting = false;
          withdraw();
          done(0);
        });
      }
    }
  });
  // --- policy reloads ------------------------------------------------------------------
  // What the policy allowed once — a tunnel, an exchange whose request or response is still
  // flowing (a download, an upload, a server stream, server-sent events) — is judged again with
  // the request it was allowed on, and ended when the new policy denies it, as a new one is
  // refused: answered 403 / PERMISSION_DENIED if no response has started, cut otherwise.
  const stopRejudging = policy.onReload(() => {
    for (const [socket, { peer, operation, verb, rpcOverHttp }] of tunnels) {
      if (revoked(peer, socket, operation, verb, rpcOverHttp) !== undefined) socket.destroy();
    }
    for (const open of streams) {
      const refusal = revoked(open.peer, open.socket, open.operation, open.verb, open.rpcOverHttp);
      if (refusal !== undefined) open.revoke?.(refusal);
    }
    http1.revalidate((request, socket) => revoked(peerFor(socket), socket, request.target.path, request.method, request.rpcOverHttp));
  });

  const toHttp = (socket: Socket, h2Preface: boolean) => {
    tracker.add(socket);
    if (h2Preface) {
      handing = socket;
      h2.emit("connection", socket);
      handing = undefined;
    } else {
      http1.serve(socket);
    }
  };

  // --- TCP mode ------------------------------------------------------------------------
  // Judged as TCP_REQUEST, the request policy-operations-never-apply-tcp explains (src/policy/tcp.ts).
  const toTcp = (socket: Socket, peer: PeerIdentity | undefined) => {
    const refusal = denied(peer, socket, TCP_REQUEST.operation, TCP_REQUEST.verb);
    if (refusal !== undefined) {
      telemetry.refused.inc({ direction: "inbound", reason: "policy" });
      socket.destroy();
      return;
    }
    holdTunnel(socket, { peer, operation: TCP_REQUEST.operation, verb: TCP_REQUEST.verb });
    tracker.add(socket);
    const end = tracker.begin(socket);
    const started = eventNow();
    const app = netConnect({ host: options.app.host, port: options.app.port, allowHalfOpen: true });
    let failed = false;
    app.once("error", (error) => {
      failed = true;
      appError(error);
      socket.destroy();
    });
    socket.on("error", () => app.destroy());
    // Half-closed too: a tunnel with no byte either way for this long is destroyed, both sides.
    socket.setTimeout(limits.idleTimeout, () => socket.destroy());
    app.setNoDelay(true);
    joinTunnel(socket, app);
    socket.once("close", () => {
      end();
      observeDuration(mesh.requestDuration, "inbound", "tcp", failed ? "error" : "2xx", started);
    });
  };

  // --- TLS -----------------------------------------------------------------------------
  const tlsServer = loadOnce(runtime.holder.options(), (secrets) =>
    createTlsServer({
      ...secrets,
      handshakeTimeout: limits.handshakeTimeout,
      ...(options.protocol === "http" ? { ALPNProtocols: ["h2", "http/1.1"] } : {}),
    }),
  );
  // At the age cap, when the caller's certificate expires or a root leaves the bundle: HTTP/2 gets
  // GOAWAY, HTTP/1 closes after its in-flight request, a TCP tunnel (one "request" for its whole
  // life, so the tracker would wait for ever) is ended, and destroyed if the caller holds it open
  // (endTunnel).
  // An upgraded connection (WebSocket) or an HTTP/2 stream never ends by itself: past drainTimeout
  // the retired connection is closed, as Envoy does after max_connection_duration (drain_timeout).
  const retireHttp = (socket: Socket) => {
    tracker.retire(socket);
    const deadline = setTimeout(() => socket.destroy(), limits.drainTimeout);
    deadline.unref();
    socket.once("close", () => clearTimeout(deadline));
  };
  const control = secureServer(tlsServer, runtime, "sidecar inbound", undefined, (socket) => (options.protocol === "tcp" ? endTunnel(socket) : retireHttp(socket)));
  tlsServer.on("tlsClientError", (error: Error, socket: TLSSocket) => {
    // Counted once, as handshake_too_large (the reset that follows is not a failed handshake).
    if (refusedByHandshakeCap(socket)) return;
    const reason = mesh.handshakeFailed("inbound", error, socket);
    telemetry.refused.inc({ direction: "inbound", reason: `tls_${reason}` });
    telemetry.refusals?.handshakeFailed({ reason, remote: remoteOf(socket) });
  });
  // Runs before the transport's admission check (which destroys a refused socket, after which
  // the peer certificate can no longer be read): remember why it will refuse, for the metrics.
  const refusals = new WeakMap<TLSSocket, unknown>();
  tlsServer.prependListener("secureConnection", (socket: TLSSocket) => {
    try {
      verifyTlsPeer(socket, runtime.policy);
    } catch (error) {
      refusals.set(socket, error);
    }
  });
  tlsServer.on("secureConnection", (socket: TLSSocket) => {
    if (socket.destroyed) {
      const error = refusals.get(socket) ?? new Error("refused");
      const reason = mesh.handshakeFailed("inbound", error, socket);
      telemetry.refused.inc({ direction: "inbound", reason: `tls_${reason}` });
      const details = (error as { details?: { spiffeId?: unknown; peer?: unknown } }).details;
      const spiffeId = details?.spiffeId ?? details?.peer;
      telemetry.refusals?.handshakeFailed({ reason, remote: remoteOf(socket), ...(typeof spiffeId === "string" ? { spiffeId } : {}) });
      return;
    }
    mesh.handshakeSucceeded("inbound");
    addressCaps.established(socket);
    socket.on("error", () => undefined);
    const peer = peerOf(socket);
    if (options.protocol === "tcp") toTcp(socket, peer);
    else toHttp(socket, socket.alpnProtocol === "h2");
  });

  // Node cannot bound the client chain OpenSSL verifies during the handshake, on this event loop.
  // With limits.maxHandshakeBytes set, a caller may send at most that before its handshake
  // completes, and one over it is reset before any of its chain is verified. Off by default: the
  // cap's stream stays for the connection's life and costs every request (docs/sidecar.md), so
  // without it connections take Node's native TLS path (secureServer installs nothing either).
  const maxHandshakeBytes = limits.maxHandshakeBytes ?? 0;
  if (maxHandshakeBytes > 0) capHandshakeBytes(tlsServer, {
    maxBytes: maxHandshakeBytes,
    onRefused: (raw, maxBytes) => {
      telemetry.refused.inc({ direction: "inbound", reason: HANDSHAKE_TOO_LARGE });
      telemetry.refusals?.refused({ reason: HANDSHAKE_TOO_LARGE, remote: remoteOf(raw) });
      const address = sourceAddress(raw.remoteAddress);
      warnings.warn(
        `${HANDSHAKE_TOO_LARGE}|${address}`,
        { event: "connection-refused", reason: HANDSHAKE_TOO_LARGE, remote: address, limit: maxBytes },
        `refused a connection: it sent more than limits.maxHandshakeBytes (${maxBytes}) before its TLS handshake completed (a client certificate chain that large is never verified)`,
      );
    },
  });

  // --- the listener: first byte decides ------------------------------------------------
  const addressCaps = new AddressCaps(limits.maxConnectionsPerAddress);
  const raw = createNetServer({ noDelay: true }, (socket: Socket) => {
    const overAddress = addressCaps.admit(socket);
    if (overAddress !== undefined) {
      // As past limits.maxConnections: reset at once, before any TLS or HTTP work.
      socket.on("error", () => undefined);
      socket.resetAndDestroy();
      telemetry.refused.inc({ direction: "inbound", reason: overAddress });
      telemetry.refusals?.refused({ reason: overAddress, remote: remoteOf(socket) });
      const address = sourceAddress(socket.remoteAddress);
      warnings.warn(
        `${overAddress}|${address}`,
        { event: "connection-refused", reason: overAddress, remote: address, limit: overAddress === "max_connections_per_address" ? addressCaps.maxPerAddress : addressCaps.maxHandshakes },
        overAddress === "max_connections_per_address"
          ? `refused a connection: this address has limits.maxConnectionsPerAddress (${addressCaps.maxPerAddress}) open`
          : `refused a connection: this address has ${addressCaps.maxHandshakes} connections (half of limits.maxConnectionsPerAddress) still in their TLS handshake`,
      );
      return;
    }
    socket.setNoDelay(true);
    pending.add(socket);
    socket.once("close", () => pending.delete(socket));
    socket.on("error", () => undefined);
    sniffFirstBytes(socket, limits.handshakeTimeout, (kind) => {
      if (socket.destroyed) return;
      if (kind === "tls") {
        // TLSSocket picks up the chunk we put back (initRead) and reads the handle itself.
        tlsServer.emit("connection", socket);
        return;
      }
      if (kind === "closed") return;
      if (kind === "timeout") {
        telemetry.refused.inc({ direction: "inbound", reason: "first_byte_timeout" });
        socket.destroy();
        return;
      }
      const plaintextHttp = kind === "http1" || kind === "h2c";
      if (options.mode === "permissive" && (plaintextHttp || options.protocol === "tcp")) {
        mesh.plaintextConnections.inc();
        // Anyone on the network can open these: the first lines per source address and window say
        // which clients still speak plaintext, the summary counts the rest (the metric counts all).
        warnings.warn(
          `plaintext-accepted|${sourceAddress(socket.remoteAddress)}`,
          { event: "plaintext-accepted", remote: `${socket.remoteAddress}:${socket.remotePort}` },
          "PERMISSIVE: accepted a plaintext connection; the caller is unverified and gets the policy's global default",
        );
        (socket as { [kPlaintext]?: boolean })[kPlaintext] = true;
        addressCaps.established(socket);
        if (options.protocol === "tcp") toTcp(socket, undefined);
        else toHttp(socket, kind === "h2c");
        // The age cap, as for mTLS connections (there it comes with the verified identity).
        if (limits.maxConnectionAge > 0 && !socket.destroyed) {
          const aged = systemClock.setTimeout(() => (options.protocol === "tcp" ? endTunnel(socket) : retireHttp(socket)), limits.maxConnectionAge);
          socket.once("close", () => systemClock.clearTimeout(aged));
        }
        return;
      }
      const reason = plaintextHttp ? "plaintext" : "garbage";
      telemetry.refused.inc({ direction: "inbound", reason });
      telemetry.refusals?.refused({ reason, remote: remoteOf(socket) });
      warnings.warn(`refused|${reason}|${socket.remoteAddress}`, { event: "refused", reason, remote: socket.remoteAddress, mode: options.mode }, plaintextHttp ? "refused a plaintext request: this port needs mTLS" : "refused a connection that is neither TLS nor HTTP");
      if (kind === "http1") {
        socket.end(answerText(STRICT_REFUSAL, true));
        setTimeout(() => socket.destroy(), 1000).unref();
      } else {
        socket.destroy();
      }
    });
  });
  const uncap = capConnections(raw, "inbound", limits.maxConnections, telemetry.listeners, warnings);
  await listenOn(raw, options.listen, "the inbound listener");
  raw.on("error", (error) => logger.error({ event: "listener-error", err: describeError(error) }, "inbound listener error"));
  const bound = raw.address() as AddressInfo;

  let closed = false;
  const shutdown = async (deadlineMs: number) => {
    if (closed) return;
    closed = true;
    // close() stops accepting at once; its callback waits for every connection to end.
    const stopped = new Promise<void>((resolve) => raw.close(() => resolve()));
    await tracker.drain(deadlineMs);
    // Whatever is left never became a request (sniffing, TLS handshake): close it.
    for (const socket of pending) socket.destroy();
    await stopped;
    uncap();
    stopRejudging();
    http1.close();
    h2Deadlines.close();
    h2.close();
    await control.meshward.close();
    appPool.close();
    appH2?.destroy();
    warnings.close();
  };
  return {
    address: { host: bound.address, port: bound.port },
    health: () => runtime.holder.health(),
    drain: (deadlineMs) => shutdown(deadlineMs),
    close: () => shutdown(0),
  };
}
