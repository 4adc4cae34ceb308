import type { AddressInfo } from "node:net";
import { createServer as createTlsServer, type Server as TlsServer } from "node:tls";
import type { TestLeaf } from "./openssl-pki.ts";

/** A TLS echo server and what it saw. */
export interface TlsEchoServer {
  readonly port: number;
  /** What each accepted connection received, in order of acceptance. */
  readonly received: string[];
  /** Whether each connection's client sent its end (FIN). */
  readonly ended: boolean[];
  close(): Promise<void>;
}

/**
 * A node:tls server holding `leaf` (asks for a client certificate, checks none) that echoes what
 * it reads; `holdOpen`: it keeps its side open after the client's end, so nothing it does ends a
 * connection. Its connections and itself are closed by the functions it pushes on `cleanups`.
 */
export async function startTlsEchoServer(leaf: TestLeaf, holdOpen: boolean, cleanups: (() => unknown)[]): Promise<TlsEchoServer> {
  const received: string[] = [];
  const ended: boolean[] = [];
  const server: TlsServer = createTlsServer({ cert: leaf.chainPem, key: leaf.keyPem, requestCert: true, rejectUnauthorized: false, allowHalfOpen: holdOpen }, (socket) => {
    const i = received.push("") - 1;
    ended.push(false);
    socket.on("data", (chunk: Buffer) => {
      received[i] += chunk.toString();
      if (!socket.writableEnded) socket.write(chunk);
    });
    socket.on("end", () => (ended[i] = true));
    socket.on("error", () => undefined);
    cleanups.push(() => socket.destroy());
  });
  server.on("tlsClientError", () => undefined);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const close = () => new Promise<void>((resolve) => server.close(() => resolve()));
  cleanups.push(close);
  return { port: (server.address() as AddressInfo).port, received, ended, close };
}
