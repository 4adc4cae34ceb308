import type { IncomingMessage } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import { connect as netConnect, type AddressInfo, type Socket } from "node:net";
import type { Duplex } from "node:stream";
import { pino } from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { sidecarConfigSchema } from "../../src/config/sidecar.ts";
import { startSidecar, type Sidecar } from "../../src/proxy/sidecar.ts";
import { createTestPki, type TestLeaf, type TestPki } from "../helpers/openssl-pki.ts";
import { startTlsEchoServer, type TlsEchoServer } from "../helpers/tls-echo.ts";
import { waitFor } from "../helpers/wait.ts";
import { bundleOf, ManualIdentity, snapshotOf } from "../transport/fixtures.ts";
import { logCapture, type LogCapture } from "./fixtures.ts";

// Found by review (revocation/rotation review, finding 2): the sidecar outbound's TCP tunnels
// (tcpUpstreams) and WebSocket upgrades got their connection to the peer from PeerPool.socket
// without what its pooled HTTP/1 and HTTP/2 connections get. A tunnel verified under a root that
// then left the bundle, or to a peer whose certificate then expired, went on carrying the app's
// bytes to a server the sidecar itself now refuses, for as long as it had traffic (the idle
// timeout is reset by traffic, and the outbound had no age cap). Such a tunnel is now ended (and
// destroyed after 5 s if the server holds it open), as the inbound ends its own tunnels, and
// limits.maxConnectionAge caps its age. The peers are plain node:tls servers holding an SVID, so
// nothing on their side ends anything: whatever ends is the outbound's doing.
const TD = "example.org";
const DB_ID = `spiffe://${TD}/ns/default/db`;
const CACHE_ID = `spiffe://${TD}/ns/default/cache`;

type PeerServer = TlsEchoServer;

let kept: TestPki;
let removed: TestPki;
const cleanups: (() => unknown)[] = [];

beforeAll(() => {
  kept = createTestPki({ trustDomain: TD, name: "kept root" });
  removed = createTestPki({ trustDomain: TD, name: "removed root" });
});
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});
afterAll(() => {
  kept?.cleanup();
  removed?.cleanup();
});

/**
 * A TLS echo server holding `leaf`. `holdOpen`: it keeps its side open after the client's end
 * (allowHalfOpen), as a server that does not close a connection would; otherwise it closes
 * with the client, as most servers do.
 */
const peerServer = (leaf: TestLeaf, holdOpen: boolean): Promise<PeerServer> => startTlsEchoServer(leaf, holdOpen, cleanups);

/**
 * A TLS server holding `leaf` that takes WebSocket upgrades and echoes the bytes after them; it
 * closes an upgraded connection with the client (an HTTP server's sockets are half-open).
 */
