import * as grpc from "@grpc/grpc-js";
import { X509Certificate } from "node:crypto";
import { connect as http2Connect } from "node:http2";
import type { ClientHttp2Session, Http2SecureServer } from "node:http2";
import type { TLSSocket } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { SpiffeIdMatcher } from "../../src/spiffe/match.ts";
import { normalizeSerial } from "../../src/tls/verify.ts";
import { grpcChannelCredentials, grpcServerCredentials, peerIdentity } from "../../src/transport/index.ts";
import type { MeshwardServerCredentials } from "../../src/transport/index.ts";
import type { FieldLogger } from "../../src/transport/common.ts";
import { createTestPki } from "../helpers/openssl-pki.ts";
import type { TestLeaf, TestPki } from "../helpers/openssl-pki.ts";
import { bundleOf, callWho, EchoClient, echoService, makeLogger, ManualIdentity, snapshotOf } from "./fixtures.ts";

// Found by review (review-sdk MEDIUM-1, MEDIUM-2, LOW-3): a grpc-js server checked callers per call
// only. A revoked caller, or one outside `authorize`, completed the handshake and kept as many
// HTTP/2 connections as it liked, a new CRL closed none of them, and every refused call wrote an
// unthrottled warn line. Callers are now refused in the handshake, open connections are closed
// when a CRL revokes their caller, a refused call ends its connection, and refusals are logged 5
// per reason and address every 10 s.
const TD = "example.org";
const SERVER_ID = `spiffe://${TD}/ns/default/api`;
const CLIENT_ID = `spiffe://${TD}/ns/default/web`;

let pki: TestPki;
const otherPkis: TestPki[] = [];
const servers: grpc.Server[] = [];
const clients: grpc.Client[] = [];
const sessions: ClientHttp2Session[] = [];

beforeAll(() => {
  pki = createTestPki({ trustDomain: TD });
});
afterAll(() => {
  for (const s of sessions) s.destroy();
  for (const c of clients) c.close();
  for (const s of servers) s.forceShutdown();
  pki?.cleanup();
  for (const p of otherPkis) p.cleanup();
});

interface Started {
  readonly port: number;
  readonly creds: MeshwardServerCredentials;
  readonly identity: ManualIdentity;
  readonly logger: ReturnType<typeof makeLogger>;
  readonly handled: () => number;
  readonly server: grpc.Server;
}

async function startServer(
  revoked: readonly TestLeaf[] = [],
  authorize: SpiffeIdMatcher = { trustDomain: TD, namespace: "default" },
  trusted: readonly TestPki[] = [pki],
  fieldLogger?: FieldLogger,
): Promise<Started> {
  const logger = makeLogger();
  const identity = new ManualIdentity(snapshotOf(pki.issueLeaf({ spiffeId: SERVER_ID }), bundleOf(trusted, new Set(revoked.map((l) => normalizeSerial(l.serial))))));
  let handled = 0;
  const server = new grpc.Server();
  servers.push(server);
  server.addService(echoService, {
    who: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      handled++;
      cb(null, Buffer.from(peerIdentity(call)?.spiffeId ?? "none"));
    },
  });
  const creds = await grpcServerCredentials(identity, { logger, authorize, ...(fieldLogger !== undefined ? { fieldLogger } : {}) });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync("127.0.0.1:0", creds, (e, p) => (e ? reject(e) : resolve(p))));
  return { port, creds, identity, logger, handled: () => handled, server };
}

async function clientOf(leaf: TestLeaf, port: number): Promise<grpc.Client> {
  const client = new EchoClient(`127.0.0.1:${port}`, await grpcChannelCredentials(new ManualIdentity(snapshotOf(leaf, bundleOf([pki]))), { expect: SERVER_ID, logger: makeLogger() }));
  clients.push(client);
  return client;
}

const call = callWho;

/** A plain node:http2 client with `leaf`: what a caller that ignores GOAWAY and holds its connection sees. */
function rawSession(leaf: TestLeaf, port: number): ClientHttp2Session {
  const session = http2Connect(`https://127.0.0.1:${port}`, { ca: pki.root.certPem, cert: leaf.chainPem, key: leaf.keyPem, checkServerIdentity: () => undefined });
  session.on("error", () => undefined);
  sessions.push(session);
  return session;
}

/** One Who call on a raw session: "status N" from the trailers, or "closed" if the connection ends first. */
function rawCall(session: ClientHttp2Session): Promise<string> {
  return new Promise((resolve) => {
    const closed = () => resolve("closed");
    session.once("close", closed);
    let stream;
    try {
      stream = session.request({ ":method": "POST", ":path": "/test.Echo/Who", "content-type": "application/grpc", te: "trailers" });
    } catch {
      return closed();
    }
    const done = (value: string) => {
      session.off("close", closed);
      resolve(value);
    };
    stream.on("error", () => undefined);
    stream.on("response", (headers) => {
      if (headers["grpc-status"] !== undefined) done(`status ${String(headers["grpc-status"])}`);
    });
    stream.on("trailers", (trailers) => done(`status ${String(trailers["grpc-status"])}`));
    stream.on("close", () => setImmediate(() => done("closed")));
    stream.resume();
    stream.end(Buffer.from([0, 0, 0, 0, 0]));
  });
}

