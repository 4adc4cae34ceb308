import { constants as h2 } from "node:http2";
import type { ServerHttp2Stream } from "node:http2";
import { STATUS_CODES } from "node:http";
import type { Socket } from "node:net";
import type { LabelledHistogram } from "../telemetry/histogram.ts";
import { eventNow } from "./event-clock.ts";

/** gRPC status codes meshward answers with itself. */
export const GrpcStatus = { NOT_FOUND: 5, PERMISSION_DENIED: 7, RESOURCE_EXHAUSTED: 8, INTERNAL: 13, UNAVAILABLE: 14, UNAUTHENTICATED: 16 } as const;

/** An answer the proxy gives itself (denial, unreachable upstream, unknown app). */
export interface ProxyAnswer {
  readonly status: number;
  readonly grpcStatus: number;
  /** Stable E_ code, also the JSON body's "error". */
  readonly code: string;
  readonly message: string;
  readonly extra?: Record<string, unknown>;
}

/** The JSON body of a proxy answer: {"error": code, "message": …, …extra}. */
function answerBody(answer: ProxyAnswer): string {
  return `${JSON.stringify({ error: answer.code, message: answer.message, ...answer.extra })}\n`;
}

/** The answer as a complete HTTP/1.1 response (JSON body, stable E_ code in x-meshward-error). */
export function answerText(answer: ProxyAnswer, close: boolean): string {
  const text = answerBody(answer);
  return (
    `HTTP/1.1 ${answer.status} ${STATUS_CODES[answer.status] ?? ""}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(text)}\r\n` +
    `x-meshward-error: ${answer.code}\r\n${close ? "connection: close\r\n" : ""}\r\n${text}`
  );
}

/** How long a client may keep its side open after the response that closed the connection was flushed (as the HTTP/1 relay). */
export const CLOSE_GRACE_MS = 1000;

/**
 * Closes a connection no HTTP parser owns any more (an Upgrade request that was not joined) once
 * its last response, sent with `connection: close`, is written and ended (RFC 9112 §9.6: the
 * server closes after such a response). The client's further bytes are read and dropped, so
 * its FIN closes the socket at once; one that keeps its side open is destroyed CLOSE_GRACE_MS
 * after the response was with the kernel, and one that stops reading it after `stuckMs`
 * (limits.idleTimeout) without progress. Without this such a connection had no timer at all and
 * held its listener and per-address slots until the age cap.
 */
export function closeAfterResponse(socket: Socket, stuckMs: number): void {
  if (socket.destroyed) return;
  socket.setTimeout(stuckMs, () => socket.destroy());
  socket.resume();
  const grace = () => {
    const timer = setTimeout(() => socket.destroy(), CLOSE_GRACE_MS);
    timer.unref();
    socket.once("close", () => clearTimeout(timer));
  };
  if (socket.writableFinished) grace();
  else socket.once("finish", grace);
}

/**
 * The answer written straight to a socket no HTTP parser owns any more (an Upgrade request
 * the sidecar will not forward), then closed (closeAfterResponse).
 */
export function answerRawHttp1(socket: Socket, answer: ProxyAnswer, stuckMs: number): void {
  if (!socket.writable) return void socket.destroy();
  socket.end(answerText(answer, true));
  closeAfterResponse(socket, stuckMs);
}

/** HTTP/2: JSON with the HTTP status, or for gRPC a trailers-only response carrying grpc-status. */
export function answerH2(stream: ServerHttp2Stream, answer: ProxyAnswer, grpc: boolean): void {
  if (stream.destroyed || stream.closed) return;
  if (stream.headersSent) {
    stream.close(h2.NGHTTP2_INTERNAL_ERROR);
    return;
  }
  if (grpc) {
    stream.respond(
      {
        ":status": 200,
        "content-type": "application/grpc",
        "grpc-status": String(answer.grpcStatus),
        "grpc-message": encodeURIComponent(`${answer.code}: ${answer.message}`),
        "x-meshward-error": answer.code,
      },
      { endStream: true },
    );
    return;
  }
  const text = answerBody(answer);
  stream.respond({ ":status": answer.status, "content-type": "application/json", "content-length": Buffer.byteLength(text), "x-meshward-error": answer.code });
  stream.end(text);
}

/**
 * RST_STREAM (NO_ERROR) once an answer is out, which frees a stream whose caller may still hold
 * its side open (RFC 9113 §8.1), one turn of the event loop after the answer: on Node 26 a reset
 * submitted in the same turn as a trailers-only answer (a gRPC refusal: respond with endStream)
 * goes out first, and the caller never sees the answer's headers, only the reset (measured with
 * node:http2 on both ends: 0 of 50 answers arrive on Node 26.12.1, 50 of 50 on Node 20.20.2, and
 * 50 of 50 on both when the reset waits for setImmediate).
 */
export function resetAfterAnswer(stream: ServerHttp2Stream): void {
  setImmediate(() => {
    if (!stream.closed && !stream.destroyed) stream.close(h2.NGHTTP2_NO_ERROR);
  });
}

export function statusClass(status: number | undefined): string {
  if (status === undefined || status === 0) return "error";
  const hundreds = Math.floor(status / 100);
  // The same strings, built once: a label built per request was also hashed per request by the histogram's lookup.
  return hundreds >= 0 && hundreds < STATUS_CLASSES.length ? STATUS_CLASSES[hundreds]! : `${hundreds}xx`;
}
const STATUS_CLASSES: readonly string[] = Array.from({ length: 10 }, (_, i) => `${i}xx`);

type DurationHistogram = LabelledHistogram<"direction" | "protocol" | "status_class">;

/** requestDuration.observe for a request that started at `startedMs` (eventNow(): performance.now(), held per I/O event). */
export function observeDuration(histogram: DurationHistogram, direction: string, protocol: string, status: string, startedMs: number): void {
  histogram.series({ direction, protocol, status_class: status }).observe((eventNow() - startedMs) / 1000);
}
