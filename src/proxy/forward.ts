import { request as httpRequest } from "node:http";
import type { Agent, ClientRequest, IncomingMessage, OutgoingHttpHeaders, RequestOptions } from "node:http";
import { constants as h2 } from "node:http2";
import type { ClientHttp2Session, IncomingHttpHeaders as H2Headers, ServerHttp2Stream } from "node:http2";
import { request as httpsRequest } from "node:https";
import type { Duplex } from "node:stream";
import { forwardableHeaders } from "./headers.ts";
import { answerH2, answerRawHttp1, GrpcStatus } from "./respond.ts";
import type { ProxyAnswer } from "./respond.ts";

/** Where an HTTP/1.1 request goes: the app over loopback, or a peer sidecar over mTLS. */
export interface Http1Upstream {
  readonly host: string;
  readonly port: number;
  readonly agent: Agent;
  readonly tls: boolean;
}

export interface ForwardHooks {
  /** Headers set on the upstream request (after the caller's were filtered). */
  readonly setHeaders: OutgoingHttpHeaders;
  /** Lowercase request headers never forwarded (e.g. a spoofed x-forwarded-client-cert). */
  readonly dropHeaders: readonly string[];
  /** What to answer when the upstream cannot be reached or fails before answering. */
  readonly onUpstreamError: (error: Error) => ProxyAnswer;
  /** Called once with the final HTTP status (0 when the exchange broke). */
  readonly done: (status: number) => void;
}

const UNREACHABLE = new Set(["ECONNREFUSED", "ECONNRESET", "EHOSTUNREACH", "ENETUNREACH", "ENOTFOUND", "EAI_AGAIN", "ETIMEDOUT", "EPIPE"]);

export function isUnreachable(error: unknown): boolean {
  const code = (error as { code?: unknown } | undefined)?.code;
  return typeof code === "string" && UNREACHABLE.has(code);
}

function send(upstream: Http1Upstream, options: RequestOptions): ClientRequest {
  const full = { ...options, host: upstream.host, port: upstream.port, agent: upstream.agent };
  return upstream.tls ? httpsRequest(full) : httpRequest(full);
}

/** The parts of an Upgrade request that forwarding it needs (headers with lowercase names). */
export interface UpgradeRequest {
  readonly method: string;
  readonly url: string;
  readonly headers: Readonly<Record<string, string | undefined>>;
}

/**
 * An HTTP/1.1 request that asked to upgrade the connection. A WebSocket upgrade is forwarded
 * with its Connection/Upgrade pair; once the upstream answers 101 the two sockets are spliced
 * and bytes flow both ways untouched until either side closes (the policy decided once, on the
 * upgrade request, as Envoy does). Any other upgrade (h2c from an optimistic client) is
 * forwarded as the plain request it also is, as a server that ignores Upgrade would answer it.
 * Either way a response that is not a 101 is relayed and the connection closed: the socket's
 * HTTP/1 parser has already let go of it.
 */
export function forwardUpgrade(req: UpgradeRequest, socket: Duplex, head: Buffer, upstream: Http1Upstream, hooks: ForwardHooks): void {
  const websocket = String(req.headers.upgrade ?? "").toLowerCase() === "websocket";
  if (!websocket && (Number(req.headers["content-length"] ?? 0) > 0 || req.headers["transfer-encoding"] !== undefined)) {
    answerRawHttp1(socket, { status: 501, grpcStatus: GrpcStatus.INTERNAL, code: "E_UPGRADE_UNSUPPORTED", message: `the sidecar forwards WebSocket upgrades only; send this ${req.headers.upgrade} request without Upgrade` });
    return hooks.done(501);
  }
  let finished = false;
  let spliced = false;
  const done = (status: number) => {
    if (finished) return;
    finished = true;
    hooks.done(status);
  };
  const headers = { ...forwardableHeaders(req.headers, hooks.dropHeaders), ...hooks.setHeaders };
  const out = send(upstream, { method: req.method, path: req.url, headers: websocket ? { ...headers, connection: "upgrade", upgrade: "websocket" } : headers });
  socket.on("error", () => socket.destroy());
  socket.once("close", () => {
    if (spliced) return;
    out.destroy();
    done(0);
  });
  out.on("upgrade", (res: IncomingMessage, upstreamSocket: Duplex, upstreamHead: Buffer) => {
    upstreamSocket.on("error", () => upstreamSocket.destroy());
    if (socket.destroyed) return void upstreamSocket.destroy();
    spliced = true;
    socket.write(responseHead(res, false));
    if (upstreamHead.length > 0) socket.write(upstreamHead);
    if (head.length > 0) upstreamSocket.write(head);
    upstreamSocket.pipe(socket);
    socket.pipe(upstreamSocket);
    socket.once("close", () => upstreamSocket.destroy());
    upstreamSocket.once("close", () => {
      socket.destroy();
      done(res.statusCode ?? 101);
    });
  });
  out.on("response", (res: IncomingMessage) => {
    socket.write(responseHead(res, true));
    res.pipe(socket);
    res.once("end", () => done(res.statusCode ?? 0));
  });
  out.on("error", (error: Error) => {
    if (socket.destroyed) return;
    const answer = hooks.onUpstreamError(error);
    answerRawHttp1(socket, answer);
    done(answer.status);
  });
  out.end();
}

/**
 * Status line and headers of an upstream response as raw HTTP/1.1, for a socket the server let
 * go of. `close`: the body follows as Node decoded it and the connection ends after it, so the
 * framing headers are replaced by `connection: close` (close-delimited, RFC 9112 §6.3).
 */
