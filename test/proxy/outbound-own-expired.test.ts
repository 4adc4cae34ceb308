import { createSecureServer, type Http2SecureServer } from "node:http2";
import type { AddressInfo } from "node:net";
import { pino } from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { limitsSchema } from "../../src/config/sidecar.ts";
import { startOutbound, type Outbound } from "../../src/proxy/outbound.ts";
import { compileOutboundHosts } from "../../src/proxy/outbound-host.ts";
import { sidecarTelemetry } from "../../src/proxy/sidecar.ts";
import { createMetrics, type Metrics } from "../../src/telemetry/metrics.ts";
import { h2Call, http1Call, tcpOutcome } from "../helpers/outbound-calls.ts";
import { createTestPki, type TestPki } from "../helpers/openssl-pki.ts";
import { bundleOf, ManualIdentity, snapshotOf } from "../transport/fixtures.ts";
import { metricValue } from "./fixtures.ts";

// Found by review: when this sidecar's OWN certificate had expired (the CA down for longer than its
// lifetime), an outbound dial failed with E_IDENTITY_EXPIRED, which the outbound read as the peer's
// fault: 502 E_PEER_IDENTITY "the sidecar at … is not spiffe://…/orders", counted as
// upstream_errors{reason="peer_identity"} and as a handshake failure. Nothing was asked of the peer:
// it is now 503 E_NO_IDENTITY, saying that this sidecar's certificate expired and when, counted as
// refused{reason="no_identity"}, for HTTP/1.1, h2c and TCP upstreams. The peer is a plain
// node:http2 server holding a valid SVID; the identity is driven by hand.
const TD = "example.org";
const BOUND_MS = 15_000;


describe("the outbound once this sidecar's own certificate has expired", () => {
  let pki: TestPki;
  let peer: Http2SecureServer;
  let peerPort: number;
  let accepted = 0;
  const started: Outbound[] = [];

  beforeAll(async () => {
    pki = createTestPki({ trustDomain: TD });
    const leaf = pki.issueLeaf({ spiffeId: `spiffe://${TD}/ns/default/orders` });
    peer = createSecureServer({ cert: leaf.chainPem, key: leaf.keyPem, requestCert: true, rejectUnauthorized: false, allowHTTP1: true }, (_req, res) => res.end("from orders"));
    peer.on("secureConnection", () => accepted++);
    peer.on("tlsClientError", () => undefined);
    await new Promise<void>((resolve) => peer.listen(0, "127.0.0.1", resolve));
    peerPort = (peer.address() as AddressInfo).port;
  });
  afterEach(async () => {
    for (const outbound of started.splice(0)) await outbound.close();
  });
  afterAll(async () => {
    await new Promise<void>((resolve) => (peer ? peer.close(() => resolve()) : resolve()));
    pki?.cleanup();
  });

  async function start(identity: ManualIdentity): Promise<{ outbound: Outbound; metrics: Metrics }> {
    const metrics = createMetrics();
    const outbound = await startOutbound({
      listen: { host: "127.0.0.1", port: 0 },
      tcpUpstreams: { orders: "127.0.0.1:0" },
      directory: { trustDomain: TD, namespace: "default", peers: { orders: `127.0.0.1:${peerPort}` }, peerPort: 3501 },
      identity,
      limits: limitsSchema.parse({ handshakeTimeout: "5s" }),
      escapedSlashes: "reject",
      allowedHosts: compileOutboundHosts([]),
      telemetry: sidecarTelemetry(pino({ level: "silent" }), metrics),
    });
    started.push(outbound);
    return { outbound, metrics };
  }


  it("answers HTTP/1.1 and h2c 503 E_NO_IDENTITY naming the expiry, closes a TCP upstream connection, and counts refused no_identity, not peer_identity", async () => {
    const notAfter = new Date(Date.now() - 60 * 60_000);
    const expired = pki.issueLeaf({ spiffeId: `spiffe://${TD}/ns/default/web`, notBefore: new Date(Date.now() - 2 * 60 * 60_000), notAfter });
    const { outbound, metrics } = await start(new ManualIdentity(snapshotOf(expired, bundleOf([pki]))));
    const port = outbound.address!.port;

    const http1 = await http1Call(port, "orders", BOUND_MS);
    expect(http1).not.toBe("no answer");
    const answered = http1 as { status: number; error: unknown; body: string };
    expect(answered.status).toBe(503);
    expect(answered.error).toBe("E_NO_IDENTITY");
    const message = String(JSON.parse(answered.body).message);
    expect(message).toContain("this sidecar's own certificate");
    expect(message).toContain(`expired at ${expired.notAfter.toISOString()}`);
    expect(message).not.toMatch(/is not spiffe:/);

    const h2 = await h2Call(port, "orders", BOUND_MS);
    expect(h2).toMatchObject({ status: 503, error: "E_NO_IDENTITY" });

    expect(await tcpOutcome(outbound.tcp.orders!.port, BOUND_MS)).toBe("closed");

    const text = await metrics.text();
    expect(metricValue(text, "meshward_sidecar_refused_total", { direction: "outbound", reason: "no_identity" })).toBe(3);
    expect(metricValue(text, "meshward_sidecar_upstream_errors_total", { direction: "outbound", reason: "peer_identity" })).toBe(0);
    expect(metricValue(text, "meshward_tls_handshake_failures_total", { direction: "outbound" })).toBe(0);
    expect(accepted).toBe(0); // nothing was dialled with the expired certificate
  }, 60_000);

  it("control: a valid certificate calls the same peer (200), and one renewed after expiry calls it again", async () => {
    const expired = pki.issueLeaf({ spiffeId: `spiffe://${TD}/ns/default/web`, notBefore: new Date(Date.now() - 2 * 60 * 60_000), notAfter: new Date(Date.now() - 60 * 60_000) });
    const identity = new ManualIdentity(snapshotOf(expired, bundleOf([pki])));
    const { outbound } = await start(identity);
    expect(await http1Call(outbound.address!.port, "orders", BOUND_MS)).toMatchObject({ status: 503, error: "E_NO_IDENTITY" });
    identity.rotate(snapshotOf(pki.issueLeaf({ spiffeId: `spiffe://${TD}/ns/default/web` }), bundleOf([pki])));
    expect(await http1Call(outbound.address!.port, "orders", BOUND_MS)).toMatchObject({ status: 200, body: "from orders" });
  }, 60_000);
});
