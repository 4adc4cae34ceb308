import type { Http2SecureServer, IncomingHttpHeaders, ServerHttp2Stream } from "node:http2";
import { MeshwardError } from "../../errors.ts";
import { isGrpcRequest } from "./grpc.ts";

/**
 * Sends the server's gRPC streams to `onGrpc` and every other HTTP/2 stream to Node's
 * compatibility layer (the `request` event). Adding a `request` listener makes Node add one
 * `stream` listener that builds an Http2ServerRequest/Response pair per stream and emits
 * `request`; this takes that listener's place and calls it only for streams that are not gRPC.
 * Call it after the `request` listener is added.
 */
export function routeGrpcStreams(server: Http2SecureServer, onGrpc: (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => void): void {
  const compat = server.listeners("stream") as ((...args: unknown[]) => void)[];
  if (server.listenerCount("request") === 0 || compat.length !== 1) {
    // Another Node release wiring its compatibility layer differently: refuse to start rather
    // than leave HTTP/2 requests unanswered.
    throw new MeshwardError("E_INTERNAL", `this Node.js release (${process.version}) does not wire HTTP/2 requests through one 'stream' listener; the CA cannot route gRPC apart from HTTPS`);
  }
  server.removeAllListeners("stream");
  server.on("stream", (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, ...rest: unknown[]) => {
    if (isGrpcRequest(headers)) onGrpc(stream, headers);
    else compat[0]!.call(server, stream, headers, ...rest);
  });
}
