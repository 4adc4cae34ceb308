import { connect, constants, type ClientHttp2Session, type IncomingHttpHeaders, type SecureClientSessionOptions } from "node:http2";
import { markHandshakeCompleted } from "../tls/after-handshake.ts";
import { connect as tlsConnect, type ConnectionOptions, type DetailedPeerCertificate, type TLSSocket } from "node:tls";
import { isIP } from "node:net";
import type { Duplex } from "node:stream";

/**
 * A unary gRPC call over node:http2 (gRPC over HTTP/2 spec: one length-prefixed message each
 * way, status in trailers). Enough for the CA's SignCertificate without a gRPC runtime in every
 * workload. test/protocol/grpc-interop.test.ts calls a @grpc/grpc-js server with it and calls
 * the CA with a @grpc/grpc-js client, so both ends are checked against the reference library.
 */

/** gRPC status code names (grpc/grpc doc/statuscodes.md), for messages. */
export const GRPC_STATUS_NAMES: readonly string[] = [
  "OK",
  "CANCELLED",
  "UNKNOWN",
  "INVALID_ARGUMENT",
  "DEADLINE_EXCEEDED",
  "NOT_FOUND",
  "ALREADY_EXISTS",
  "PERMISSION_DENIED",
  "RESOURCE_EXHAUSTED",
  "FAILED_PRECONDITION",
  "ABORTED",
  "OUT_OF_RANGE",
  "UNIMPLEMENTED",
  "INTERNAL",
  "UNAVAILABLE",
  "DATA_LOSS",
  "UNAUTHENTICATED",
];
export const GRPC_DEADLINE_EXCEEDED = 4;
export const GRPC_UNAVAILABLE = 14;

export interface UnaryCall {
  /** https://host:port (IPv6 hosts bracketed). */
  readonly url: string;
  /** TLS options for the connection (ca, cert, key, servername, checkServerIdentity, …). */
  readonly tls: SecureClientSessionOptions;
  readonly path: string;
  readonly authority: string;
  readonly message: Uint8Array;
  readonly timeoutMs: number;
  /** Largest response message accepted. */
  readonly maxResponseBytes?: number;
}

export interface UnaryResult {
  /** gRPC status; 0 with `message` set on success. */
  readonly status: number;
  /** grpc-message, percent-decoded. */
  readonly details: string;
  /** Response headers and trailers together (trailers win). */
  readonly metadata: IncomingHttpHeaders;
  readonly message?: Buffer;
  /** The certificates the server presented on this connection (DER, leaf first), when TLS was used. */
  readonly peerChain?: readonly Buffer[];
}

