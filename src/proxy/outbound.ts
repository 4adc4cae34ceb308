import { constants as h2constants, createServer as createH2Server } from "node:http2";
import type { IncomingHttpHeaders as H2Headers, ServerHttp2Session, ServerHttp2Stream } from "node:http2";
import { createServer as createNetServer } from "node:net";
import type { Server as NetServer, Socket } from "node:net";
import type { SidecarLimits } from "../config/sidecar.ts";
import { describeError, isMeshwardError } from "../errors.ts";
import type { IdentitySource } from "../identity/source.ts";
import { tlsAfterHandshakeFailure } from "../tls/after-handshake.ts";
import { parseHostPort } from "../util/address.ts";
import { checkOutboundHost, type OutboundHostRule } from "./outbound-host.ts";
import { listenOn } from "../util/listen.ts";
import type { HostPort } from "../util/address.ts";
import { closeWhenIdle, ConnectionTracker } from "./connections.ts";
import { eventNow } from "./event-clock.ts";
import { capConnections } from "./listener-cap.ts";
import { H2Deadlines } from "./h2-deadline.ts";
import { forwardH2, forwardUpgrade, isUnreachable } from "./forward.ts";
import { H2Intake } from "./h2-intake.ts";
import type { ForwardHooks } from "./forward.ts";
import { LimitedWarnings } from "../telemetry/log-limiter.ts";
import { canonicalH2Request, h2HeaderLimits, h2RequestHeadBytes, isGrpcRequest, isRefusal } from "./canonical.ts";
import type { EscapedSlashAction, UnderscoreAction } from "./canonical.ts";
import { APP_ID_HEADER, appIdProblem, targetName } from "./headers.ts";
import { checkHttp1Parser } from "./http1/llhttp.ts";
import { closedBeforeFirstResponse } from "./http1/pool.ts";
import { Http1Relay } from "./http1/relay.ts";
import type { ClientErrorReason } from "./http1/relay.ts";
import { findHeader } from "./http1/wire.ts";
import { H2_HEADER_TOO_LARGE, h2Refusal, droppedFieldsReporter, relaySettings, RESPONSE_HEADER_BYTES } from "./inbound.ts";
import type { ProxyTelemetry } from "./inbound.ts";
import { MAX_PEERS, NO_IDENTITY, PeerPool, resolvePeer, resolveRoute } from "./peers.ts";
import type { RouteResult } from "./peers.ts";
import type { PeerDirectory, PeerTarget } from "./peers.ts";
import { answerH2, answerRawHttp1, GrpcStatus, observeDuration, statusClass } from "./respond.ts";
import type { ProxyAnswer } from "./respond.ts";
import { FirstChunkWatch } from "./sniff.ts";
import { joinTunnel } from "./tunnel.ts";
import { isUpstreamTimeout, upstreamTimeoutAnswer } from "./stream-idle.ts";
import type { StreamIdleRule } from "./stream-idle.ts";

export interface OutboundOptions {
  /** HTTP/gRPC listener for the app; undefined = none. */
  readonly listen: HostPort | undefined;
  /** TCP mode: app id → local listen address. */
  readonly tcpUpstreams: Readonly<Record<string, string>>;
  readonly directory: PeerDirectory;
  readonly identity: IdentitySource;
  readonly limits: SidecarLimits;
  readonly escapedSlashes: EscapedSlashAction;
  /** Field names holding '_' (Envoy's headers_with_underscores_action); default reject. */
  readonly headersWithUnderscores?: UnderscoreAction;
  /** Host names the outbound answers besides loopback, IP literals and the routed app id (outboundAllowedHosts). */
  readonly allowedHosts: OutboundHostRule;
  readonly telemetry: ProxyTelemetry;
}

export interface Outbound {
  readonly address: HostPort | undefined;
  readonly tcp: Readonly<Record<string, HostPort>>;
  drain(deadlineMs: number): Promise<void>;
  close(): Promise<void>;
}


