import { createServer as createPlainHttpsServer } from "node:https";
import { createSecureServer as createPlainHttp2Server } from "node:http2";
import type { AddressInfo } from "node:net";
import { connect as tlsConnect, createServer as createPlainTlsServer } from "node:tls";
import type { ConnectionOptions, TLSSocket } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectHttp2, connectMtls, createMtlsAgent, createMtlsServer, httpsRequest, resumableSession } from "../../src/transport/index.ts";
import type { MtlsServer } from "../../src/transport/index.ts";
import { createTestPki } from "../helpers/openssl-pki.ts";
import { waitFor } from "../helpers/wait.ts";
import type { TestPki } from "../helpers/openssl-pki.ts";
import { bundleOf, makeLogger, ManualIdentity, snapshotOf } from "./fixtures.ts";

// A resumed TLS session is never verified again (NODE-TLS-FACTS: resumption skips the chain and
// identity checks), and neither is an open connection. When a root leaves the trust bundle (the
// end of a root rotation, or a distrusted root), a peer whose chain rests on it must not keep
// coming in through a session ticket or an old connection.
const TD = "example.org";
const SERVER_ID = `spiffe://${TD}/ns/default/api`;
const CLIENT_ID = `spiffe://${TD}/ns/default/web`;
const logger = makeLogger();

let kept: TestPki;
let removed: TestPki;
const servers: MtlsServer[] = [];

beforeAll(() => {
  kept = createTestPki({ trustDomain: TD, name: "kept root" });
  removed = createTestPki({ trustDomain: TD, name: "removed root" });
});
afterAll(async () => {
  for (const s of servers) await s.meshward.close();
  kept?.cleanup();
  removed?.cleanup();
});

