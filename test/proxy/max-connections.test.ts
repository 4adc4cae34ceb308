import { readFileSync } from "node:fs";
import { globalAgent } from "node:http";
import { connect as netConnect } from "node:net";
import type { Socket } from "node:net";
import { connect as tlsConnect } from "node:tls";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startHttpApp, type HttpApp } from "../helpers/app-servers.ts";
import { exec } from "../helpers/exec.ts";
import { callThroughOutbound, metricValue, startMeshCa, startTestSidecar, TD, type MeshCa, type TestSidecarWithApp } from "./fixtures.ts";

/**
 * limits.maxConnections caps each listener's open connections. Past the cap a new connection is
 * closed as soon as it is accepted, before any TLS or HTTP, and counted per listener — as Envoy
 * does it: envoyproxy/envoy source/common/network/tcp_listener_impl.cc (onSocketEvent: when
 * rejectCxOverGlobalLimit(), the overload manager's global_downstream_max_connections, the
 * accepted io_handle is closed at once and counted as downstream_global_cx_overflow) and
 * source/common/listener_manager/active_tcp_listener.cc (onAccept: a listener's own connection
 * limit closes the socket and counts downstream_cx_overflow). Neither answers in the listener's
 * protocol, and neither does the sidecar: no TLS byte on the inbound, and no 503 on the
 * plaintext outbound, since an answer would mean accepting and reading the request (the work and
 * memory the cap exists to refuse), and a server that closes with the request unread resets the
 * connection, which can destroy the answer before the client reads it anyway.
 */