/** Resolves "closed" when the session closes (a connection the server holds open never resolves). */
const closedOf = (session: ClientHttp2Session) => new Promise<string>((resolve) => (session.closed || session.destroyed ? resolve("closed") : session.once("close", () => resolve("closed"))));

const warned = (logger: ReturnType<typeof makeLogger>, pattern: RegExp) => logger.lines.filter((line) => line.startsWith("warn") && pattern.test(line)).length;

describe("gRPC server: refused callers lose their connection", () => {
  it("a revoked caller is refused in the handshake: no call is answered on its connection, the handler never runs", async () => {
    const revoked = pki.issueLeaf({ spiffeId: CLIENT_ID });
    const server = await startServer([revoked]);
    const client = await clientOf(revoked, server.port);
    await expect(call(client)).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
    expect(await rawCall(rawSession(revoked, server.port))).toBe("closed");
    expect(server.handled()).toBe(0);
    expect(server.creds.openConnections()).toBe(0);
    expect(server.logger.lines.some((l) => /gRPC server refused a connection from 127\.0\.0\.1: .*E_CERT_REVOKED/.test(l))).toBe(true);
  });

  it("a caller outside `authorize` is refused in the handshake the same way; an allowed caller is served on a tracked connection", async () => {
    const server = await startServer();
    const outsider = pki.issueLeaf({ spiffeId: `spiffe://${TD}/ns/other/web` });
    await expect(call(await clientOf(outsider, server.port))).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
    expect(await rawCall(rawSession(outsider, server.port))).toBe("closed");
    expect(server.handled()).toBe(0);
    // The allowed caller: this also fails if grpc-js stops revealing its http2 server (serverOfWatcher).
    expect(await call(await clientOf(pki.issueLeaf({ spiffeId: CLIENT_ID }), server.port))).toBe(CLIENT_ID);
    expect(server.handled()).toBe(1);
    expect(server.creds.openConnections()).toBe(1);
    expect(server.logger.lines.filter((l) => l.includes("did not reveal"))).toEqual([]);
  });

  it("refusals are logged rate-limited: 5 lines for 20 connections of a revoked caller", async () => {
    const revoked = pki.issueLeaf({ spiffeId: CLIENT_ID });
    const server = await startServer([revoked]);
    for (let i = 0; i < 20; i++) expect(await rawCall(rawSession(revoked, server.port))).toBe("closed");
    expect(warned(server.logger, /gRPC server refused a/)).toBe(5);
  });

  it("a new CRL closes the open connection of a caller it revokes", async () => {
    const leaf = pki.issueLeaf({ spiffeId: CLIENT_ID });
    const server = await startServer();
    const session = rawSession(leaf, server.port);
    expect(await rawCall(session)).toBe("status 0");
    server.identity.updateBundle(bundleOf([pki], new Set([normalizeSerial(leaf.serial)])));
    expect(await Promise.race([closedOf(session), rawCall(session)])).toBe("closed");
    expect(server.creds.openConnections()).toBe(0);
    expect(server.handled()).toBe(1);
  });

  it("a call refused after the handshake (an `authorize` function that changed its mind) ends its connection; 20 such refusals log 5 lines", async () => {
    let allowed = true;
    const server = await startServer([], () => allowed);
    const leaf = pki.issueLeaf({ spiffeId: CLIENT_ID });
    const open = Array.from({ length: 20 }, () => rawSession(leaf, server.port));
    expect(await Promise.all(open.map(rawCall))).toEqual(Array(20).fill("status 0"));
    allowed = false;
    // One call on each open connection, each refused by the per-call check.
    expect(await Promise.all(open.map(rawCall))).toEqual(Array(20).fill("status 7"));
    expect(await Promise.all(open.map(closedOf))).toEqual(Array(20).fill("closed"));
    expect(warned(server.logger, /gRPC server refused a call from 127\.0\.0\.1/)).toBe(5);
    expect(server.handled()).toBe(20);
  });
});

