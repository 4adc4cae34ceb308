import { connect as tlsConnect } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startHttpApp, type HttpApp } from "../helpers/app-servers.ts";
import { exec } from "../helpers/exec.ts";
import { buildLongChain, type LongChain } from "../helpers/long-chain.ts";
import { metricValue, startMeshCa, startTestSidecar, type MeshCa, type TestSidecarWithApp } from "./fixtures.ts";

// A caller without any credential made the inbound verify a made-up 70-link client chain (RSA-3072
// links, ~3060-bit exponents) on its event loop, about 1 s per handshake (Node bounds neither the
// certificate list nor the verify depth): limits.maxHandshakeBytes resets such a connection before
// OpenSSL has the chain.
describe("the sidecar inbound caps the bytes a caller sends before its handshake completes", () => {
  let ca: MeshCa;
  let app: HttpApp;
  let capped: TestSidecarWithApp;
  let raised: TestSidecarWithApp;
  let chain: LongChain;

  beforeAll(async () => {
    chain = buildLongChain(70);
    ca = await startMeshCa();
    app = await startHttpApp();
    capped = await startTestSidecar(ca, { appId: "app-b", app: `127.0.0.1:${app.port}` });
    // The control: the same sidecar with the cap out of the way.
    raised = await startTestSidecar(ca, { appId: "app-c", app: `127.0.0.1:${app.port}`, limits: { maxHandshakeBytes: 1 << 20 } });
  }, 60_000);

  afterAll(async () => {
    await capped?.close();
    await raised?.close();
    await app?.close();
    await ca?.close();
  });

  const metrics = async (s: TestSidecarWithApp) => (await fetch(`http://127.0.0.1:${s.addresses.status!.port}/metrics`)).text();
  const attack = (port: number) =>
    new Promise<string>((resolve) => {
      const socket = tlsConnect({ host: "127.0.0.1", port, cert: chain.certPem, key: chain.keyPem, rejectUnauthorized: false, ALPNProtocols: ["h2", "http/1.1"] });
      socket.on("error", () => undefined);
      socket.once("data", () => (socket.destroy(), resolve("answered")));
      socket.once("close", () => resolve("closed"));
    });
  const counts = (text: string) => ({
    tooLarge: metricValue(text, "meshward_sidecar_refused_total", { direction: "inbound", reason: "handshake_too_large" }),
    unknownCa: metricValue(text, "meshward_sidecar_refused_total", { direction: "inbound", reason: "tls_unknown_ca" }),
    failed: metricValue(text, "meshward_tls_handshake_failures_total", { direction: "inbound" }),
    ok: metricValue(text, "meshward_tls_handshakes_total", { direction: "inbound", result: "ok" }),
  });

  it("resets the 70-link chain before verifying it, counted once as handshake_too_large", async () => {
    expect(chain.bytes).toBeGreaterThan(90_000);
    const before = counts(await metrics(capped));
    expect(await attack(capped.addresses.inbound.port)).toBe("closed");
    await new Promise((resolve) => setTimeout(resolve, 50));
    const after = counts(await metrics(capped));
    expect(after.tooLarge - before.tooLarge).toBe(1);
    // Never verified: no handshake failure (unknown_ca would be the chain's) and no success.
    expect(after.unknownCa - before.unknownCa).toBe(0);
    expect(after.failed - before.failed).toBe(0);
    expect(after.ok - before.ok).toBe(0);
    expect(capped.logs.lines.some((l) => l.reason === "handshake_too_large")).toBe(true);
  });

  it("control: with limits.maxHandshakeBytes raised, the same chain reaches OpenSSL's verification and fails it (unknown_ca)", async () => {
    const before = counts(await metrics(raised));
    expect(await attack(raised.addresses.inbound.port)).toBe("closed");
    await new Promise((resolve) => setTimeout(resolve, 50));
    const after = counts(await metrics(raised));
    expect(after.tooLarge - before.tooLarge).toBe(0);
    expect(after.unknownCa - before.unknownCa).toBe(1);
  }, 30_000);

  it("still serves a caller with a mesh certificate (openssl s_client, TLS 1.3 and 1.2)", async () => {
    const caller = await ca.clientFiles("default", "caller");
    for (const version of ["-tls1_3", "-tls1_2"]) {
      const r = await exec(
        "openssl",
        ["s_client", version, "-connect", `127.0.0.1:${capped.addresses.inbound.port}`, "-cert", caller.cert, "-key", caller.key, "-cert_chain", caller.chain, "-CAfile", ca.bundleFile, "-alpn", "http/1.1", "-ign_eof", "-verify_return_error"],
        { input: `GET /capped${version} HTTP/1.1\r\nHost: app-b\r\nConnection: close\r\n\r\n` },
      );
      expect(r.stdout).toContain("HTTP/1.1 200");
    }
    expect(app.seen.filter((s) => s.url.startsWith("/capped"))).toHaveLength(2);
  });
});
