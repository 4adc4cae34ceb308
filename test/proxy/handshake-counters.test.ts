import { readFileSync } from "node:fs";
import { connect as netConnect, createServer as createTcpServer, type AddressInfo, type Server } from "node:net";
import { createServer as createTlsServer } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startHttpApp, type HttpApp } from "../helpers/app-servers.ts";
import { exec } from "../helpers/exec.ts";
import { createTestPki, type TestPki } from "../helpers/openssl-pki.ts";
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
  let otherPki: TestPki;
  let plaintextPeer: Server;
  let refusingPeer: Server;
  let refusingPeer13: Server;
  const listen = async (server: Server) => {
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return (server.address() as AddressInfo).port;
  };

  beforeAll(async () => {
    ca = await startMeshCa();
    app = await startHttpApp();
    // Two peers that take the TCP connection and fail the TLS handshake: one that speaks plain
    // HTTP, and one with a valid mesh certificate that trusts another CA for its callers (over
    // TLS 1.2 its refusal ends the handshake; a Node server closes without an alert).
    plaintextPeer = createTcpServer((socket) => socket.end("HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n"));
    otherPki = createTestPki({ name: "other" });
    const peerFiles = await ca.clientFiles("default", "refusing");
    refusingPeer = createTlsServer(
      { cert: readFileSync(peerFiles.cert), key: readFileSync(peerFiles.key), requestCert: true, rejectUnauthorized: true, ca: otherPki.root.certPem, maxVersion: "TLSv1.2" },
      (socket) => socket.end(),
    );
    refusingPeer.on("tlsClientError", () => undefined);
    const peer13Files = await ca.clientFiles("default", "refusing-13");
    refusingPeer13 = createTlsServer(
      { cert: readFileSync(peer13Files.cert), key: readFileSync(peer13Files.key), requestCert: true, rejectUnauthorized: true, ca: otherPki.root.certPem, minVersion: "TLSv1.3" },
      (socket) => socket.end(),
    );
    refusingPeer13.on("tlsClientError", () => undefined);
    sideB = await startTestSidecar(ca, { appId: "app-b", app: `127.0.0.1:${app.port}` });
    sideC = await startTestSidecar(ca, { appId: "app-c", app: `127.0.0.1:${app.port}` });
    // "impostor" is served by app-c's sidecar: A's outbound refuses it (a failed handshake).
    sideA = await startTestSidecar(ca, {
      appId: "app-a",
      app: "127.0.0.1:1",
      outbound: "127.0.0.1:0",
      peers: {
        "app-b": `127.0.0.1:${sideB.addresses.inbound.port}`,
        impostor: `127.0.0.1:${sideC.addresses.inbound.port}`,
        plaintext: `127.0.0.1:${await listen(plaintextPeer)}`,
        refusing: `127.0.0.1:${await listen(refusingPeer)}`,
        "refusing-13": `127.0.0.1:${await listen(refusingPeer13)}`,
        closed: "127.0.0.1:1",
      },
    });
  }, 60_000);

  afterAll(async () => {
    for (const s of [sideA, sideB, sideC]) await s?.close();
    plaintextPeer?.close();
    refusingPeer?.close();
    refusingPeer13?.close();
    otherPki?.cleanup();
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

  // Only failures the outbound judged itself (wrong server identity) used to be counted: a peer
  // that took TCP and then failed TLS (not TLS at all, or refused this sidecar's certificate) was
  // an upstream error alone, so MeshwardHandshakeFailureRateHigh never saw it.
  it("on the sidecar's outbound side: a peer that takes TCP and fails the TLS handshake is failed; one that refuses TCP is not a handshake", async () => {
    const before = handshakes(await scrape(sideA), "outbound", "failed");
    expect((await callThroughOutbound(sideA.addresses.outbound!.port, "plaintext")).status).toBe(502);
    expect(handshakes(await scrape(sideA), "outbound", "failed") - before).toBe(1);
    expect((await callThroughOutbound(sideA.addresses.outbound!.port, "refusing")).status).toBe(502);
    expect(handshakes(await scrape(sideA), "outbound", "failed") - before).toBe(2);
    expect((await callThroughOutbound(sideA.addresses.outbound!.port, "closed")).status).toBe(502);
    const after = await scrape(sideA);
    expect(handshakes(after, "outbound", "failed") - before).toBe(2);
    expect(metricValue(after, "meshward_sidecar_upstream_errors_total", { direction: "outbound", reason: "peer_unreachable" })).toBeGreaterThanOrEqual(3);
  });

  // Over TLS 1.3 the caller's handshake completes before the server has judged its certificate,
  // and a Node server refuses by closing: the caller read a bare "the upstream closed the connection".
  it("on the sidecar's outbound side: a TLS 1.3 peer that closes a new connection unanswered is named as a possible refusal of our certificate", async () => {
    const answer = await callThroughOutbound(sideA.addresses.outbound!.port, "refusing-13");
    expect(answer.status).toBe(502);
    const body = JSON.parse(answer.body) as { error: string; message: string };
    expect(body.error).toBe("E_PEER_UNREACHABLE");
    expect(body.message).toContain("before answering the first request on a new connection");
    expect(body.message).toContain("may have refused this sidecar's certificate");
    // A peer that answered is never described so.
    expect((await callThroughOutbound(sideA.addresses.outbound!.port, "app-b")).status).toBe(200);
  });
});
