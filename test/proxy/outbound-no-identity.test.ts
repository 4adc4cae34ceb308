import { createSecureServer, type Http2SecureServer } from "node:http2";
import { createServer, type AddressInfo, type Server, type Socket } from "node:net";
import { pino } from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { limitsSchema } from "../../src/config/sidecar.ts";
import type { IdentitySnapshot, IdentitySource } from "../../src/identity/source.ts";
import { startOutbound, type Outbound } from "../../src/proxy/outbound.ts";
import { compileOutboundHosts } from "../../src/proxy/outbound-host.ts";
import { sidecarTelemetry } from "../../src/proxy/sidecar.ts";
import { createMetrics, type Metrics } from "../../src/telemetry/metrics.ts";
import { h2Call, http1Call, tcpOutcome } from "../helpers/outbound-calls.ts";
import { createTestPki, type TestPki } from "../helpers/openssl-pki.ts";
import { waitFor } from "../helpers/wait.ts";
import { bundleOf, snapshotOf } from "../transport/fixtures.ts";
import { metricValue } from "./fixtures.ts";

// Found by review: the outbound waited for its own client identity without a bound. A request
// that reached it before the workload had its first certificate waited for as long as the
// certificate took (for ever, if it never came). The wait now ends after limits.handshakeTimeout
// (the deadline of the dial it is part of): the request gets 503 E_NO_IDENTITY, a TCP upstream
// connection is closed, nothing is dialled. (startSidecar starts the outbound only once the first
// certificate is there; the outbound is started here on its own, with an identity that has none
// yet.) A request whose identity arrives in time goes through as before. Outcomes are asserted
// within a generous bound (handshakeTimeout is 1 s, the bound 15 s).
const TD = "example.org";
const BOUND_MS = 15_000;

/** An identity source whose first certificate arrives when the test says so (or never). */
class PendingIdentity implements IdentitySource {
  #snapshot: IdentitySnapshot | undefined;
  #arrive: (snapshot: IdentitySnapshot) => void = () => undefined;
  readonly #ready = new Promise<IdentitySnapshot>((resolve) => (this.#arrive = resolve));
  /** How often ready() was awaited: the outbound is waiting once it was. */
  waits = 0;
  ready = (): Promise<IdentitySnapshot> => {
    this.waits++;
    return this.#ready;
  };
  current = (): IdentitySnapshot | undefined => this.#snapshot;
  subscribe = () => () => undefined;
  close = async (): Promise<void> => undefined;
  arrive(snapshot: IdentitySnapshot): void {
    this.#snapshot = snapshot;
    this.#arrive(snapshot);
  }
}

interface Started {
  readonly outbound: Outbound;
  readonly metrics: Metrics;
  readonly identity: PendingIdentity;
}

describe("the outbound before the workload has an identity", () => {
  let pki: TestPki;
  /** The peer "orders": a TLS HTTP/2 (and HTTP/1.1) server with orders' certificate. */
  let peer: Http2SecureServer;
  let peerPort: number;
  /** A TCP listener that counts connections: nothing may be dialled without an identity. */
  let silent: Server;
  let silentPort: number;
  let dialled = 0;
  const held = new Set<Socket>();
  const started: Started[] = [];

  beforeAll(async () => {
    pki = createTestPki({ trustDomain: TD });
    const leaf = pki.issueLeaf({ spiffeId: `spiffe://${TD}/ns/default/orders` });
    peer = createSecureServer({ cert: leaf.chainPem, key: leaf.keyPem, requestCert: true, rejectUnauthorized: false, allowHTTP1: true }, (_req, res) => res.end("from orders"));
    await new Promise<void>((resolve) => peer.listen(0, "127.0.0.1", resolve));
    peerPort = (peer.address() as AddressInfo).port;
    silent = createServer((socket) => {
      dialled++;
      held.add(socket);
      socket.on("error", () => undefined);
      socket.once("close", () => held.delete(socket));
    });
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    silentPort = (silent.address() as AddressInfo).port;
  });
  afterEach(async () => {
    for (const { outbound } of started.splice(0)) await outbound.close();
  });
  afterAll(async () => {
    for (const socket of held) socket.destroy();
    await new Promise<void>((resolve) => (silent ? silent.close(() => resolve()) : resolve()));
    await new Promise<void>((resolve) => (peer ? peer.close(() => resolve()) : resolve()));
    pki?.cleanup();
  });

  async function start(peers: Record<string, string>): Promise<Started> {
    const identity = new PendingIdentity();
    const metrics = createMetrics();
    const outbound = await startOutbound({
      listen: { host: "127.0.0.1", port: 0 },
      tcpUpstreams: { nowhere: "127.0.0.1:0" },
      directory: { trustDomain: TD, namespace: "default", peers: { nowhere: `127.0.0.1:${silentPort}`, ...peers }, peerPort: 3501 },
      identity,
      limits: limitsSchema.parse({ handshakeTimeout: "1s" }),
      escapedSlashes: "reject",
      allowedHosts: compileOutboundHosts([]),
      telemetry: sidecarTelemetry(pino({ level: "silent" }), metrics),
    });
    const handle = { outbound, metrics, identity };
    started.push(handle);
    return handle;
  }


  it("answers HTTP/1.1 and HTTP/2 503 E_NO_IDENTITY after handshakeTimeout, closes a TCP upstream connection, dials nothing, and counts each", async () => {
    const { outbound, metrics } = await start({ orders: `127.0.0.1:${silentPort}` });
    const port = outbound.address!.port;

    const http1 = await http1Call(port, "orders", BOUND_MS);
    expect(http1).not.toBe("no answer");
    const answered = http1 as { status: number; error: unknown; body: string };
    expect(answered.status).toBe(503);
    expect(answered.error).toBe("E_NO_IDENTITY");
    expect(JSON.parse(answered.body)).toMatchObject({ error: "E_NO_IDENTITY", message: expect.stringContaining("no identity yet") });

    const h2 = await h2Call(port, "orders", BOUND_MS);
    expect(h2).not.toBe("no answer");
    expect(h2).toMatchObject({ status: 503, error: "E_NO_IDENTITY" });

    expect(await tcpOutcome(outbound.tcp.nowhere!.port, BOUND_MS)).toBe("closed");

    expect(dialled).toBe(0);
    expect(metricValue(await metrics.text(), "meshward_sidecar_refused_total", { direction: "outbound", reason: "no_identity" })).toBe(3);
    // Not a failure of the peer: nothing was asked of it.
    expect(metricValue(await metrics.text(), "meshward_sidecar_upstream_errors_total", { direction: "outbound" })).toBe(0);
  }, 60_000);

  it("a request waiting for the identity goes through once it arrives in time", async () => {
    const { outbound, identity } = await start({ orders: `127.0.0.1:${peerPort}` });
    const answer = http1Call(outbound.address!.port, "orders", BOUND_MS);
    await waitFor("the outbound to wait for its identity", () => identity.waits > 0, BOUND_MS, 10);
    identity.arrive(snapshotOf(pki.issueLeaf({ spiffeId: `spiffe://${TD}/ns/default/web` }), bundleOf([pki])));
    expect(await answer).toMatchObject({ status: 200, body: "from orders" });
  }, 30_000);
});
