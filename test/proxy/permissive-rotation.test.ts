import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createIdentity } from "../../src/identity/ca-source.ts";
import { createMtlsAgent, httpsRequest } from "../../src/transport/https.ts";
import { exec } from "../helpers/exec.ts";
import { grpcSay, startGrpcApp, startHttpApp } from "../helpers/app-servers.ts";
import type { HttpApp } from "../helpers/app-servers.ts";
import { metricValue, startMeshCa, startTestSidecar, TD } from "./fixtures.ts";
import type { MeshCa } from "./fixtures.ts";

describe("PERMISSIVE mode: plaintext accepted, unverified, counted", () => {
  let ca: MeshCa;
  let app: HttpApp;
  let grpcApp: { port: number; close(): Promise<void> };

  beforeAll(async () => {
    ca = await startMeshCa();
    app = await startHttpApp();
    grpcApp = await startGrpcApp();
  });
  afterAll(async () => {
    await app?.close();
    await grpcApp?.close();
    await ca?.close();
  });

  it("forwards plaintext HTTP without XFCC (spoofed one stripped), counts and logs it; mTLS still works on the same port", async () => {
    const side = await startTestSidecar(ca, { appId: "legacy", app: `127.0.0.1:${app.port}`, mode: "permissive" }, { dnsNames: ["legacy.mesh.test"] });
    try {
      const port = side.addresses.inbound.port;
      const plain = await exec("curl", ["-sS", "--max-time", "5", "-H", "x-forwarded-client-cert: By=x;URI=spiffe://mesh.test/ns/default/admin", `http://127.0.0.1:${port}/plain`]);
      const echoed = JSON.parse(plain.stdout) as { url: string; headers: Record<string, string> };
      expect(echoed.url).toBe("/plain");
      expect(echoed.headers["x-forwarded-client-cert"]).toBeUndefined();
      const metrics = await (await fetch(`http://127.0.0.1:${side.addresses.status!.port}/metrics`)).text();
      expect(metricValue(metrics, "meshward_plaintext_connections_total")).toBe(1);
      expect(side.logs.lines.some((l) => l.event === "plaintext-accepted")).toBe(true);
      const caller = await ca.clientFiles("default", "app-a");
      const tls = await exec("curl", ["-sS", "--max-time", "5", "--cacert", ca.bundleFile, "--resolve", `legacy.mesh.test:${port}:127.0.0.1`, "--cert", caller.cert, "--key", caller.key, `https://legacy.mesh.test:${port}/tls`]);
      expect((JSON.parse(tls.stdout) as { headers: Record<string, string> }).headers["x-forwarded-client-cert"]).toContain(`URI=${caller.spiffeId}`);
    } finally {
      await side.close();
    }
  });

  it("gives plaintext callers the policy's global default (deny here) and accepts plaintext gRPC (h2c)", async () => {
    const policy = join(ca.dir, "deny-default.yaml");
    writeFileSync(policy, `kind: Configuration\nspec:\n  accessControl:\n    defaultAction: deny\n    trustDomain: ${TD}\n    policies:\n      - appId: app-a\n        namespace: default\n        trustDomain: ${TD}\n        defaultAction: allow\n`);
    const httpSide = await startTestSidecar(ca, { appId: "legacy2", app: `127.0.0.1:${app.port}`, mode: "permissive", policy });
    const grpcSide = await startTestSidecar(ca, { appId: "legacy-grpc", app: `127.0.0.1:${grpcApp.port}`, mode: "permissive" });
    try {
      const denied = await exec("curl", ["-sS", "--max-time", "5", "-w", "\n%{http_code}", `http://127.0.0.1:${httpSide.addresses.inbound.port}/x`]);
      expect(denied.stdout.trim().endsWith("403")).toBe(true);
      expect(denied.stdout).toContain('"caller":"unverified"');
      const g = await grpcSay(`127.0.0.1:${grpcSide.addresses.inbound.port}`, "say", "plain");
      expect(g.code).toBe(0);
      expect(g.response).toMatchObject({ echo: "plain", xfcc: null });
    } finally {
      await httpSide.close();
      await grpcSide.close();
    }
  });

  it("STRICT (the default) refuses plaintext gRPC: the call fails and nothing reaches the app", async () => {
    const side = await startTestSidecar(ca, { appId: "strict-grpc", app: `127.0.0.1:${grpcApp.port}` });
    try {
      const g = await grpcSay(`127.0.0.1:${side.addresses.inbound.port}`, "say", "plain");
      expect(g.code).toBe(14);
      const metrics = await (await fetch(`http://127.0.0.1:${side.addresses.status!.port}/metrics`)).text();
      expect(metricValue(metrics, "meshward_sidecar_refused_total", { reason: "plaintext" })).toBeGreaterThanOrEqual(1);
      expect(metricValue(metrics, "meshward_plaintext_connections_total")).toBe(0);
    } finally {
      await side.close();
    }
  });
});