function responseHead(res: IncomingMessage, close: boolean): string {
  let head = `HTTP/1.1 ${res.statusCode ?? 502} ${res.statusMessage ?? ""}\r\n`;
  for (let i = 0; i < res.rawHeaders.length; i += 2) {
    const name = res.rawHeaders[i]!;
    if (close && /^(connection|keep-alive|transfer-encoding|content-length)$/i.test(name)) continue;
    head += `${name}: ${res.rawHeaders[i + 1]}\r\n`;
  }
  return `${head}${close ? "connection: close\r\n" : ""}\r\n`;
}

/** HTTP/2 in (an h2 caller that is not gRPC), HTTP/1.1 out to an app that may not speak h2c. */
export function forwardH2ToHttp1(stream: ServerHttp2Stream, headers: H2Headers, upstream: Http1Upstream, hooks: ForwardHooks): void {
  let finished = false;
  const done = (status: number) => {
    if (finished) return;
    finished = true;
    hooks.done(status);
  };
  const authority = headers[":authority"] ?? headers.host;
  const out = send(upstream, {
    method: headers[":method"] ?? "GET",
    path: headers[":path"] ?? "/",
    headers: { ...forwardableHeaders(headers, hooks.dropHeaders), ...(authority ? { host: authority } : {}), ...hooks.setHeaders },
  });
  out.on("response", (up: IncomingMessage) => {
    if (stream.destroyed || stream.closed) {
      up.destroy();
      return;
    }
    const status = up.statusCode ?? 502;
    stream.respond({ ":status": status, ...forwardableHeaders(up.headers) });
    up.pipe(stream);
    up.on("error", () => stream.close(h2.NGHTTP2_INTERNAL_ERROR));
    stream.once("finish", () => done(status));
  });
  let callerGone = false;
  out.on("error", (error: Error) => {
    if (callerGone) return;
    const answer = hooks.onUpstreamError(error);
    answerH2(stream, answer, false);
    done(stream.headersSent ? answer.status : 0);
  });
  stream.once("close", () => {
    if (!finished) {
      callerGone = true;
      out.destroy();
    }
    done(0);
  });
  stream.on("error", () => undefined);
  stream.pipe(out);
}

/** HTTP/2 in, HTTP/2 out (gRPC and h2 between sidecars): streams, trailers and trailers-only answers kept. */
export function forwardH2(stream: ServerHttp2Stream, headers: H2Headers, flags: number, session: ClientHttp2Session, hooks: ForwardHooks & { readonly grpc: boolean }): void {
  let finished = false;
  const done = (status: number) => {
    if (finished) return;
    finished = true;
    hooks.done(status);
  };
  const endStream = (flags & h2.NGHTTP2_FLAG_END_STREAM) !== 0;
  const requestHeaders: OutgoingHttpHeaders = {
    ...forwardableHeaders(headers, hooks.dropHeaders),
    ":method": headers[":method"] ?? "GET",
    ":path": headers[":path"] ?? "/",
    ":scheme": "https",
    ":authority": headers[":authority"] ?? headers.host ?? "localhost",
    ...hooks.setHeaders,
  };
  let out;
  try {
    out = session.request(requestHeaders, { endStream });
  } catch (error) {
    answerH2(stream, hooks.onUpstreamError(error as Error), hooks.grpc);
    done(0);
    return;
  }
  let trailers: OutgoingHttpHeaders | undefined;
  let status = 0;
  out.on("response", (response, responseFlags: number) => {
    if (stream.destroyed || stream.closed) return;
    status = Number(response[":status"] ?? 502);
    const responseHeaders = { ":status": status, ...forwardableHeaders(response) };
    if ((responseFlags & h2.NGHTTP2_FLAG_END_STREAM) !== 0) {
      stream.respond(responseHeaders, { endStream: true });
      done(status);
      return;
    }
    stream.respond(responseHeaders, { waitForTrailers: true });
    out.pipe(stream);
  });
  out.on("trailers", (received) => {
    trailers = forwardableHeaders(received);
  });
  stream.on("wantTrailers", () => {
    stream.sendTrailers(trailers ?? {});
    done(status);
  });
  out.on("error", (error: Error) => {
    if (!stream.headersSent) answerH2(stream, hooks.onUpstreamError(error), hooks.grpc);
    else if (!stream.closed) stream.close(h2.NGHTTP2_INTERNAL_ERROR);
    done(0);
  });
  out.on("close", () => {
    if (status === 0 && !stream.headersSent && !stream.closed) {
      const code = out.rstCode ?? 0;
      answerH2(stream, hooks.onUpstreamError(Object.assign(new Error(`the upstream reset the stream (code ${code})`), { code: "ERR_HTTP2_STREAM_ERROR" })), hooks.grpc);
      done(0);
    } else if (out.rstCode !== undefined && out.rstCode !== h2.NGHTTP2_NO_ERROR && !stream.closed && !finished) {
      stream.close(out.rstCode);
      done(0);
    }
  });
  stream.on("error", () => undefined);
  stream.once("close", () => {
    if (!out.closed) out.close(h2.NGHTTP2_CANCEL);
    done(status);
  });
  if (!endStream) stream.pipe(out);
}

/** The answer for a failed app/peer exchange, HTTP and gRPC flavours. */
export function unreachableAnswer(what: string, error: Error, status = 503): ProxyAnswer {
  return {
    status,
    grpcStatus: GrpcStatus.UNAVAILABLE,
    code: isUnreachable(error) ? "E_UPSTREAM_UNREACHABLE" : "E_UPSTREAM_FAILED",
    message: `${what}: ${(error as { code?: string }).code ?? ""} ${error.message}`.trim(),
  };
}
