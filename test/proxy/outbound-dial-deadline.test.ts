import { request as httpRequest } from "node:http";
import { connect as h2Connect, type ClientHttp2Session } from "node:http2";
import { connect as netConnect, createServer, type AddressInfo, type Server, type Socket } from "node:net";
import { readFileSync } from "node:fs";
import { createServer as createTlsServer, type TLSSocket } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startHttpApp, type HttpApp } from "../helpers/app-servers.ts";
import { waitFor } from "../helpers/wait.ts";
import { startMeshCa, startTestSidecar, type MeshCa, type TestSidecarWithApp } from "./fixtures.ts";

// Found by review: outbound mTLS dials had no deadline. A peer address that accepts TCP and never
// answers the ClientHello (a hung sidecar, a mis-templated port of a server-speaks-last service)
// left an outbound HTTP/1 request unanswered, a tcpUpstreams connection open, and a hung HTTP/2
// dial in the peer's entry, where every later HTTP/2 call to that peer waited on it. Each dial now
// ends after limits.handshakeTimeout: the socket is destroyed and the caller answered 502
// E_PEER_UNREACHABLE. The outcomes are asserted (an answer, a close), each within a generous bound.
/** GET /orders through the outbound's HTTP/2 port to `appId`: its status and x-meshward-error, or "no answer" after 15 s. */
function h2Call(session: ClientHttp2Session, appId: string): Promise<{ status: number; error: unknown } | "no answer"> {
  return new Promise((resolve) => {
    const stream = session.request({ ":path": "/orders", ":method": "GET", "dapr-app-id": appId });
    stream.on("error", () => undefined);
    const timer = setTimeout(() => {
      stream.close();
      resolve("no answer");
    }, 15_000);
    stream.once("response", (headers) => {
      clearTimeout(timer);
      stream.resume();
      resolve({ status: Number(headers[":status"]), error: headers["x-meshward-error"] });
    });
    stream.end();
  });
}

describe("outbound dials to a peer that never answers the ClientHello end after handshakeTimeout", () => {
  let ca: MeshCa;
  let app: HttpApp;
  let silent: Server;
  let caller: TestSidecarWithApp;
  /** Connections the silent peer holds now. */
  const held = new Set<Socket>();
  let accepted = 0;

  beforeAll(async () => {
    silent = createServer((socket) => {
      accepted++;
      held.add(socket);
      socket.on("error", () => undefined);
      // Reads (and drops) the ClientHello, so that the sidecar's close is seen; never answers.
      socket.resume();
      socket.once("close", () => held.delete(socket));
    });
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    const peerAt = `127.0.0.1:${(silent.address() as AddressInfo).port}`;
    ca = await startMeshCa();
    app = await startHttpApp();
    caller = await startTestSidecar(ca, {
      appId: "caller",
      app: `127.0.0.1:${app.port}`,
      outbound: "127.0.0.1:0",
      peers: { orders: peerAt },
      tcpUpstreams: { orders: "127.0.0.1:0" },
      limits: { handshakeTimeout: "1s" },
    });
  }, 60_000);
  afterAll(async () => {
    await caller?.close();
    for (const socket of held) socket.destroy();
    await new Promise<void>((resolve) => (silent ? silent.close(() => resolve()) : resolve()));
    await app?.close();
    await ca?.close();
  });

  it("answers an HTTP/1 request 502 E_PEER_UNREACHABLE and lets go of the connection to the peer", async () => {
    const before = accepted;
    const answer = await new Promise<{ status: number; error: string | undefined } | "no answer">((resolve, reject) => {
      const req = httpRequest({ host: "127.0.0.1", port: caller.addresses.outbound!.port, path: "/orders", headers: { "dapr-app-id": "orders" }, timeout: 15_000 }, (res) => {
        res.resume();
        resolve({ status: res.statusCode ?? 0, error: res.headers["x-meshward-error"] as string | undefined });
      });
      req.on("timeout", () => {
        req.destroy();
        resolve("no answer");
      });
      req.on("error", reject);
      req.end();
    });
    expect(answer).toEqual({ status: 502, error: "E_PEER_UNREACHABLE" });
    expect(accepted).toBeGreaterThan(before);
    await waitFor("the silent peer's connections to close", () => held.size === 0);
  }, 30_000);

  it("answers each HTTP/2 call 502 E_PEER_UNREACHABLE: a hung dial does not stay the peer's session for later calls", async () => {
    const session = h2Connect(`http://127.0.0.1:${caller.addresses.outbound!.port}`);
    session.on("error", () => undefined);
    const call = () => h2Call(session, "orders");
    try {
      expect(await call()).toEqual({ status: 502, error: "E_PEER_UNREACHABLE" });
      expect(await call()).toEqual({ status: 502, error: "E_PEER_UNREACHABLE" });
    } finally {
      session.destroy();
    }
    await waitFor("the silent peer's connections to close", () => held.size === 0);
  }, 45_000);

  it("answers an HTTP/2 call 502 when the peer completes TLS (a valid SVID) but never speaks HTTP/2, and lets go of it", async () => {
    // The peer proves `mute`'s identity and takes ALPN h2, then sends nothing: no SETTINGS frame.
    const files = await ca.clientFiles("default", "mute");
    const muteConnections = new Set<TLSSocket>();
    const mute = createTlsServer({ key: readFileSync(files.key), cert: readFileSync(files.cert), ca: ca.bundlePem, requestCert: true, ALPNProtocols: ["h2"] }, (socket) => {
      muteConnections.add(socket);
      socket.on("error", () => undefined);
      socket.resume();
      socket.once("close", () => muteConnections.delete(socket));
    });
    await new Promise<void>((resolve) => mute.listen(0, "127.0.0.1", resolve));
    const muteCaller = await startTestSidecar(ca, { appId: "caller2", app: `127.0.0.1:${app.port}`, outbound: "127.0.0.1:0", peers: { mute: `127.0.0.1:${(mute.address() as AddressInfo).port}` }, limits: { handshakeTimeout: "1s" } });
    const session = h2Connect(`http://127.0.0.1:${muteCaller.addresses.outbound!.port}`);
    session.on("error", () => undefined);
    try {
      const answer = await h2Call(session, "mute");
      expect(answer).toMatchObject({ status: 502 });
      if (typeof answer === "object") expect(String(answer.error)).toMatch(/^E_(PEER|UPSTREAM)_UNREACHABLE$/);
      await waitFor("the mute peer's connections to close", () => muteConnections.size === 0);
    } finally {
      session.destroy();
      await muteCaller.close();
      for (const socket of muteConnections) socket.destroy();
      await new Promise<void>((resolve) => mute.close(() => resolve()));
    }
  }, 45_000);

  it("closes a tcpUpstreams connection whose peer never completes the handshake", async () => {
    const socket = netConnect({ host: "127.0.0.1", port: caller.addresses.tcp.orders!.port });
    socket.on("error", () => undefined);
    try {
      const closed = new Promise<"closed">((resolve) => socket.once("close", () => resolve("closed")));
      socket.write("hello");
      const outcome = await Promise.race([closed, new Promise<"open">((resolve) => setTimeout(() => resolve("open"), 15_000))]);
      expect(outcome).toBe("closed");
    } finally {
      socket.destroy();
    }
    await waitFor("the silent peer's connections to close", () => held.size === 0);
  }, 30_000);
});
