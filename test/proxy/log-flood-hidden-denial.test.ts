import { readFileSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { request as httpsRequest } from "node:https";
import { connect } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { metricValue, startMeshCa, startTestSidecar, TD, type MeshCa, type TestSidecarWithApp } from "./fixtures.ts";

// review-edge L1: the inbound's log limiter keys plaintext refusals by source address. A peer with
// a thousand addresses (here 127.1.x.y; an IPv6 /64 or a NAT pool elsewhere) filled its key table,
// and every later key shared one overflow key already over its budget: an intruder's policy
// denials after the flood left no line. Now overflow is per kind, and the limiter has a ceiling
// of lines per window that each kind's first lines pass.
const ADDRESSES = 1015;
/** LimitedWarnings' defaults: the limiter's ceiling per 10 s window. */
const MAX_LINES_PER_WINDOW = 100;
const WINDOW_MS = 10_000;

let ca: MeshCa;
let app: Server;
let sidecar: TestSidecarWithApp;

function plaintextFrom(port: number, localAddress: string): Promise<void> {
  return new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port, localAddress }, () => socket.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    socket.on("data", () => undefined);
    socket.on("close", () => resolve());
    socket.on("error", () => resolve());
  });
}

function mtlsGet(port: number, files: { cert: string; key: string }): Promise<number> {
  return new Promise((resolve) => {
    const req = httpsRequest({ host: "127.0.0.1", port, path: "/admin", cert: readFileSync(files.cert), key: readFileSync(files.key), ca: ca.bundlePem, checkServerIdentity: () => undefined, agent: false }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
    });
    req.on("error", () => resolve(-1));
    req.end();
  });
}

beforeAll(async () => {
  ca = await startMeshCa();
  app = createServer((_req, res) => res.end("ok")).listen(0, "127.0.0.1");
  await new Promise((resolve) => app.once("listening", resolve));
  const policy = join(ca.dir, "deny-intruder.yaml");
  writeFileSync(
    policy,
    `kind: Configuration\nspec:\n  accessControl:\n    defaultAction: allow\n    trustDomain: ${TD}\n    policies:\n      - appId: intruder\n        namespace: default\n        trustDomain: ${TD}\n        defaultAction: deny\n`,
  );
  // A refused plaintext connection is held up to 1 s after its answer: room for all of them under the listener's cap.
  sidecar = await startTestSidecar(ca, { appId: "victim", app: `127.0.0.1:${(app.address() as { port: number }).port}`, policy, limits: { maxConnections: 2048 } });
});

afterAll(async () => {
  await sidecar?.close();
  await new Promise((resolve) => app?.close(resolve));
  await ca?.close();
});

describe("a refusal flood from many addresses (review-edge L1)", () => {
  it(`${ADDRESSES} plaintext connections from ${ADDRESSES} loopback addresses stay under the limiter's ceiling, and the intruder denied afterwards still gets a line`, async () => {
    const port = sidecar.addresses.inbound.port;
    const started = Date.now();
    for (let i = 0; i < ADDRESSES; i++) await plaintextFrom(port, `127.1.${Math.floor(i / 250)}.${(i % 250) + 1}`);
    const elapsed = Date.now() - started;
    const refusedLines = sidecar.logs.lines.filter((l) => l.event === "refused").length;
    expect(refusedLines).toBeGreaterThan(0);
    // At most the ceiling in each window begun (no assumption on how fast the loop ran).
    expect(refusedLines).toBeLessThanOrEqual(MAX_LINES_PER_WINDOW * (Math.floor(elapsed / WINDOW_MS) + 1));
    expect(metricValue(await sidecar.metrics.text(), "meshward_sidecar_refused_total", { direction: "inbound", reason: "plaintext" })).toBe(ADDRESSES);

    const intruder = await ca.clientFiles("default", "intruder");
    const statuses = [];
    for (let i = 0; i < 3; i++) statuses.push(await mtlsGet(port, intruder));
    expect(statuses).toEqual([403, 403, 403]);
    const denied = sidecar.logs.lines.filter((l) => l.event === "policy-denied");
    expect(denied.length).toBeGreaterThan(0);
    expect(denied[0]).toMatchObject({ caller: `spiffe://${TD}/ns/default/intruder` });
  });
});
