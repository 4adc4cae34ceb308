import type { ConnectionOptions } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { answeredOrClosed, buildLongChain, type LongChain } from "../helpers/long-chain.ts";
import { startTestCa, type TestCa } from "../helpers/ca-server.ts";
import { issueJoinToken } from "../../src/ca/tokens.ts";
import { requestCertificate } from "../../src/identity/ca-client.ts";
import { createCsr } from "../../src/pki/csr.ts";
import { encodePrivateKey, generateKeyPair } from "../../src/pki/keys.ts";

// Review HIGH-1: the API port asks every caller for a certificate and accepts any, so a caller
// without credential made the CA verify a made-up 70-link chain on its event loop (~1 s per
// handshake: signing, health probes and every other caller waited). maxHandshakeBytes resets such a
// connection before OpenSSL has the chain.
describe("the CA API caps the bytes a caller sends before its handshake completes", () => {
  let capped: TestCa;
  let raised: TestCa;
  let chain: LongChain;

  beforeAll(async () => {
    chain = buildLongChain(70);
    capped = await startTestCa("capped.test");
    raised = await startTestCa("raised.test", { maxHandshakeBytes: 1 << 20 });
  }, 60_000);

  afterAll(async () => {
    await capped?.close();
    await raised?.close();
  });

  /** Resolves when the CA answers (its HTTP/2 SETTINGS, sent once the handshake is complete) or closes. */
  const connectTo = (ca: TestCa, options: ConnectionOptions) =>
    answeredOrClosed({ host: ca.server.address.split(":")[0], port: Number(ca.server.address.split(":")[1]), ALPNProtocols: ["h2"], ...options });
  const handshakes = (ca: TestCa) => ca.metric("meshward_tls_handshakes_total", { direction: "inbound", result: "ok" });
  const tooLarge = (ca: TestCa) => ca.metric("meshward_ca_connections_refused_total", { reason: "handshake_too_large" });

  it("resets the 70-link chain before the handshake completes, counted as handshake_too_large and logged", async () => {
    const ok = await handshakes(capped);
    expect(await connectTo(capped, { cert: chain.certPem, key: chain.keyPem })).toBe("closed");
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(await tooLarge(capped)).toBe(1);
    expect(await handshakes(capped)).toBe(ok); // never reached secureConnection
    expect(capped.logged.filter((l) => l.includes('"reason":"handshake_too_large"'))).toHaveLength(1);
    expect(capped.logged.some((l) => l.includes("tls-handshake-failed"))).toBe(false);
  });

  it("control: with maxHandshakeBytes raised, the same chain is verified and its handshake completes (unauthorized)", async () => {
    const ok = await handshakes(raised);
    expect(await connectTo(raised, { cert: chain.certPem, key: chain.keyPem })).toBe("answered");
    expect(await handshakes(raised)).toBe(ok + 1);
    expect(await tooLarge(raised)).toBe(0);
  }, 30_000);

  it("still serves callers: a first-time workload (no certificate) and one presenting its SVID", async () => {
    const keyPair = generateKeyPair();
    const { token } = await issueJoinToken(capped.server.store, { spiffeId: "spiffe://capped.test/ns/orders/api", ttlMs: 60_000 });
    const signed = await requestCertificate(
      { address: capped.server.address, bundlePem: capped.bundlePem, trustDomain: "capped.test" },
      { csrPem: await createCsr({ keyPair }), token, validator: "JOIN_TOKEN", namespace: "", appId: "" },
    );
    expect(await connectTo(capped, { cert: signed.certChainPem, key: encodePrivateKey(keyPair.privateKey) })).toBe("answered");
    expect(await tooLarge(capped)).toBe(1); // only the attack's
  });
});
