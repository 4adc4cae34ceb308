import { createSecureServer, type Http2SecureServer } from "node:http2";
import type { AddressInfo } from "node:net";
import { createServer as createTlsServer } from "node:tls";
import type { TLSSocket } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PeerPool, type PeerTarget } from "../../src/proxy/peers.ts";
import { connectHttp2, connectMtls, createMtlsAgent, httpsRequest } from "../../src/transport/index.ts";
import { createTestPki, type TestLeaf, type TestPki } from "../helpers/openssl-pki.ts";
import { waitFor } from "../helpers/wait.ts";
import { bundleOf, makeLogger, ManualIdentity, snapshotOf } from "./fixtures.ts";

// TLS checks the server's certificate validity during the handshake only. A client that keeps a
// connection (an SDK agent's keep-alive socket, a connectHttp2 session, the sidecar outbound's
// pooled connections and HTTP/2 session to a peer) would go on sending requests to a server whose
// certificate has expired. Each now stops using the connection when it does: idle ones close,
// busy ones after their exchange, sessions refuse new streams. It does the same a little before
// its own certificate on the connection expires: a meshward server ends the connection then, and
// a request written as it does would fail (found when the rotation-under-load test lost a request
// to a pooled connection the server retired). The servers are plain node:http2 servers
// (allowHTTP1): nothing on their side closes anything.
const TD = "example.org";
const SERVER_ID = `spiffe://${TD}/ns/default/inventory`;
const logger = makeLogger();

let pki: TestPki;
let server: Http2SecureServer;
let port: number;
let notAfter: Date;

beforeAll(async () => {
  pki = createTestPki({ trustDomain: TD });
  notAfter = new Date(Date.now() + 4_000);
  const leaf = pki.issueLeaf({ spiffeId: SERVER_ID, notAfter });
  server = createSecureServer({ cert: leaf.chainPem, key: leaf.keyPem, requestCert: true, rejectUnauthorized: false, allowHTTP1: true }, (_req, res) => res.end("ok"));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  port = (server.address() as AddressInfo).port;
});
afterAll(async () => {
  await new Promise<void>((resolve) => server?.close(() => resolve()));
  pki?.cleanup();
});

const client = () => new ManualIdentity(snapshotOf(pki.issueLeaf({ spiffeId: `spiffe://${TD}/ns/default/web` }), bundleOf([pki])));

/** The three kinds of client that keep connections, toward one server: an SDK agent (its sockets recorded), a connectHttp2 session, a sidecar PeerPool. */
async function clientsOf(identity: ManualIdentity, url: string) {
  const agent = await createMtlsAgent({ identity, expect: SERVER_ID, maxSockets: 1 });
  const agentSockets = new Set<TLSSocket>();
  agent.on("free", (socket: TLSSocket) => agentSockets.add(socket));
  const session = await connectHttp2(url, { identity, expect: SERVER_ID, logger });
  const pool = new PeerPool(identity, logger);
  const close = () => {
    agent.destroy();
    session.destroy();
    pool.close();
  };
  return { agent, agentSockets, session, pool, close };
}

