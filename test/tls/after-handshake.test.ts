import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { Agent, createServer as createHttpsServer, request, type RequestOptions } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createServer } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tlsAfterHandshakeFailure, watchHandshake } from "../../src/tls/after-handshake.ts";
import { SECURE_OPTIONS } from "../../src/tls/policy.ts";
import { opensslServerRenegotiating } from "../helpers/openssl-renegotiate.ts";

// OpenSSL gives the same "sslv3 alert handshake failure" to a client whose initial handshake a
// server refused (here: TLS 1.2, a client certificate required and none sent) and to a client that
// refused a renegotiation (openssl s_server's answer to its no_renegotiation warning). Only the
// second is named a likely renegotiation: the name depends on the socket's state, not the text.
let dir: string;
let certFile: string;
let keyFile: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "meshward-after-handshake-"));
  certFile = join(dir, "server.crt");
  keyFile = join(dir, "server.key");
  execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", keyFile, "-out", certFile, "-days", "1", "-subj", "/CN=server", "-addext", "subjectAltName=IP:127.0.0.1"], { stdio: "ignore" });
});

afterAll(() => {
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
});

/** A GET whose socket is watched, as meshward's node:https clients do; resolves with the error. */
function failingGet(options: RequestOptions): Promise<Error> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", path: "/x", ca: readFileSync(certFile), secureOptions: SECURE_OPTIONS, agent: false, ...options }, (res) => {
      res.resume();
      res.on("end", () => reject(new Error(`expected a failure, got HTTP ${res.statusCode}`)));
    });
    req.on("socket", watchHandshake);
    req.on("error", resolve);
    req.end();
  });
}

describe("tlsAfterHandshakeFailure", () => {
  it("names an alert after the handshake (a refused renegotiation), keeping OpenSSL's text", async () => {
    const server = await opensslServerRenegotiating(certFile, keyFile);
    try {
      const failed = failingGet({ port: server.port });
      const { refusedByClient } = await server.renegotiateThenReply("GET /x", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
      expect(refusedByClient).toBe(true);
      const error = await failed;
      expect(error.message).toMatch(/alert handshake failure/);
      expect(tlsAfterHandshakeFailure(error)).toMatch(/^the server's TLS connection failed after the handshake \(.*alert handshake failure.*\); meshward refuses TLS renegotiation, which the server may have asked for$/);
      // Found through a cause chain too (fetch, gRPC and pg wrap the socket's error).
      expect(tlsAfterHandshakeFailure(new Error("wrapped", { cause: new Error("again", { cause: error }) }))).toContain(error.message.trim());
    } finally {
      await server.stop();
    }
  });

  it("does not name the same alert during the handshake (TLS 1.2, the server requires a client certificate)", async () => {
    const server = createServer({ cert: readFileSync(certFile), key: readFileSync(keyFile), maxVersion: "TLSv1.2", requestCert: true, rejectUnauthorized: true, ca: readFileSync(certFile) });
    server.on("tlsClientError", () => undefined);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const error = await failingGet({ port: (server.address() as AddressInfo).port });
      expect(error.message).toMatch(/alert handshake failure/);
      expect(tlsAfterHandshakeFailure(error)).toBeUndefined();
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it("watches a socket once, however many requests a keep-alive agent sends over it", async () => {
    const server = createHttpsServer({ cert: readFileSync(certFile), key: readFileSync(keyFile) }, (_req, res) => res.end("ok"));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const sockets = new Set<unknown>();
      const listeners: number[] = [];
      for (let i = 0; i < 12; i++) {
        await new Promise<void>((resolve, reject) => {
          const req = request({ host: "127.0.0.1", port: (server.address() as AddressInfo).port, path: "/", ca: readFileSync(certFile), agent }, (res) => {
            res.resume();
            res.on("end", resolve);
          });
          req.on("socket", (socket) => {
            watchHandshake(socket);
            sockets.add(socket);
            listeners.push(socket.listenerCount("error") + socket.listenerCount("secureConnect"));
          });
          req.on("error", reject);
          req.end();
        });
      }
      expect(sockets.size).toBe(1);
      expect(new Set(listeners.slice(1)).size).toBe(1); // no listener added per reuse
    } finally {
      agent.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it("does not name errors that are not OpenSSL's, nor values that are not errors", () => {
    expect(tlsAfterHandshakeFailure(Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" }))).toBeUndefined();
    expect(tlsAfterHandshakeFailure("text")).toBeUndefined();
    expect(tlsAfterHandshakeFailure(undefined)).toBeUndefined();
  });
});
