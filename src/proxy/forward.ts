import { request as httpRequest } from "node:http";
import type { IncomingMessage, OutgoingHttpHeaders } from "node:http";
import { constants as h2 } from "node:http2";
import type { ClientHttp2Session, Http2Stream, IncomingHttpHeaders as H2Headers, ServerHttp2Stream } from "node:http2";
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import type { CanonicalH2Request } from "./canonical.ts";
import { H2Intake } from "./h2-intake.ts";
import { forwardableHeaders } from "./headers.ts";
import { ChunkStage, SMALL_CHUNK } from "./http1/chunk-stage.ts";
import { expectsContinue, headersObject } from "./http1/wire.ts";
import { answerH2, answerRawHttp1, closeAfterResponse, GrpcStatus, resetAfterAnswer } from "./respond.ts";
import type { ProxyAnswer } from "./respond.ts";
import { BODY_TIMEOUT_ANSWER, IdleTimer, upstreamTimeoutError } from "./stream-idle.ts";
import type { RevokeStream, StreamIdleRule } from "./stream-idle.ts";

export interface ForwardHooks {
  /** Headers set on the upstream request (after the caller's were filtered). */
  readonly setHeaders: OutgoingHttpHeaders;
  /** What to answer when the upstream cannot be reached or fails before answering, or sent no response in time (isUpstreamTimeout: 504). */
  readonly onUpstreamError: (error: Error) => ProxyAnswer;
  /** Called once with the final HTTP status (0 when the exchange broke). */
  readonly done: (status: number) => void;
}

export interface H2ForwardHooks extends ForwardHooks {
  /** How long the stream may go without a byte either way (limits.idleTimeout). */
  readonly idle: StreamIdleRule;
}

// E_PEER_UNREACHABLE: a peer sidecar that did not finish its handshake in time (dialVerified).
const UNREACHABLE = new Set(["E_PEER_UNREACHABLE", "ECONNREFUSED", "ECONNRESET", "EHOSTUNREACH", "ENETUNREACH", "ENOTFOUND", "EAI_AGAIN", "ETIMEDOUT", "EPIPE"]);

export function isUnreachable(error: unknown): boolean {
  const code = (error as { code?: unknown } | undefined)?.code;
  return typeof code === "string" && UNREACHABLE.has(code);
}

const NOTHING_TO_REVOKE: RevokeStream = () => undefined;

/** An Upgrade request's hooks: those of any exchange, limits.idleTimeout and limits.upgradeIdleTimeout. */
export interface UpgradeHooks extends ForwardHooks {
  /** How long the upstream may take to answer, and a caller may leave a non-101 answer unread (limits.idleTimeout). */
  readonly idleMs: number;
  /** How long a joined (101) connection may go without a byte either way before both sides are closed (limits.upgradeIdleTimeout). */
  readonly upgradeIdleMs: number;
  /** Called once when a joined connection is closed for having been silent `upgradeIdleMs` (logged by the side). */
  readonly upgradeIdle: (idleMs: number) => void;
}

/** A bodiless Upgrade request in its canonical form (the relay refused one with a body). */
export interface UpgradeRequest {
  readonly method: string;
  /** The canonical origin-form target. */
  readonly target: string;
  readonly rawHeaders: readonly string[];
}

/**
 * An HTTP/1.1 request that asked to upgrade the connection, on a connection of its own: never
 * taken from nor returned to a keep-alive pool, so nothing it leaves behind can be read as
 * part of another request. A WebSocket upgrade is forwarded with its Connection/Upgrade pair;
 * once the upstream answers 101 the two sockets are spliced and bytes flow both ways untouched
 * until either side closes (the policy decided on the upgrade request, as Envoy does; the
 * inbound judges that request again when the policy is reloaded, and closes a denied one).
 * Any other upgrade (h2c from an optimistic client) is forwarded as the plain request it also
 * is, as a server that ignores Upgrade would answer it. Either way a response that is not a
 * 101 is relayed with `connection: close` and the connection closed (closeAfterResponse): the
 * socket's HTTP/1 parser has already let go of it, so it cannot go back to keep-alive. An
 * upstream that sends no response head for `idleMs` gets the caller a 504, as any exchange.
 * A joined connection with no byte read from either side for `upgradeIdleMs` (Envoy's
 * stream_idle_timeout, nginx's proxy_read_timeout) is closed both ways: a silent WebSocket
 * would otherwise hold a listener slot and a connection to the app until the age cap.
 */
