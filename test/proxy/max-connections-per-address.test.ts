import { readFileSync } from "node:fs";
import { createServer as createHttpServer } from "node:http";
import type { ServerResponse } from "node:http";
import { connect as http2Connect } from "node:http2";
import type { ClientHttp2Session } from "node:http2";
import { connect as netConnect, createServer as createNetServer } from "node:net";
import type { AddressInfo, Socket } from "node:net";
import { connect as tlsConnect } from "node:tls";
import type { ConnectionOptions } from "node:tls";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { metricValue, startMeshCa, startTestSidecar, type MeshCa, type TestSidecarWithApp } from "./fixtures.ts";

/**
 * limits.maxConnectionsPerAddress on the inbound listener: connections open at once from one
 * source address (reset on accept past it, as the CA API and the injector webhook do), of which
 * half may still be short of a finished TLS handshake (a caller without any certificate can hold
 * those until limits.handshakeTimeout); and the share of the connections to an HTTP/1 app one
 * caller address may hold (its HTTP/2 streams past it wait for one of its own to end). Every
 * peer is real: raw TCP sockets sending a ClientHello captured from node:tls, mTLS sockets, and
 * node:http2 clients; the loopback addresses 127.0.0.x stand for different callers.
 */
describe("limits.maxConnectionsPerAddress: per-caller-address caps on the inbound", () => {
  const PER_ADDRESS = 4; // so at most 2 handshaking
  const HOST = "per-address.mesh.test";
  let ca: MeshCa;
  let callee: TestSidecarWithApp;
  let holder: { cert: string; key: string };
  let clientHello: Buffer;
  const held: Socket[] = [];
  const sessions: ClientHttp2Session[] = [];

  /** The app: every request under /hold waits until `releaseAll`, then is answered (and later ones at once). */
  const requests: string[] = [];
  const waiting: ServerResponse[] = [];
  let released = false;
  let onRequest: (() => void) | undefined;
  const app = createHttpServer((req, res) => {
    requests.push(req.url ?? "");
    onRequest?.();
    req.resume();
    if (released) res.end("ok");
    else waiting.push(res);
  });
  const releaseAll = () => {
    released = true;
    for (const res of waiting.splice(0)) res.end("ok");
  };
  const until = async (check: () => boolean): Promise<void> => {
    while (!check()) await new Promise<void>((resolve) => (onRequest = resolve));
  };

  const metrics = async () => (await fetch(`http://127.0.0.1:${callee.addresses.status!.port}/metrics`)).text();
  const refusedCount = async (reason: string) => metricValue(await metrics(), "meshward_sidecar_refused_total", { direction: "inbound", reason });
  const activeInbound = async () => metricValue(await metrics(), "meshward_sidecar_listener_connections_active", { listener: "inbound" });
  const untilActive = async (count: number) => {
    for (let i = 0; i < 200 && (await activeInbound()) !== count; i++) await new Promise((r) => setTimeout(r, 50));
    expect(await activeInbound()).toBe(count);
  };

  /** A raw TCP connection from `from` that sends one real ClientHello and nothing more: whether the sidecar reset it (closed) or kept it. */
  const helloFrom = (from: string): { socket: Socket; closed: Promise<boolean> } => {
    const socket = netConnect({ host: "127.0.0.1", port: callee.addresses.inbound.port, localAddress: from });
    held.push(socket);
    socket.on("error", () => undefined);
    const closed = new Promise<boolean>((r) => socket.once("close", () => r(true)));
    socket.write(clientHello);
    return { socket, closed };
  };
  /** A verified mutual-TLS connection from `from`, left open; rejects when the sidecar closes it first. */
  const mtlsFrom = (from: string): Promise<Socket> =>
    new Promise((resolve, reject) => {
      // localAddress is passed on to net.connect (not in tls' option types).
      const socket = tlsConnect({ host: "127.0.0.1", port: callee.addresses.inbound.port, localAddress: from, servername: HOST, cert: readFileSync(holder.cert), key: readFileSync(holder.key), ca: ca.bundlePem, ALPNProtocols: ["http/1.1"] } as ConnectionOptions);
      held.push(socket);
      socket.once("secureConnect", () => resolve(socket));
      socket.once("error", reject);
      socket.once("close", () => reject(new Error("closed before the handshake finished")));
    });
  const h2From = (from: string): ClientHttp2Session => {
    const session = http2Connect(`https://127.0.0.1:${callee.addresses.inbound.port}`, { localAddress: from, servername: HOST, cert: readFileSync(holder.cert), key: readFileSync(holder.key), ca: ca.bundlePem } as never);
    session.on("error", () => undefined);
    sessions.push(session);
    return session;
  };
  const get = (session: ClientHttp2Session, path: string): Promise<number> =>
    new Promise((resolve, reject) => {
      const stream = session.request({ ":path": path });
      let status = 0;
      stream.on("response", (headers) => (status = Number(headers[":status"])));
      stream.on("error", reject);
      stream.resume();
      stream.on("close", () => resolve(status));
      stream.end();
    });

  beforeAll(async () => {
    // A real ClientHello, as node:tls sends it, captured by a server that never answers.
    clientHello = await new Promise<Buffer>((resolve) => {
      const capture = createNetServer((socket) => socket.once("data", (chunk: Buffer) => {
        resolve(chunk);
        socket.destroy();
        capture.close();
      }));
      capture.listen(0, "127.0.0.1", () => {
        const client = tlsConnect({ host: "127.0.0.1", port: (capture.address() as AddressInfo).port, servername: HOST });
        client.on("error", () => undefined);
      });
    });
    await new Promise<void>((resolve) => app.listen(0, "127.0.0.1", resolve));
    ca = await startMeshCa();
    holder = await ca.clientFiles("default", "holder");
    callee = await startTestSidecar(
      ca,
      { appId: "per-address", app: `127.0.0.1:${(app.address() as AddressInfo).port}`, status: "127.0.0.1:0", limits: { maxConnectionsPerAddress: PER_ADDRESS, handshakeTimeout: "120s" } },
      { dnsNames: [HOST] },
    );
  }, 60_000);
  afterEach(async () => {
    for (const socket of held.splice(0)) socket.destroy();
    for (const session of sessions.splice(0)) session.destroy();
    await untilActive(0);
  });
  afterAll(async () => {
    releaseAll();
    await callee?.close();
    await new Promise<void>((resolve) => app.close(() => resolve()));
    app.closeAllConnections();
    await ca?.close();
  });

  it("a caller without a certificate holds at most half the per-address cap in unfinished handshakes; another address is not affected", async () => {
    expect(clientHello[0]).toBe(0x16); // a TLS handshake record
    const before = await refusedCount("max_handshakes_per_address");
    const first = helloFrom("127.0.0.1");
    const second = helloFrom("127.0.0.1");
    await untilActive(2);
    const third = helloFrom("127.0.0.1");
    expect(await third.closed).toBe(true);
    expect(await refusedCount("max_handshakes_per_address")).toBe(before + 1);
    // Another caller's handshake is still taken.
    helloFrom("127.0.0.2");
    await untilActive(3);
    expect(await refusedCount("max_handshakes_per_address")).toBe(before + 1);
    // A connection that closes gives its slot back at once: the next hello is taken.
    first.socket.destroy();
    await untilActive(2);
    helloFrom("127.0.0.1");
    await untilActive(3);
    expect(await refusedCount("max_handshakes_per_address")).toBe(before + 1);
    second.socket.destroy();
  });

  it("established mTLS connections count against maxConnectionsPerAddress: the one past it is reset before any TLS", async () => {
    const before = await refusedCount("max_connections_per_address");
    for (let i = 0; i < PER_ADDRESS; i++) await mtlsFrom("127.0.0.3");
    await untilActive(PER_ADDRESS);
    await expect(mtlsFrom("127.0.0.3")).rejects.toThrow();
    expect(await refusedCount("max_connections_per_address")).toBe(before + 1);
    await mtlsFrom("127.0.0.4");
    await untilActive(PER_ADDRESS + 1);
    expect(await refusedCount("max_connections_per_address")).toBe(before + 1);
  });

  it("an HTTP/2 caller holds at most maxConnectionsPerAddress app connections: its other streams wait, another caller's request goes through, all complete", async () => {
    requests.length = 0;
    released = false;
    const greedy = h2From("127.0.0.5");
    const greedyStreams = Array.from({ length: 10 }, (_, i) => get(greedy, `/hold/a${i}`));
    await until(() => requests.length >= PER_ADDRESS);
    const other = get(h2From("127.0.0.6"), "/hold/b");
    await until(() => requests.includes("/hold/b"));
    // When the other caller's request reached the app, the greedy caller held exactly its share.
    expect(requests.filter((url) => url.startsWith("/hold/a")).length).toBe(PER_ADDRESS);
    releaseAll();
    expect(await Promise.all(greedyStreams)).toEqual(Array.from({ length: 10 }, () => 200));
    expect(await other).toBe(200);
    expect(requests.filter((url) => url.startsWith("/hold/a")).length).toBe(10);
  });
});