describe("limits.maxConnections: a cap on each listener's open connections", () => {
  const CAP = 2;
  const HOST = "capped.mesh.test";
  let ca: MeshCa;
  let app: HttpApp;
  let callee: TestSidecarWithApp;
  let caller: TestSidecarWithApp;
  let holder: { cert: string; key: string };
  const held: Socket[] = [];

  const metrics = async (sidecar: TestSidecarWithApp) => (await fetch(`http://127.0.0.1:${sidecar.addresses.status!.port}/metrics`)).text();
  const listenerMetric = async (sidecar: TestSidecarWithApp, what: "active" | "max" | "overflow_total", listener: string) =>
    metricValue(await metrics(sidecar), `meshward_sidecar_listener_connections_${what}`, { listener });
  /** Waits until the listener's open connections (read from the sidecar's /metrics) are `count`. */
  const untilActive = async (sidecar: TestSidecarWithApp, listener: string, count: number) => {
    for (let i = 0; i < 200 && (await listenerMetric(sidecar, "active", listener)) !== count; i++) await new Promise((r) => setTimeout(r, 50));
    expect(await listenerMetric(sidecar, "active", listener)).toBe(count);
  };

  /** A verified mutual-TLS connection to the callee's inbound port, left open and idle. */
  const holdInbound = async (): Promise<Socket> => {
    const socket = tlsConnect({ host: "127.0.0.1", port: callee.addresses.inbound.port, servername: HOST, cert: readFileSync(holder.cert), key: readFileSync(holder.key), ca: ca.bundlePem, ALPNProtocols: ["http/1.1"] });
    held.push(socket);
    await new Promise<void>((resolve, reject) => socket.once("secureConnect", resolve).once("error", reject));
    return socket;
  };
  /** A plaintext connection to the caller's outbound port, left open before its first byte. */
  const holdOutbound = async (): Promise<Socket> => {
    const socket = netConnect({ host: "127.0.0.1", port: caller.addresses.outbound!.port });
    held.push(socket);
    await new Promise<void>((resolve, reject) => socket.once("connect", resolve).once("error", reject));
    return socket;
  };
  /** A connection to the outbound port that sends a whole request: what the sidecar sent back before it closed. */
  const requestOnNewConnection = (): Promise<{ received: number; closed: boolean }> =>
    new Promise((resolve) => {
      const socket = netConnect({ host: "127.0.0.1", port: caller.addresses.outbound!.port });
      let received = 0;
      socket.on("data", (d: Buffer) => (received += d.length));
      socket.on("error", () => undefined); // a reset is the sidecar closing too
      socket.on("close", () => resolve({ received, closed: true }));
      socket.write(`GET /hello HTTP/1.1\r\nHost: capped\r\ndapr-app-id: capped\r\nConnection: close\r\n\r\n`);
    });
  /** openssl s_client against the inbound port with a workload certificate: how many handshake bytes the sidecar sent. */
  const handshakeBytesRead = async (): Promise<number> => {
    const r = await exec("openssl", ["s_client", "-connect", `127.0.0.1:${callee.addresses.inbound.port}`, "-servername", HOST, "-cert", holder.cert, "-key", holder.key, "-CAfile", ca.bundleFile], { input: "" });
    const read = /SSL handshake has read (\d+) bytes/.exec(r.stdout);
    if (read === null) throw new Error(`no handshake summary from openssl s_client: ${r.stdout}\n${r.stderr}`);
    return Number(read[1]);
  };

  beforeAll(async () => {
    ca = await startMeshCa();
    app = await startHttpApp();
    holder = await ca.clientFiles("default", "holder");
    callee = await startTestSidecar(ca, { appId: "capped", app: `127.0.0.1:${app.port}`, limits: { maxConnections: CAP } }, { dnsNames: [HOST] });
    caller = await startTestSidecar(ca, {
      appId: "caller",
      app: "127.0.0.1:1",
      outbound: "127.0.0.1:0",
      peers: { capped: `127.0.0.1:${callee.addresses.inbound.port}` },
      // Held outbound connections send nothing: keep them past the test, not closed as silent.
      limits: { maxConnections: CAP, handshakeTimeout: "120s" },
    });
  }, 60_000);
  afterEach(() => {
    for (const socket of held.splice(0)) socket.destroy();
  });
  afterAll(async () => {
    await caller?.close();
    await callee?.close();
    await app?.close();
    await ca?.close();
  });

  it("inbound: the connection past the cap is closed before any byte of TLS; one closing frees its slot and a request through the pair works", async () => {
    expect(await listenerMetric(callee, "max", "inbound")).toBe(CAP);
    // Under the cap openssl reads the sidecar's side of the handshake (what the refusal must lack).
    expect(await handshakeBytesRead()).toBeGreaterThan(0);
    await untilActive(callee, "inbound", 0);
    const overflowBefore = await listenerMetric(callee, "overflow_total", "inbound");

    const first = await holdInbound();
    await holdInbound();
    await untilActive(callee, "inbound", CAP);
    expect(await handshakeBytesRead()).toBe(0);
    expect(await listenerMetric(callee, "overflow_total", "inbound")).toBe(overflowBefore + 1);
    // The caller's sidecar needs a slot too: its call is refused like any other connection.
    expect((await callThroughOutbound(caller.addresses.outbound!.port, "capped")).status).toBe(502);
    expect(await listenerMetric(callee, "overflow_total", "inbound")).toBeGreaterThan(overflowBefore + 1);
    // Connections the sidecar opens itself (its pool to the app) are not counted against its cap.
    expect(await listenerMetric(callee, "active", "inbound")).toBe(CAP);

    first.destroy();
    await untilActive(callee, "inbound", CAP - 1);
    const through = await callThroughOutbound(caller.addresses.outbound!.port, "capped");
    expect(through.status).toBe(200);
    expect(JSON.parse(through.body)).toMatchObject({ url: "/hello", headers: { "x-forwarded-client-cert": expect.stringContaining(`URI=spiffe://${TD}/ns/default/caller`) } });
  });

  it("outbound: the connection past the cap gets no HTTP answer, is counted, and is logged rate-limited; after one closes a request works", async () => {
    expect(await listenerMetric(caller, "max", "outbound")).toBe(CAP);
    // callThroughOutbound's keep-alive connections (Node's global agent) would hold slots too.
    globalAgent.destroy();
    await untilActive(caller, "outbound", 0);
    const overflowBefore = await listenerMetric(caller, "overflow_total", "outbound");
    const linesBefore = caller.logs.lines.filter((l) => l.event === "max-connections").length;
    const first = await holdOutbound();
    await holdOutbound();
    await untilActive(caller, "outbound", CAP);

    const refused = await requestOnNewConnection();
    expect(refused).toEqual({ received: 0, closed: true });
    expect(await listenerMetric(caller, "overflow_total", "outbound")).toBe(overflowBefore + 1);
    // A flood of refusals is counted in full but logged a few lines at a time (LimitedWarnings).
    const flood = 12;
    for (const r of await Promise.all(Array.from({ length: flood }, requestOnNewConnection))) expect(r.received).toBe(0);
    expect(await listenerMetric(caller, "overflow_total", "outbound")).toBe(overflowBefore + 1 + flood);
    const lines = caller.logs.lines.filter((l) => l.event === "max-connections").slice(linesBefore);
    expect(lines.length).toBeGreaterThan(0);
    expect(lines.length).toBeLessThan(1 + flood);
    expect(lines[0]).toMatchObject({ level: 40, listener: "outbound", maxConnections: CAP, remote: "127.0.0.1" });

    first.destroy();
    await untilActive(caller, "outbound", CAP - 1);
    const through = await callThroughOutbound(caller.addresses.outbound!.port, "capped");
    expect(through.status).toBe(200);
    expect(JSON.parse(through.body)).toMatchObject({ url: "/hello" });
  });
});