/** A failure below gRPC: the connection, TLS or HTTP/2 (the call never got a gRPC status). */
export class GrpcTransportError extends Error {
  override readonly name = "GrpcTransportError";
  constructor(
    message: string,
    readonly status: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export function frameMessage(message: Uint8Array): Buffer {
  const framed = Buffer.allocUnsafe(5 + message.length);
  framed[0] = 0; // not compressed
  framed.writeUInt32BE(message.length, 1);
  framed.set(message, 5);
  return framed;
}

/** The one message of a unary body; undefined when the body is not exactly one uncompressed message. */
export function unframeMessage(body: Buffer): Buffer | undefined {
  if (body.length < 5 || body[0] !== 0) return undefined;
  const length = body.readUInt32BE(1);
  if (length !== body.length - 5) return undefined;
  return body.subarray(5);
}

export function decodeGrpcMessage(text: string): string {
  if (!text.includes("%")) return text;
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

export function callUnary(call: UnaryCall): Promise<UnaryResult> {
  const maxBytes = call.maxResponseBytes ?? 4 << 20;
  return new Promise<UnaryResult>((resolve, reject) => {
    let session: ClientHttp2Session | undefined;
    // The connection's socket, from createConnection: destroyed with the session. A session whose
    // socket is still in its TLS handshake has not taken that socket yet, so session.destroy()
    // alone leaves it open (a peer that accepts TCP and never answers the handshake).
    let socket: Duplex | undefined;
    let settled = false;
    const finish = (error: Error | undefined, result?: UnaryResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      session?.close();
      session?.destroy();
      socket?.destroy();
      if (error) reject(error);
      else resolve(result as UnaryResult);
    };
    const timer = setTimeout(() => finish(new GrpcTransportError(`no answer within ${call.timeoutMs} ms`, GRPC_DEADLINE_EXCEEDED)), call.timeoutMs);
    try {
      const given = call.tls.createConnection;
      session = connect(call.url, {
        ...call.tls,
        minVersion: call.tls.minVersion ?? "TLSv1.2",
        // As node:http2 connects by default (ALPN h2, SNI for a host name), but holding the socket.
        createConnection: (authority: URL, options) => {
          if (given !== undefined) return (socket = given(authority, options));
          const host = authority.hostname.startsWith("[") ? authority.hostname.slice(1, -1) : authority.hostname;
          const servername = call.tls.servername ?? (isIP(host) === 0 ? host : undefined);
          return (socket = tlsConnect({ ...options, host, port: Number(authority.port || 443), ...(servername !== undefined ? { servername } : {}), ALPNProtocols: ["h2"] } as ConnectionOptions));
        },
      });
    } catch (error) {
      finish(new GrpcTransportError(`cannot connect: ${(error as Error).message}`, GRPC_UNAVAILABLE, { cause: error }));
      return;
    }
    // The TLS socket, once its handshake completed: its later errors can be named (a refused renegotiation).
    let peerChain: readonly Buffer[] | undefined;
    session.once("connect", (_session, socket) => {
      markHandshakeCompleted(socket);
      if (typeof (socket as TLSSocket).getPeerCertificate === "function") peerChain = presentedChain(socket as TLSSocket);
    });
    session.on("error", (error: NodeJS.ErrnoException) => finish(new GrpcTransportError(error.code ? `${error.code}: ${error.message}` : error.message, GRPC_UNAVAILABLE, { cause: error })));
    const stream = session.request({
      [constants.HTTP2_HEADER_METHOD]: "POST",
      [constants.HTTP2_HEADER_PATH]: call.path,
      [constants.HTTP2_HEADER_AUTHORITY]: call.authority,
      [constants.HTTP2_HEADER_CONTENT_TYPE]: "application/grpc",
      te: "trailers",
      "grpc-timeout": `${Math.max(1, Math.ceil(call.timeoutMs))}m`,
    });
    let headers: IncomingHttpHeaders = {};
    let trailers: IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    let size = 0;
    stream.on("response", (h) => (headers = h));
    stream.on("trailers", (t) => (trailers = t));
    stream.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBytes + 5) {
        stream.close(constants.NGHTTP2_CANCEL);
        finish(new GrpcTransportError(`the response exceeds ${maxBytes} bytes`, 8));
        return;
      }
      chunks.push(chunk);
    });
    stream.on("error", (error: Error) => finish(new GrpcTransportError(error.message, GRPC_UNAVAILABLE, { cause: error })));
    stream.on("close", () => {
      const metadata = { ...headers, ...trailers };
      const httpStatus = Number(headers[constants.HTTP2_HEADER_STATUS] ?? 0);
      const rawStatus = metadata["grpc-status"];
      if (rawStatus === undefined) {
        // Cut off after its headers (the server died, the connection broke): the transport failed,
        // UNAVAILABLE as grpc-go reports a closing transport, so a client with several CA replicas
        // tries the next one. A response that did end without a status is UNKNOWN (the gRPC spec).
        const cut = httpStatus === 0 || stream.aborted || !stream.readableEnded || (stream.rstCode !== undefined && stream.rstCode !== constants.NGHTTP2_NO_ERROR);
        const why = httpStatus === 0 ? "the stream closed without an answer" : cut ? `the stream was cut off after HTTP ${httpStatus}, before a gRPC status` : `HTTP ${httpStatus} without a gRPC status`;
        finish(new GrpcTransportError(why, cut ? GRPC_UNAVAILABLE : 2));
        return;
      }
      const status = Number(rawStatus);
      const details = decodeGrpcMessage(String(metadata["grpc-message"] ?? ""));
      if (status !== 0) {
        finish(undefined, { status, details, metadata, ...(peerChain ? { peerChain } : {}) });
        return;
      }
      const message = unframeMessage(Buffer.concat(chunks));
      if (message === undefined) {
        finish(new GrpcTransportError("the response is not exactly one uncompressed gRPC message", 13));
        return;
      }
      finish(undefined, { status, details, metadata, message, ...(peerChain ? { peerChain } : {}) });
    });
    stream.end(frameMessage(call.message));
  });
}

/**
 * The certificates a TLS peer presented, leaf first (DER), as far as Node hands them out:
 * getPeerCertificate(true) links each to its issuer, and may end with the root Node found in
 * the trusted store. Empty when the peer presented none.
 */
export function presentedChain(socket: TLSSocket): Buffer[] {
  const chain: Buffer[] = [];
  const seen = new Set<string>();
  let cert: DetailedPeerCertificate | undefined = socket.getPeerCertificate(true) as DetailedPeerCertificate | undefined;
  while (cert !== undefined && cert !== null && cert.raw !== undefined && !seen.has(cert.fingerprint256)) {
    seen.add(cert.fingerprint256);
    chain.push(Buffer.from(cert.raw));
    cert = cert.issuerCertificate;
  }
  return chain;
}
