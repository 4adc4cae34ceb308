import * as grpc from "@grpc/grpc-js";
import { spawn } from "node:child_process";
import { connect as netConnect } from "node:net";
import type { AddressInfo } from "node:net";
import { connect } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createMtlsServer, grpcChannelCredentials, grpcServerCredentials, peerIdentity, type MtlsServer } from "../../src/transport/index.ts";
import type { MeshwardServerCredentials } from "../../src/transport/index.ts";
import { createTestPki } from "../helpers/openssl-pki.ts";
import type { TestLeaf, TestPki } from "../helpers/openssl-pki.ts";
import { bundleOf, callWho, EchoClient, echoService, makeLogger, ManualIdentity, snapshotOf } from "./fixtures.ts";

// Found by review (stop 33): every failed handshake and every refused caller wrote a warn line,
// so anyone who could reach a meshward server (a failed handshake needs no certificate; a refused
// caller, any certificate of the mesh, a revoked one included) grew its logs without bound. They
// are now logged 5 per reason and address every 10 s, the next line saying how many were left out.
const TD = "example.org";
const logger = makeLogger();
let pki: TestPki;
let server: MtlsServer;
let port = 0;

beforeAll(async () => {
  pki = createTestPki({ trustDomain: TD });
  const identity = new ManualIdentity(snapshotOf(pki.issueLeaf({ spiffeId: `spiffe://${TD}/ns/default/api` }), bundleOf([pki])));
  server = await createMtlsServer({ identity, logger, authorize: [`spiffe://${TD}/ns/default/web`] }, (socket) => socket.end("hello\n"));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  port = (server.address() as AddressInfo).port;
});
afterAll(async () => {
  await server?.meshward.close();
  pki?.cleanup();
});

/** One connection: what the server sent before it closed ("" when it refused). */
const attempt = (leaf?: TestLeaf) =>
  new Promise<string>((resolve) => {
    const socket = connect({ host: "127.0.0.1", port, ca: pki.root.certPem, servername: "localhost", checkServerIdentity: () => undefined, ...(leaf ? { key: leaf.keyPem, cert: leaf.chainPem } : {}) });
    let text = "";
    socket.on("data", (chunk: Buffer) => (text += chunk.toString()));
    socket.on("error", () => undefined);
    socket.once("close", () => resolve(text));
  });
const warned = (pattern: RegExp) => logger.lines.filter((line) => line.startsWith("warn") && pattern.test(line)).length;

describe("a meshward server logs refusals rate-limited", () => {
  it("refused callers (a SPIFFE ID outside authorize): 5 lines for 20 refusals; the allowed caller is served", async () => {
    const other = pki.issueLeaf({ spiffeId: `spiffe://${TD}/ns/default/other` });
    for (let i = 0; i < 20; i++) expect(await attempt(other)).toBe("");
    expect(warned(/refused a connection from 127\.0\.0\.1/)).toBe(5);
    expect(await attempt(pki.issueLeaf({ spiffeId: `spiffe://${TD}/ns/default/web` }))).toBe("hello\n");
  });

  it("failed handshakes (no client certificate): 5 lines for 20 failures", async () => {
    for (let i = 0; i < 20; i++) expect(await attempt()).toBe("");
    expect(warned(/TLS handshake from 127\.0\.0\.1 failed/)).toBe(5);
  });

  it("a client certificate from another CA: logged with the verification error and the caller's address", async () => {
    const other = createTestPki({ trustDomain: TD, name: "other ca" });
    try {
      const before = warned(/mTLS server: TLS handshake from/);
      expect(await attempt(other.issueLeaf({ spiffeId: `spiffe://${TD}/ns/default/web` }))).toBe("");
      expect(logger.lines.filter((line) => /mTLS server: TLS handshake from/.test(line)).slice(before)).toEqual([
        expect.stringMatching(/^warn mTLS server: TLS handshake from 127\.0\.0\.1 failed: UNABLE_TO_GET_ISSUER_CERT_LOCALLY /),
      ]);
    } finally {
      other.cleanup();
    }
  });
});

