/**
 * A lean unary gRPC client for load generation: one HTTP/2 mTLS session, length-prefixed
 * protobuf requests, the call's status read from the grpc-status trailer (gRPC over HTTP/2
 * as the spec describes it). grpc-js costs ~0.5 ms of CPU per call on this machine's kind;
 * on 2 shared cores that is CPU the server under test no longer has.
 */
import { connect, constants, type ClientHttp2Session } from "node:http2";
import type { TLSSocket } from "node:tls";

export interface H2GrpcClient {
  unary(path: string, message: Uint8Array): Promise<Buffer>;
  close(): void;
  /** The negotiated TLS version, e.g. "TLSv1.3". */
  readonly tlsVersion: string | undefined;
}

export async function connectH2Grpc(address: string, tls: { ca: string; key: string; cert: string; servername: string }): Promise<H2GrpcClient> {
  const session: ClientHttp2Session = connect(`https://${address}`, { ...tls, checkServerIdentity: () => undefined });
  await new Promise<void>((resolve, reject) => {
    session.once("connect", () => resolve());
    session.once("error", reject);
  });
  session.on("error", () => undefined);
  return {
    unary(path, message) {
      return new Promise((resolve, reject) => {
        const stream = session.request({
          [constants.HTTP2_HEADER_METHOD]: "POST",
          [constants.HTTP2_HEADER_PATH]: path,
          "content-type": "application/grpc",
          te: "trailers",
        });
        const chunks: Buffer[] = [];
        let status: string | undefined;
        let statusMessage = "";
        const readStatus = (headers: Record<string, unknown>) => {
          if (headers["grpc-status"] !== undefined) {
            status = String(headers["grpc-status"]);
            statusMessage = String(headers["grpc-message"] ?? "");
          }
        };
        stream.on("response", readStatus);
        stream.on("trailers", readStatus);
        stream.on("data", (chunk: Buffer) => chunks.push(chunk));
        stream.on("error", reject);
        stream.on("close", () => {
          if (status !== "0") return reject(new Error(`gRPC status ${status ?? "missing"}: ${decodeURIComponent(statusMessage)}`));
          const body = Buffer.concat(chunks);
          if (body.length < 5 || body.readUInt32BE(1) !== body.length - 5) return reject(new Error("malformed gRPC response framing"));
          resolve(body.subarray(5));
        });
        const header = Buffer.alloc(5);
        header.writeUInt32BE(message.length, 1);
        stream.end(Buffer.concat([header, message]));
      });
    },
    close: () => session.close(),
    tlsVersion: (session.socket as TLSSocket).getProtocol() ?? undefined,
  };
}
