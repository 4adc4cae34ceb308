import * as grpc from "@grpc/grpc-js";
import type { AddressInfo } from "node:net";
import * as tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectHttp2, createHttp2Server, grpcChannelCredentials, grpcServerCredentials, peerIdentity } from "../../src/transport/index.ts";
import type { MtlsHttp2Server, PeerIdentity } from "../../src/transport/index.ts";
import { createTestPki } from "../helpers/openssl-pki.ts";
import type { TestPki } from "../helpers/openssl-pki.ts";
import { bundleOf, EchoClient, echoService, makeLogger, ManualIdentity, snapshotOf } from "./fixtures.ts";

const TD = "example.org";
const SERVER_ID = `spiffe://${TD}/ns/default/orders`;
const CLIENT_ID = `spiffe://${TD}/ns/default/web`;
const logger = makeLogger();
let pki: TestPki;
let serverIdentity: ManualIdentity;
let clientIdentity: ManualIdentity;

// A hand-written service definition keeps the test free of .proto files.

beforeAll(() => {
  pki = createTestPki({ trustDomain: TD });
  serverIdentity = new ManualIdentity(snapshotOf(pki.issueLeaf({ spiffeId: SERVER_ID }), bundleOf([pki])));
  clientIdentity = new ManualIdentity(snapshotOf(pki.issueLeaf({ spiffeId: CLIENT_ID }), bundleOf([pki])));
});
afterAll(() => pki?.cleanup());

describe("gRPC", () => {
  let server: grpc.Server;
  let port: number;
  let seen: PeerIdentity | undefined;
  beforeAll(async () => {
    server = new grpc.Server();
    server.addService(echoService, {
      who: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
        seen = peerIdentity(call);
        cb(null, Buffer.from(seen?.spiffeId ?? "none"));
      },
    });
    const creds = await grpcServerCredentials(serverIdentity, { logger, authorize: { trustDomain: TD, namespace: "default" } });
    port = await new Promise<number>((resolve, reject) => server.bindAsync("127.0.0.1:0", creds, (e, p) => (e ? reject(e) : resolve(p))));
  });
  afterAll(() => server?.forceShutdown());

  const call = (client: grpc.Client) =>
    new Promise<string>((resolve, reject) =>
      (client as unknown as { who(req: Buffer, opts: grpc.CallOptions, cb: (e: Error | null, r?: Buffer) => void): void }).who(
        Buffer.from("hi"),
        { deadline: Date.now() + 5000 },
        (e, r) => (e ? reject(e) : resolve(r!.toString())),
      ),
    );

  it("a unary call sees the caller's verified SPIFFE ID", async () => {
    const client = new EchoClient(`127.0.0.1:${port}`, await grpcChannelCredentials(clientIdentity, { expect: SERVER_ID, logger }));
    try {
      expect(await call(client)).toBe(CLIENT_ID);
      expect(seen?.appId).toBe("web");
    } finally {
      client.close();
    }
  });
  it("a client expecting another ID refuses the server", async () => {
    const client = new EchoClient(`127.0.0.1:${port}`, await grpcChannelCredentials(clientIdentity, { expect: `spiffe://${TD}/ns/default/billing`, logger }));
    try {
      await expect(call(client)).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
    } finally {
      client.close();
    }
  });
  it("the server refuses a caller outside `authorize` in the handshake (UNAVAILABLE) and logs why", async () => {
    const outsider = new ManualIdentity(snapshotOf(pki.issueLeaf({ spiffeId: `spiffe://${TD}/ns/other/web` }), bundleOf([pki])));
    const client = new EchoClient(`127.0.0.1:${port}`, await grpcChannelCredentials(outsider, { expect: SERVER_ID, logger }));
    try {
      await expect(call(client)).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
      expect(logger.lines.some((l) => l.includes("gRPC server refused a connection") && l.includes("ns/other/web"))).toBe(true);
    } finally {
      client.close();
    }
  });
  it("sends no TLS server name for an IP target (RFC 6066; Node 26 refuses to dial one) and the host name for a DNS target", async () => {
    const leaf = pki.issueLeaf({ spiffeId: SERVER_ID });
    const names: Array<string | false | null> = [];
    const sniffer = tls.createServer({ cert: leaf.chainPem, key: leaf.keyPem, ALPNProtocols: ["h2"] }, (socket) => {
      names.push(socket.servername);
      socket.destroy();
    });
    await new Promise<void>((resolve) => sniffer.listen(0, "127.0.0.1", resolve));
    const sniffPort = (sniffer.address() as AddressInfo).port;
    const creds = await grpcChannelCredentials(clientIdentity, { expect: SERVER_ID, logger });
    try {
      for (const target of [`127.0.0.1:${sniffPort}`, `localhost:${sniffPort}`]) {
        const client = new EchoClient(target, creds);
        try {
          await expect(call(client)).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
        } finally {
          client.close();
        }
      }
      expect(names[0]).toBe(false);
      expect(names.at(-1)).toBe("localhost");
      expect(names).not.toContain("127.0.0.1");
    } finally {
      sniffer.close();
    }
  });
  it("rotation reaches new gRPC connections: the server presents the new serial without restart", async () => {
    const probe = () =>
      new Promise<string>((resolve, reject) => {
        const snap = clientIdentity.current()!;
        const socket = tls.connect({ host: "127.0.0.1", port, ca: snap.bundle.rootsPem, cert: snap.svid.certChainPem, key: snap.svid.privateKey.export({ format: "pem", type: "pkcs8" }), ALPNProtocols: ["h2"], checkServerIdentity: () => undefined });
        socket.once("secureConnect", () => {
          resolve(socket.getPeerX509Certificate()!.serialNumber);
          socket.destroy();
        });
        socket.once("error", reject);
      });
    const before = await probe();
    const next = pki.issueLeaf({ spiffeId: SERVER_ID });
    serverIdentity.rotate(snapshotOf(next, bundleOf([pki])));
    const after = await probe();
    expect(after).not.toBe(before);
    expect(after).toBe(next.serial);
    const client = new EchoClient(`127.0.0.1:${port}`, await grpcChannelCredentials(clientIdentity, { expect: (id) => id.toString() === SERVER_ID, logger }));
    try {
      expect(await call(client)).toBe(CLIENT_ID);
    } finally {
      client.close();
    }
  });
});

