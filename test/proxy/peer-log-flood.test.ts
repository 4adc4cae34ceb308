import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { Agent, request as httpsRequest } from "node:https";
import { connect } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { callThroughOutbound, metricValue, startMeshCa, startTestSidecar, type MeshCa, type TestSidecarWithApp } from "./fixtures.ts";

// Log lines a peer (or a backend, or the app being down) can cause once per connection or
// request go through the sidecar's LimitedWarnings (5 lines per key per 10 s window): 200 events
// give at most the budget of lines, while the metrics still count all 200. Real connections: a
// PERMISSIVE inbound with its app down, an outbound peer and an egress backend with nothing
// listening.
const N = 200;
/** LimitedWarnings' default budget: lines per key per window. */
const PER_WINDOW = 5;
const WINDOW_MS = 10_000;

let ca: MeshCa;
let sidecar: TestSidecarWithApp;
let deadPort: number;

/** A loopback port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer().listen(0, "127.0.0.1");
  await new Promise((resolve) => server.once("listening", resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** The most lines a key may have logged in `elapsedMs`: its budget in each window begun (no assumption on how fast the loop ran). */
function budget(elapsedMs: number): number {
  return PER_WINDOW * (Math.floor(elapsedMs / WINDOW_MS) + 1);
}

const lines = (predicate: (line: Record<string, unknown>) => boolean) => sidecar.logs.lines.filter(predicate).length;

beforeAll(async () => {
  ca = await startMeshCa();
  deadPort = await closedPort();
  sidecar = await startTestSidecar(ca, {
    appId: "legacy",
    app: `127.0.0.1:${deadPort}`,
    mode: "permissive",
    outbound: "127.0.0.1:0",
    peers: { gone: `127.0.0.1:${deadPort}` },
    egress: [{ listen: "127.0.0.1:0", backend: `127.0.0.1:${deadPort}` }],
  });
});

afterAll(async () => {
  await sidecar?.close();
  await ca?.close();
});

describe("peer-caused warnings are rate-limited, and still counted", () => {
  it(`PERMISSIVE: ${N} plaintext connections from one address give at most the budget of plaintext-accepted lines`, async () => {
    const started = Date.now();
    for (let i = 0; i < N; i++) {
      await new Promise<void>((resolve) => {
        // A plaintext HTTP head; the app is down, so the answer is 503, then the connection closes.
        const socket = connect({ host: "127.0.0.1", port: sidecar.addresses.inbound.port }, () => socket.write("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
        socket.on("data", () => undefined);
        socket.on("close", () => resolve());
        socket.on("error", () => resolve());
      });
    }
    const elapsed = Date.now() - started;
    const accepted = lines((l) => l.event === "plaintext-accepted");
    expect(accepted).toBeGreaterThan(0);
    expect(accepted).toBeLessThanOrEqual(budget(elapsed));
    expect(metricValue(await sidecar.metrics.text(), "meshward_plaintext_connections_total")).toBe(N);
  });

  it(`app down: ${N} mTLS requests give at most the budget of app-unreachable lines; every one is counted`, async () => {
    const before = metricValue(await sidecar.metrics.text(), "meshward_sidecar_upstream_errors_total", { direction: "inbound", reason: "app_unreachable" });
    const linesBefore = lines((l) => l.event === "app-unreachable");
    const caller = await ca.clientFiles("default", "caller");
    const agent = new Agent({ keepAlive: true, maxSockets: 1, cert: readFileSync(caller.cert), key: readFileSync(caller.key), ca: ca.bundlePem, checkServerIdentity: () => undefined });
    const statuses: Record<number, number> = {};
    const started = Date.now();
    try {
      for (let i = 0; i < N; i++) {
        const status = await new Promise<number>((resolve) => {
          const req = httpsRequest({ host: "127.0.0.1", port: sidecar.addresses.inbound.port, path: `/x/${i}`, agent }, (res) => {
            res.resume();
            res.on("end", () => resolve(res.statusCode ?? 0));
          });
          req.on("error", () => resolve(-1));
          req.end();
        });
        statuses[status] = (statuses[status] ?? 0) + 1;
      }
    } finally {
      agent.destroy();
    }
    const elapsed = Date.now() - started;
    expect(statuses).toEqual({ 503: N });
    const logged = lines((l) => l.event === "app-unreachable") - linesBefore;
    // The plaintext requests of the test before used the same key's budget; at most one more window's worth here.
    expect(logged).toBeLessThanOrEqual(budget(elapsed));
    const after = metricValue(await sidecar.metrics.text(), "meshward_sidecar_upstream_errors_total", { direction: "inbound", reason: "app_unreachable" });
    expect(after - before).toBe(N);
  });

  it(`outbound: ${N} calls to an unreachable peer give at most the budget of "outbound call failed" lines; every one is counted`, async () => {
    const started = Date.now();
    for (let i = 0; i < N; i++) expect((await callThroughOutbound(sidecar.addresses.outbound!.port, "gone")).status).toBe(502);
    const elapsed = Date.now() - started;
    const failed = lines((l) => l.msg === "outbound call failed");
    expect(failed).toBeGreaterThan(0);
    expect(failed).toBeLessThanOrEqual(budget(elapsed));
    expect(metricValue(await sidecar.metrics.text(), "meshward_sidecar_upstream_errors_total", { direction: "outbound", reason: "peer_unreachable" })).toBe(N);
  });

  it(`egress: ${N} app connections to a backend with nothing listening give at most the budget of "connection refused" lines; every one is counted`, async () => {
    const egress = sidecar.addresses.egress[0]!;
    const started = Date.now();
    for (let i = 0; i < N; i++) {
      await new Promise<void>((resolve) => {
        const socket = connect({ host: "127.0.0.1", port: egress.port });
        socket.on("data", () => undefined);
        socket.on("close", () => resolve());
        socket.on("error", () => resolve());
      });
    }
    const elapsed = Date.now() - started;
    const refused = lines((l) => typeof l.msg === "string" && l.msg.includes("connection refused (connect_failed)"));
    expect(refused).toBeGreaterThan(0);
    expect(refused).toBeLessThanOrEqual(budget(elapsed));
    expect(metricValue(await sidecar.metrics.text(), "meshward_egress_connections_total", { result: "connect_failed" })).toBe(N);
  });
});
