import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { grpcChannelCredentials, grpcServerCredentials, peerIdentity } from "../../src/transport/index.ts";
import { createTestPki } from "../helpers/openssl-pki.ts";
import type { TestPki } from "../helpers/openssl-pki.ts";
import { bundleOf, EchoClient, echoService, makeLogger, ManualIdentity, snapshotOf } from "./fixtures.ts";

// A gRPC call can come long after its connection's handshake (grpc-js connections live up to
// grpc.max_connection_age_ms, an hour with grpcServerOptions) or on a resumed TLS session, which
// is never verified again (NODE-TLS-FACTS). The per-call check therefore refuses a caller whose
// certificate has expired since, and onRootsRemoved lets the server's owner drain connections
// when a root leaves the bundle, as the node:https/http2 servers do on their own.
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

async function startServer(identity: ManualIdentity) {
  const server = new grpc.Server();
  servers.push(server);
  server.addService(echoService, {
    who: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => cb(null, Buffer.from(peerIdentity(call)?.spiffeId ?? "none")),
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

const call = (client: grpc.Client) =>
  new Promise<string>((resolve, reject) =>
    (client as unknown as { who(req: Buffer, opts: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r?: Buffer) => void): void }).who(
      Buffer.from("hi"),
      { deadline: Date.now() + 5000 },
      (e, r) => (e ? reject(e) : resolve(r!.toString())),
    ),
  );

describe("gRPC server: calls long after the handshake", () => {
  it("a caller whose certificate expired since the connection was made is refused UNAUTHENTICATED E_CERT_EXPIRED", async () => {
    const { port } = await startServer(new ManualIdentity(snapshotOf(kept.issueLeaf({ spiffeId: SERVER_ID }), bundleOf([kept]))));
    const notAfter = new Date(Date.now() + 3_000);
    const client = await clientOf(new ManualIdentity(snapshotOf(kept.issueLeaf({ spiffeId: CLIENT_ID, notAfter }), bundleOf([kept]))), port);
    expect(await call(client)).toBe(CLIENT_ID);
    // Same channel, same connection: only the clock moved.
    await new Promise((r) => setTimeout(r, Math.max(0, notAfter.getTime() - Date.now()) + 1_100));
    await expect(call(client)).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED, details: expect.stringContaining("E_CERT_EXPIRED") });
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

  it("without the drain, the open connection of a caller under a removed root still works (what onRootsRemoved is for)", async () => {
    const serverIdentity = new ManualIdentity(snapshotOf(kept.issueLeaf({ spiffeId: SERVER_ID }), bundleOf([kept, removed])));
    const { port } = await startServer(serverIdentity);
    const underRemoved = await clientOf(new ManualIdentity(snapshotOf(removed.issueLeaf({ spiffeId: CLIENT_ID }), bundleOf([kept, removed]))), port);
    expect(await call(underRemoved)).toBe(CLIENT_ID);
    serverIdentity.updateBundle(bundleOf([kept]));
    expect(await call(underRemoved)).toBe(CLIENT_ID);
  });
});