/**
 * The sidecar's outbound side: plaintext listeners on loopback for the app. HTTP requests are
 * routed by `dapr-app-id` or Host to the peer's sidecar over mutual TLS (HTTP/1.1 stays
 * HTTP/1.1, HTTP/2 and gRPC stay HTTP/2), TCP listeners carry bytes to one peer each; the
 * peer must present spiffe://<td>/ns/<namespace>/<app-id> of the app that was asked for.
 */
export async function startOutbound(options: OutboundOptions): Promise<Outbound> {
  const { telemetry, limits } = options;
  const { logger, mesh } = telemetry;
  const pool = new PeerPool(options.identity, logger, MAX_PEERS, limits.handshakeTimeout, limits.maxConnectionAge);
  pool.onVerified = () => mesh.handshakeSucceeded("outbound");
  pool.onHandshakeFailed = (error) => void mesh.handshakeFailed("outbound", error);
  const activeConnections = mesh.connectionsActive.labels({ direction: "outbound" }); // bound once: a labelled inc hashes the labels each call
  const tracker = new ConnectionTracker((delta) => activeConnections.inc(delta));
  const servers: NetServer[] = [];
  let relay: Http1Relay | undefined;
  let firstChunks: FirstChunkWatch | undefined;
  let h2Deadlines: H2Deadlines | undefined;
  const warnings = new LimitedWarnings(logger);
  const reportDropped = droppedFieldsReporter(telemetry, warnings, "outbound");
  /** Each listener's cap: a new connection past limits.maxConnections is closed when accepted. */
  const uncaps: (() => void)[] = [];
  const cap = (server: NetServer, listener: string) => uncaps.push(capConnections(server, listener, limits.maxConnections, telemetry.listeners, warnings));

  const unknownApp = (name: string | undefined): ProxyAnswer => {
    telemetry.upstreamErrors.inc({ direction: "outbound", reason: "unknown_app" });
    return {
      status: 404,
      grpcStatus: GrpcStatus.NOT_FOUND,
      code: "E_UNKNOWN_APP",
      message:
        name === undefined
          ? "say which app to call: set the dapr-app-id header or Host: <app-id>"
          : `no sidecar address is known for app id ${JSON.stringify(name)}: add --peer ${name}=HOST:PORT or a peerTemplate`,
    };
  };
  const peerError = (target: PeerTarget) => (error: Error): ProxyAnswer => {
    if (isUpstreamTimeout(error)) {
      // A request the peer had whole and sent no response to for limits.idleTimeout: 504.
      telemetry.upstreamErrors.inc({ direction: "outbound", reason: "peer_timeout" });
      warnings.warn(`peer-timeout|${target.appId}`, { event: "peer-timeout", app: target.appId, peer: `${target.host}:${target.port}`, err: error.message }, "the peer sent no response in time");
      return upstreamTimeoutAnswer(`the sidecar of ${target.appId} at ${target.host}:${target.port}`, error);
    }
    if ((error as { code?: unknown }).code === NO_IDENTITY) {
      // Our own certificate has not arrived yet, or has expired: nothing was asked of the peer.
      telemetry.refused.inc({ direction: "outbound", reason: "no_identity" });
      warnings.warn("no-identity", { event: "no-identity", app: target.appId, err: error.message }, "an outbound call came while the sidecar had no valid certificate");
      return { status: 503, grpcStatus: GrpcStatus.UNAVAILABLE, code: NO_IDENTITY, message: error.message };
    }
    // A TLS alert after the verified handshake (a peer that asked to renegotiate, refused) would
    // otherwise read as a bare "alert handshake failure" on a connection that was working; the
    // peer's identity was verified, so it is not counted as an identity failure whatever the alert.
    const afterHandshake = tlsAfterHandshakeFailure(error);
    const identity = isMeshwardError(error) || (error as { code?: string }).code?.startsWith("E_") === true || /certificate|SPIFFE|verify/i.test(error.message);
    const reason = identity && afterHandshake === undefined && !isUnreachable(error) ? "peer_identity" : "peer_unreachable";
    telemetry.upstreamErrors.inc({ direction: "outbound", reason });
    const detail =
      afterHandshake ??
      (closedBeforeFirstResponse(error)
        ? `${describeError(error)} before answering the first request on a new connection; the peer may have refused this sidecar's certificate (a meshward sidecar closes such a TLS 1.3 connection without an alert: see its log and meshward_tls_handshake_failures_total), or it restarted`
        : describeError(error));
    // Rate-limited per reason and app: a peer (or a reset injected on the path) failing on purpose
    // would otherwise write one line per request the app retries; the metric counts every one.
    const event = reason.replace("_", "-");
    warnings.warn(`${event}|${target.appId}`, { event, app: target.appId, peer: `${target.host}:${target.port}`, expected: target.expectedId, err: detail }, "outbound call failed");
    return {
      status: 502,
      grpcStatus: GrpcStatus.UNAVAILABLE,
      code: reason === "peer_identity" ? "E_PEER_IDENTITY" : "E_PEER_UNREACHABLE",
      message:
        reason === "peer_identity"
          ? `the sidecar at ${target.host}:${target.port} is not ${target.expectedId}: ${detail}`
          : afterHandshake !== undefined
            ? `the connection to the sidecar of ${target.appId} at ${target.host}:${target.port} failed: ${afterHandshake}`
            : `the sidecar of ${target.appId} at ${target.host}:${target.port} is not reachable: ${detail}`,
    };
  };
  /** Counts the request in flight on its connection (drain waits for it) and times it; call once it is answered. */
  const begin = (socket: Socket, protocol: string): ((status: number) => void) => {
    const end = tracker.begin(socket);
    const started = eventNow();
    return (status) => {
      end();
      observeDuration(mesh.requestDuration, "outbound", protocol, statusClass(status), started);
    };
  };
  const hooksFor = (socket: Socket, target: PeerTarget, protocol: string): ForwardHooks => ({
    setHeaders: {},
    onUpstreamError: peerError(target),
    done: begin(socket, protocol),
  });
  const ambiguousRoute = (problem: string): ProxyAnswer => {
    telemetry.refused.inc({ direction: "outbound", reason: "ambiguous_request" });
    return h2Refusal(400, problem);
  };
  /** undefined when the request's Host may be acted on; else the refusal (DNS rebinding guard). */
  const hostRefusal = (host: string | undefined, name: string, socket: Socket | undefined): ProxyAnswer | undefined => {
    const decision = checkOutboundHost(host, name, options.allowedHosts);
    if (decision.ok) return undefined;
    telemetry.refused.inc({ direction: "outbound", reason: "host_not_allowed" });
    warnings.warn(
      "host-not-allowed",
      { event: "outbound-host-refused", host: decision.host.slice(0, 256), app: name, remote: socket?.remoteAddress },
      "refused an outbound request addressed to a host name that is not loopback, the app id or in outboundAllowedHosts (a browser page rebinding its DNS name to 127.0.0.1 looks like this)",
    );
    return {
      status: 421,
      grpcStatus: GrpcStatus.PERMISSION_DENIED,
      code: "E_OUTBOUND_HOST",
      message: `the outbound port does not answer requests addressed to ${JSON.stringify(decision.host.slice(0, 256))}: address it as 127.0.0.1 or localhost, or add the name to outboundAllowedHosts (--outbound-allowed-host)`,
    };
  };
  const appIdFields = (rawHeaders: readonly string[]): string[] => {
    const values: string[] = [];
    for (let i = 0; i < rawHeaders.length; i += 2) {
      const name = rawHeaders[i]!;
      if (name.length === APP_ID_HEADER.length && name.toLowerCase() === APP_ID_HEADER) values.push(rawHeaders[i + 1]!);
    }
    return values;
  };
  const clientError = (reason: ClientErrorReason, detail: string, socket: Socket | undefined) => {
    telemetry.refused.inc({ direction: "outbound", reason });
    warnings.warn(`client-error|${reason}`, { event: "client-error", reason, remote: socket?.remoteAddress, err: detail }, "refused a malformed, ambiguous or slow request from the app");
  };
  // Resolution is pure (table or template): cache it per name and source, bounded.
  // One map per source (a Host is matched ignoring case, dapr-app-id exactly): no key built per request.
  const resolvedByHost = new Map<string, RouteResult>();
  const resolvedByAppId = new Map<string, RouteResult>();
  const route = (headers: Record<string, unknown>): { name: string | undefined; target: PeerTarget | undefined; ambiguous?: readonly string[] | undefined } => {
    const named = targetName(headers);
    if (named === undefined) return { name: undefined, target: undefined };
    const resolved = named.fromHost ? resolvedByHost : resolvedByAppId;
    let result = resolved.get(named.name);
    if (result === undefined) {
      if (resolved.size >= 1024) resolved.clear();
      result = resolveRoute(options.directory, named.name, named.fromHost);
      resolved.set(named.name, result);
    }
    return { name: named.name, target: result.target, ambiguous: result.ambiguous };
  };
  /** Host routing named two peer entries that differ only in case: refused, never one picked. */
  const ambiguousHost = (name: string, entries: readonly string[], socket: Socket | undefined): ProxyAnswer => {
    telemetry.refused.inc({ direction: "outbound", reason: "ambiguous_request" });
    warnings.warn(
      "ambiguous-host-route",
      { event: "outbound-ambiguous-host", host: name.slice(0, 256), entries, remote: socket?.remoteAddress },
      "refused an outbound request routed by Host: the host name (case-insensitive) matches more than one peer entry",
    );
    return h2Refusal(
      400,
      `Host ${JSON.stringify(name.slice(0, 256))} matches the peer entries ${entries.map((entry) => JSON.stringify(entry)).join(" and ")}, which differ only in letter case (host names ignore case): name the app with the dapr-app-id header instead`,
    );
  };

  // Peers are sidecars closing idle connections after their idleTimeout (60 s by default, like
  // ours): keep pooled ones for half of ours, so bursts find them open (a new one is a handshake).
  const peerPoolOptions = { maxHeaderBytes: RESPONSE_HEADER_BYTES, idleMs: Math.max(1000, Math.floor(limits.idleTimeout / 2)) };
  let address: HostPort | undefined;
  if (options.listen !== undefined) {
    checkHttp1Parser(logger);
    const http1 = new Http1Relay({
      ...relaySettings(limits, options.escapedSlashes, options.headersWithUnderscores),
      droppedFields: reportDropped,
      decide: (request, socket) => {
        const ambiguous = appIdProblem(appIdFields(request.head.rawHeaders));
        if (ambiguous !== undefined) return { answer: ambiguousRoute(ambiguous) };
        const host = request.target.authority ?? request.host;
        const { name, target, ambiguous: entries } = route({ [APP_ID_HEADER]: findHeader(request.head.rawHeaders, APP_ID_HEADER), host });
        const misdirected = name === undefined ? undefined : hostRefusal(host, name, socket);
        if (misdirected !== undefined) return { answer: misdirected };
        if (entries !== undefined) return { answer: ambiguousHost(name!, entries, socket) };
        if (target === undefined) return { answer: unknownApp(name) };
        return {
          upstream: pool.http1(target, peerPoolOptions),
          addHeaders: "",
          onUpstreamError: peerError(target),
          done: begin(socket, "http"),
        };
      },
      upgrade: (request, socket, rest) => {
        const ambiguous = appIdProblem(appIdFields(request.head.rawHeaders));
        if (ambiguous !== undefined) return void answerRawHttp1(socket, ambiguousRoute(ambiguous), limits.idleTimeout);
        const host = request.target.authority ?? request.host;
        const { name, target, ambiguous: entries } = route({ [APP_ID_HEADER]: findHeader(request.head.rawHeaders, APP_ID_HEADER), host });
        const misdirected = name === undefined ? undefined : hostRefusal(host, name, socket);
        if (misdirected !== undefined) return void answerRawHttp1(socket, misdirected, limits.idleTimeout);
        if (entries !== undefined) return void answerRawHttp1(socket, ambiguousHost(name!, entries, socket), limits.idleTimeout);
        if (target === undefined) return void answerRawHttp1(socket, unknownApp(name), limits.idleTimeout);
        const hooks = {
          ...hooksFor(socket, target, "http"),
          idleMs: limits.idleTimeout,
          upgradeIdleMs: limits.upgradeIdleTimeout,
          upgradeIdle: (idleMs: number) =>
            logger.info(
              { event: "upgrade-idle", direction: "outbound", app: target.appId, peer: `${target.host}:${target.port}`, path: request.target.path, idleMs },
              "closed an upgraded connection (WebSocket) with no byte either way for limits.upgradeIdleTimeout",
            ),
        };
        // An upgraded connection is the caller's alone: a fresh verified connection, never pooled.
        pool.socket(target).then(
          (peer) => forwardUpgrade({ method: request.method, target: request.target.target, rawHeaders: request.head.rawHeaders }, socket, rest, peer, hooks),
          (error: Error) => {
            answerRawHttp1(socket, hooks.onUpstreamError(error), limits.idleTimeout);
            hooks.done(502);
          },
        );
      },
      clientError,
      closeAfterResponse: () => tracker.draining,
    });
    relay = http1;
    // node:http2's own header-block limits sit above maxHeaderBytes (h2HeaderLimits): a block over it gets meshward's 431.
    const headerLimits = h2HeaderLimits(limits.maxHeaderBytes);
    const h2 = createH2Server({ maxHeaderListPairs: headerLimits.maxHeaderListPairs, settings: { maxHeaderListSize: headerLimits.maxHeaderListSize, maxConcurrentStreams: limits.maxConcurrentStreams } });
    let handing: Socket | undefined;
    const sessionSocket = new WeakMap<ServerHttp2Session, Socket>();
    const deadlines = new H2Deadlines({ headersTimeout: limits.headersTimeout, idleTimeout: limits.idleTimeout, headerTimedOut: (socket, detail) => clientError("header_timeout", detail, socket) });
    h2Deadlines = deadlines;
    h2.on("session", (session: ServerHttp2Session) => {
      if (handing === undefined) return;
      sessionSocket.set(session, handing);
      tracker.attachSession(handing, session);
      deadlines.watch(session, handing);
      closeWhenIdle(session, limits.idleTimeout);
      session.on("error", () => undefined);
    });
    h2.on("stream", (stream: ServerHttp2Stream, headers: H2Headers, flags: number, rawHeaders: string[]) => {
      stream.on("error", () => undefined);
      const socket = sessionSocket.get(stream.session as ServerHttp2Session);
      if (h2RequestHeadBytes(rawHeaders) > limits.maxHeaderBytes) {
        clientError("header_too_large", "the request's HTTP/2 header block is larger than maxHeaderBytes", socket);
        return answerH2(stream, H2_HEADER_TOO_LARGE, isGrpcRequest(String(headers[":method"]), headers["content-type"]));
      }
      const request = canonicalH2Request(headers, options.escapedSlashes, options.headersWithUnderscores);
      if (isRefusal(request)) {
        telemetry.refused.inc({ direction: "outbound", reason: request.status === 405 ? "connect" : "ambiguous_request" });
        return answerH2(stream, h2Refusal(request.status, request.refused), false);
      }
      if (request.dropped.length > 0) reportDropped(request.dropped, socket);
      const { grpc } = request;
      const appIds = headers[APP_ID_HEADER];
      const ambiguous = appIdProblem(appIds === undefined ? [] : Array.isArray(appIds) ? appIds : [appIds]);
      if (ambiguous !== undefined) return answerH2(stream, ambiguousRoute(ambiguous), grpc);
      const { name, target, ambiguous: entries } = route(headers);
      const authority = headers[":authority"] ?? headers.host;
      const misdirected = name === undefined ? undefined : hostRefusal(typeof authority === "string" ? authority : undefined, name, socket);
      if (misdirected !== undefined) return answerH2(stream, misdirected, grpc);
      if (entries !== undefined) return answerH2(stream, ambiguousHost(name!, entries, socket), grpc);
      if (target === undefined || socket === undefined) return answerH2(stream, unknownApp(name), grpc);
      const hooks = hooksFor(socket, target, grpc ? "grpc" : "http");
      const idle: StreamIdleRule = { ms: limits.idleTimeout, bodyTimedOut: (detail) => clientError("body_timeout", detail, socket) };
      // While the session to the peer opens, the body is held as bytes, a flow-control window at most (H2Intake), not as frames.
      if ((flags & h2constants.NGHTTP2_FLAG_END_STREAM) === 0) H2Intake.of(stream);
      pool.h2(target, peerPoolOptions).then(
        (session) => forwardH2(stream, headers, request, flags, session, { ...hooks, idle }),
        (error: Error) => {
          answerH2(stream, hooks.onUpstreamError(error), grpc);
          hooks.done(502);
        },
      );
    });
    const refuse = (socket: Socket, kind: string) => {
      telemetry.refused.inc({ direction: "outbound", reason: kind === "tls" ? "tls_on_plaintext_port" : kind });
      if (kind === "tls") logger.warn({ event: "refused" }, "the outbound port takes plaintext HTTP from the local app; the sidecar adds mTLS itself");
      socket.destroy();
    };
    firstChunks = new FirstChunkWatch(limits.handshakeTimeout, (socket) => refuse(socket, "timeout"));
    const watch = firstChunks;
    const raw = createNetServer({ noDelay: true }, (socket: Socket) => {
      socket.on("error", () => undefined);
      watch.watch(socket, (kind, first) => {
        if (kind === "http1") {
          tracker.add(socket);
          http1.serve(socket, first);
        } else if (kind === "h2c") {
          tracker.add(socket);
          // The HTTP/2 session reads the chunk put back from the paused socket itself.
          socket.pause();
          socket.unshift(first);
          handing = socket;
          h2.emit("connection", socket);
          handing = undefined;
        } else {
          refuse(socket, kind);
        }
      });
    });
    servers.push(raw);
    cap(raw, "outbound");
    address = await listenOn(raw, options.listen, "the outbound listener");
  }

  const tcp: Record<string, HostPort> = {};
  for (const [name, at] of Object.entries(options.tcpUpstreams)) {
    const target = resolvePeer(options.directory, name);
    if (target === undefined) {
      const { MeshwardError } = await import("../errors.ts");
      throw new MeshwardError("E_CONFIG_INVALID", `tcpUpstreams: no sidecar address is known for app id ${JSON.stringify(name)}; add it to peers or set peerTemplate`);
    }
    const server = createNetServer({ noDelay: true }, (socket: Socket) => {
      socket.on("error", () => undefined);
      socket.pause();
      tracker.add(socket);
      const end = tracker.begin(socket);
      const started = eventNow();
      let ok = false;
      socket.once("close", () => {
        end();
        observeDuration(mesh.requestDuration, "outbound", "tcp", ok ? "2xx" : "error", started);
      });
      pool.socket(target).then(
        (peer) => {
          if (socket.destroyed) return void peer.destroy();
          ok = true;
          peer.on("error", () => socket.destroy());
          // Half-closed too: a tunnel with no byte either way for this long is destroyed, both sides.
          socket.setTimeout(limits.idleTimeout, () => socket.destroy());
          joinTunnel(socket, peer);
          socket.resume();
        },
        (error: Error) => {
          peerError(target)(error);
          socket.destroy();
        },
      );
    });
    servers.push(server);
    cap(server, `tcp/${name}`);
    tcp[name] = await listenOn(server, parseHostPort(at, `tcpUpstreams.${name}`), `the TCP listener for ${name}`);
  }

  let closed = false;
  const shutdown = async (deadlineMs: number) => {
    if (closed) return;
    closed = true;
    const stopped = Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
    await tracker.drain(deadlineMs);
    await stopped;
    for (const uncap of uncaps) uncap();
    relay?.close();
    h2Deadlines?.close();
    firstChunks?.close();
    pool.close();
    warnings.close();
  };
  return { address, tcp, drain: shutdown, close: () => shutdown(0) };
}
