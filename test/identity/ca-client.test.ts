import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isMeshwardError } from "../../src/errors.ts";
import { caSpiffeId, fetchFromCa, requestCertificate, type CaConnection } from "../../src/identity/ca-client.ts";
import { callUnary } from "../../src/protocol/grpc-unary.ts";
import { encodePrivateKey } from "../../src/pki/keys.ts";
import { writeSecretFileAtomic } from "../../src/util/files.ts";
import { httpsGetText, opensslServerRenegotiating } from "../helpers/openssl-renegotiate.ts";
import { createTestPki, type TestPki } from "../helpers/test-pki.ts";

// The CA client's HTTPS path (fetchFromCa: bundle, CRL, JWKS) against a real `openssl s_server`
// that holds a certificate with the CA's SPIFFE ID, made at test time, and that renegotiates
// (TLS 1.2 HelloRequest with a client-certificate request) once the GET has arrived. The client
// must refuse, as Envoy refuses server-initiated renegotiation upstream unless
// `allow_renegotiation` is set (envoyproxy/envoy
// api/envoy/extensions/transport_sockets/tls/v3/tls.proto, UpstreamTlsContext: "If true,
// server-initiated TLS renegotiation will be allowed", default false).
const TD = "reneg.test";
const REPLY = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\nConnection: close\r\n\r\nbundle-body";
let pki: TestPki;
let dir: string;
let certFile: string;
let keyFile: string;

beforeAll(async () => {
  pki = await createTestPki({ trustDomain: TD });
  const svid = pki.issueSvid({ spiffeId: caSpiffeId(TD), dnsNames: ["localhost"] });
  dir = mkdtempSync(join(tmpdir(), "meshward-ca-client-"));
  certFile = join(dir, "cert.pem");
  keyFile = join(dir, "key.pem");
  writeFileSync(certFile, svid.certChainPem);
  writeSecretFileAtomic(keyFile, encodePrivateKey(svid.privateKey));
});

afterAll(() => {
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
});

function connection(port: number): CaConnection {
  return { address: `127.0.0.1:${port}`, bundlePem: pki.rootPem, trustDomain: TD, timeoutMs: 10_000 };
}

