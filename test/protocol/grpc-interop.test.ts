import * as grpc from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { X509Certificate } from "node:crypto";
import { connect, constants, createSecureServer, type IncomingHttpHeaders } from "node:http2";
import { request as httpsRequest } from "node:https";
import { createServer, type AddressInfo, type Server } from "node:net";
import type { TLSSocket } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { callUnary, GrpcTransportError } from "../../src/protocol/grpc-unary.ts";
import { encodeSignRequest, SIGN_CERTIFICATE_PATH, TokenValidator } from "../../src/protocol/sentry.ts";
import { createCsr } from "../../src/pki/csr.ts";
import { generateKeyPair } from "../../src/pki/keys.ts";
import { createTestPki, type TestPki } from "../helpers/openssl-pki.ts";
import { startMeshCa, TD, type MeshCa } from "../proxy/fixtures.ts";
import { packageFile } from "../../src/util/package-files.ts";

// Both ends of the CA's gRPC checked against @grpc/grpc-js, the reference library: meshward's
// unary client against a grpc-js server, and a grpc-js client with stubs generated from
// proto/sentry.proto (what a Dapr sidecar does) against the meshward CA.

describe("meshward's unary gRPC client against a @grpc/grpc-js server", () => {
  let pki: TestPki;
  let server: grpc.Server;
  let port: number;
  let closedPort: number;
  const silentEnd = new Set<grpc.ServerUnaryCall<Buffer, Buffer>>();

  beforeAll(async () => {
    pki = createTestPki({ trustDomain: "grpc.test" });
    const leaf = pki.issueLeaf({ spiffeId: "spiffe://grpc.test/ns/default/echo", dnsNames: ["localhost"] });
    server = new grpc.Server();
    server.register<Buffer, Buffer>(
      SIGN_CERTIFICATE_PATH,
      (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
        const text = call.request.toString();
        if (text === "deny") {
          const metadata = new grpc.Metadata();
          metadata.set("meshward-error-code", "E_TOKEN_INVALID");
          callback({ code: grpc.status.PERMISSION_DENIED, details: "nope: ünïcode %", metadata });
        } else if (text === "hang") {
          silentEnd.add(call); // never answered: the client's deadline decides
        } else {
          callback(null, Buffer.from(`echo:${text}`));
        }
      },
      (b: Buffer) => b,
      (b: Buffer) => b,
      "unary",
    );
    const credentials = grpc.ServerCredentials.createSsl(null, [{ private_key: Buffer.from(leaf.keyPem), cert_chain: Buffer.from(leaf.chainPem) }], false);
    port = await new Promise<number>((resolve, reject) => server.bindAsync("127.0.0.1:0", credentials, (e, p) => (e ? reject(e) : resolve(p))));
    const probe: Server = createServer();
    closedPort = await new Promise<number>((resolve) => probe.listen(0, "127.0.0.1", () => resolve((probe.address() as { port: number }).port)));
    await new Promise((resolve) => probe.close(resolve));
  });

  afterAll(async () => {
    server?.forceShutdown(); // the "hang" call may still be open: no graceful wait
    pki?.cleanup();
  });

  const call = (text: string, overrides: { port?: number; timeoutMs?: number; ca?: string } = {}) =>
    callUnary({
      url: `https://127.0.0.1:${overrides.port ?? port}`,
      tls: { ca: overrides.ca ?? pki.root.certPem, servername: "localhost" },
      path: SIGN_CERTIFICATE_PATH,
      authority: "localhost",
      message: Buffer.from(text),
      timeoutMs: overrides.timeoutMs ?? 5_000,
    });

  it("gets the answer message with status OK", async () => {
    const result = await call("hello");
    expect(result.status).toBe(0);
    expect(result.message?.toString()).toBe("echo:hello");
  });

  it("reads the status, the percent-decoded message and the metadata of an error", async () => {
    const result = await call("deny");
    expect(result.status).toBe(grpc.status.PERMISSION_DENIED);
    expect(result.details).toBe("nope: ünïcode %");
    expect(result.metadata["meshward-error-code"]).toBe("E_TOKEN_INVALID");
    expect(result.message).toBeUndefined();
  });

  it("gives up at its deadline with DEADLINE_EXCEEDED when the server never answers", async () => {
    const error = await call("hang", { timeoutMs: 300 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(GrpcTransportError);
    expect((error as GrpcTransportError).status).toBe(grpc.status.DEADLINE_EXCEEDED);
  });

  it("reports a closed port as UNAVAILABLE", async () => {
    const error = await call("x", { port: closedPort }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(GrpcTransportError);
    expect((error as GrpcTransportError).status).toBe(grpc.status.UNAVAILABLE);
    expect(String((error as Error).message)).toMatch(/ECONNREFUSED/);
  });

  it("reports a response cut off after its headers (the server died) as UNAVAILABLE, one that ended without a status as UNKNOWN", async () => {
    // Seen in test/e2e/ca-ha.test.ts: a replica killed between the headers and the trailers of an
    // answer gave UNKNOWN, which the CA client does not fail over on.
    const leaf = pki.issueLeaf({ spiffeId: "spiffe://grpc.test/ns/default/dying", dnsNames: ["localhost"] });
    const server = createSecureServer({ cert: leaf.chainPem, key: leaf.keyPem });
    const sockets = new Set<TLSSocket>();
    server.on("secureConnection", (socket) => sockets.add(socket));
    server.on("stream", (stream, headers) => {
      stream.respond({ ":status": 200, "content-type": "application/grpc" });
      if (headers[":path"] === "/ended/Call") stream.end();
      // As kill -9 does: the connection goes, no trailers, no RST_STREAM, no GOAWAY.
      else stream.write(Buffer.from([0, 0, 0, 0, 9]), () => setTimeout(() => sockets.forEach((socket) => socket.destroy()), 50));
    });
    server.on("sessionError", () => undefined);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const dyingPort = (server.address() as AddressInfo).port;
    try {
      const unary = (path: string) =>
        callUnary({ url: `https://127.0.0.1:${dyingPort}`, tls: { ca: pki.root.certPem, servername: "localhost" }, path, authority: "localhost", message: Buffer.from("x"), timeoutMs: 5_000 }).catch((e: unknown) => e);
      const cut = await unary("/cut/Call");
      expect(cut).toBeInstanceOf(GrpcTransportError);
      expect(cut).toMatchObject({ status: grpc.status.UNAVAILABLE, message: expect.stringMatching(/cut off after HTTP 200/) });
      expect(await unary("/ended/Call")).toMatchObject({ status: grpc.status.UNKNOWN, message: "HTTP 200 without a gRPC status" });
    } finally {
      server.close();
    }
  });

  it("refuses a server whose certificate does not chain to the given roots", async () => {
    const other = createTestPki({ trustDomain: "grpc.test", name: "other" });
    try {
      const error = await call("x", { ca: other.root.certPem }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(GrpcTransportError);
      expect(String((error as Error).message)).toMatch(/certificate/i);
    } finally {
      other.cleanup();
    }
  });
});

describe("a @grpc/grpc-js client with stubs from proto/sentry.proto against the meshward CA", () => {
  let ca: MeshCa;
  let client: grpc.Client & { SignCertificate: grpc.requestCallback<unknown> & ((req: object, md: grpc.Metadata, opts: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r?: SignResponse) => void) => void) };
  interface SignResponse {
    workload_certificate: Buffer;
    trust_chain_certificates: Buffer[];
    valid_until: { seconds: string | number };
  }

  beforeAll(async () => {
    ca = await startMeshCa();
    const definition = loadSync(packageFile("proto/sentry.proto"), { keepCase: true, enums: String, longs: String, defaults: true });
    const proto = grpc.loadPackageDefinition(definition) as unknown as { dapr: { proto: { sentry: { v1: { CA: grpc.ServiceClientConstructor } } } } };
    const credentials = grpc.credentials.createSsl(Buffer.from(ca.bundlePem));
    client = new proto.dapr.proto.sentry.v1.CA(ca.server.address, credentials, { "grpc.ssl_target_name_override": "localhost", "grpc.default_authority": "localhost" }) as never;
  });

  afterAll(async () => {
    client?.close();
    await ca?.close();
  });

  const sign = (request: object) =>
    new Promise<{ error: grpc.ServiceError | null; response: SignResponse | undefined }>((resolve) =>
      client.SignCertificate(request, new grpc.Metadata(), { deadline: Date.now() + 10_000 }, (error, response) => resolve({ error, response })),
    );

  it("signs a certificate for a join token", async () => {
    const token = await ca.token("shop", "cart");
    const csr = await createCsr({ keyPair: generateKeyPair() });
    const { error, response } = await sign({ id: "cart", namespace: "shop", trust_domain: TD, token, token_validator: "JOIN_TOKEN", certificate_signing_request: Buffer.from(csr) });
    expect(error).toBeNull();
    const leaf = new X509Certificate(response!.workload_certificate);
    expect(leaf.subjectAltName).toBe(`URI:spiffe://${TD}/ns/shop/cart`);
    expect(response!.trust_chain_certificates.length).toBeGreaterThanOrEqual(1);
    expect(Number(response!.valid_until.seconds) * 1000).toBe(new Date(leaf.validTo).getTime());
  });

  it("gets UNAUTHENTICATED with meshward-error-code for a bad token", async () => {
    const csr = await createCsr({ keyPair: generateKeyPair() });
    const { error } = await sign({ id: "cart", namespace: "shop", trust_domain: TD, token: "mwjt_forged", token_validator: "JOIN_TOKEN", certificate_signing_request: Buffer.from(csr) });
    expect(error?.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(error?.metadata.get("meshward-error-code")[0]).toMatch(/^E_TOKEN_/);
  });

  it("gets INVALID_ARGUMENT for a CSR that is not one", async () => {
    const token = await ca.token("shop", "cart2");
    const { error } = await sign({ id: "cart2", namespace: "shop", trust_domain: TD, token, token_validator: "JOIN_TOKEN", certificate_signing_request: Buffer.from("not a csr") });
    expect(error?.code).toBe(grpc.status.INVALID_ARGUMENT);
  });

  // Calls grpc-js makes without stubs: a method the CA does not serve, an oversized request.
  const raw = (path: string, message: Buffer) =>
    new Promise<{ error: grpc.ServiceError | null }>((resolve) =>
      client.makeUnaryRequest(path, (b: Buffer) => b, (b: Buffer) => b, message, new grpc.Metadata(), { deadline: Date.now() + 10_000 }, (error) => resolve({ error })),
    );

  it("gets UNIMPLEMENTED for a method the CA does not serve", async () => {
    const { error } = await raw("/dapr.proto.sentry.v1.CA/NoSuchMethod", Buffer.alloc(0));
    expect(error?.code).toBe(grpc.status.UNIMPLEMENTED);
    expect(error?.details).toMatch(/unknown method \/dapr\.proto\.sentry\.v1\.CA\/NoSuchMethod/);
  });

  it("gets RESOURCE_EXHAUSTED with E_REQUEST_TOO_LARGE for a request over maxRequestBytes, and the CA keeps serving", async () => {
    // 64 KiB is the default maxRequestBytes; 256 KiB spans several DATA frames.
    const { error } = await raw(SIGN_CERTIFICATE_PATH, Buffer.alloc(256 * 1024, 0x41));
    expect(error?.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(error?.metadata.get("meshward-error-code")[0]).toBe("E_REQUEST_TOO_LARGE");
    const token = await ca.token("shop", "after-large");
    const csr = await createCsr({ keyPair: generateKeyPair() });
    const { error: after } = await sign({ id: "after-large", namespace: "shop", trust_domain: TD, token, token_validator: "JOIN_TOKEN", certificate_signing_request: Buffer.from(csr) });
    expect(after).toBeNull();
  });

  // gRPC over HTTP/2 (grpc/grpc doc/PROTOCOL-HTTP2.md): response headers, the message, then the
  // status in trailers; a refusal sends no message and carries grpc-status in the trailers.
  it("sends a refusal as headers then grpc-status in trailers, and an answer as headers, message, trailers", async () => {
    const session = connect(`https://${ca.server.address}`, { ca: ca.bundlePem, servername: "localhost", checkServerIdentity: () => undefined });
    try {
      const exchange = (message: Buffer) =>
        new Promise<{ headers: IncomingHttpHeaders; trailers: IncomingHttpHeaders | undefined; body: Buffer; endedWithHeaders: boolean }>((resolve, reject) => {
          const stream = session.request({ ":method": "POST", ":path": SIGN_CERTIFICATE_PATH, "content-type": "application/grpc", te: "trailers" });
          let headers: IncomingHttpHeaders = {};
          let trailers: IncomingHttpHeaders | undefined;
          let endedWithHeaders = false;
          const chunks: Buffer[] = [];
          stream.on("response", (h, flags: number) => {
            headers = h;
            endedWithHeaders = (flags & constants.NGHTTP2_FLAG_END_STREAM) !== 0;
          });
          stream.on("trailers", (t) => (trailers = t));
          stream.on("data", (c: Buffer) => chunks.push(c));
          stream.on("error", reject);
          stream.on("close", () => resolve({ headers, trailers, body: Buffer.concat(chunks), endedWithHeaders }));
          const frame = Buffer.alloc(5);
          frame.writeUInt32BE(message.length, 1);
          stream.end(Buffer.concat([frame, message]));
        });
      const refused = await exchange(Buffer.from([0x0a, 0x03, 0x61, 0x62, 0x63])); // id "abc", no CSR, no token
      expect(refused.headers[":status"]).toBe(200);
      expect(refused.headers["content-type"]).toBe("application/grpc");
      expect(refused.headers["grpc-status"]).toBeUndefined();
      expect(refused.endedWithHeaders).toBe(false);
      expect(refused.trailers?.["grpc-status"]).toBeDefined();
      expect(refused.trailers?.["grpc-status"]).not.toBe("0");
      expect(refused.trailers?.["meshward-error-code"]).toMatch(/^E_/);
      expect(refused.body.length).toBe(0);

      const token = await ca.token("shop", "wire");
      const csr = await createCsr({ keyPair: generateKeyPair() });
      const ok = await exchange(Buffer.from(encodeSignRequest({ id: "wire", namespace: "shop", trustDomain: TD, token, tokenValidator: TokenValidator.JOIN_TOKEN, certificateSigningRequest: Buffer.from(csr) })));
      expect(ok.headers[":status"]).toBe(200);
      expect(ok.headers["grpc-status"]).toBeUndefined();
      expect(ok.endedWithHeaders).toBe(false);
      expect(ok.trailers?.["grpc-status"]).toBe("0");
      expect(ok.body.readUInt32BE(1)).toBe(ok.body.length - 5);
    } finally {
      session.destroy();
    }
  });

  it("stops reading a request at maxRequestBytes: the rest never leaves the client (flow control, then a stream reset)", async () => {
    const session = connect(`https://${ca.server.address}`, { ca: ca.bundlePem, servername: "localhost", checkServerIdentity: () => undefined });
    session.on("error", () => undefined);
    try {
      const stream = session.request({ ":method": "POST", ":path": SIGN_CERTIFICATE_PATH, "content-type": "application/grpc", te: "trailers" });
      stream.on("error", () => undefined);
      const chunk = Buffer.alloc(64 * 1024, 0x41);
      const header = Buffer.alloc(5);
      header.writeUInt32BE(4 << 20, 1); // announces a 4 MiB message; the default limit is 64 KiB
      // Bytes that reached the connection, not write callbacks: once the CA has answered it resets the
      // stream (NO_ERROR), and Node 26 then completes the pending writes by discarding their data.
      const sentBefore = session.socket.bytesWritten;
      stream.write(header);
      let flushed = 0;
      for (let i = 0; i < 64; i++) stream.write(chunk, () => (flushed += chunk.length));
      const trailers = await new Promise<IncomingHttpHeaders>((resolve) => stream.on("trailers", resolve));
      expect(trailers["grpc-status"]).toBe(String(grpc.status.RESOURCE_EXHAUSTED));
      // A server that kept reading takes the whole 4 MiB within milliseconds on loopback; one that
      // stopped never does. A negative can only be watched for a while: 2 s here (on a machine too
      // busy to move 4 MiB in 2 s this passes without proving anything; it never fails wrongly).
      await new Promise<void>((resolve) => {
        let ticks = 0;
        const check = setInterval(() => {
          if (flushed < 64 * chunk.length && ++ticks < 200) return;
          clearInterval(check);
          resolve();
        }, 10);
      });
      expect(session.socket.bytesWritten - sentBefore).toBeLessThanOrEqual(256 * 1024);
      stream.close(constants.NGHTTP2_CANCEL);
    } finally {
      session.destroy();
    }
  });

  it("keeps serving when clients reset their calls while the CA signs", async () => {
    const session = connect(`https://${ca.server.address}`, { ca: ca.bundlePem, servername: "localhost", checkServerIdentity: () => undefined });
    session.on("error", () => undefined);
    try {
      const token = await ca.token("shop", "reset", { uses: 20 });
      const csr = await createCsr({ keyPair: generateKeyPair() });
      const message = Buffer.from(encodeSignRequest({ id: "reset", namespace: "shop", trustDomain: TD, token, tokenValidator: TokenValidator.JOIN_TOKEN, certificateSigningRequest: Buffer.from(csr) }));
      const frame = Buffer.alloc(5);
      frame.writeUInt32BE(message.length, 1);
      await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          new Promise<void>((resolve) => {
            const stream = session.request({ ":method": "POST", ":path": SIGN_CERTIFICATE_PATH, "content-type": "application/grpc", te: "trailers" });
            stream.on("error", () => undefined);
            stream.on("close", () => resolve());
            stream.end(Buffer.concat([frame, message]), () => setTimeout(() => stream.close(constants.NGHTTP2_CANCEL), i % 5));
          }),
        ),
      );
    } finally {
      session.destroy();
    }
    const after = await ca.token("shop", "after-reset");
    const { error } = await sign({ id: "after-reset", namespace: "shop", trust_domain: TD, token: after, token_validator: "JOIN_TOKEN", certificate_signing_request: Buffer.from(await createCsr({ keyPair: generateKeyPair() })) });
    expect(error).toBeNull();
  });

  it("still serves the HTTPS API on the same port, over HTTP/2 and HTTP/1.1", async () => {
    const viaH2 = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const session = connect(`https://${ca.server.address}`, { ca: ca.bundlePem, servername: "localhost", checkServerIdentity: () => undefined });
      session.on("error", reject);
      const stream = session.request({ ":path": "/v1/bundle" });
      let status = 0;
      let body = "";
      stream.on("response", (h) => (status = Number(h[":status"])));
      stream.setEncoding("utf8");
      stream.on("data", (d: string) => (body += d));
      stream.on("error", reject);
      stream.on("close", () => {
        session.destroy();
        resolve({ status, body });
      });
    });
    expect(viaH2.status).toBe(200);
    expect(viaH2.body).toBe(ca.bundlePem);
    const viaH1 = await new Promise<{ status: number; body: string; version: string }>((resolve, reject) => {
      const req = httpsRequest({ host: ca.server.host, port: ca.server.port, path: "/v1/bundle", ca: ca.bundlePem, servername: "localhost", checkServerIdentity: () => undefined, agent: false }, (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (d: string) => (body += d));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body, version: res.httpVersion }));
      });
      req.on("error", reject);
      req.end();
    });
    expect(viaH1).toEqual({ status: 200, body: ca.bundlePem, version: "1.1" });
  });
});
