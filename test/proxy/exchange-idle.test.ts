import { connect as netConnect, createServer, type AddressInfo, type Server, type Socket } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { waitFor } from "../helpers/wait.ts";
import { metricValue, startMeshCa, startTestSidecar, type MeshCa, type TestSidecarWithApp } from "./fixtures.ts";

// Found by review: with headersTimeout 1 s and idleTimeout 2 s, after 12 s a POST that had sent 1
// of its 100 body bytes and a 64 MiB GET whose response was never read both still held their
// client and app connections (for ever on a plaintext PERMISSIVE connection, until the age cap
// over mTLS). Through the sidecar's inbound now: the slow body gets 408 E_BODY_TIMEOUT and the
// reader that stopped is cut, each after limits.idleTimeout without a byte, and their connections
// to the app close. The app is a raw TCP server that answers GET /big with 64 MiB (and nothing
// else). Found by review too: the sidecar's own 504 E_UPSTREAM_TIMEOUT was not counted in
// meshward_sidecar_upstream_errors_total as the other upstream failures are; it is now, as
// app_timeout on the inbound and peer_timeout on the outbound (a caller's outbound with
// idleTimeout 1 s in front of a peer sidecar with 30 s).
describe("HTTP/1 through the sidecar: an exchange with no byte either way for idleTimeout ends", () => {
  let ca: MeshCa;
  let app: Server;
  let callee: TestSidecarWithApp;
  let far: TestSidecarWithApp;
  let caller: TestSidecarWithApp;
  const appSockets = new Set<Socket>();
  /** The request line each connection to the app started with. */
  const appRequests: string[] = [];
  const clients: Socket[] = [];

  beforeAll(async () => {
    app = createServer((socket) => {
      appSockets.add(socket);
      socket.once("close", () => appSockets.delete(socket));
      socket.on("error", () => undefined);
      let received = "";
      socket.on("data", (chunk: Buffer) => {
        const first = received === "";
        received += chunk.toString("latin1");
        if (first) appRequests.push(received.slice(0, received.indexOf("\r\n")));
        if (!first || !received.startsWith("GET /big ")) return;
        const chunkBytes = Buffer.alloc(1 << 20, 97);
        socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${64 * chunkBytes.length}\r\n\r\n`);
        let sent = 0;
        const pump = () => {
          while (sent < 64 && !socket.destroyed) {
            sent++;
            if (!socket.write(chunkBytes)) return void socket.once("drain", pump);
          }
        };
        pump();
      });
    });
    await new Promise<void>((resolve) => app.listen(0, "127.0.0.1", resolve));
    ca = await startMeshCa();
    callee = await startTestSidecar(ca, {
      appId: "idle",
      app: `127.0.0.1:${(app.address() as AddressInfo).port}`,
      mode: "permissive",
      limits: { headersTimeout: "1s", idleTimeout: "1s" },
    });
    far = await startTestSidecar(ca, { appId: "far", app: `127.0.0.1:${(app.address() as AddressInfo).port}`, limits: { idleTimeout: "30s" } });
    caller = await startTestSidecar(ca, { appId: "caller", app: "127.0.0.1:1", outbound: "127.0.0.1:0", peers: { far: `127.0.0.1:${far.addresses.inbound.port}` }, limits: { idleTimeout: "1s" } });
  }, 60_000);
  afterEach(() => {
    for (const socket of clients.splice(0)) socket.destroy();
  });
  afterAll(async () => {
    await caller?.close();
    await far?.close();
    await callee?.close();
    for (const socket of appSockets) socket.destroy();
    await new Promise<void>((resolve) => (app ? app.close(() => resolve()) : resolve()));
    await ca?.close();
  });

  const open = () => {
    const socket = netConnect({ host: "127.0.0.1", port: callee.addresses.inbound.port });
    socket.on("error", () => undefined);
    clients.push(socket);
    const closed = new Promise<"closed">((resolve) => socket.once("close", () => resolve("closed")));
    return { socket, closed };
  };
  const closedWithin = (closed: Promise<"closed">, ms: number) => Promise.race([closed, new Promise<"open">((resolve) => setTimeout(() => resolve("open"), ms))]);

  it("answers 408 E_BODY_TIMEOUT to a POST whose body stopped after 1 of 100 bytes, and closes its app connection", async () => {
    const { socket, closed } = open();
    let text = "";
    socket.on("data", (d: Buffer) => (text += d.toString("latin1")));
    socket.write("POST /upload HTTP/1.1\r\nHost: idle\r\nContent-Length: 100\r\n\r\nx");
    expect(await closedWithin(closed, 15_000)).toBe("closed");
    expect(text).toMatch(/^HTTP\/1\.1 408 /);
    expect(text).toContain("x-meshward-error: E_BODY_TIMEOUT");
    await waitFor("the app connection to close", () => appSockets.size === 0);
    const metrics = await (await fetch(`http://127.0.0.1:${callee.addresses.status!.port}/metrics`)).text();
    expect(metricValue(metrics, "meshward_sidecar_refused_total", { direction: "inbound", reason: "body_timeout" })).toBe(1);
  }, 30_000);

  // Found by review: the sidecar's own 504 was not counted as an upstream error, as the app's
  // other failures (unreachable, busy) are.
  it("answers 504 E_UPSTREAM_TIMEOUT to a request the app never answers, counts it as app_timeout, and closes its app connection", async () => {
    const metrics = async () => (await fetch(`http://127.0.0.1:${callee.addresses.status!.port}/metrics`)).text();
    const before = metricValue(await metrics(), "meshward_sidecar_upstream_errors_total", { direction: "inbound", reason: "app_timeout" });
    const { socket, closed } = open();
    let text = "";
    socket.on("data", (d: Buffer) => (text += d.toString("latin1")));
    socket.write("GET /never HTTP/1.1\r\nHost: idle\r\n\r\n");
    expect(await closedWithin(closed, 15_000)).toBe("closed");
    expect(text).toMatch(/^HTTP\/1\.1 504 /);
    expect(text).toContain("x-meshward-error: E_UPSTREAM_TIMEOUT");
    await waitFor("the app connection to close", () => appSockets.size === 0);
    expect(metricValue(await metrics(), "meshward_sidecar_upstream_errors_total", { direction: "inbound", reason: "app_timeout" })).toBe(before + 1);
  }, 30_000);

  it("the outbound answers 504 E_UPSTREAM_TIMEOUT to a request its peer never answers, counts it as peer_timeout, and the peer closes its app connection", async () => {
    const metrics = async () => (await fetch(`http://127.0.0.1:${caller.addresses.status!.port}/metrics`)).text();
    const before = metricValue(await metrics(), "meshward_sidecar_upstream_errors_total", { direction: "outbound", reason: "peer_timeout" });
    const response = await fetch(`http://127.0.0.1:${caller.addresses.outbound!.port}/never-outbound`, { headers: { "dapr-app-id": "far" }, signal: AbortSignal.timeout(15_000) });
    expect(response.status).toBe(504);
    expect(response.headers.get("x-meshward-error")).toBe("E_UPSTREAM_TIMEOUT");
    expect(await response.json()).toMatchObject({ error: "E_UPSTREAM_TIMEOUT", message: expect.stringContaining("the sidecar of far") });
    expect(appRequests).toContain("GET /never-outbound HTTP/1.1");
    await waitFor("the app connection to close", () => appSockets.size === 0);
    expect(metricValue(await metrics(), "meshward_sidecar_upstream_errors_total", { direction: "outbound", reason: "peer_timeout" })).toBe(before + 1);
  }, 30_000);

  it("cuts a client that never reads its 64 MiB response, and closes its app connection", async () => {
    const { socket, closed } = open();
    socket.pause();
    socket.write("GET /big HTTP/1.1\r\nHost: idle\r\n\r\n");
    await waitFor("the app connection to open", () => appSockets.size === 1);
    await waitFor("the app connection to close", () => appSockets.size === 0);
    // The sidecar's end of the connection is gone too: what it had sent is read, then the close.
    let received = 0;
    socket.on("data", (d: Buffer) => (received += d.length));
    socket.resume();
    expect(await closedWithin(closed, 15_000)).toBe("closed");
    expect(received).toBeLessThan(64 * 1024 * 1024);
  }, 45_000);
});