export function forwardUpgrade(req: UpgradeRequest, socket: Socket, head: Buffer, upstream: Duplex, hooks: UpgradeHooks): void {
  if (socket.destroyed) {
    // The caller left while the upstream was being dialled.
    upstream.destroy();
    return hooks.done(0);
  }
  const received = headersObject(req.rawHeaders);
  const websocket = String(received.upgrade ?? "").toLowerCase() === "websocket";
  let finished = false;
  let spliced = false;
  const done = (status: number) => {
    if (finished) return;
    finished = true;
    hooks.done(status);
  };
  const headers: OutgoingHttpHeaders = { ...forwardableHeaders(received), ...hooks.setHeaders };
  delete headers["content-length"];
  const out = httpRequest({
    method: req.method,
    path: req.target,
    headers: websocket ? { ...headers, connection: "upgrade", upgrade: "websocket" } : { ...headers, connection: "close" },
    createConnection: () => upstream as Socket,
  });
  const waiting = setTimeout(() => out.destroy(upstreamTimeoutError(hooks.idleMs)), hooks.idleMs);
  waiting.unref();
  socket.on("error", () => socket.destroy());
  socket.once("close", () => {
    clearTimeout(waiting);
    if (spliced) return;
    out.destroy();
    upstream.destroy();
    done(0);
  });
  out.on("upgrade", (res: IncomingMessage, upstreamSocket: Duplex, upstreamHead: Buffer) => {
    clearTimeout(waiting);
    upstreamSocket.on("error", () => upstreamSocket.destroy());
    if (socket.destroyed) return void upstreamSocket.destroy();
    spliced = true;
    socket.write(responseHead(res, false));
    if (upstreamHead.length > 0) socket.write(upstreamHead);
    if (head.length > 0) upstreamSocket.write(head);
    upstreamSocket.pipe(socket);
    socket.pipe(upstreamSocket);
    // Every byte either way passes through a 'data' event of one of the two sockets.
    const idle = new IdleTimer(hooks.upgradeIdleMs, () => {
      if (socket.destroyed && upstreamSocket.destroyed) return;
      hooks.upgradeIdle(hooks.upgradeIdleMs);
      socket.destroy();
      upstreamSocket.destroy();
    });
    const touch = () => idle.touch();
    socket.on("data", touch);
    upstreamSocket.on("data", touch);
    socket.once("close", () => upstreamSocket.destroy());
    upstreamSocket.once("close", () => {
      idle.stop();
      socket.destroy();
      done(res.statusCode ?? 101);
    });
  });
  out.on("response", (res: IncomingMessage) => {
    clearTimeout(waiting);
    socket.write(responseHead(res, true));
    res.pipe(socket);
    closeAfterResponse(socket, hooks.idleMs);
    res.once("end", () => {
      upstream.destroy();
      done(res.statusCode ?? 0);
    });
  });
  out.on("error", (error: Error) => {
    clearTimeout(waiting);
    upstream.destroy();
    if (socket.destroyed) return;
    const answer = hooks.onUpstreamError(error);
    answerRawHttp1(socket, answer, hooks.idleMs);
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

/**
 * HTTP/2 in, HTTP/2 out (gRPC and h2 between sidecars), the request in its canonical form:
 * streams, trailers and trailers-only answers kept. Request trailers are not passed on. A stream
 * with no byte read from the caller or written to it for `idle.ms` ends as an HTTP/1 exchange
 * does: 408 while its body is due, 504 when no response came, RST_STREAM (CANCEL) once the
 * response has started (a gRPC stream silent that long too); the upstream stream is cancelled.
 * Returns how to end the stream early with a refusal (a policy reload that denies its request):
 * `answer` while no response has started, RST_STREAM (CANCEL) once one has; the upstream stream
 * is cancelled either way.
 */
export function forwardH2(stream: ServerHttp2Stream, headers: H2Headers, request: CanonicalH2Request, flags: number, session: ClientHttp2Session, hooks: H2ForwardHooks): RevokeStream {
  const grpc = request.grpc;
  let finished = false;
  let idle: IdleTimer | undefined;
  const done = (status: number) => {
    if (finished) return;
    finished = true;
    idle?.stop();
    hooks.done(status);
  };
  const endStream = (flags & h2.NGHTTP2_FLAG_END_STREAM) !== 0;
  const forwarded = forwardableHeaders(headers);
  // headersWithUnderscores: drop (canonicalH2Request named them).
  for (const name of request.dropped) delete forwarded[name];
  const requestHeaders: OutgoingHttpHeaders = {
    ...forwarded,
    ":method": request.method,
    ":path": request.target.target,
    ":scheme": "https",
    ":authority": request.authority ?? "localhost",
    ...hooks.setHeaders,
  };
  let out;
  try {
    out = session.request(requestHeaders, { endStream });
  } catch (error) {
    answerH2(stream, hooks.onUpstreamError(error as Error), grpc);
    resetAfterAnswer(stream);
    done(0);
    return NOTHING_TO_REVOKE;
  }
  let trailers: OutgoingHttpHeaders | undefined;
  let status = 0;
  let requestEnded = endStream;
  /** Ends the exchange before its upstream does: `answer` while no response has started, else a cut. */
  const endEarly = (answer: ProxyAnswer | (() => ProxyAnswer)) => {
    if (finished) return;
    if (!out.closed) out.close(h2.NGHTTP2_CANCEL);
    if (stream.closed || stream.destroyed) return done(0);
    if (status !== 0 || stream.headersSent) {
      stream.close(h2.NGHTTP2_CANCEL);
      return done(0);
    }
    const answered = typeof answer === "function" ? answer() : answer;
    answerH2(stream, answered, grpc);
    resetAfterAnswer(stream);
    done(answered.status);
  };
  idle = new IdleTimer(hooks.idle.ms, () =>
    endEarly(() => {
      if (requestEnded) return hooks.onUpstreamError(upstreamTimeoutError(hooks.idle.ms));
      hooks.idle.bodyTimedOut(`no byte of the request body arrived for ${hooks.idle.ms} ms`);
      return BODY_TIMEOUT_ANSWER;
    }),
  );
  out.on("response", (response, responseFlags: number) => {
    if (stream.destroyed || stream.closed) return;
    idle?.touch();
    status = Number(response[":status"] ?? 502);
    const responseHeaders = { ":status": status, ...forwardableHeaders(response) };
    if ((responseFlags & h2.NGHTTP2_FLAG_END_STREAM) !== 0) {
      stream.respond(responseHeaders, { endStream: true });
      done(status);
      return;
    }
    stream.respond(responseHeaders, { waitForTrailers: true });
    // Ending the caller's stream (END_STREAM after the data) asks for the trailers (wantTrailers).
    relayH2Body(out, stream, () => idle?.touch(), () => {
      if (!stream.closed && !stream.destroyed && !stream.writableEnded) stream.end();
    });
  });
  // The upstream's 100 Continue, to a caller that asked for it (and waits for it before its body).
  // The upstream has the request, so the policy allowed it. Other interim responses are dropped.
  const continueExpected = !endStream && expectsContinue(request.rawHeaders);
  out.on("headers", (interim) => {
    if (!continueExpected || Number(interim[":status"]) !== 100 || status !== 0 || stream.headersSent || stream.closed) return;
    idle?.touch();
    try {
      stream.additionalHeaders({ ":status": 100 });
    } catch {
      // The stream cannot take it any more (closing): its own end follows.
    }
  });
  out.on("trailers", (received) => {
    trailers = forwardableHeaders(received);
  });
  // RFC 9113 §8.1: a server that has answered in full may reset the stream with NO_ERROR to ask
  // the client to stop sending; passed on once the caller has the whole answer (else its upload
  // stays open until it ends it or the idle timer cuts it).
  let stopSending = false;
  const passStopSending = () => {
    if (!requestEnded && !stream.closed && !stream.destroyed) stream.close(h2.NGHTTP2_NO_ERROR);
  };
  stream.on("wantTrailers", () => {
    stream.sendTrailers(trailers ?? {});
    done(status);
    // Not from here: 'wantTrailers' comes while node:http2 is writing the stream's last DATA frame,
    // and an RST_STREAM submitted then goes out before the trailers just submitted, which are lost
    // (the caller gets the answer without its grpc-status). Once this write is over, they are out.
    if (stopSending) setImmediate(passStopSending);
  });
  out.on("error", (error: Error) => {
    if (!stream.headersSent) {
      answerH2(stream, hooks.onUpstreamError(error), grpc);
      // The caller may still hold its side open (and its held request bytes): reset once the answer is out; done() stops the idle clock.
      resetAfterAnswer(stream);
    } else if (!stream.closed) stream.close(h2.NGHTTP2_INTERNAL_ERROR);
    done(0);
  });
  out.on("close", () => {
    if (status === 0 && !stream.headersSent && !stream.closed) {
      const code = out.rstCode ?? 0;
      answerH2(stream, hooks.onUpstreamError(Object.assign(new Error(`the upstream reset the stream (code ${code})`), { code: "ERR_HTTP2_STREAM_ERROR" })), grpc);
      resetAfterAnswer(stream);
      done(0);
    } else if (out.rstCode !== undefined && out.rstCode !== h2.NGHTTP2_NO_ERROR && !stream.closed && !finished) {
      stream.close(out.rstCode);
      done(0);
    } else if (out.rstCode === h2.NGHTTP2_NO_ERROR && !requestEnded) {
      stopSending = true;
      if (finished) passStopSending();
    }
  });
  stream.on("error", () => undefined);
  stream.once("close", () => {
    if (!out.closed) out.close(h2.NGHTTP2_CANCEL);
    done(status);
  });
  if (!endStream) {
    relayH2Body(
      stream,
      out,
      () => idle?.touch(),
      () => {
        requestEnded = true;
        idle?.touch();
        if (!out.closed && !out.destroyed && !out.writableEnded) out.end();
      },
    );
  }
  return endEarly;
}

/**
 * One direction of an HTTP/2-to-HTTP/2 exchange's body: `from`'s DATA to `to`, then `end()` once
 * `from` ended (END_STREAM) and every byte went. What either side may make the sidecar hold costs
 * its bytes, never its frames. node:http2 hands each DATA frame over as a slice of its whole socket
 * read (16 KiB through TLS, 64 KiB in plaintext); piped, a stream kept each 1-byte frame it had not
 * passed on (paused) and `to` queued up to its highWaterMark of 1-byte writes, each keeping its read
 * alive. Here `from` is read through H2Intake (held as bytes, at most one flow-control window, while
 * `to` holds its highWaterMark: the window stays shut, as with pipe), and small frames (under
 * SMALL_CHUNK) are copied into a stage that leaves in one write at the end of the session's read (a
 * setImmediate) or when full, so that what `to` queues is counted by its writableLength within a
 * few bytes. The bytes, their order and the end are those of `from`; flow control stays end to end.
 */
function relayH2Body(from: Http2Stream, to: Http2Stream, touch: () => void, end: () => void): void {
  const intake = H2Intake.of(from);
  const stage = new ChunkStage(false);
  let flush: NodeJS.Immediate | undefined;
  let waiting = false;
  const gone = () => to.destroyed || to.closed || to.writableEnded;
  const write = (bytes: Buffer) => {
    if (gone()) {
      // `to` was reset or closed: `from` is not read further (its window stays shut), as with pipe.
      intake.hold();
      return;
    }
    if (to.write(bytes) || waiting) return;
    waiting = true;
    intake.hold();
    to.once("drain", () => {
      waiting = false;
      intake.release();
    });
  };
  const flushStage = () => {
    if (flush !== undefined) clearImmediate(flush);
    flush = undefined;
    const staged = stage.take();
    if (staged !== undefined) write(staged);
  };
  intake.start({
    data: (chunk) => {
      touch();
      if (chunk.length === 0) return;
      if (chunk.length < SMALL_CHUNK) {
        const full = stage.add(chunk);
        if (full !== undefined) write(full);
        flush ??= setImmediate(flushStage);
        return;
      }
      flushStage();
      write(chunk);
    },
    end: () => {
      flushStage();
      end();
    },
  });
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