// Found by review (ops L1): the sidecar hands its pino logger to these servers, which logged each TLS
// refusal as bare text: no `event`, the peer without its port, the SPIFFE ID only inside the
// message, so a log query on event="refused" missed the most common refusal. With `fieldLogger`
// they carry fields (event, peer, reason as in the metric, code, spiffeId when the certificate
// passed TLS verification), through the same rate limiter as before.
describe("a meshward server with a fieldLogger logs refusals with fields", () => {
  const records: { fields: Record<string, unknown>; message: string }[] = [];
  const text = makeLogger();
  const fieldLogger = { warn: (fields: Record<string, unknown>, message: string) => void records.push({ fields, message }) };
  let fpki: TestPki;
  let fserver: MtlsServer;
  let fport = 0;
  let revoked: TestLeaf;

  beforeAll(async () => {
    fpki = createTestPki({ trustDomain: TD });
    revoked = fpki.issueLeaf({ spiffeId: `spiffe://${TD}/ns/default/web` });
    const identity = new ManualIdentity(snapshotOf(fpki.issueLeaf({ spiffeId: `spiffe://${TD}/ns/default/api` }), bundleOf([fpki], new Set([revoked.serial]))));
    fserver = await createMtlsServer({ identity, logger: text, fieldLogger, authorize: [`spiffe://${TD}/ns/default/web`] }, (socket) => socket.end("hello\n"));
    await new Promise<void>((resolve) => fserver.listen(0, "127.0.0.1", resolve));
    fport = (fserver.address() as AddressInfo).port;
  });
  afterAll(async () => {
    await fserver?.meshward.close();
    fpki?.cleanup();
  });

  const tryOnce = (leaf?: TestLeaf) =>
    new Promise<string>((resolve) => {
      const socket = connect({ host: "127.0.0.1", port: fport, ca: fpki.root.certPem, servername: "localhost", checkServerIdentity: () => undefined, ...(leaf ? { key: leaf.keyPem, cert: leaf.chainPem } : {}) });
      let got = "";
      socket.on("data", (chunk: Buffer) => (got += chunk.toString()));
      socket.on("error", () => undefined);
      socket.once("close", () => resolve(got));
    });
  const of = (event: string, code: string) => records.filter((r) => r.fields.event === event && r.fields.code === code);
  const until = async (check: () => boolean) => {
    for (let i = 0; i < 200 && !check(); i++) await new Promise((r) => setTimeout(r, 25));
  };

  it("a caller outside authorize: event refused, peer with its port, reason spiffe_mismatch, the caller's SPIFFE ID; still 5 lines for 20", async () => {
    const other = fpki.issueLeaf({ spiffeId: `spiffe://${TD}/ns/default/other` });
    for (let i = 0; i < 20; i++) expect(await tryOnce(other)).toBe("");
    const lines = of("refused", "E_SPIFFE_MISMATCH");
    expect(lines).toHaveLength(5);
    expect(lines[0]!.fields).toEqual({ event: "refused", peer: expect.stringMatching(/^127\.0\.0\.1:\d+$/), reason: "spiffe_mismatch", code: "E_SPIFFE_MISMATCH", spiffeId: `spiffe://${TD}/ns/default/other` });
    expect(lines[0]!.message).toMatch(/^mTLS server refused a connection from 127\.0\.0\.1: E_SPIFFE_MISMATCH/);
    expect(text.lines.filter((line) => line.includes("refused a connection"))).toEqual([]);
    expect(await tryOnce(fpki.issueLeaf({ spiffeId: `spiffe://${TD}/ns/default/web` }))).toBe("hello\n");
  });

  it("a revoked caller: reason revoked, code E_CERT_REVOKED, its SPIFFE ID", async () => {
    expect(await tryOnce(revoked)).toBe("");
    expect(of("refused", "E_CERT_REVOKED").map((r) => r.fields)).toEqual([
      { event: "refused", peer: expect.stringMatching(/^127\.0\.0\.1:\d+$/), reason: "revoked", code: "E_CERT_REVOKED", spiffeId: `spiffe://${TD}/ns/default/web` },
    ]);
  });

  it("a failed handshake (no client certificate): event tls-handshake-failed, reason no_certificate, no SPIFFE ID", async () => {
    expect(await tryOnce()).toBe("");
    await until(() => of("tls-handshake-failed", "ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE").length > 0);
    expect(of("tls-handshake-failed", "ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE").map((r) => r.fields)).toEqual([
      { event: "tls-handshake-failed", peer: expect.stringMatching(/^127\.0\.0\.1:\d+$/), reason: "no_certificate", code: "ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE" },
    ]);
  });

  it("a certificate from another CA: reason unknown_ca, and no SPIFFE ID (it is unverified)", async () => {
    const foreign = createTestPki({ trustDomain: TD, name: "other ca" });
    try {
      expect(await tryOnce(foreign.issueLeaf({ spiffeId: `spiffe://${TD}/ns/default/web` }))).toBe("");
      await until(() => records.some((r) => r.fields.event === "tls-handshake-failed" && r.fields.reason === "unknown_ca"));
      expect(records.filter((r) => r.fields.reason === "unknown_ca").map((r) => r.fields)).toEqual([
        { event: "tls-handshake-failed", peer: expect.stringMatching(/^127\.0\.0\.1:\d+$/), reason: "unknown_ca", code: "UNABLE_TO_GET_ISSUER_CERT_LOCALLY" },
      ]);
    } finally {
      foreign.cleanup();
    }
  });
});

