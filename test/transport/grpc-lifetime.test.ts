import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { normalizeSerial } from "../../src/tls/verify.ts";
import { grpcChannelCredentials, grpcServerCredentials, peerIdentity } from "../../src/transport/index.ts";
import { createTestPki } from "../helpers/openssl-pki.ts";
import type { TestPki } from "../helpers/openssl-pki.ts";
import { bundleOf, callWho, EchoClient, echoService, makeLogger, ManualIdentity, snapshotOf } from "./fixtures.ts";

// A gRPC call can come long after its connection's handshake (grpc-js connections live up to
// grpc.max_connection_age_ms, an hour with grpcServerOptions) or on a resumed TLS session, which
// is never verified again (NODE-TLS-FACTS). The server credentials therefore close a connection
// (GOAWAY) when its caller's certificate expires and when a root leaves the bundle, as the
// node:https/http2 servers do, and the per-call check refuses a caller whose certificate has expired.
// On the client side, a meshward channel closes a connection when the server's certificate on it
// expires, and 2 s before its own does: grpc-js would otherwise go on calling a server whose
// certificate has expired, or have every call refused E_CERT_EXPIRED by a meshward server until
// that server's age cap (none without grpcServerOptions) ended the connection.
const TD = "example.org";
const SERVER_ID = `spiffe://${TD}/ns/default/api`;
const CLIENT_ID = `spiffe://${TD}/ns/default/web`;
const logger = makeLogger();


let kept: TestPki;
let removed: TestPki;
const servers: grpc.Server[] = [];
const clients: grpc.Client[] = [];

beforeAll(() => {
  kept = createTestPki({ trustDomain: TD, name: "kept root" });
  removed = createTestPki({ trustDomain: TD, name: "removed root" });
});
afterAll(() => {
  for (const c of clients) c.close();
  for (const s of servers) s.forceShutdown();
  kept?.cleanup();
  removed?.cleanup();
});

/** `report` "connection": Who answers with the caller certificate's serial and the caller's address (one per connection). */
async function startServer(identity: ManualIdentity, report: "id" | "connection" = "id") {
  const server = new grpc.Server();
  servers.push(server);
  server.addService(echoService, {
    who: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) =>
      cb(null, Buffer.from(report === "id" ? (peerIdentity(call)?.spiffeId ?? "none") : `${call.getAuthContext().sslPeerCertificate?.serialNumber}|${call.getPeer()}`)),
  });
  const creds = await grpcServerCredentials(identity, { logger, authorize: { trustDomain: TD, namespace: "default" } });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync("127.0.0.1:0", creds, (e, p) => (e ? reject(e) : resolve(p))));
  return { server, creds, port };
}

async function clientOf(identity: ManualIdentity, port: number): Promise<grpc.Client> {
  const client = new EchoClient(`127.0.0.1:${port}`, await grpcChannelCredentials(identity, { expect: SERVER_ID, logger }));
  clients.push(client);
  return client;
}

const call = callWho;