describe("gRPC server: per-call refusals with a fieldLogger", () => {
  // They were logged as text through `logger` even when a fieldLogger was given, while refused
  // connections and failed handshakes carried fields (event, peer, reason, code, spiffeId): a log
  // query on event="refused" missed every refused call.
  it("are logged with fields (event refused, call, peer with its port, reason, code, the caller's SPIFFE ID), still 5 lines for 20", async () => {
    const records: { fields: Record<string, unknown>; message: string }[] = [];
    const fieldLogger: FieldLogger = { warn: (fields, message) => void records.push({ fields, message }) };
    let allowed = true;
    const server = await startServer([], () => allowed, [pki], fieldLogger);
    const leaf = pki.issueLeaf({ spiffeId: CLIENT_ID });
    const open = Array.from({ length: 20 }, () => rawSession(leaf, server.port));
    expect(await Promise.all(open.map(rawCall))).toEqual(Array(20).fill("status 0"));
    allowed = false;
    expect(await Promise.all(open.map(rawCall))).toEqual(Array(20).fill(`status ${grpc.status.PERMISSION_DENIED}`));
    const calls = records.filter((r) => r.fields.call === true);
    expect(calls).toHaveLength(5);
    for (const { fields, message } of calls) {
      expect(fields).toEqual({ event: "refused", call: true, peer: expect.stringMatching(/^127\.0\.0\.1:\d+$/), reason: "spiffe_mismatch", code: "E_SPIFFE_MISMATCH", spiffeId: CLIENT_ID });
      expect(message).toMatch(/^gRPC server refused a call from 127\.0\.0\.1 and closes its connection: E_SPIFFE_MISMATCH/);
    }
    // Through the fieldLogger only: no text line for them.
    expect(warned(server.logger, /refused a call/)).toBe(0);
  });

  it("a call from a caller whose issuer a root CRL revoked since the handshake: reason revoked, code E_CERT_REVOKED, its SPIFFE ID", async () => {
    const records: { fields: Record<string, unknown>; message: string }[] = [];
    const fieldLogger: FieldLogger = { warn: (fields, message) => void records.push({ fields, message }) };
    const good = createTestPki({ trustDomain: TD, name: "meshward good issuer 2" });
    otherPkis.push(good);
    const server = await startServer([], { trustDomain: TD, namespace: "default" }, [pki, good], fieldLogger);
    hideFromRecheck(server.server);
    const retired = rawSession(pki.issueLeaf({ spiffeId: CLIENT_ID }), server.port);
    expect(await rawCall(retired)).toBe("status 0");
    const issuerSerial = normalizeSerial(new X509Certificate(pki.issuer.certPem).serialNumber);
    server.identity.updateBundle(bundleOf([pki, good], new Set([issuerSerial])));
    expect(await rawCall(retired)).toBe(`status ${grpc.status.PERMISSION_DENIED}`);
    expect(records.filter((r) => r.fields.call === true).map((r) => r.fields)).toEqual([
      { event: "refused", call: true, peer: expect.stringMatching(/^127\.0\.0\.1:\d+$/), reason: "revoked", code: "E_CERT_REVOKED", spiffeId: CLIENT_ID },
    ]);
  });
});

/**
 * Test setup only: the connections `server` accepts from now on are hidden from the open-connection
 * recheck that a bundle update runs (ConnectionRegistry.recheckAll passes over a socket with no
 * verified peer on it), so that the per-call check is the only layer left to judge them.
 */
function hideFromRecheck(server: grpc.Server): void {
  const http2Servers = (server as unknown as { http2Servers: Map<Http2SecureServer, unknown> }).http2Servers;
  expect(http2Servers.size).toBe(1);
  // Runs after meshward's own listener (prepended): the connection was admitted whole (its chain remembered).
  for (const http2Server of http2Servers.keys()) http2Server.on("secureConnection", (socket: TLSSocket) => void delete (socket as unknown as Record<symbol, unknown>)[Symbol.for("meshward.peer")]);
}

describe("gRPC server: the per-call check of the caller's issuer", () => {
  it("a call on a connection accepted before a root CRL revoked its caller's issuer is refused (PERMISSION_DENIED, E_CERT_REVOKED); a caller of a good issuer is still served", async () => {
    // Two issuers under two roots of one trust domain: pki's issuer is retired, good's stays.
    const good = createTestPki({ trustDomain: TD, name: "meshward good issuer" });
    otherPkis.push(good);
    const server = await startServer([], { trustDomain: TD, namespace: "default" }, [pki, good]);
    hideFromRecheck(server.server);
    // Both callers connect while every issuer is good: accepted in the handshake, each served once.
    const retired = rawSession(pki.issueLeaf({ spiffeId: CLIENT_ID }), server.port);
    const kept = rawSession(good.issueLeaf({ spiffeId: CLIENT_ID }), server.port);
    expect(await rawCall(retired)).toBe("status 0");
    expect(await rawCall(kept)).toBe("status 0");
    expect(server.handled()).toBe(2);

    // The root CRL listing pki's issuer arrives with a bundle update.
    const issuerSerial = normalizeSerial(new X509Certificate(pki.issuer.certPem).serialNumber);
    server.identity.updateBundle(bundleOf([pki, good], new Set([issuerSerial])));
    // The recheck passed over both connections (hidden): nothing but the per-call check stands now.
    expect(server.logger.lines.filter((l) => l.includes("closing an open connection"))).toEqual([]);
    expect(retired.closed || retired.destroyed).toBe(false);

    expect(await rawCall(retired)).toBe(`status ${grpc.status.PERMISSION_DENIED}`);
    expect(server.handled()).toBe(2);
    expect(server.logger.lines.join("\n")).toContain(`gRPC server refused a call from 127.0.0.1 and closes its connection: E_CERT_REVOKED: the peer's issuer certificate (serial ${issuerSerial}) is revoked`);
    // A refused call ends its connection (GOAWAY).
    expect(await closedOf(retired)).toBe("closed");

    expect(await rawCall(kept)).toBe("status 0");
    expect(server.handled()).toBe(3);
  });
});