async function echoServer(identity: ManualIdentity): Promise<{ server: MtlsServer; port: number }> {
  const server = await createMtlsServer({ identity, logger }, (socket, peer) => {
    socket.on("data", (d) => socket.write(`${peer.spiffeId} ${d.toString()}`));
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { server, port: (server.address() as AddressInfo).port };
}

const echo = (socket: TLSSocket, text: string) =>
  new Promise<string>((resolve, reject) => {
    socket.once("data", (d) => resolve(d.toString()));
    socket.once("error", reject);
    socket.once("close", () => reject(new Error("closed")));
    socket.write(text);
  });

const closed = (socket: TLSSocket) => new Promise<void>((resolve) => (socket.closed ? resolve() : socket.once("close", () => resolve())));

/** A connection whose TLS session can be resumed (the TLS 1.3 ticket arrives after the handshake). */
async function sessionOf(identity: ManualIdentity, port: number) {
  const socket = await connectMtls({ identity, expect: SERVER_ID, port, logger, resumeSessions: false });
  expect(await echo(socket, "hello")).toBe(`${CLIENT_ID} hello`);
  const session = resumableSession(socket);
  expect(session).toBeDefined();
  return { socket, session: session! };
}

describe("a root removed from the bundle", () => {
  it("server side: the open connection of a caller under that root is closed and its session ticket no longer resumes", async () => {
    const serverIdentity = new ManualIdentity(snapshotOf(kept.issueLeaf({ spiffeId: SERVER_ID }), bundleOf([kept, removed])));
    const { port } = await echoServer(serverIdentity);
    const client = new ManualIdentity(snapshotOf(removed.issueLeaf({ spiffeId: CLIENT_ID }), bundleOf([kept, removed])));

    const { socket: open, session } = await sessionOf(client, port);
    // The ticket works while both roots are trusted.
    const resumed = await connectMtls({ identity: client, expect: SERVER_ID, port, logger, session });
    expect(resumed.isSessionReused()).toBe(true);
    expect(await echo(resumed, "again")).toBe(`${CLIENT_ID} again`);

    serverIdentity.updateBundle(bundleOf([kept]));
    await closed(open);
    await closed(resumed);
    // The client still trusts both roots and offers its ticket: the server must not resume it.
    const refused = connectMtls({ identity: client, expect: SERVER_ID, port, logger, session }).then((s) => echo(s, "after"));
    await expect(refused).rejects.toThrow();
    // A caller under the kept root is served as before.
    const other = new ManualIdentity(snapshotOf(kept.issueLeaf({ spiffeId: CLIENT_ID }), bundleOf([kept])));
    const fresh = await connectMtls({ identity: other, expect: SERVER_ID, port, logger, resumeSessions: false });
    expect(await echo(fresh, "kept")).toBe(`${CLIENT_ID} kept`);
    fresh.destroy();
  });

  it("client side: a session with a server under that root is not offered again, and the full handshake is refused", async () => {
    const serverIdentity = new ManualIdentity(snapshotOf(removed.issueLeaf({ spiffeId: SERVER_ID }), bundleOf([kept, removed])));
    const { port } = await echoServer(serverIdentity);
    const client = new ManualIdentity(snapshotOf(kept.issueLeaf({ spiffeId: CLIENT_ID }), bundleOf([kept, removed])));

    const { socket, session } = await sessionOf(client, port);
    socket.destroy();
    const resumed = await connectMtls({ identity: client, expect: SERVER_ID, port, logger, session });
    expect(resumed.isSessionReused()).toBe(true);
    resumed.destroy();

    client.updateBundle(bundleOf([kept]));
    await expect(connectMtls({ identity: client, expect: SERVER_ID, port, logger, session })).rejects.toMatchObject({ code: "UNABLE_TO_GET_ISSUER_CERT_LOCALLY" });
  });

  // A raw connection has no request boundary: it is ended (nothing more is sent on it) and
  // destroyed 5 s later if the other side holds it open, as the sidecar's tunnels are.
  it("client side, raw TLS (connectMtls): the open connection to a server that is not meshward is ended, nothing more is sent on it", async () => {
    const leaf = removed.issueLeaf({ spiffeId: SERVER_ID });
    const received: string[] = [];
    let ended = false;
    const plain = createPlainTlsServer({ cert: leaf.chainPem, key: leaf.keyPem, requestCert: true, rejectUnauthorized: false }, (socket) => {
      socket.on("data", (d: Buffer) => {
        received.push(d.toString());
        socket.write(d);
      });
      socket.on("end", () => (ended = true));
      socket.on("error", () => undefined);
    });
    await new Promise<void>((r) => plain.listen(0, "127.0.0.1", r));
    const client = new ManualIdentity(snapshotOf(kept.issueLeaf({ spiffeId: CLIENT_ID }), bundleOf([kept, removed])));
    const lines = makeLogger();
    const socket = await connectMtls({ identity: client, expect: SERVER_ID, port: (plain.address() as AddressInfo).port, logger: lines, resumeSessions: false });
    try {
      expect(await echo(socket, "before")).toBe("before");
      client.updateBundle(bundleOf([kept, removed])); // no root removed: nothing ends
      expect(await echo(socket, "same-roots")).toBe("same-roots");
      client.updateBundle(bundleOf([kept]));
      expect(socket.writableEnded).toBe(true);
      await closed(socket);
      expect(ended).toBe(true);
      expect(received.join("")).toBe("beforesame-roots");
      expect(lines.lines.some((line) => /^info ending the connection to 127\.0\.0\.1:\d+: a root left the trust bundle/.test(line))).toBe(true);
    } finally {
      socket.destroy();
      await new Promise<void>((r) => plain.close(() => r()));
    }
  });

  // The handshake verifies the server with the roots of the secure context it was dialled with:
  // a root removed while it is in flight still verified this server.
  it("client side: a root removed during the handshake ends the connection it verified, and its session is not offered again", async () => {
    const leaf = removed.issueLeaf({ spiffeId: SERVER_ID });
    const client = new ManualIdentity(snapshotOf(kept.issueLeaf({ spiffeId: CLIENT_ID }), bundleOf([kept, removed])));
    const plain = createPlainTlsServer({ cert: leaf.chainPem, key: leaf.keyPem, requestCert: true, rejectUnauthorized: false }, (socket) => {
      socket.on("data", (d: Buffer) => socket.write(d));
      socket.on("error", () => undefined);
    });
    let accepted = 0;
    // Accepted: the client has dialled (with both roots) and the handshake has not completed.
    plain.on("connection", () => {
      if (accepted++ === 0) client.updateBundle(bundleOf([kept]));
    });
    await new Promise<void>((r) => plain.listen(0, "127.0.0.1", r));
    const port = (plain.address() as AddressInfo).port;
    const lines = makeLogger();
    try {
      const socket = await connectMtls({ identity: client, expect: SERVER_ID, port, logger: lines });
      await closed(socket);
      expect(lines.lines.some((line) => /ending the connection to .*a root left the trust bundle/.test(line))).toBe(true);
      expect(resumableSession(socket)).toBeDefined(); // the server sent its ticket before it saw our end
      await expect(connectMtls({ identity: client, expect: SERVER_ID, port, logger: lines })).rejects.toMatchObject({ code: "UNABLE_TO_GET_ISSUER_CERT_LOCALLY" });
      expect(accepted).toBe(2);
    } finally {
      await new Promise<void>((r) => plain.close(() => r()));
    }
  });

  it("server side, raw TLS: a caller that holds its side open after the server's end is disconnected after the grace", async () => {
    const serverIdentity = new ManualIdentity(snapshotOf(kept.issueLeaf({ spiffeId: SERVER_ID }), bundleOf([kept, removed])));
    const received: string[] = [];
    const server = await createMtlsServer({ identity: serverIdentity, logger }, (socket) => {
      socket.on("data", (d: Buffer) => received.push(d.toString()));
      socket.on("error", () => undefined);
    });
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const leaf = removed.issueLeaf({ spiffeId: CLIENT_ID });
    // Not a meshward client: it takes the server's end and keeps its own side open (half-open).
    const caller = tlsConnect({ host: "127.0.0.1", port: (server.address() as AddressInfo).port, cert: leaf.chainPem, key: leaf.keyPem, ca: kept.root.certPem, checkServerIdentity: () => undefined, allowHalfOpen: true } as ConnectionOptions);
    caller.on("error", () => undefined);
    try {
      await new Promise((resolve) => caller.once("secureConnect", resolve));
      caller.write("hello");
      await waitFor("the server to receive hello", () => received.join("") === "hello");
      const serverEnded = new Promise((resolve) => caller.once("end", resolve));
      serverIdentity.updateBundle(bundleOf([kept]));
      await serverEnded;
      expect(server.meshward.openConnections()).toBe(1); // the caller holds it open...
      await waitFor("the server to drop the connection", () => server.meshward.openConnections() === 0); // ...until the server destroys it
      // The first write after the server closed its socket is answered by a reset, the next fails.
      const writing = setInterval(() => caller.write("late"), 50);
      caller.once("close", () => clearInterval(writing));
      await closed(caller);
    } finally {
      caller.destroy();
    }
  });

  it("adding a root keeps sessions resumable (a rotation's start costs no full handshakes)", async () => {
    const serverIdentity = new ManualIdentity(snapshotOf(kept.issueLeaf({ spiffeId: SERVER_ID }), bundleOf([kept])));
    const { port } = await echoServer(serverIdentity);
    const client = new ManualIdentity(snapshotOf(kept.issueLeaf({ spiffeId: CLIENT_ID }), bundleOf([kept])));
    const { socket, session } = await sessionOf(client, port);
    serverIdentity.updateBundle(bundleOf([kept, removed]));
    client.updateBundle(bundleOf([kept, removed]));
    expect(await echo(socket, "open")).toBe(`${CLIENT_ID} open`);
    const resumed = await connectMtls({ identity: client, expect: SERVER_ID, port, logger, session });
    expect(resumed.isSessionReused()).toBe(true);
    socket.destroy();
    resumed.destroy();
  });

  // A server that is not meshward (nginx, Go, a plain node:https server) does not close its
  // connections when the client's bundle changes: the client has to stop using them itself.
  it("client side, HTTP/1.1 keep-alive: the pooled connection to a server under that root is not used again", async () => {
    const leaf = removed.issueLeaf({ spiffeId: SERVER_ID });
    const plain = createPlainHttpsServer({ cert: leaf.chainPem, key: leaf.keyPem, requestCert: true, rejectUnauthorized: false, keepAliveTimeout: 60_000 }, (req, res) => {
      res.end(`${req.socket.remotePort}`);
    });
    await new Promise<void>((r) => plain.listen(0, "127.0.0.1", r));
    const url = `https://127.0.0.1:${(plain.address() as AddressInfo).port}/`;
    const client = new ManualIdentity(snapshotOf(kept.issueLeaf({ spiffeId: CLIENT_ID }), bundleOf([kept, removed])));
    const agent = await createMtlsAgent({ identity: client, expect: SERVER_ID, logger });
    try {
      const first = await httpsRequest(url, { identity: client, expect: SERVER_ID, logger, agent });
      const again = await httpsRequest(url, { identity: client, expect: SERVER_ID, logger, agent });
      expect(again.text()).toBe(first.text()); // the same pooled connection
      client.updateBundle(bundleOf([kept]));
      await expect(httpsRequest(url, { identity: client, expect: SERVER_ID, logger, agent })).rejects.toMatchObject({ code: "UNABLE_TO_GET_ISSUER_CERT_LOCALLY" });
    } finally {
      agent.destroy();
      plain.closeAllConnections();
      await new Promise<void>((r) => plain.close(() => r()));
    }
  });

  it("client side, HTTP/2: a session with a server under that root takes no new stream", async () => {
    const leaf = removed.issueLeaf({ spiffeId: SERVER_ID });
    let served = 0;
    const plain = createPlainHttp2Server({ cert: leaf.chainPem, key: leaf.keyPem, requestCert: true, rejectUnauthorized: false }, (_req, res) => {
      served++;
      res.end("ok");
    });
    await new Promise<void>((r) => plain.listen(0, "127.0.0.1", r));
    const client = new ManualIdentity(snapshotOf(kept.issueLeaf({ spiffeId: CLIENT_ID }), bundleOf([kept, removed])));
    const session = await connectHttp2(`https://127.0.0.1:${(plain.address() as AddressInfo).port}`, { identity: client, expect: SERVER_ID, logger });
    try {
      const get = () =>
        new Promise<string>((resolve, reject) => {
          const stream = session.request({ ":path": "/" });
          let body = "";
          stream.on("data", (d: Buffer) => (body += d));
          stream.on("end", () => resolve(body));
          stream.on("error", reject);
        });
      expect(await get()).toBe("ok");
      client.updateBundle(bundleOf([kept]));
      expect(session.closed).toBe(true);
      // Node 20 throws ERR_HTTP2_GOAWAY_SESSION at once; Node 26 hands back a stream that fails.
      const outcome = await new Promise<string>((resolve) => {
        try {
          const stream = session.request({ ":path": "/" });
          stream.on("response", () => resolve("answered"));
          stream.on("error", (error: NodeJS.ErrnoException) => resolve(error.code ?? "error"));
          stream.on("close", () => resolve("closed"));
        } catch (error) {
          resolve((error as NodeJS.ErrnoException).code ?? "error");
        }
      });
      expect(outcome).not.toBe("answered");
      expect(served).toBe(1);
    } finally {
      session.destroy();
      await new Promise<void>((r) => plain.close(() => r()));
    }
  });

  // Review (stale CRL / root removal, finding 2): a root leaving the bundle ended every open
  // connection, those whose peer chain rests on a root that stays included. Only connections
  // whose peer chain rested on the removed root end now.
  it("server side: a caller under the kept root keeps its open connection, the one under the removed root loses it", async () => {
    const serverIdentity = new ManualIdentity(snapshotOf(kept.issueLeaf({ spiffeId: SERVER_ID }), bundleOf([kept, removed])));
    const { port } = await echoServer(serverIdentity);
    const underKept = new ManualIdentity(snapshotOf(kept.issueLeaf({ spiffeId: CLIENT_ID }), bundleOf([kept])));
    const underRemoved = new ManualIdentity(snapshotOf(removed.issueLeaf({ spiffeId: CLIENT_ID }), bundleOf([kept, removed])));
    const staying = await connectMtls({ identity: underKept, expect: SERVER_ID, port, logger, resumeSessions: false });
    const leaving = await connectMtls({ identity: underRemoved, expect: SERVER_ID, port, logger, resumeSessions: false });
    expect(await echo(staying, "a")).toBe(`${CLIENT_ID} a`);
    expect(await echo(leaving, "b")).toBe(`${CLIENT_ID} b`);
    serverIdentity.updateBundle(bundleOf([kept]));
    await closed(leaving);
    expect(await echo(staying, "still")).toBe(`${CLIENT_ID} still`);
    staying.destroy();
  });

  it("client side, raw TLS (connectMtls): a tunnel to a server under the kept root stays open", async () => {
    const serverIdentity = new ManualIdentity(snapshotOf(kept.issueLeaf({ spiffeId: SERVER_ID }), bundleOf([kept])));
    const { port } = await echoServer(serverIdentity);
    const client = new ManualIdentity(snapshotOf(kept.issueLeaf({ spiffeId: CLIENT_ID }), bundleOf([kept, removed])));
    const lines = makeLogger();
    const socket = await connectMtls({ identity: client, expect: SERVER_ID, port, logger: lines, resumeSessions: false });
    try {
      expect(await echo(socket, "before")).toBe(`${CLIENT_ID} before`);
      client.updateBundle(bundleOf([kept]));
      expect(socket.writableEnded).toBe(false);
      expect(await echo(socket, "after")).toBe(`${CLIENT_ID} after`);
      expect(lines.lines.some((line) => /ending the connection/.test(line))).toBe(false);
    } finally {
      socket.destroy();
    }
  });

  it("client side, HTTP/1.1 keep-alive and HTTP/2: connections to a server under the kept root are used again", async () => {
    const leaf = kept.issueLeaf({ spiffeId: SERVER_ID });
    const plain = createPlainHttpsServer({ cert: leaf.chainPem, key: leaf.keyPem, requestCert: true, rejectUnauthorized: false, keepAliveTimeout: 60_000 }, (req, res) => {
      res.end(`${req.socket.remotePort}`);
    });
    await new Promise<void>((r) => plain.listen(0, "127.0.0.1", r));
    const url = `https://127.0.0.1:${(plain.address() as AddressInfo).port}/`;
    const h2Server = createPlainHttp2Server({ cert: leaf.chainPem, key: leaf.keyPem, requestCert: true, rejectUnauthorized: false }, (_req, res) => res.end("ok"));
    await new Promise<void>((r) => h2Server.listen(0, "127.0.0.1", r));
    const client = new ManualIdentity(snapshotOf(kept.issueLeaf({ spiffeId: CLIENT_ID }), bundleOf([kept, removed])));
    const agent = await createMtlsAgent({ identity: client, expect: SERVER_ID, logger });
    const session = await connectHttp2(`https://127.0.0.1:${(h2Server.address() as AddressInfo).port}`, { identity: client, expect: SERVER_ID, logger });
    try {
      const first = await httpsRequest(url, { identity: client, expect: SERVER_ID, logger, agent });
      client.updateBundle(bundleOf([kept]));
      const again = await httpsRequest(url, { identity: client, expect: SERVER_ID, logger, agent });
      expect(again.text()).toBe(first.text()); // the same pooled connection
      expect(session.closed).toBe(false);
    } finally {
      agent.destroy();
      session.destroy();
      plain.closeAllConnections();
      await new Promise<void>((r) => plain.close(() => r()));
      await new Promise<void>((r) => h2Server.close(() => r()));
    }
  });

  it("client side: adding a root retires nothing", async () => {
    const leaf = kept.issueLeaf({ spiffeId: SERVER_ID });
    const plain = createPlainHttp2Server({ cert: leaf.chainPem, key: leaf.keyPem, requestCert: true, rejectUnauthorized: false }, (_req, res) => res.end("ok"));
    await new Promise<void>((r) => plain.listen(0, "127.0.0.1", r));
    const client = new ManualIdentity(snapshotOf(kept.issueLeaf({ spiffeId: CLIENT_ID }), bundleOf([kept])));
    const session = await connectHttp2(`https://127.0.0.1:${(plain.address() as AddressInfo).port}`, { identity: client, expect: SERVER_ID, logger });
    try {
      client.updateBundle(bundleOf([kept, removed]));
      expect(session.closed).toBe(false);
    } finally {
      session.destroy();
      await new Promise<void>((r) => plain.close(() => r()));
    }
  });
});