describe("fetchFromCa refuses a CA that renegotiates (real openssl s_server, TLS 1.2)", () => {
  it("the GET fails with a MeshwardError naming the CA, and the reply sent after the request is never read", async () => {
    // -cert_chain: s_server sends only the leaf of -cert otherwise.
    const server = await opensslServerRenegotiating(certFile, keyFile, ["-cert_chain", certFile]);
    try {
      const fetched = fetchFromCa(connection(server.port), "/ca/bundle").then(
        (body) => ({ body: body.toString("utf8"), error: undefined }),
        (error: unknown) => ({ body: undefined, error }),
      );
      const { refusedByClient } = await server.renegotiateThenReply("GET /ca/bundle", REPLY);
      const { body, error } = await fetched;
      expect(body).toBeUndefined();
      expect(isMeshwardError(error, "E_CA_UNAVAILABLE")).toBe(true);
      expect((error as Error).message).toContain(`127.0.0.1:${server.port}`);
      // Named for what it likely is, OpenSSL's text kept.
      expect((error as Error).message).toMatch(/the server's TLS connection failed after the handshake \(.*alert handshake failure.*\); meshward refuses TLS renegotiation, which the server may have asked for/);
      expect(refusedByClient).toBe(true);
      expect(server.output()).toContain("SSL3 alert read:warning:no renegotiation");
    } finally {
      await server.stop();
    }
  });

  it("control: the same flow with node:https and the same trust but without SSL_OP_NO_RENEGOTIATION renegotiates and reads the reply", async () => {
    const server = await opensslServerRenegotiating(certFile, keyFile, ["-cert_chain", certFile]);
    try {
      const fetched = httpsGetText({ host: "127.0.0.1", port: server.port, path: "/ca/bundle", ca: pki.rootPem, servername: "localhost", minVersion: "TLSv1.2" });
      const { refusedByClient } = await server.renegotiateThenReply("GET /ca/bundle", REPLY);
      expect(refusedByClient).toBe(false);
      expect(await fetched).toBe("bundle-body");
    } finally {
      await server.stop();
    }
  });
});

// requestCertificate speaks gRPC over HTTP/2 (src/protocol/grpc-unary.ts): s_server offers ALPN
// h2 and renegotiates once the HTTP/2 connection preface has arrived. It cannot answer gRPC, so the
// control shows only s_server's verdict (the client renegotiated), then ends the connection.
describe("requestCertificate refuses a CA that renegotiates (gRPC over HTTP/2, real openssl s_server)", () => {
  const request = { csrPem: "not read by s_server", token: "t", validator: "INSECURE", namespace: "default", appId: "app" } as const;

  it("the call fails with a MeshwardError naming the CA; s_server saw the refusal", async () => {
    const server = await opensslServerRenegotiating(certFile, keyFile, ["-cert_chain", certFile, "-alpn", "h2"]);
    try {
      const signed = requestCertificate(connection(server.port), request).then(
        () => undefined,
        (error: unknown) => error,
      );
      const { refusedByClient } = await server.renegotiateThenReply("PRI * HTTP/2.0", "");
      // Checked first: a client that renegotiated would otherwise wait for its deadline.
      expect(refusedByClient).toBe(true);
      expect(server.output()).toContain("SSL3 alert read:warning:no renegotiation");
      const error = await signed;
      expect(isMeshwardError(error, "E_CA_UNAVAILABLE")).toBe(true);
      expect((error as Error).message).toContain(`127.0.0.1:${server.port}`);
      expect((error as Error).message).toMatch(/the server's TLS connection failed after the handshake \(.*alert handshake failure.*\); meshward refuses TLS renegotiation, which the server may have asked for/);
    } finally {
      await server.stop();
    }
  });

  it("control: the same gRPC client code with the same trust but without SSL_OP_NO_RENEGOTIATION renegotiates", async () => {
    const server = await opensslServerRenegotiating(certFile, keyFile, ["-cert_chain", certFile, "-alpn", "h2"]);
    try {
      const call = callUnary({
        url: `https://127.0.0.1:${server.port}`,
        tls: { ca: pki.rootPem, servername: "localhost" },
        path: "/spiffe.sentry.v1.CA/SignCertificate",
        authority: "localhost",
        message: Buffer.alloc(0),
        timeoutMs: 30_000,
      }).catch((error: unknown) => error);
      const { refusedByClient } = await server.renegotiateThenReply("PRI * HTTP/2.0", "");
      expect(refusedByClient).toBe(false);
      expect(server.output()).not.toContain("no renegotiation");
      await server.stop(); // ends the call: s_server cannot answer gRPC
      await call;
    } finally {
      await server.stop();
    }
  });
});

// An endpoint that accepts TCP and never answers the TLS handshake, nor reads (a hung replica, a
// load balancer with a dead backend): after a timed-out sign call, the client's socket must be gone.
// session.destroy() alone only ended it (a FIN the hung peer never reads), because a session whose
// socket is still in its handshake has not taken that socket: it stayed open, one fd per attempt.
describe("a timed-out sign call closes its connection when the handshake never finished", () => {
  async function hungEndpoint() {
    const held = new Set<Socket>();
    const server = createServer({ pauseOnConnect: true }, (s) => {
      held.add(s);
      s.on("error", () => undefined);
      s.on("close", () => held.delete(s));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as { port: number }).port;
    // This process's sockets connected to the endpoint (the client side; the server's accepted
    // sockets have the client's ephemeral port as their remote port).
    const clientSockets = () => (process as unknown as { _getActiveHandles(): { remotePort?: number }[] })._getActiveHandles().filter((h) => h.remotePort === port).length;
    // Destroyed sockets leave the active handles once their close has run (bounded wait).
    const clientSocketsSettled = async () => {
      for (let i = 0; i < 50 && clientSockets() > 0; i++) await new Promise((r) => setTimeout(r, 20));
      return clientSockets();
    };
    const stop = async () => {
      for (const s of held) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    };
    return { port, clientSocketsSettled, stop, held: () => held.size };
  }

  it("requestCertificate (the CA client's gRPC path, its own createConnection)", async () => {
    const endpoint = await hungEndpoint();
    try {
      for (let i = 0; i < 3; i++) {
        const error = await requestCertificate({ ...connection(endpoint.port), timeoutMs: 300 }, { csrPem: "x", token: "t", appId: "a", namespace: "n", validator: "JOIN_TOKEN" }).catch((e: unknown) => e);
        expect(isMeshwardError(error) && error.code).toBe("E_CA_UNAVAILABLE");
      }
      expect(endpoint.held()).toBe(3); // the endpoint accepted all three
      expect(await endpoint.clientSocketsSettled()).toBe(0);
    } finally {
      await endpoint.stop();
    }
  });

  it("callUnary with node:http2's default connection", async () => {
    const endpoint = await hungEndpoint();
    try {
      const error = await callUnary({
        url: `https://127.0.0.1:${endpoint.port}`,
        tls: { ca: pki.rootPem, servername: "localhost" },
        path: "/spiffe.sentry.v1.CA/SignCertificate",
        authority: "localhost",
        message: Buffer.alloc(0),
        timeoutMs: 300,
      }).catch((e: unknown) => e);
      expect((error as Error).message).toContain("no answer within 300 ms");
      expect(endpoint.held()).toBe(1);
      expect(await endpoint.clientSocketsSettled()).toBe(0);
    } finally {
      await endpoint.stop();
    }
  });
});
