import tls from "node:tls";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MeshwardError } from "../../src/errors.ts";
import { classifyTlsError, createMeshMetrics, createMetrics, type HandshakeFailureReason } from "../../src/telemetry/metrics.ts";
import { makeTlsFixtures, type TlsFixtures } from "./tls-fixtures.ts";

// Real handshakes between a node:tls server and client on 127.0.0.1:0, with certificates
// made by the openssl CLI (see tls-fixtures.ts).

let f: TlsFixtures;
beforeAll(() => {
  f = makeTlsFixtures();
});
afterAll(() => f?.cleanup());

interface Outcome {
  clientError: Error | undefined;
  serverError: Error | undefined;
  serverSocket: tls.TLSSocket | undefined;
  serverSecured: boolean;
  clientReceived: string;
}

async function handshake(serverOptions: tls.TlsOptions, clientOptions: tls.ConnectionOptions): Promise<Outcome> {
  const outcome: Outcome = { clientError: undefined, serverError: undefined, serverSocket: undefined, serverSecured: false, clientReceived: "" };
  const server = tls.createServer(
    { key: f.server.key, cert: f.server.cert, ca: f.ca, requestCert: true, rejectUnauthorized: true, minVersion: "TLSv1.2", ...serverOptions },
    (socket) => {
      outcome.serverSecured = true;
      socket.end("hello");
    },
  );
  const serverFailed = new Promise<void>((resolve) => {
    server.on("tlsClientError", (error, socket) => {
      outcome.serverError = error;
      outcome.serverSocket = socket;
      resolve();
    });
    server.on("secureConnection", () => resolve());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  try {
    const { port } = server.address() as AddressInfo;
    await new Promise<void>((resolve) => {
      const client = tls.connect({ host: "127.0.0.1", port, servername: "localhost", ca: f.ca, ...clientOptions });
      client.setEncoding("utf8");
      client.on("data", (chunk: string) => (outcome.clientReceived += chunk));
      client.on("error", (error) => {
        outcome.clientError ??= error;
      });
      client.on("close", () => resolve());
    });
    await serverFailed;
  } finally {
    server.close();
  }
  return outcome;
}

const clientCert = () => ({ cert: f.client.cert, key: f.client.key });

describe("classifyTlsError on real handshakes", () => {
  it("control: a valid client certificate completes the handshake", async () => {
    const o = await handshake({}, clientCert());
    expect(o.serverSecured).toBe(true);
    expect(o.clientReceived).toBe("hello");
    expect(o.serverError).toBeUndefined();
    expect(o.clientError).toBeUndefined();
  });

  it.each([["TLSv1.3"], ["TLSv1.2"]] as const)("no client certificate (%s) ⇒ no_certificate on the server", async (version) => {
    const o = await handshake({ maxVersion: version }, {});
    expect(o.serverSecured).toBe(false);
    expect(classifyTlsError(o.serverError, o.serverSocket)).toBe<HandshakeFailureReason>("no_certificate");
    if (version === "TLSv1.3") expect(classifyTlsError(o.clientError)).toBe("no_certificate");
  });

  it("client certificate from another CA ⇒ unknown_ca on the server (reason read from authorizationError)", async () => {
    const o = await handshake({}, { cert: f.wrongCaClient.cert, key: f.wrongCaClient.key });
    expect(o.serverSecured).toBe(false);
    // Node reports a bare ECONNRESET here; without the socket we could not tell why.
    expect(classifyTlsError(o.serverError)).toBe("other");
    expect(classifyTlsError(o.serverError, o.serverSocket)).toBe("unknown_ca");
  });

  it("server certificate from a CA the client does not trust ⇒ unknown_ca on the client", async () => {
    const o = await handshake({}, { ...clientCert(), ca: f.otherCa });
    expect(o.clientError).toBeDefined();
    expect(classifyTlsError(o.clientError)).toBe("unknown_ca");
  });

  it("expired client certificate ⇒ expired on the server", async () => {
    const o = await handshake({}, { cert: f.expiredClient.cert, key: f.expiredClient.key });
    expect(o.serverSecured).toBe(false);
    expect(classifyTlsError(o.serverError, o.serverSocket)).toBe("expired");
  });

  it("expired server certificate ⇒ expired on the client", async () => {
    const o = await handshake({ cert: f.expiredServer.cert, key: f.expiredServer.key }, clientCert());
    expect(classifyTlsError(o.clientError)).toBe("expired");
  });

  it("revoked client certificate (CRL made by openssl ca) ⇒ revoked; a valid one still passes with the same CRL", async () => {
    const o = await handshake({ crl: f.crl }, { cert: f.revokedClient.cert, key: f.revokedClient.key });
    expect(o.serverSecured).toBe(false);
    expect(classifyTlsError(o.serverError, o.serverSocket)).toBe("revoked");
    const ok = await handshake({ crl: f.crl }, clientCert());
    expect(ok.serverSecured).toBe(true);
  });

  it("TLS 1.1 client against a TLS 1.2-minimum server ⇒ protocol_version on both sides", async () => {
    const o = await handshake({}, { ...clientCert(), minVersion: "TLSv1.1", maxVersion: "TLSv1.1", ciphers: "DEFAULT@SECLEVEL=0" });
    expect(o.serverSecured).toBe(false);
    expect(classifyTlsError(o.serverError, o.serverSocket)).toBe("protocol_version");
    expect(classifyTlsError(o.clientError)).toBe("protocol_version");
  });

  it("server with an unexpected SPIFFE ID ⇒ spiffe_mismatch on the client", async () => {
    const expected = "spiffe://example.org/ns/default/payments";
    const checkServerIdentity = (_host: string, cert: tls.PeerCertificate) =>
      cert.subjectaltname?.split(", ").includes(`URI:${expected}`)
        ? undefined
        : new MeshwardError("E_SPIFFE_MISMATCH", `the server is not ${expected}`);
    const o = await handshake({}, { ...clientCert(), checkServerIdentity });
    expect(o.clientError).toBeInstanceOf(MeshwardError);
    expect(classifyTlsError(o.clientError)).toBe("spiffe_mismatch");
  });

  it("host name mismatch (ERR_TLS_CERT_ALTNAME_INVALID) ⇒ spiffe_mismatch", async () => {
    const o = await handshake({}, { ...clientCert(), servername: "other.example" });
    expect(o.clientError && (o.clientError as NodeJS.ErrnoException).code).toBe("ERR_TLS_CERT_ALTNAME_INVALID");
    expect(classifyTlsError(o.clientError)).toBe("spiffe_mismatch");
  });

  it("counts classified failures in the shared handshake metrics", async () => {
    const metrics = createMetrics();
    const mesh = createMeshMetrics(metrics);
    const o = await handshake({}, { cert: f.expiredClient.cert, key: f.expiredClient.key });
    expect(mesh.handshakeFailed("inbound", o.serverError, o.serverSocket)).toBe("expired");
    mesh.handshakeSucceeded("inbound");
    const text = await metrics.text();
    expect(text).toContain('meshward_tls_handshake_failures_total{direction="inbound",reason="expired"} 1');
    expect(text).toContain('meshward_tls_handshake_failures_total{direction="inbound",reason="revoked"} 0');
    expect(text).toContain('meshward_tls_handshakes_total{direction="inbound",result="failed"} 1');
    expect(text).toContain('meshward_tls_handshakes_total{direction="inbound",result="ok"} 1');
  });
});

describe("classifyTlsError without sockets", () => {
  it.each([
    [new MeshwardError("E_CERT_REVOKED", "revoked"), "revoked"],
    [new MeshwardError("E_PEER_UNTRUSTED", "the client certificate was not verified: CERT_HAS_EXPIRED"), "expired"],
    [new Error("wrapped", { cause: Object.assign(new Error("x"), { code: "ERR_SSL_TLSV1_ALERT_UNKNOWN_CA" }) }), "unknown_ca"],
    [Object.assign(new Error("x"), { code: "ECONNRESET" }), "other"],
    ["not an error", "other"],
    [undefined, "other"],
  ] as const)("%s ⇒ %s", (error, reason) => {
    expect(classifyTlsError(error)).toBe(reason);
  });
});
