import type { Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { caConfigSchema } from "../../src/config/ca.ts";
import { limitsSchema } from "../../src/config/sidecar.ts";
import { DEFAULT_STATUS_MAX_CONNECTIONS, DEFAULT_STATUS_MAX_CONNECTIONS_PER_ADDRESS } from "../../src/telemetry/health.ts";
import { holdHalfHead, probe } from "../helpers/status-port-clients.ts";
import { metricValue, startMeshCa, startTestSidecar, type MeshCa, type TestSidecarWithApp } from "./fixtures.ts";

// review-edge H1, as the sidecar is configured: limits.statusMaxConnections(PerAddress) reach its
// status port (the one the injector binds on 0.0.0.0:9090, probes and Prometheus included).
let ca: MeshCa;
let sidecar: TestSidecarWithApp;
const opened: Socket[] = [];


beforeAll(async () => {
  ca = await startMeshCa();
  sidecar = await startTestSidecar(ca, { appId: "probed", app: "127.0.0.1:1", limits: { statusMaxConnections: 3, statusMaxConnectionsPerAddress: 2 } });
});

afterAll(async () => {
  for (const socket of opened) socket.destroy();
  await sidecar?.close();
  await ca?.close();
});

describe("the sidecar's status port takes its caps from limits", () => {
  it("defaults: 64 in all, 16 per address, in the sidecar's and the CA's config alike", () => {
    expect(limitsSchema.parse({})).toMatchObject({ statusMaxConnections: DEFAULT_STATUS_MAX_CONNECTIONS, statusMaxConnectionsPerAddress: DEFAULT_STATUS_MAX_CONNECTIONS_PER_ADDRESS });
    expect(caConfigSchema.parse({})).toMatchObject({ statusMaxConnections: DEFAULT_STATUS_MAX_CONNECTIONS, statusMaxConnectionsPerAddress: DEFAULT_STATUS_MAX_CONNECTIONS_PER_ADDRESS });
  });

  it("statusMaxConnectionsPerAddress 2 and statusMaxConnections 3: the 3rd from one address and the 4th in all are reset, counted and logged", async () => {
    const port = sidecar.addresses.status!.port;
    await holdHalfHead(port, "127.0.0.1", opened);
    await holdHalfHead(port, "127.0.0.1", opened);
    expect(typeof (await probe(port, "127.0.0.1"))).toBe("string");
    await holdHalfHead(port, "127.0.0.2", opened);
    expect(typeof (await probe(port, "127.0.0.3"))).toBe("string");
    const text = await sidecar.metrics.text();
    expect(metricValue(text, "meshward_status_connections_refused_total", { reason: "max_connections_per_address" })).toBe(1);
    expect(metricValue(text, "meshward_status_connections_refused_total", { reason: "max_connections" })).toBe(1);
    expect(sidecar.logs.lines.filter((l) => l.event === "ops-connection-refused").map((l) => l.reason)).toEqual(["max_connections_per_address", "max_connections"]);
  });
});