// Found by review (sdk-grpc): the gRPC server refused callers in the handshake and logged that, but a
// handshake that failed (a certificate from another CA, an expired one, none, TLS 1.1, plaintext)
// was not logged at all: grpc-js only traces it. It is now logged as by the other SDK servers (same
// line, same per-runtime limiter: 5 per reason and address every 10 s, then a count of the rest).
describe("a meshward gRPC server logs failed handshakes rate-limited", () => {
  const SERVER_ID = `spiffe://${TD}/ns/default/api`;
  const glog = makeLogger();
  let server: grpc.Server;
  let creds: MeshwardServerCredentials;
  let other: TestPki;
  let gport = 0;

  beforeAll(async () => {
    other = createTestPki({ trustDomain: TD, name: "other ca" });
    server = new grpc.Server();
    server.addService(echoService, {
      who: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => cb(null, Buffer.from(peerIdentity(call)?.spiffeId ?? "none")),
    });
    creds = await grpcServerCredentials(new ManualIdentity(snapshotOf(pki.issueLeaf({ spiffeId: SERVER_ID }), bundleOf([pki]))), { logger: glog });
    gport = await new Promise<number>((resolve, reject) => server.bindAsync("127.0.0.1:0", creds, (e, p) => (e ? reject(e) : resolve(p))));
  });
  afterAll(() => {
    server?.forceShutdown();
    creds?.close();
    other?.cleanup();
  });

  const handshakeLines = () => glog.lines.filter((line) => line.startsWith("warn gRPC server: TLS handshake from"));
  /** The handshake lines logged by `peer` (waits until at least one arrives). */
  async function linesOf(peer: () => Promise<void>): Promise<string[]> {
    const before = handshakeLines().length;
    await peer();
    for (let i = 0; i < 200 && handshakeLines().length === before; i++) await new Promise((r) => setTimeout(r, 25));
    await new Promise((r) => setTimeout(r, 50));
    return handshakeLines().slice(before);
  }
  /** `openssl s_client` as the peer: handshakes, then ends (stdin closed). */
  const sClient = (args: readonly string[]) =>
    new Promise<void>((resolve, reject) => {
      const child = spawn("openssl", ["s_client", "-connect", `127.0.0.1:${gport}`, "-servername", "localhost", ...args], { stdio: ["pipe", "ignore", "ignore"] });
      child.on("error", reject);
      child.on("exit", () => resolve());
      child.stdin.end();
    });
  const PLAINTEXT = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nplaintext-marker-5f3a";
  const plaintext = () =>
    new Promise<void>((resolve) => {
      const socket = netConnect(gport, "127.0.0.1", () => socket.write(PLAINTEXT));
      socket.on("error", () => undefined);
      socket.once("close", () => resolve());
    });
  const noCertificate = (localAddress: string) =>
    new Promise<void>((resolve) => {
      const socket = connect({ socket: netConnect({ host: "127.0.0.1", port: gport, localAddress }), ca: pki.root.certPem, servername: "localhost", checkServerIdentity: () => undefined, ALPNProtocols: ["h2"] });
      socket.on("error", () => undefined);
      socket.once("close", () => resolve());
    });

  // s_client sends the leaf alone (another CA's), so OpenSSL cannot even find its issuer.
  it("a client certificate from another CA (openssl s_client): one line, with the verification error", async () => {
    const leaf = other.issueLeaf({ spiffeId: `spiffe://${TD}/ns/default/web` });
    expect(await linesOf(() => sClient(["-cert", leaf.certPath, "-key", leaf.keyPath, "-CAfile", pki.rootPath]))).toEqual([
      expect.stringMatching(/^warn gRPC server: TLS handshake from 127\.0\.0\.1 failed: UNABLE_TO_VERIFY_LEAF_SIGNATURE /),
    ]);
  });

  it("an expired client certificate (openssl s_client): one line, CERT_HAS_EXPIRED", async () => {
    const leaf = pki.issueLeaf({ spiffeId: `spiffe://${TD}/ns/default/web`, notBefore: new Date(Date.now() - 2 * 86_400_000), notAfter: new Date(Date.now() - 86_400_000) });
    expect(await linesOf(() => sClient(["-cert", leaf.certPath, "-key", leaf.keyPath, "-cert_chain", pki.issuer.certPath, "-CAfile", pki.rootPath]))).toEqual([
      expect.stringMatching(/^warn gRPC server: TLS handshake from 127\.0\.0\.1 failed: CERT_HAS_EXPIRED /),
    ]);
  });

  it("no client certificate (openssl s_client): one line", async () => {
    expect(await linesOf(() => sClient(["-CAfile", pki.rootPath]))).toEqual([
      expect.stringMatching(/^warn gRPC server: TLS handshake from 127\.0\.0\.1 failed: ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE peer did not return a certificate$/),
    ]);
  });

  it("TLS 1.1 (openssl s_client -tls1_1): one line", async () => {
    expect(await linesOf(() => sClient(["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0", "-CAfile", pki.rootPath]))).toEqual([
      expect.stringMatching(/^warn gRPC server: TLS handshake from 127\.0\.0\.1 failed: ERR_SSL_UNSUPPORTED_PROTOCOL unsupported protocol$/),
    ]);
  });

  it("plaintext (an h2c preface): one line, without the bytes sent", async () => {
    const lines = await linesOf(plaintext);
    expect(lines).toEqual([expect.stringMatching(/^warn gRPC server: TLS handshake from 127\.0\.0\.1 failed: ERR_SSL_[A-Z_]+ [a-z ]+$/)]);
    expect(lines.join("\n")).not.toContain("plaintext-marker");
    expect(glog.lines.join("\n")).not.toMatch(/PRIVATE KEY|plaintext-marker/);
  });

  it("a flood of 200 failed handshakes: at most 5 lines per 10 s window, the rest counted in the limiter's summary; a valid client still works", async () => {
    // From 127.0.0.2: its own limiter key (reason and address), apart from the tests above.
    const floodLines = () => glog.lines.filter((line) => line.includes("127.0.0.2"));
    const started = Date.now();
    for (let i = 0; i < 200; i++) await noCertificate("127.0.0.2");
    const windows = Math.ceil((Date.now() - started + 1) / 10_000);
    const during = floodLines();
    expect(during.length).toBeGreaterThanOrEqual(5);
    expect(during.length).toBeLessThanOrEqual(5 * windows);
    // Every failure is logged or counted: when the key's window ends, the rest are reported in one summary line.
    const logged = () => floodLines().filter((line) => line.includes("TLS handshake from 127.0.0.2 failed: ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE")).length;
    const counted = () => floodLines().reduce((sum, line) => sum + Number(/(\d+) more like it not logged/.exec(line)?.[1] ?? 0), 0);
    for (let i = 0; i < 160 && logged() + counted() < 200; i++) await new Promise((r) => setTimeout(r, 250));
    expect(logged() + counted()).toBe(200);
    expect(floodLines().at(-1)).toMatch(/^warn gRPC server: failed TLS handshakes from 127\.0\.0\.2 \(ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE\): \d+ more like it not logged$/);
    const client = new EchoClient(`127.0.0.1:${gport}`, await grpcChannelCredentials(new ManualIdentity(snapshotOf(pki.issueLeaf({ spiffeId: `spiffe://${TD}/ns/default/web` }), bundleOf([pki]))), { expect: SERVER_ID, logger: makeLogger() }));
    try {
      expect(await callWho(client)).toBe(`spiffe://${TD}/ns/default/web`);
    } finally {
      client.close();
    }
  }, 90_000);
});
