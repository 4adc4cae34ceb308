import { Agent, request } from "node:https";
import type { AddressInfo } from "node:net";
import { connect } from "node:tls";
import type { TLSSocket } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectMtls, createHttpsServer, createMtlsServer, resumableSession } from "../../src/transport/index.ts";
import { createTestPki } from "../helpers/openssl-pki.ts";
import type { TestLeaf, TestPki } from "../helpers/openssl-pki.ts";
import { bundleOf, makeLogger, ManualIdentity, snapshotOf } from "./fixtures.ts";

// TLS checks a certificate's validity during the handshake only. A connection made with a client
// certificate that expires later would go on serving that caller until the age cap (an hour by
// default), and for ever with the cap off (maxConnectionAgeMs: 0). Every meshward server (and the
// sidecar inbound, which uses the same registry) now retires a connection when its caller's
// certificate expires.
const TD = "example.org";
const SERVER_ID = `spiffe://${TD}/ns/default/api`;
const CLIENT_ID = `spiffe://${TD}/ns/default/web`;
const logger = makeLogger();

let pki: TestPki;
const cleanups: (() => unknown)[] = [];

beforeAll(() => {
  pki = createTestPki({ trustDomain: TD });
});
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
  pki?.cleanup();
});

const serverIdentity = () => new ManualIdentity(snapshotOf(pki.issueLeaf({ spiffeId: SERVER_ID }), bundleOf([pki])));
const sleepUntilPast = (date: Date, extraMs: number) => new Promise((resolve) => setTimeout(resolve, Math.max(0, date.getTime() - Date.now()) + extraMs));

function dial(port: number, leaf: TestLeaf): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: "127.0.0.1", port, key: leaf.keyPem, cert: leaf.chainPem, ca: pki.root.certPem, servername: "localhost", checkServerIdentity: () => undefined });
    cleanups.push(() => socket.destroy());
    socket.once("secureConnect", () => resolve(socket));
    socket.once("error", reject);
  });
}

/** Resolves when the socket closes, or after `withinMs` (the assertions after it then fail). */
const closed = (socket: TLSSocket, withinMs = 8_000) =>
  new Promise<void>((resolve) => {
    if (socket.closed) return resolve();
    socket.once("close", () => resolve());
    setTimeout(resolve, withinMs).unref();
  });