describe("HTTP/2", () => {
  let server: MtlsHttp2Server;
  let port: number;
  beforeAll(async () => {
    server = await createHttp2Server({ identity: serverIdentity, logger }, (req, res) => res.end(req.peer.spiffeId));
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(async () => server?.meshward.close());

  const get = (session: import("node:http2").ClientHttp2Session) =>
    new Promise<string>((resolve, reject) => {
      const stream = session.request({ ":path": "/" });
      let body = "";
      stream.on("data", (d) => (body += d));
      stream.on("end", () => resolve(body));
      stream.on("error", reject);
    });

  it("serves a verified client and exposes req.peer", async () => {
    const session = await connectHttp2(`https://127.0.0.1:${port}`, { identity: clientIdentity, expect: SERVER_ID, logger });
    try {
      expect(session.peer?.spiffeId).toBe(SERVER_ID);
      expect(await get(session)).toBe(CLIENT_ID);
    } finally {
      session.close();
    }
  });
  it("refuses a server with an unexpected ID", async () => {
    await expect(connectHttp2(`https://127.0.0.1:${port}`, { identity: clientIdentity, expect: `spiffe://${TD}/ns/x/y`, logger })).rejects.toThrow();
  });
  it("the connection age cap sends GOAWAY; the client can reconnect", async () => {
    const capped = await createHttp2Server({ identity: serverIdentity, logger, maxConnectionAgeMs: 200, goawayGraceMs: 1000 }, (req, res) => res.end(req.peer.spiffeId));
    await new Promise<void>((r) => capped.listen(0, "127.0.0.1", r));
    try {
      const p = (capped.address() as AddressInfo).port;
      const session = await connectHttp2(`https://127.0.0.1:${p}`, { identity: clientIdentity, expect: SERVER_ID, logger });
      expect(await get(session)).toBe(CLIENT_ID);
      const goaway = await new Promise<boolean>((resolve) => {
        session.once("goaway", () => resolve(true));
        setTimeout(() => resolve(false), 3000).unref();
      });
      expect(goaway).toBe(true);
      session.destroy();
    } finally {
      await capped.meshward.close();
    }
  });
});
