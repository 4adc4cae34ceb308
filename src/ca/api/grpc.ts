import { constants as http2Constants, type Http2ServerRequest, type Http2ServerResponse } from "node:http2";
import type { TLSSocket } from "node:tls";
import { isMeshwardError, MeshwardError } from "../../errors.ts";
import { peerCertificateOf } from "../attest/peer.ts";
import type { CertificateAuthority, ValidatorName } from "../authority.ts";
import { encodeGrpcMessage, grpcStatusForCode, GrpcStatus, parseGrpcTimeout } from "./grpc-status.ts";
import { frameMessage } from "../../protocol/grpc-unary.ts";
import { decodeSignRequest, encodeSignResponse, SIGN_CERTIFICATE_PATH, TokenValidator } from "../../protocol/sentry.ts";
import { sourceAddress } from "../../util/connection-gate.ts";
import type { HeldBudget } from "../../util/held-budget.ts";

const VALIDATORS: ReadonlyMap<number, ValidatorName | undefined> = new Map([
  [TokenValidator.UNKNOWN, undefined],
  [TokenValidator.INSECURE, "insecure"],
  [TokenValidator.KUBERNETES, "kubernetes"],
  [TokenValidator.JWKS, "jwks"],
  [TokenValidator.JOIN_TOKEN, "join-token"],
  [TokenValidator.SVID, "svid"],
]);

/**
 * A unary gRPC endpoint for dapr.proto.sentry.v1.CA/SignCertificate, served on the same
 * HTTP/2 TLS port as the HTTPS API (gRPC is length-prefixed protobuf over HTTP/2 with
 * trailers; a unary call needs nothing more than this). Errors are sent as trailers after
 * the response headers, which every gRPC client reads as the call's status.
 */
/** How many largest-size requests may be buffered at once, all connections together. */
export const BUFFERED_REQUESTS = 256;

/**
 * Why handleGrpc refused a call before the authority saw it (a metric label: keep the set closed).
 * budget: the bytes of unfinished requests all callers hold reached the budget; budget_per_address:
 * the caller's source address holds its share of it; too_large: the request is over maxRequestBytes;
 * request_timeout: the request did not arrive within requestTimeout; client_deadline: the client's
 * own deadline (grpc-timeout) passed before the CA answered.
 */
export const GRPC_REFUSALS = ["budget", "budget_per_address", "too_large", "request_timeout", "client_deadline"] as const;
export type GrpcRefusal = (typeof GRPC_REFUSALS)[number];

export interface GrpcLimits {
  readonly maxRequestBytes: number;
  /** Bytes buffered across all calls, and per source address (see HeldBudget). */
  readonly budget?: HeldBudget;
  /** Longest a call may take to send its whole request (slowloris). */
  readonly requestTimeoutMs?: number;
  /** Told of each call refused here (the CA counts, logs and records them); `address` is the caller's source address. */
  readonly onRefused?: (refusal: { readonly reason: GrpcRefusal; readonly code: string; readonly address: string }) => void;
}

export function handleGrpc(req: Http2ServerRequest, res: Http2ServerResponse, authority: CertificateAuthority, limits: GrpcLimits): void {
  const { maxRequestBytes, budget, requestTimeoutMs, onRefused } = limits;
  if (req.method !== "POST" || req.url !== SIGN_CERTIFICATE_PATH) {
    req.resume();
    respondError(res, GrpcStatus.UNIMPLEMENTED, `unknown method ${req.url.slice(0, 200)}`);
    return;
  }
  const chunks: Buffer[] = [];
  let size = 0;
  let failed = false;
  const address = sourceAddress(req.socket.remoteAddress);
  const held = budget?.account(address);
  // The call's lifetime as the client sees it: aborted when the stream closes (the client reset
  // it, its connection went away, or the call is over) or when the client's grpc-timeout passes.
  // The authority checks it before spending a join token's use (see SignRequest.signal).
  const call = new AbortController();
  const clientTimeoutMs = parseGrpcTimeout(req.headers["grpc-timeout"]);
  const release = () => held?.close();
  // Set once the whole request has arrived and the authority has the call: a client deadline
  // passing after that is the authority's to count (meshward_ca_sign_requests_total), not a
  // refusal before attestation.
  let arrived = false;
  const refuse = (status: number, message: string, code: string, reason: GrpcRefusal) => {
    failed = true;
    if (!(reason === "client_deadline" && arrived)) onRefused?.({ reason, code, address });
    clearTimeout(deadline);
    chunks.length = 0;
    release();
    respondError(res, status, `${code}: ${message}`, code);
    // Reading stops at the bound, and once the status is out the stream is reset with NO_ERROR:
    // RFC 9113 §8.1 lets a server answer before the request is complete and then ask the client
    // to stop sending, so a client that never ends its request cannot hold the stream open.
    req.pause();
    resetAfterStatus(res);
  };
  const deadline =
    requestTimeoutMs === undefined
      ? undefined
      : setTimeout(() => {
          if (!failed) refuse(GrpcStatus.DEADLINE_EXCEEDED, `the request did not arrive within ${requestTimeoutMs / 1000} s`, "E_REQUEST_TIMEOUT", "request_timeout");
        }, requestTimeoutMs);
  deadline?.unref();
  // grpc-go and grpc-js send the caller's deadline as grpc-timeout (gRPC over HTTP/2 spec) and
  // reset the stream when it passes; the server stops too, as grpc-go's server does for its handler.
  const clientDeadline =
    clientTimeoutMs === undefined
      ? undefined
      : setTimeout(() => {
          const why = `the client's deadline (grpc-timeout ${clientTimeoutMs} ms) passed before the CA could answer; nothing was issued`;
          call.abort(new MeshwardError("E_REQUEST_TIMEOUT", why));
          if (!failed) refuse(GrpcStatus.DEADLINE_EXCEEDED, why, "E_REQUEST_TIMEOUT", "client_deadline");
        }, clientTimeoutMs);
  clientDeadline?.unref();
  // Set once answer() has settled: nothing then listens on the call's signal, so a stream closing
  // after its answer is not "cancelled" (an error built per call, with its stack, cost ~5 % of the
  // CA's main thread in bench/ca/api-bench.ts).
  let settled = false;
  res.stream.once("close", () => {
    clearTimeout(deadline);
    clearTimeout(clientDeadline);
    release();
    if (!settled) call.abort(new MeshwardError("E_REQUEST_CANCELLED", "the client cancelled the call (stream reset or connection closed) before the CA answered; nothing was issued"));
  });
  req.on("data", (chunk: Buffer) => {
    if (failed) return;
    size += chunk.length;
    if (size > maxRequestBytes + 5) {
      refuse(GrpcStatus.RESOURCE_EXHAUSTED, `the request is larger than ${maxRequestBytes} bytes`, "E_REQUEST_TOO_LARGE", "too_large");
      return;
    }
    if (held !== undefined && budget !== undefined && !held.take(chunk.length)) {
      // Which bound: the whole budget, or this address's share of it (a caller holding many unfinished calls).
      if (budget.wouldRefuse(address, chunk.length) === "address") {
        refuse(GrpcStatus.RESOURCE_EXHAUSTED, "the CA holds as many unfinished requests from this address as its share allows; retry with backoff", "E_CA_BUSY", "budget_per_address");
      } else {
        refuse(GrpcStatus.RESOURCE_EXHAUSTED, "the CA holds too many unfinished requests; retry with backoff", "E_CA_BUSY", "budget");
      }
      return;
    }
    chunks.push(chunk);
  });
  req.on("end", () => {
    clearTimeout(deadline);
    if (!failed) {
      arrived = true;
      // The stream can go away while the CA signs (the client resets it): never an unhandled rejection.
      answer(req, res, chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size), authority, call.signal)
        .catch(() => res.stream.destroy())
        .finally(() => {
          settled = true;
          clearTimeout(clientDeadline);
        });
    }
  });
  req.on("error", () => undefined);
}

