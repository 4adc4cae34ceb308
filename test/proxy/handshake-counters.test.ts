import { connect as netConnect } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startHttpApp, type HttpApp } from "../helpers/app-servers.ts";
import { exec } from "../helpers/exec.ts";
import { callThroughOutbound, metricValue, startMeshCa, startTestSidecar, type MeshCa, type TestSidecarWithApp } from "./fixtures.ts";

// meshward_tls_handshakes_total{result="ok"} was counted only by the sidecar's inbound side and by
// egress: the CA and the sidecar's outbound calls counted failures alone, so the alert
// MeshwardHandshakeFailureRateHigh (failed / all) read 100 % for them on any failure.
describe("meshward_tls_handshakes_total counts successful handshakes where failures are counted", () => {
  let ca: MeshCa;
  let app: HttpApp;
  let sideB: TestSidecarWithApp;
  let sideC: TestSidecarWithApp;
  let sideA: TestSidecarWithApp;

  beforeAll(async () => {
    ca = await startMeshCa();
    app = await startHttpApp();
    sideB = await startTestSidecar(ca, { appId: "app-b", app: `127.0.0.1:${app.port}` });
    sideC = await startTestSidecar(ca, { appId: "app-c", app: `127.0.0.1:${app.port}` });
    // "impostor" is served by app-c's sidecar: A's outbound refuses it (a failed handshake).
    sideA = await startTestSidecar(ca, {
      appId: "app-a",
      app: "127.0.0.1:1",
      outbound: "127.0.0.1:0",
      peers: { "app-b": `127.0.0.1:${sideB.addresses.inbound.port}`, impostor: `127.0.0.1:${sideC.addresses.inbound.port}` },
    });
  }, 60_000);

  afterAll(async () => {
    for (const s of [sideA, sideB, sideC]) await s?.close();
    await app?.close();
    await ca?.close();
  });

  const scrape = async (s: TestSidecarWithApp) => (await fetch(`http://127.0.0.1:${s.addresses.status!.port}/metrics`)).text();
  const handshakes = (text: string, direction: string, result: string) => metricValue(text, "meshward_tls_handshakes_total", { direction, result });

  it("on the CA: each TLS connection that completes is ok, one that does not is failed", async () => {
    const before = await ca.server.registry.metrics();
    const port = ca.server.port;
    for (let i = 0; i < 3; i++) {
      const r = await exec("curl", ["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", ca.bundleFile, `https://localhost:${port}/v1/bundle`]);
      expect(r.stdout).toBe("200");
    }
    // Not TLS at all: a failed handshake.
    await new Promise<void>((resolve) => {
      const socket = netConnect(port, "127.0.0.1", () => socket.end("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
      socket.on("error", () => resolve());
      socket.on("close", () => resolve());
      socket.resume();
    });
    const scraped = (await exec("curl", ["-sS", "--cacert", ca.bundleFile, `https://localhost:${port}/metrics`])).stdout;
    expect(handshakes(scraped, "inbound", "ok") - handshakes(before, "inbound", "ok")).toBeGreaterThanOrEqual(4); // 3 bundle fetches + this scrape
    expect(handshakes(scraped, "inbound", "failed") - handshakes(before, "inbound", "failed")).toBeGreaterThanOrEqual(1);
    // The sidecars' own certificates came through handshakes too.
    expect(handshakes(scraped, "inbound", "ok")).toBeGreaterThan(handshakes(scraped, "inbound", "failed"));
  });

  it("on the sidecar's outbound side: each verified peer connection is ok (as many as the peer counts inbound), an impostor is failed", async () => {
    for (let i = 0; i < 5; i++) expect((await callThroughOutbound(sideA.addresses.outbound!.port, "app-b")).status).toBe(200);
    expect((await callThroughOutbound(sideA.addresses.outbound!.port, "impostor")).status).toBe(502);
    const a = await scrape(sideA);
    const b = await scrape(sideB);
    expect(handshakes(a, "outbound", "ok")).toBeGreaterThanOrEqual(1);
    // Only A connects to B: every handshake B accepted is one A verified.
    expect(handshakes(a, "outbound", "ok")).toBe(handshakes(b, "inbound", "ok"));
    expect(handshakes(a, "outbound", "failed")).toBe(1);
  });
});
