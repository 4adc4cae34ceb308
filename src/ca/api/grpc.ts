import { constants, type IncomingHttpHeaders, type ServerHttp2Stream } from "node:http2";
import type { TLSSocket } from "node:tls";
import { isMeshwardError, MeshwardError } from "../../errors.ts";
import { peerCertificateOf, type PeerCertificate } from "../attest/peer.ts";
import type { CertificateAuthority, ValidatorName } from "../authority.ts";
import { encodeGrpcMessage, grpcStatusForCode, GrpcStatus } from "./grpc-status.ts";
import { frameMessage } from "../../protocol/grpc-unary.ts";
import { decodeSignRequest, encodeSignResponse, SIGN_CERTIFICATE_PATH, TokenValidator } from "../../protocol/sentry.ts";

const VALIDATORS: ReadonlyMap<number, ValidatorName | undefined> = new Map([
  [TokenValidator.UNKNOWN, undefined],
  [TokenValidator.INSECURE, "insecure"],
  [TokenValidator.KUBERNETES, "kubernetes"],
  [TokenValidator.JWKS, "jwks"],
  [TokenValidator.JOIN_TOKEN, "join-token"],
  [TokenValidator.SVID, "svid"],
]);

/** gRPC requests are HTTP/2 with an application/grpc content type (application/grpc+proto, …). */
export function isGrpcRequest(headers: IncomingHttpHeaders): boolean {
  return (headers["content-type"] ?? "").startsWith("application/grpc");
}

/** What a call needs from its connection, read once per HTTP/2 session (the peer never changes on one). */
interface SessionPeer {
  readonly peer: PeerCertificate | undefined;
  readonly remoteAddress: string | undefined;
}
const sessionPeers = new WeakMap<object, SessionPeer>();

function sessionPeerOf(stream: ServerHttp2Stream): SessionPeer {
  const session = stream.session;
  if (session === undefined) return { peer: undefined, remoteAddress: undefined };
  let known = sessionPeers.get(session);
  if (known === undefined) {
    const socket = session.socket as TLSSocket | undefined;
    known = {
      peer: peerCertificateOf(socket),
      remoteAddress: socket?.remoteAddress === undefined ? undefined : formatPeer(socket.remoteAddress, socket.remotePort),
    };
    sessionPeers.set(session, known);
  }
  return known;
}

/**
 * A unary gRPC endpoint for dapr.proto.sentry.v1.CA/SignCertificate, served on the same
 * HTTP/2 TLS port as the HTTPS API, from the core `stream` event (no compatibility-layer
 * request/response objects per call). gRPC is length-prefixed protobuf over HTTP/2 with
 * trailers (grpc/grpc doc/PROTOCOL-HTTP2.md): an answer is response headers, the message, then
 * grpc-status in trailers; a refusal is "Trailers-Only", one HEADERS frame that carries
 * :status, content-type and grpc-status/grpc-message and ends the stream, as gRPC servers send
 * a call that fails before any message.
 */
export function handleGrpcStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, authority: CertificateAuthority, maxRequestBytes: number): void {
  // A client that resets its stream makes it emit an error: nothing to answer then.
  stream.on("error", () => undefined);
  const path = headers[constants.HTTP2_HEADER_PATH] ?? "";
  if (headers[constants.HTTP2_HEADER_METHOD] !== "POST" || path !== SIGN_CERTIFICATE_PATH) {
    stream.resume();
    respondError(stream, GrpcStatus.UNIMPLEMENTED, `unknown method ${path.slice(0, 200)}`);
    return;
  }
  const chunks: Buffer[] = [];
  let size = 0;
  let failed = false;
  stream.on("data", (chunk: Buffer) => {
    if (failed) return;
    size += chunk.length;
    if (size > maxRequestBytes + 5) {
      failed = true;
      chunks.length = 0;
      respondError(stream, GrpcStatus.RESOURCE_EXHAUSTED, `E_REQUEST_TOO_LARGE: the request is larger than ${maxRequestBytes} bytes`, "E_REQUEST_TOO_LARGE");
      // Reading stops at the bound: once the answer is out, RST_STREAM(NO_ERROR) tells the
      // client to stop sending (RFC 9113 §8.1: a response may complete before the request).
      if (!stream.destroyed) stream.close(constants.NGHTTP2_NO_ERROR);
      return;
    }
    chunks.push(chunk);
  });
  stream.on("end", () => {
    if (!failed) {
      // The stream can go away while the CA signs (the client resets it): never an unhandled rejection.
      answer(stream, chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size), authority).catch(() => stream.destroy());
    }
  });
}