async function webSocketPeer(leaf: TestLeaf): Promise<PeerServer> {
  const received: string[] = [];
  const ended: boolean[] = [];
  const server = createHttpsServer({ cert: leaf.chainPem, key: leaf.keyPem, requestCert: true, rejectUnauthorized: false }, (_req, res) => res.end("not an upgrade"));
  server.on("upgrade", (_req: IncomingMessage, socket: Duplex) => {
    const i = received.push("") - 1;
    ended.push(false);
    socket.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
    socket.on("data", (chunk: Buffer) => {
      received[i] += chunk.toString();
      socket.write(chunk);
    });
    socket.on("end", () => {
      ended[i] = true;
      socket.end();
    });
    socket.on("error", () => undefined);
    cleanups.push(() => socket.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const close = () => new Promise<void>((resolve) => server.close(() => resolve()));
  cleanups.push(close);
  return { port: (server.address() as AddressInfo).port, received, ended, close };
}

/**
 * An outbound-only sidecar ("web", its identity driven by hand): a TCP upstream to each of `tcp`,
 * and an outbound HTTP listener when `http` names peers.
 */
async function sidecarTo(identity: ManualIdentity, peers: { tcp?: Record<string, PeerServer>; http?: Record<string, PeerServer> }, limits: Record<string, string> = {}): Promise<{ sidecar: Sidecar; logs: LogCapture }> {
  const logs = logCapture();
  const all = { ...peers.tcp, ...peers.http };
  const config = sidecarConfigSchema.parse({
    appId: "web",
    ca: "127.0.0.1:1",
    bundle: "unused.pem",
    ...(peers.http === undefined ? {} : { outbound: "127.0.0.1:0" }),
    tcpUpstreams: Object.fromEntries(Object.keys(peers.tcp ?? {}).map((name) => [name, "127.0.0.1:0"])),
    peers: Object.fromEntries(Object.entries(all).map(([name, peer]) => [name, `127.0.0.1:${peer.port}`])),
    limits,
  });
  const sidecar = await startSidecar(config, { logger: pino({ level: "info" }, logs), identity });
  cleanups.push(() => sidecar.close());
  return { sidecar, logs };
}

/**
 * A connection through the sidecar carrying bytes both ways: a tunnel through the TCP listener for
 * `name`, or with `upgrade`, a WebSocket through the outbound listener to `name`. Resolves once a
 * first message came back.
 */
async function tunnel(sidecar: Sidecar, name: string, upgrade = false) {
  const port = upgrade ? sidecar.addresses.outbound!.port : sidecar.addresses.tcp[name]!.port;
  const socket: Socket = netConnect({ host: "127.0.0.1", port });
  cleanups.push(() => socket.destroy());
  socket.on("error", () => undefined);
  let echoed = "";
  socket.on("data", (chunk: Buffer) => (echoed += chunk.toString()));
  const closed = new Promise<true>((resolve) => socket.once("close", () => resolve(true)));
  if (upgrade) {
    socket.write(`GET /ws HTTP/1.1\r\nHost: ${name}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`);
    await Promise.race([waitFor(`the upgrade through ${name}`, () => echoed.includes("\r\n\r\n"), 10_000), closed]);
    expect(echoed).toMatch(/^HTTP\/1\.1 101 /);
  }
  /** Whether `text` written now comes back. */
  const echoes = async (text: string) => {
    const before = echoed.length;
    const back = () => echoed.slice(before).includes(text);
    socket.write(text);
    await Promise.race([waitFor(`${text} to come back through ${name}`, back, 10_000).catch(() => undefined), closed]);
    return back();
  };
  expect(await echoes("before;")).toBe(true);
  /** Resolves true when the tunnel closes, false if it is still open after `withinMs` (the assertion then fails). */
  const closedWithin = (withinMs: number) => Promise.race([closed, new Promise<false>((resolve) => setTimeout(() => resolve(false), withinMs).unref())]);
  return { socket, echoes, closedWithin };
}

const identityUnder = (roots: TestPki[]) => new ManualIdentity(snapshotOf(kept.issueLeaf({ spiffeId: `spiffe://${TD}/ns/default/web` }), bundleOf(roots)));
const msg = (line: Record<string, unknown>) => String(line.msg ?? "");

describe("sidecar outbound: a tunnel to a peer is ended when what verified it no longer holds", () => {
  it("a root leaves the bundle: the tunnels to a server under it are ended, nothing more reaches that server; tunnels to a server under a kept root, and tunnels verified after, stay", async () => {
    const db = await peerServer(removed.issueLeaf({ spiffeId: DB_ID }), false);
    const cache = await peerServer(kept.issueLeaf({ spiffeId: CACHE_ID }), false);
    const identity = identityUnder([kept, removed]);
    const { sidecar, logs } = await sidecarTo(identity, { tcp: { db, cache } });
    const toDb = await tunnel(sidecar, "db");
    const toCache = await tunnel(sidecar, "cache");

    identity.updateBundle(bundleOf([kept, removed])); // no root removed: nothing ends
    expect(await toDb.echoes("same-roots;")).toBe(true);

    identity.updateBundle(bundleOf([kept]));
    // Written after the root left: it must not reach the server verified under that root.
    toDb.socket.write("after-removal;");
    expect(await toDb.closedWithin(15_000)).toBe(true);
    expect(db.ended[0]).toBe(true); // the sidecar ended it (this server closes with it)
    expect(db.received[0]).toBe("before;same-roots;");
    expect(logs.find((line) => /ending the connection to .*a root left the trust bundle/.test(msg(line)))).toBeDefined();
    // The tunnel to the server under the root that stayed is kept (it used to end as well: review
    // of stale CRLs and root removal, finding 2): only a chain resting on the removed root ends.
    expect(await toCache.echoes("kept-root;")).toBe(true);
    expect(cache.ended[0]).toBe(false);
    toCache.socket.destroy();

    // A tunnel verified under the current roots is carried, and a bundle update that removes no
    // root (one added back) leaves it open.
    const fresh = await tunnel(sidecar, "cache");
    identity.updateBundle(bundleOf([kept, removed]));
    expect(await fresh.echoes("after-update;")).toBe(true);
    expect(cache.received.at(-1)).toBe("before;after-update;");
    expect(cache.ended.at(-1)).toBe(false);
    identity.updateBundle(bundleOf([kept]));
    // A new tunnel to the db is refused at its handshake (as before).
    const again = netConnect({ host: "127.0.0.1", port: sidecar.addresses.tcp.db!.port });
    cleanups.push(() => again.destroy());
    again.on("error", () => undefined);
    again.write("new-tunnel;");
    await new Promise((resolve) => again.once("close", resolve));
    expect(db.received.length).toBe(1);
  });

  it("the peer's certificate expires: its tunnel is ended, and destroyed after the grace while the server holds it open; a tunnel to an unexpired peer stays", async () => {
    const notAfter = new Date(Date.now() + 4_000);
    const db = await peerServer(kept.issueLeaf({ spiffeId: DB_ID, notAfter }), true);
    const cache = await peerServer(kept.issueLeaf({ spiffeId: CACHE_ID }), true);
    const { sidecar, logs } = await sidecarTo(identityUnder([kept]), { tcp: { db, cache } });
    const toDb = await tunnel(sidecar, "db");
    const toCache = await tunnel(sidecar, "cache");

    await waitFor("the db server to see the end of the tunnel", () => db.ended[0] === true, 15_000);
    // The server holds its side open: the tunnel closes only because the sidecar destroys its
    // connection after the grace.
    expect(await toDb.closedWithin(15_000)).toBe(true);
    expect(db.received[0]).toBe("before;");
    expect(logs.find((line) => /ending the connection to .*the server's certificate on it, or this client's, is expiring/.test(msg(line)))).toBeDefined();

    expect(await toCache.echoes("cache-after-expiry;")).toBe(true);
    expect(cache.ended[0]).toBe(false);
  });

  it("limits.maxConnectionAge ends the outbound's tunnels too", async () => {
    const cache = await peerServer(kept.issueLeaf({ spiffeId: CACHE_ID }), false);
    const { sidecar, logs } = await sidecarTo(identityUnder([kept]), { tcp: { cache } }, { maxConnectionAge: "2s" });
    const toCache = await tunnel(sidecar, "cache");
    expect(await toCache.closedWithin(15_000)).toBe(true);
    expect(cache.ended[0]).toBe(true);
    expect(logs.find((line) => /ending the connection to .*maximum connection age \(2000 ms\)/.test(msg(line)))).toBeDefined();
  });

  it("a WebSocket through the outbound listener is ended the same way when a root leaves the bundle", async () => {
    const chat = await webSocketPeer(removed.issueLeaf({ spiffeId: `spiffe://${TD}/ns/default/chat` }));
    const identity = identityUnder([kept, removed]);
    const { sidecar } = await sidecarTo(identity, { http: { chat } });
    const ws = await tunnel(sidecar, "chat", true);
    identity.updateBundle(bundleOf([kept]));
    ws.socket.write("after-removal;");
    expect(await ws.closedWithin(15_000)).toBe(true);
    expect(chat.ended[0]).toBe(true);
    expect(chat.received[0]).toBe("before;");
  });
});
