import { createServer, type Server } from "node:http";
import { connect as http2Connect, type ClientHttp2Session } from "node:http2";
import { readFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startMeshCa, startTestSidecar, type MeshCa, type TestSidecarWithApp } from "./fixtures.ts";

// A retired inbound connection (the age cap, the caller's certificate expiring, a root leaving
// the bundle) is closed gracefully, but an upgraded connection (WebSocket) or an HTTP/2 stream
// never ends by itself: without a deadline the caller kept it, certificate expired or not. It is
// now closed drainTimeout after it was retired (Envoy: max_connection_duration, then its
// drain_timeout). And HTTP/2 connections take a bounded number of streams at once: each
// non-gRPC stream takes a connection to the app, and one caller opened 5,000 of them.
const AGE_MS = 1_000;
const DRAIN_MS = 1_000;

describe("inbound: a retired connection ends by drainTimeout, and HTTP/2 streams are bounded", () => {
  let ca: MeshCa;
  let app: Server & { upgrades: number; openUpgrades: number };
  const upgraded = new Set<{ destroy(): void }>();
  let sidecar: TestSidecarWithApp;
  let caller: { cert: string; key: string; chain: string };

  beforeAll(async () => {
    ca = await startMeshCa();
    const server = Object.assign(
      createServer((req, res) => {
        // A request whose body never ends is never answered: the stream stays open.
        req.on("end", () => res.end("ok"));
        req.resume();
      }),
      { upgrades: 0, openUpgrades: 0 },
    );
    server.on("upgrade", (_req, socket) => {
      server.upgrades++;
      server.openUpgrades++;
      upgraded.add(socket);
      socket.once("close", () => server.openUpgrades--);
      socket.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
      socket.on("data", (chunk: Buffer) => socket.write(chunk));
      socket.on("end", () => socket.end()); // an HTTP server's sockets are half-open: close with the peer
      socket.on("error", () => undefined);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    app = server;
    sidecar = await startTestSidecar(ca, {
      appId: "chat",
      app: `127.0.0.1:${(server.address() as AddressInfo).port}`,
      outbound: "127.0.0.1:0",
      limits: { maxConnectionAge: `${AGE_MS}ms`, drainTimeout: `${DRAIN_MS}ms`, maxConcurrentStreams: 8 },
    });
    caller = await ca.clientFiles("default", "web");
  });

  afterAll(async () => {
    await sidecar?.close();
    app?.closeAllConnections();
    for (const socket of upgraded) socket.destroy(); // closeAllConnections leaves upgraded sockets open
    await new Promise<void>((resolve) => app?.close(() => resolve()));
    await ca?.close();
  });

  // The caller's own certificate; the sidecar's SPIFFE ID is not what is under test here.
  const tlsOptions = () => ({ ca: ca.bundlePem, cert: readFileSync(caller.cert), key: readFileSync(caller.key), checkServerIdentity: () => undefined });
  const closedWithin = (emitter: { once(event: "close", listener: () => void): unknown }, ms: number) =>
    new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), ms);
      emitter.once("close", () => {
        clearTimeout(timer);
        resolve(true);
      });
    });

  it("advertises SETTINGS_MAX_CONCURRENT_STREAMS (limits.maxConcurrentStreams) on the inbound and the outbound", async () => {
    const sessions: ClientHttp2Session[] = [
      http2Connect(`https://127.0.0.1:${sidecar.addresses.inbound.port}`, tlsOptions()),
      http2Connect(`http://127.0.0.1:${sidecar.addresses.outbound!.port}`),
    ];
    try {
      const settings = sessions.map((session) => {
        session.on("error", () => undefined);
        return new Promise<{ maxConcurrentStreams?: number }>((resolve) => session.once("remoteSettings", resolve));
      });
      for (const advertised of await Promise.all(settings)) expect(advertised.maxConcurrentStreams).toBe(8);
    } finally {
      for (const session of sessions) session.destroy();
    }
  });

  it("closes a WebSocket on a retired connection drainTimeout after the age cap", async () => {
    const socket: TLSSocket = tlsConnect({ host: "127.0.0.1", port: sidecar.addresses.inbound.port, ALPNProtocols: ["http/1.1"], ...tlsOptions() });
    socket.on("error", () => undefined);
    const opened = Date.now();
    await new Promise<void>((resolve) => socket.once("secureConnect", () => resolve()));
    const closed = closedWithin(socket, AGE_MS + DRAIN_MS + 4_000);
    socket.write("GET /ws HTTP/1.1\r\nHost: chat\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    const head = await new Promise<string>((resolve) => socket.once("data", (d: Buffer) => resolve(d.toString("latin1"))));
    expect(head).toMatch(/^HTTP\/1\.1 101 /);
    // Upgraded and working before the age cap …
    socket.write("ping");
    expect((await new Promise<Buffer>((resolve) => socket.once("data", resolve))).toString()).toBe("ping");
    // … and closed once the cap and the drain deadline have passed.
    expect(await closed).toBe(true);
    expect(Date.now() - opened).toBeGreaterThanOrEqual(AGE_MS);
    // The sidecar's side toward the app closes with it.
    await expect.poll(() => app.openUpgrades, { timeout: 3_000 }).toBe(0);
  });

  it("closes an HTTP/2 session whose stream never ends: GOAWAY at the age cap, closed drainTimeout later", async () => {
    const session = http2Connect(`https://127.0.0.1:${sidecar.addresses.inbound.port}`, tlsOptions());
    session.on("error", () => undefined);
    const goaway = new Promise<void>((resolve) => session.once("goaway", () => resolve()));
    const closed = closedWithin(session, AGE_MS + DRAIN_MS + 4_000);
    const stream = session.request({ ":method": "POST", ":path": "/upload" });
    stream.on("error", () => undefined);
    stream.write("a body that never ends");
    await goaway;
    expect(stream.closed).toBe(false); // GOAWAY lets it go on …
    expect(await closed).toBe(true); // … until the deadline.
  });
});