describe("gRPC server: calls long after the handshake", () => {
  it("a caller whose certificate expires loses its connection (GOAWAY at its notAfter); its next call cannot reconnect with it", async () => {
    const { port } = await startServer(new ManualIdentity(snapshotOf(kept.issueLeaf({ spiffeId: SERVER_ID }), bundleOf([kept]))));
    const notAfter = new Date(Date.now() + 3_000);
    // A plain grpc-js client: a meshward channel would close its connection before this (below).
    const leaf = kept.issueLeaf({ spiffeId: CLIENT_ID, notAfter });
    const plain = grpc.credentials.createSsl(Buffer.from(kept.root.certPem), Buffer.from(leaf.keyPem), Buffer.from(leaf.chainPem), { checkServerIdentity: () => undefined });
    const client = new EchoClient(`127.0.0.1:${port}`, plain, { "grpc.ssl_target_name_override": "api.test" });
    clients.push(client);
    expect(await call(client)).toBe(CLIENT_ID);
    // Same channel: the server closed the connection at notAfter, and a new one with the expired certificate is refused.
    await new Promise((r) => setTimeout(r, Math.max(0, notAfter.getTime() - Date.now()) + 1_100));
    await expect(call(client)).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
  });

  it("onRootsRemoved + server.drain: a caller under the removed root loses its connection and cannot reconnect; one under the kept root goes on", async () => {
    const serverIdentity = new ManualIdentity(snapshotOf(kept.issueLeaf({ spiffeId: SERVER_ID }), bundleOf([kept, removed])));
    const { server, creds, port } = await startServer(serverIdentity);
    let drained = 0;
    creds.onRootsRemoved(() => {
      drained++;
      server.drain(`127.0.0.1:${port}`, 1_000);
    });
    const underRemoved = await clientOf(new ManualIdentity(snapshotOf(removed.issueLeaf({ spiffeId: CLIENT_ID }), bundleOf([kept, removed]))), port);
    const underKept = await clientOf(new ManualIdentity(snapshotOf(kept.issueLeaf({ spiffeId: CLIENT_ID }), bundleOf([kept, removed]))), port);
    expect(await call(underRemoved)).toBe(CLIENT_ID);
    expect(await call(underKept)).toBe(CLIENT_ID);

    // Adding a root is no removal.
    serverIdentity.updateBundle(bundleOf([kept, removed]));
    expect(drained).toBe(0);
    serverIdentity.updateBundle(bundleOf([kept]));
    expect(drained).toBe(1);
    await expect(call(underRemoved)).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
    expect(await call(underKept)).toBe(CLIENT_ID);
  });

  it("without any drain, the credentials close the open connection of a caller under a removed root; one under the kept root goes on", async () => {
    const serverIdentity = new ManualIdentity(snapshotOf(kept.issueLeaf({ spiffeId: SERVER_ID }), bundleOf([kept, removed])));
    const { port } = await startServer(serverIdentity);
    const underRemoved = await clientOf(new ManualIdentity(snapshotOf(removed.issueLeaf({ spiffeId: CLIENT_ID }), bundleOf([kept, removed]))), port);
    const underKept = await clientOf(new ManualIdentity(snapshotOf(kept.issueLeaf({ spiffeId: CLIENT_ID }), bundleOf([kept, removed]))), port);
    expect(await call(underRemoved)).toBe(CLIENT_ID);
    expect(await call(underKept)).toBe(CLIENT_ID);
    serverIdentity.updateBundle(bundleOf([kept]));
    await expect(call(underRemoved)).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
    expect(await call(underKept)).toBe(CLIENT_ID);
  });
});