async function answer(stream: ServerHttp2Stream, body: Buffer, authority: CertificateAuthority): Promise<void> {
  try {
    const message = unframe(body);
    let request;
    try {
      request = decodeSignRequest(message);
    } catch {
      throw new MeshwardError("E_REQUEST_INVALID", "the request is not a SignCertificateRequest message");
    }
    if (!VALIDATORS.has(request.tokenValidator)) {
      throw new MeshwardError("E_REQUEST_INVALID", `unknown token validator ${request.tokenValidator}`);
    }
    const { peer, remoteAddress } = sessionPeerOf(stream);
    const result = await authority.sign({
      csr: Buffer.from(request.certificateSigningRequest).toString("utf8"),
      token: request.token,
      validator: VALIDATORS.get(request.tokenValidator),
      appId: request.id,
      namespace: request.namespace,
      trustDomain: request.trustDomain,
      peer,
      remoteAddress,
      jwtAudiences: request.jwtAudiences ?? [],
    });
    const reply = encodeSignResponse({
      workloadCertificate: Buffer.from(result.certificateChainPem),
      trustChainCertificates: result.trustAnchorsPem.map((pem) => Buffer.from(pem)),
      validUntil: { seconds: Math.floor(result.notAfter.getTime() / 1000), nanos: 0 },
      ...(result.jwtSvids !== undefined ? { jwt: result.jwtSvids.jwt, perAudienceJwts: result.jwtSvids.perAudience } : {}),
    });
    if (stream.destroyed || stream.headersSent) return;
    stream.respond({ [constants.HTTP2_HEADER_STATUS]: 200, [constants.HTTP2_HEADER_CONTENT_TYPE]: "application/grpc" }, { waitForTrailers: true });
    stream.once("wantTrailers", () => stream.sendTrailers({ "grpc-status": String(GrpcStatus.OK) }));
    stream.end(frameMessage(reply));
  } catch (error) {
    if (isMeshwardError(error)) {
      respondError(stream, grpcStatusForCode(error.code), `${error.code}: ${error.message}`, error.code);
    } else {
      respondError(stream, GrpcStatus.INTERNAL, "E_INTERNAL: internal error", "E_INTERNAL");
    }
  }
}

function unframe(body: Buffer): Buffer {
  if (body.length < 5) throw new MeshwardError("E_REQUEST_INVALID", "the gRPC request has no message");
  if (body[0] !== 0) throw new MeshwardError("E_REQUEST_INVALID", "compressed gRPC messages are not supported");
  const length = body.readUInt32BE(1);
  if (length !== body.length - 5) throw new MeshwardError("E_REQUEST_INVALID", "the gRPC request must hold exactly one message");
  return body.subarray(5);
}

/** A Trailers-Only answer: the status in the one HEADERS frame, which ends the stream. */
function respondError(stream: ServerHttp2Stream, status: number, message: string, code?: string): void {
  if (stream.destroyed) return;
  if (stream.headersSent) {
    stream.close(constants.NGHTTP2_INTERNAL_ERROR);
    return;
  }
  const headers: Record<string, string | number> = {
    [constants.HTTP2_HEADER_STATUS]: 200,
    [constants.HTTP2_HEADER_CONTENT_TYPE]: "application/grpc",
    "grpc-status": String(status),
    "grpc-message": encodeGrpcMessage(message),
  };
  if (code !== undefined) headers["meshward-error-code"] = code;
  try {
    stream.respond(headers, { endStream: true });
  } catch {
    // Closed between the check and the answer: nobody is left to read it.
    stream.destroy();
  }
}

/** host:port, with brackets around an IPv6 host. */
function formatPeer(host: string, port: number | undefined): string {
  const shown = host.includes(":") ? `[${host}]` : host;
  return port === undefined ? shown : `${shown}:${port}`;
}
