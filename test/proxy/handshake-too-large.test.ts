import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { limitsSchema } from "../../src/config/sidecar.ts";
import { startHttpApp, type HttpApp } from "../helpers/app-servers.ts";
import { exec } from "../helpers/exec.ts";
import { answeredOrClosed, buildLongChain, type LongChain } from "../helpers/long-chain.ts";
import { recordTlsServerStreams, tlsServerStreamsOn } from "../helpers/tls-server-streams.ts";
import { metricValue, startMeshCa, startTestSidecar, type MeshCa, type TestSidecarWithApp } from "./fixtures.ts";

// A caller without any credential made the inbound verify a made-up 70-link client chain (RSA-3072
// links, ~3060-bit exponents) on its event loop, about 1 s per handshake (Node bounds neither the
// certificate list nor the verify depth): limits.maxHandshakeBytes resets such a connection before
// OpenSSL has the chain. The cap is off by default (its stream costs every connection for its
// life): a sidecar without it keeps Node's native TLS path, and verifies such a chain.
describe("the sidecar inbound caps the bytes a caller sends before its handshake completes, when limits.maxHandshakeBytes is set", () => {
  let ca: MeshCa;
  let app: HttpApp;
  let capped: TestSidecarWithApp;
  let plain: TestSidecarWithApp;
  let chain: LongChain;

  beforeAll(async () => {
    recordTlsServerStreams();
    chain = buildLongChain(70);
    ca = await startMeshCa();
    app = await startHttpApp();
    capped = await startTestSidecar(ca, { appId: "app-b", app: `127.0.0.1:${app.port}`, limits: { maxHandshakeBytes: 16384 } });
    // The default (and the control): no limits.maxHandshakeBytes, so no cap.
    plain = await startTestSidecar(ca, { appId: "app-c", app: `127.0.0.1:${app.port}` });
  }, 60_000);

  afterAll(async () => {
    await capped?.close();
    await plain?.close();
    await app?.close();
    await ca?.close();
  });

  const metrics = async (s: TestSidecarWithApp) => (await fetch(`http://127.0.0.1:${s.addresses.status!.port}/metrics`)).text();
  const attack = (port: number) => answeredOrClosed({ host: "127.0.0.1", port, cert: chain.certPem, key: chain.keyPem, ALPNProtocols: ["h2", "http/1.1"] });
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

  it("by default (no limits.maxHandshakeBytes) there is no cap: the same chain reaches OpenSSL's verification and fails it (unknown_ca)", async () => {
    const before = counts(await metrics(plain));
    expect(await attack(plain.addresses.inbound.port)).toBe("closed");
    await new Promise((resolve) => setTimeout(resolve, 50));
    const after = counts(await metrics(plain));
    expect(after.tooLarge - before.tooLarge).toBe(0);
    expect(after.unknownCa - before.unknownCa).toBe(1);
  }, 30_000);

  it("by default every inbound TLS connection takes Node's native path (no counting stream); with the cap, a JS stream", async () => {
    const plainStreams = tlsServerStreamsOn(plain.addresses.inbound.port);
    const cappedStreams = tlsServerStreamsOn(capped.addresses.inbound.port);
    expect(plainStreams.length).toBeGreaterThan(0);
    expect(plainStreams.every((s) => s.native)).toBe(true);
    expect(cappedStreams.length).toBeGreaterThan(0);
    expect(cappedStreams.every((s) => !s.native)).toBe(true);
  });

  it("limits.maxHandshakeBytes: 0 is off, and a value between 1 and 4095 is refused", () => {
    const parse = (maxHandshakeBytes: number) => limitsSchema.safeParse({ maxHandshakeBytes });
    expect(parse(0).success).toBe(true);
    expect(parse(4096).success).toBe(true);
    expect(parse(4095).success).toBe(false);
    expect(parse(1).success).toBe(false);
    expect(limitsSchema.parse({}).maxHandshakeBytes).toBeUndefined();
  });

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