describe("certificate rotation with a 5 s TTL while keep-alive clients keep working", () => {
  let ca: MeshCa;
  let app: HttpApp;

  beforeAll(async () => {
    ca = await startMeshCa({ workloadTtl: "5s" });
    app = await startHttpApp();
  });
  afterAll(async () => {
    await app?.close();
    await ca?.close();
  });

  it("rotates inbound and outbound identities with no failed request; connections end with the certificate they were verified with; new ones get the new certificate", async () => {
    const sideB = await startTestSidecar(ca, { appId: "app-b", app: `127.0.0.1:${app.port}` });
    const sideA = await startTestSidecar(ca, { appId: "app-a", app: "127.0.0.1:1", outbound: "127.0.0.1:0", peers: { "app-b": `127.0.0.1:${sideB.addresses.inbound.port}` } });
    const silent = pino({ level: "silent" });
    const clientIdentity = createIdentity({ ca: ca.server.address, bundlePem: ca.bundlePem, namespace: "default", appId: "direct", token: await ca.token("default", "direct"), logger: silent });
    const agent = await createMtlsAgent({ identity: clientIdentity, expect: `spiffe://${TD}/ns/default/app-b`, maxSockets: 1 });
    try {
      const url = `https://127.0.0.1:${sideB.addresses.inbound.port}/direct`;
      const first = await httpsRequest(url, { identity: clientIdentity, expect: `spiffe://${TD}/ns/default/app-b`, agent });
      expect(first.status).toBe(200);
      const firstSerial = first.peer?.serial;
      const started = Date.now();
      let requests = 0;
      const { Agent, request } = await import("node:http");
      const outAgent = new Agent({ keepAlive: true, maxSockets: 1 });
      while (Date.now() - started < 7_000) {
        const direct = await httpsRequest(url, { identity: clientIdentity, expect: `spiffe://${TD}/ns/default/app-b`, agent });
        expect(direct.status).toBe(200);
        const viaMesh = await new Promise<number>((resolve, reject) => {
          const req = request({ host: "127.0.0.1", port: sideA.addresses.outbound!.port, path: "/mesh", headers: { "dapr-app-id": "app-b" }, agent: outAgent }, (res) => {
            res.resume();
            res.on("end", () => resolve(res.statusCode ?? 0));
          });
          req.on("error", reject);
          req.end();
        });
        expect(viaMesh).toBe(200);
        requests++;
        await new Promise((resolve) => setTimeout(resolve, 150));
      }
      outAgent.destroy();
      expect(requests).toBeGreaterThan(10);
      const metricsB = await (await fetch(`http://127.0.0.1:${sideB.addresses.status!.port}/metrics`)).text();
      expect(metricValue(metricsB, "meshward_rotation_total", { kind: "workload", result: "ok" })).toBeGreaterThanOrEqual(2);
      // Callers' first certificates expired after 5 s: B retired the connections verified with them
      // (the direct agent's and A's pooled one), and each caller came back with a new handshake and
      // its renewed certificate, with no request failing on the way.
      expect(metricValue(metricsB, "meshward_tls_handshakes_total", { direction: "inbound", result: "ok" })).toBeGreaterThanOrEqual(4);
      // A new connection sees sidecar B's new certificate.
      const fresh = await httpsRequest(url, { identity: clientIdentity, expect: `spiffe://${TD}/ns/default/app-b`, agent: await createMtlsAgent({ identity: clientIdentity, expect: `spiffe://${TD}/ns/default/app-b` }) });
      expect(fresh.status).toBe(200);
      expect(fresh.peer?.serial).not.toBe(firstSerial);
    } finally {
      agent.destroy();
      await clientIdentity.close();
      await sideA.close();
      await sideB.close();
    }
  }, 30_000);
});