describe("client connections end when the server's certificate expires", () => {
  it("SDK agent, connectHttp2, the sidecar outbound's HTTP/1.1 pool and HTTP/2 session", async () => {
    const identity = client();
    const url = `https://127.0.0.1:${port}/`;
    const target: PeerTarget = { appId: "inventory", namespace: "default", host: "127.0.0.1", port, expectedId: SERVER_ID };

    const { agent, agentSockets, session, pool, close } = await clientsOf(identity, url);
    try {
      expect((await httpsRequest(url, { identity, expect: SERVER_ID, agent })).status).toBe(200);
      expect(agentSockets.size).toBe(1);
      const http1 = pool.http1(target, { maxHeaderBytes: 16_384, idleMs: 60_000 });
      const idle = await http1.acquire();
      const busy = await http1.acquire();
      http1.release(idle);
      const peerSession = await pool.h2(target);
      for (const socket of [...agentSockets, idle.socket, busy.socket]) expect(socket.destroyed).toBe(false);
      expect(session.closed).toBe(false);
      expect(peerSession.closed).toBe(false);

      await new Promise((resolve) => setTimeout(resolve, Math.max(0, notAfter.getTime() - Date.now()) + 1_000));

      expect([...agentSockets][0]!.destroyed).toBe(true); // idle keep-alive socket closed
      expect(session.closed).toBe(true); // no new stream on it
      expect(peerSession.closed).toBe(true);
      expect(idle.socket.destroyed).toBe(true);
      expect(busy.socket.destroyed).toBe(false); // its exchange may finish
      http1.release(busy);
      expect(busy.socket.destroyed).toBe(true);
      // A new connection needs a handshake, which refuses the expired certificate.
      await expect(Promise.resolve(http1.acquire())).rejects.toMatchObject({ code: "CERT_HAS_EXPIRED" });
      await expect(pool.h2(target)).rejects.toMatchObject({ code: "CERT_HAS_EXPIRED" });
      await expect(httpsRequest(url, { identity, expect: SERVER_ID, agent })).rejects.toThrow();
    } finally {
      close();
    }
  });

  it("SDK connectMtls: the raw connection is ended, and destroyed after the grace while the server holds it open; one to a server whose certificate lasts stays", async () => {
    /** A plain TLS echo server that keeps its side open after the client's end (allowHalfOpen). */
    const holdingServer = async (leaf: TestLeaf) => {
      const state = { received: "", ended: false };
      const accepted = new Set<TLSSocket>();
      const plain = createTlsServer({ cert: leaf.chainPem, key: leaf.keyPem, requestCert: true, rejectUnauthorized: false, allowHalfOpen: true }, (socket) => {
        socket.on("data", (d: Buffer) => {
          state.received += d.toString();
          if (!socket.writableEnded) socket.write(d);
        });
        socket.on("end", () => (state.ended = true));
        socket.on("error", () => undefined);
        accepted.add(socket);
      });
      await new Promise<void>((resolve) => plain.listen(0, "127.0.0.1", resolve));
      return { state, port: (plain.address() as AddressInfo).port, close: () =>
          new Promise<void>((resolve) => {
            plain.close(() => resolve());
            for (const socket of accepted) socket.destroy();
          }),
      };
    };
    const echoOn = (socket: TLSSocket, text: string) =>
      new Promise<string>((resolve, reject) => {
        socket.once("data", (d: Buffer) => resolve(d.toString()));
        socket.once("close", () => reject(new Error("closed")));
        socket.write(text);
      });
    const expiresAt = new Date(Date.now() + 4_000);
    const expiring = await holdingServer(pki.issueLeaf({ spiffeId: SERVER_ID, notAfter: expiresAt }));
    const lasting = await holdingServer(pki.issueLeaf({ spiffeId: SERVER_ID }));
    const identity = client();
    const toExpiring = await connectMtls({ identity, expect: SERVER_ID, port: expiring.port, logger, resumeSessions: false });
    const toLasting = await connectMtls({ identity, expect: SERVER_ID, port: lasting.port, logger, resumeSessions: false });
    try {
      expect(await echoOn(toExpiring, "before")).toBe("before");
      expect(await echoOn(toLasting, "before")).toBe("before");
      const closed = new Promise<void>((resolve) => toExpiring.once("close", () => resolve()));
      await waitFor("the expiring server to see the client's end", () => expiring.state.ended, 15_000);
      expect(toExpiring.writableEnded).toBe(true);
      await closed; // the server holds it open: the client destroys it after the grace
      expect(expiring.state.received).toBe("before");
      expect(await echoOn(toLasting, "after")).toBe("after");
      expect(lasting.state.ended).toBe(false);
    } finally {
      toExpiring.destroy();
      toLasting.destroy();
      await expiring.close();
      await lasting.close();
    }
  });

  it("and a little before the client's own certificate expires (a meshward server ends the connection then)", async () => {
    const leaf = pki.issueLeaf({ spiffeId: SERVER_ID });
    const lasting = createSecureServer({ cert: leaf.chainPem, key: leaf.keyPem, requestCert: true, rejectUnauthorized: false, allowHTTP1: true }, (_req, res) => res.end("ok"));
    await new Promise<void>((resolve) => lasting.listen(0, "127.0.0.1", resolve));
    const lastingPort = (lasting.address() as AddressInfo).port;
    const ownNotAfter = new Date(Date.now() + 5_000);
    const identity = new ManualIdentity(snapshotOf(pki.issueLeaf({ spiffeId: `spiffe://${TD}/ns/default/web`, notAfter: ownNotAfter }), bundleOf([pki])));
    const url = `https://127.0.0.1:${lastingPort}/`;
    const { agent, agentSockets, session, pool, close } = await clientsOf(identity, url);
    try {
      expect((await httpsRequest(url, { identity, expect: SERVER_ID, agent })).status).toBe(200);
      const http1 = pool.http1({ appId: "inventory", namespace: "default", host: "127.0.0.1", port: lastingPort, expectedId: SERVER_ID }, { maxHeaderBytes: 16_384, idleMs: 60_000 });
      const idle = await http1.acquire();
      http1.release(idle);
      const socket = [...agentSockets][0]!;
      expect(socket.destroyed || idle.socket.destroyed || session.closed).toBe(false);
      // The server (plain node:http2) never closes anything: whatever closes is the client's doing.
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, ownNotAfter.getTime() - Date.now())));
      expect(socket.destroyed).toBe(true);
      expect(idle.socket.destroyed).toBe(true);
      expect(session.closed).toBe(true);
    } finally {
      close();
      await new Promise<void>((resolve) => lasting.close(() => resolve()));
    }
  });
});