async function answer(req: Http2ServerRequest, res: Http2ServerResponse, body: Buffer, authority: CertificateAuthority, signal: AbortSignal): Promise<void> {
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
    const socket = req.stream.session?.socket as TLSSocket | undefined;
    const result = await authority.sign({
      csr: Buffer.from(request.certificateSigningRequest).toString("utf8"),
      token: request.token,
      validator: VALIDATORS.get(request.tokenValidator),
      appId: request.id,
      namespace: request.namespace,
      trustDomain: request.trustDomain,
      // Parsed only when the validator reads it (svid renewal), not for every caller that presents one.
      peer: () => peerCertificateOf(socket),
      remoteAddress: socket?.remoteAddress === undefined ? undefined : formatPeer(socket.remoteAddress, socket.remotePort),
      sourceAddress: sourceAddress(socket?.remoteAddress),
      jwtAudiences: request.jwtAudiences ?? [],
      signal,
    });
    const reply = encodeSignResponse({
      workloadCertificate: Buffer.from(result.certificateChainPem),
      trustChainCertificates: result.trustAnchorsPem.map((pem) => Buffer.from(pem)),
      validUntil: { seconds: Math.floor(result.notAfter.getTime() / 1000), nanos: 0 },
      ...(result.jwtSvids !== undefined ? { jwt: result.jwtSvids.jwt, perAudienceJwts: result.jwtSvids.perAudience } : {}),
    });
    // Given up on after the store committed (the remaining window): already answered or gone.
    if (signal.aborted || res.stream.destroyed) return;
    res.writeHead(200, { "content-type": "application/grpc" });
    res.addTrailers({ "grpc-status": String(GrpcStatus.OK) });
    res.end(frameMessage(reply));
  } catch (error) {
    // The client's deadline was already answered (DEADLINE_EXCEEDED), or the stream is gone.
    if (signal.aborted) return;
    if (isMeshwardError(error)) {
      respondError(res, grpcStatusForCode(error.code), `${error.code}: ${error.message}`, error.code);
    } else {
      respondError(res, GrpcStatus.INTERNAL, "E_INTERNAL: internal error", "E_INTERNAL");
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


/** RST_STREAM NO_ERROR once the status trailers are out (after the compat layer's own wantTrailers handler sent them). */
function resetAfterStatus(res: Http2ServerResponse): void {
  const stream = res.stream;
  if (stream.destroyed) return;
  const reset = () => setImmediate(() => {
    if (!stream.destroyed) stream.close(http2Constants.NGHTTP2_NO_ERROR);
  });
  if (stream.sentTrailers !== undefined) reset();
  else stream.once("wantTrailers", reset);
}

function respondError(res: Http2ServerResponse, status: number, message: string, code?: string): void {
  if (res.stream.destroyed || res.headersSent) {
    res.stream.close();
    return;
  }
  res.writeHead(200, { "content-type": "application/grpc" });
  const trailers: Record<string, string> = { "grpc-status": String(status), "grpc-message": encodeGrpcMessage(message) };
  if (code !== undefined) trailers["meshward-error-code"] = code;
  res.addTrailers(trailers);
  res.end();
}

/** host:port, with brackets around an IPv6 host. */
function formatPeer(host: string, port: number | undefined): string {
  const shown = host.includes(":") ? `[${host}]` : host;
  return port === undefined ? shown : `${shown}:${port}`;
}