describe("gRPC client (grpcChannelCredentials): a connection ends with its certificates", () => {
  const sleepUntil = (at: Date) => new Promise((r) => setTimeout(r, Math.max(0, at.getTime() - Date.now())));

  it("2 s before its own certificate expires: the next call goes on a new connection with the current certificate, not refused E_CERT_EXPIRED", async () => {
    const { port } = await startServer(new ManualIdentity(snapshotOf(kept.issueLeaf({ spiffeId: SERVER_ID }), bundleOf([kept]))), "connection");
    // 8 s: the connection retires 2 s before, and the steps below (two OpenSSL issuances, two
    // calls) must fit before that even on a loaded machine (4 s did not, with five test files at once).
    const notAfter = new Date(Date.now() + 8_000);
    const expiring = kept.issueLeaf({ spiffeId: CLIENT_ID, notAfter });
    const identity = new ManualIdentity(snapshotOf(expiring, bundleOf([kept])));
    const clientLogger = makeLogger();
    const client = new EchoClient(`127.0.0.1:${port}`, await grpcChannelCredentials(identity, { expect: SERVER_ID, logger: clientLogger }));
    clients.push(client);
    const first = await call(client);
    const [firstSerial, firstPeer] = first.split("|");
    const current = kept.issueLeaf({ spiffeId: CLIENT_ID });
    identity.rotate(snapshotOf(current, bundleOf([kept])));
    // Rotation alone keeps the open connection (and the certificate it was made with).
    expect(await call(client)).toBe(first);

    await sleepUntil(new Date(notAfter.getTime() + 500));
    // On a loaded machine the retiring timer (2 s before notAfter) can fire late, at the moment of
    // the next call, which would then go on the connection being closed (calls in flight end
    // UNAVAILABLE, as documented). What is checked is the call after the close.
    const retired = () => clientLogger.lines.some((l) => l.startsWith("info closing the gRPC connection to 127.0.0.1:"));
    for (let i = 0; i < 100 && !retired(); i++) await new Promise((r) => setTimeout(r, 50));
    expect(retired()).toBe(true);
    await new Promise((r) => setTimeout(r, 100));
    const [serial, peer] = (await call(client)).split("|");
    expect(peer).not.toBe(firstPeer);
    expect(serial).not.toBe(firstSerial);
    expect(serial!.toUpperCase()).toBe(current.serial.toUpperCase());
  });

  it("when the server's certificate expires: the next call verifies the server's current certificate, and is refused when there is none", async () => {
    const notAfter = new Date(Date.now() + 4_000);
    const rotating = new ManualIdentity(snapshotOf(kept.issueLeaf({ spiffeId: SERVER_ID, notAfter }), bundleOf([kept])));
    const stale = new ManualIdentity(snapshotOf(kept.issueLeaf({ spiffeId: SERVER_ID, notAfter }), bundleOf([kept])));
    const { port: rotatingPort } = await startServer(rotating, "connection");
    const { port: stalePort } = await startServer(stale, "connection");
    const identity = new ManualIdentity(snapshotOf(kept.issueLeaf({ spiffeId: CLIENT_ID }), bundleOf([kept])));
    const toRotating = await clientOf(identity, rotatingPort);
    const toStale = await clientOf(identity, stalePort);
    const [, firstPeer] = (await call(toRotating)).split("|");
    expect(await call(toStale)).toContain("|127.0.0.1:");
    rotating.rotate(snapshotOf(kept.issueLeaf({ spiffeId: SERVER_ID }), bundleOf([kept])));
    expect((await call(toRotating)).split("|")[1]).toBe(firstPeer);

    await sleepUntil(new Date(notAfter.getTime() + 1_000));
    expect((await call(toRotating)).split("|")[1]).not.toBe(firstPeer);
    // The open connection to the server still on its expired certificate is gone, and a new one is refused.
    await expect(call(toStale)).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
  });

  it("when a root leaves the bundle: the connection to a server verified under it closes, and the next call is refused (found by review, stop 39)", async () => {
    // The server's certificate chains to the root that is about to be removed from the client's bundle.
    const { port } = await startServer(new ManualIdentity(snapshotOf(removed.issueLeaf({ spiffeId: SERVER_ID }), bundleOf([kept, removed]))), "connection");
    const identity = new ManualIdentity(snapshotOf(kept.issueLeaf({ spiffeId: CLIENT_ID }), bundleOf([kept, removed])));
    const client = await clientOf(identity, port);
    expect(await call(client)).toContain("|127.0.0.1:");
    identity.updateBundle(bundleOf([kept]));
    // As with a revocation: a call may find the connection just closed (INTERNAL or UNAVAILABLE);
    // no call is answered by the server on it again, and a new connection is refused.
    let refused = (await call(client).catch((error: unknown) => error)) as { code?: number; details?: string };
    for (let i = 0; i < 20 && refused.code === grpc.status.INTERNAL; i++) {
      await new Promise((r) => setTimeout(r, 50));
      refused = (await call(client).catch((error: unknown) => error)) as { code?: number; details?: string };
    }
    expect(refused).toMatchObject({ code: grpc.status.UNAVAILABLE });
  });

  it("when the server's certificate is revoked: the connection closes, and the next call is refused (found by review, stop 32)", async () => {
    const server = kept.issueLeaf({ spiffeId: SERVER_ID });
    // The server never learns of its revocation, as a thief holding its key would not.
    const { port } = await startServer(new ManualIdentity(snapshotOf(server, bundleOf([kept]))), "connection");
    const identity = new ManualIdentity(snapshotOf(kept.issueLeaf({ spiffeId: CLIENT_ID }), bundleOf([kept])));
    const client = await clientOf(identity, port);
    expect(await call(client)).toContain("|127.0.0.1:");
    identity.updateBundle(bundleOf([kept], new Set([normalizeSerial(server.serial)])));
    // The call that finds its connection just closed fails (INTERNAL or UNAVAILABLE, as grpc-js
    // sees it); once grpc-js has seen the session gone, the next one connects anew and is refused.
    // (On Node 26 grpc-js puts one more call on the destroyed session first: INTERNAL, "The session
    // has been destroyed". No call is ever answered.)
    await expect(call(client)).rejects.toMatchObject({ code: expect.toBeOneOf([grpc.status.INTERNAL, grpc.status.UNAVAILABLE]) });
    let refused = (await call(client).catch((error: unknown) => error)) as { code?: number; details?: string };
    for (let i = 0; i < 20 && refused.code === grpc.status.INTERNAL; i++) {
      await new Promise((r) => setTimeout(r, 50));
      refused = (await call(client).catch((error: unknown) => error)) as { code?: number; details?: string };
    }
    expect(refused).toMatchObject({ code: grpc.status.UNAVAILABLE, details: expect.stringMatching(/revoked/) });
  });
});