describe("a connection ends when its caller's certificate expires", () => {
  it("raw TLS server (age cap on): the expiring caller's connection is ended, a current caller's stays", async () => {
    const peers: string[] = [];
    const server = await createMtlsServer({ identity: serverIdentity(), logger }, (socket, peer) => {
      peers.push(peer.spiffeId);
      socket.on("error", () => undefined);
      socket.pipe(socket);
    });
    cleanups.push(() => server.meshward.close());
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as AddressInfo).port;

    const notAfter = new Date(Date.now() + 3_000);
    const expiring = await dial(port, pki.issueLeaf({ spiffeId: CLIENT_ID, notAfter }));
    const current = await dial(port, pki.issueLeaf({ spiffeId: CLIENT_ID }));
    expiring.on("error", () => undefined);
    // Both are served before the expiry.
    for (const socket of [expiring, current]) {
      socket.write("ping");
      await new Promise((resolve) => socket.once("data", resolve));
    }
    expect(server.meshward.openConnections()).toBe(2);

    const expiringClosed = closed(expiring);
    await sleepUntilPast(notAfter, 1_500);
    await expiringClosed;
    expect(expiring.closed).toBe(true);
    expect(current.closed).toBe(false);
    expect(server.meshward.openConnections()).toBe(1);
    current.write("still here");
    expect(String(await new Promise((resolve) => current.once("data", resolve)))).toBe("still here");
    expect(peers).toEqual([CLIENT_ID, CLIENT_ID]);
  });

  it("HTTPS server with the age cap off: the keep-alive connection closes at expiry and the expired certificate cannot reconnect", async () => {
    const server = await createHttpsServer({ identity: serverIdentity(), logger, maxConnectionAgeMs: 0 }, (req, res) => res.end(req.peer.spiffeId));
    cleanups.push(() => server.meshward.close());
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as AddressInfo).port;

    const notAfter = new Date(Date.now() + 3_000);
    const leaf = pki.issueLeaf({ spiffeId: CLIENT_ID, notAfter });
    const agent = new Agent({ keepAlive: true, maxSockets: 1, key: leaf.keyPem, cert: leaf.chainPem, ca: pki.root.certPem, checkServerIdentity: () => undefined });
    cleanups.push(() => agent.destroy());
    const sockets: TLSSocket[] = [];
    const get = () =>
      new Promise<string>((resolve, reject) => {
        const req = request({ host: "127.0.0.1", port, path: "/", agent }, (res) => {
          let body = "";
          res.setEncoding("utf8");
          res.on("data", (chunk) => (body += chunk));
          res.on("end", () => resolve(body));
        });
        req.once("socket", (socket) => {
          if (!sockets.includes(socket as TLSSocket)) sockets.push(socket as TLSSocket);
        });
        req.on("error", reject);
        req.end();
      });

    expect(await get()).toBe(CLIENT_ID);
    expect(await get()).toBe(CLIENT_ID);
    expect(sockets).toHaveLength(1); // one kept-alive connection
    const first = closed(sockets[0]!);
    await sleepUntilPast(notAfter, 1_500);
    await first;
    expect(server.meshward.openConnections()).toBe(0);
    // A new connection needs a handshake, and the handshake refuses the expired certificate.
    await expect(get()).rejects.toThrow();
    expect(sockets.length).toBeGreaterThanOrEqual(2);
  });

  it("a certificate valid for longer than a timer can wait (~24.8 days) does not end the connection early", async () => {
    // setTimeout with more than 2^31-1 ms fires after 1 ms (TimeoutOverflowWarning); the registry
    // waits in steps instead.
    const server = await createMtlsServer({ identity: serverIdentity(), logger, maxConnectionAgeMs: 0 }, (socket) => {
      socket.on("error", () => undefined);
      socket.pipe(socket);
    });
    cleanups.push(() => server.meshward.close());
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as AddressInfo).port;
    const socket = await dial(port, pki.issueLeaf({ spiffeId: CLIENT_ID, notAfter: new Date(Date.now() + 30 * 86_400_000) }));
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(socket.closed).toBe(false);
    socket.write("ping");
    expect(String(await new Promise((resolve) => socket.once("data", resolve)))).toBe("ping");
    expect(server.meshward.openConnections()).toBe(1);
  });

  it("a client does not offer a session made with its own previous certificate: after it rotates, the server sees the new one", async () => {
    // A resumed session carries the client certificate of the full handshake that made it. Offered
    // after the client rotated, it would show the server the old certificate, and once that one
    // expired the server would refuse every resumption (E_CERT_EXPIRED) while the client kept
    // offering the ticket: with connections now ending at expiry, every reconnect failed.
    const serials: string[] = [];
    const server = await createMtlsServer({ identity: serverIdentity(), logger }, (socket, peer) => {
      serials.push(peer.serial);
      socket.on("error", () => undefined);
      socket.on("data", () => socket.write(peer.serial));
    });
    cleanups.push(() => server.meshward.close());
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as AddressInfo).port;
    const first = pki.issueLeaf({ spiffeId: CLIENT_ID });
    const client = new ManualIdentity(snapshotOf(first, bundleOf([pki])));
    const talk = async (socket: TLSSocket) => {
      socket.write("?");
      return String(await new Promise((resolve) => socket.once("data", resolve)));
    };

    const full = await connectMtls({ identity: client, expect: SERVER_ID, port, logger, resumeSessions: false });
    cleanups.push(() => full.destroy());
    expect(await talk(full)).toBe(first.serial);
    const session = resumableSession(full);
    expect(session).toBeDefined();
    const resumed = await connectMtls({ identity: client, expect: SERVER_ID, port, logger, session: session! });
    cleanups.push(() => resumed.destroy());
    expect(resumed.isSessionReused()).toBe(true); // same certificate: resumption is fine
    expect(await talk(resumed)).toBe(first.serial);

    const second = pki.issueLeaf({ spiffeId: CLIENT_ID });
    client.rotate(snapshotOf(second, bundleOf([pki])));
    const after = await connectMtls({ identity: client, expect: SERVER_ID, port, logger, session: session! });
    cleanups.push(() => after.destroy());
    expect(after.isSessionReused()).toBe(false);
    expect(await talk(after)).toBe(second.serial);
    expect(serials).toEqual([first.serial, first.serial, second.serial]);
  });
});
