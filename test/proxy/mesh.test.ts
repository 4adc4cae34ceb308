import { writeFileSync } from "node:fs";
import { request } from "node:http";
import { spawn } from "node:child_process";
import { connect as netConnect, createServer as createNetServer } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { grpcSay, startGrpcApp, startHttpApp, startTcpEcho } from "../helpers/app-servers.ts";
import { exec } from "../helpers/exec.ts";
import type { HttpApp } from "../helpers/app-servers.ts";
import type { Sidecar } from "../../src/proxy/sidecar.ts";
import { metricValue, startMeshCa, startTestSidecar, TD, type SidecarWithApp } from "./fixtures.ts";
import type { MeshCa } from "./fixtures.ts";

type TestSidecar = SidecarWithApp & { logs: { lines: Record<string, unknown>[] } };

const POLICY = `kind: Configuration
spec:
  accessControl:
    defaultAction: deny
    trustDomain: ${TD}
    policies:
      - appId: app-a
        namespace: default
        trustDomain: ${TD}
        defaultAction: deny
        operations:
          - name: /test.Echo/Say
            action: allow
          - name: /v1/**
            httpVerb: ["*"]
            action: allow
`;

function httpGet(port: number, path: string, headers: Record<string, string>, agent?: import("node:http").Agent): Promise<{ status: number; body: string; headers: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path, headers, ...(agent ? { agent } : {}) }, (res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
    });
    req.on("error", reject);
    req.end();
  });
}

describe("app → outbound sidecar A → inbound sidecar B → app B", () => {
  let ca: MeshCa;
  let httpApp: HttpApp;
  let grpcApp: { port: number; close(): Promise<void> };
  let sideB: TestSidecar;
  let sideGrpc: TestSidecar;
  let sideC: TestSidecar;
  let sideA: TestSidecar;

  beforeAll(async () => {
    ca = await startMeshCa();
    httpApp = await startHttpApp();
    grpcApp = await startGrpcApp();
    const policy = join(ca.dir, "policy.yaml");
    writeFileSync(policy, POLICY);
    sideB = await startTestSidecar(ca, { appId: "app-b", app: `127.0.0.1:${httpApp.port}`, policy });
    sideGrpc = await startTestSidecar(ca, { appId: "greeter", app: `127.0.0.1:${grpcApp.port}`, policy });
    sideC = await startTestSidecar(ca, { appId: "app-c", app: `127.0.0.1:${httpApp.port}` });
    const at = (s: TestSidecar) => `127.0.0.1:${s.addresses.inbound.port}`;
    sideA = await startTestSidecar(ca, {
      appId: "app-a",
      app: "127.0.0.1:1",
      outbound: "127.0.0.1:0",
      // "impostor" is served by app-c's sidecar: the outbound side must refuse it.
      peers: { "app-b": at(sideB), greeter: at(sideGrpc), impostor: at(sideC) },
    });
  });

  afterAll(async () => {
    for (const s of [sideA, sideB, sideGrpc, sideC]) await s?.close();
    await httpApp?.close();
    await grpcApp?.close();
    await ca?.close();
  });

  const out = () => sideA.addresses.outbound!.port;

  it("routes HTTP/1.1 by dapr-app-id and by Host, and app B sees app A's verified identity", async () => {
    const byHeader = await httpGet(out(), "/v1/orders?x=1", { "dapr-app-id": "app-b" });
    expect(byHeader.status).toBe(200);
    const echoed = JSON.parse(byHeader.body) as { url: string; headers: Record<string, string> };
    expect(echoed.url).toBe("/v1/orders?x=1");
    expect(echoed.headers["x-forwarded-client-cert"]).toBe(`By=spiffe://${TD}/ns/default/app-b;URI=spiffe://${TD}/ns/default/app-a`);
    const byHost = await httpGet(out(), "/v1/host", { host: "app-b:3500" });
    expect(byHost.status).toBe(200);
    expect((JSON.parse(byHost.body) as { url: string }).url).toBe("/v1/host");
  });

  // Dapr's callee sidecar stamps the caller from its SPIFFE ID and its own app id, replacing a
  // caller's values (dapr/dapr pkg/messaging/grpc_proxy.go setLocalIdentityMetadata).
  it("does not let the app forge XFCC or Dapr's caller headers through its own sidecar: app B gets the inbound sidecar's", async () => {
    const r = await httpGet(out(), "/v1/forge", {
      "dapr-app-id": "app-b",
      "x-forwarded-client-cert": "By=x;URI=spiffe://mesh.test/ns/default/admin",
      "dapr-caller-app-id": "admin",
      "dapr-caller-namespace": "kube-system",
      "dapr-callee-app-id": "payments",
    });
    const headers = (JSON.parse(r.body) as { headers: Record<string, string> }).headers;
    expect(headers["x-forwarded-client-cert"]).toBe(`By=spiffe://${TD}/ns/default/app-b;URI=spiffe://${TD}/ns/default/app-a`);
    // node:http joins repeated fields with ", ": one value each means one field each.
    expect([headers["dapr-caller-app-id"], headers["dapr-caller-namespace"], headers["dapr-callee-app-id"]]).toEqual(["app-a", "default", "app-b"]);
  });

  it("denies by policy through the real proxy pair: HTTP 403", async () => {
    const r = await httpGet(out(), "/admin", { "dapr-app-id": "app-b" });
    expect(r.status).toBe(403);
    expect(JSON.parse(r.body)).toMatchObject({ error: "E_POLICY_DENIED", caller: `spiffe://${TD}/ns/default/app-a` });
  });

  it("carries gRPC (HTTP/2, trailers) and answers a denied method with PERMISSION_DENIED", async () => {
    const address = `127.0.0.1:${out()}`;
    const ok = await grpcSay(address, "say", "hi", { "dapr-app-id": "greeter" });
    expect(ok.code).toBe(0);
    expect(ok.response).toMatchObject({ echo: "hi", path: "/test.Echo/Say", xfcc: `By=spiffe://${TD}/ns/default/greeter;URI=spiffe://${TD}/ns/default/app-a` });
    expect(ok.response?.dapr).toEqual({ "dapr-caller-app-id": ["app-a"], "dapr-caller-namespace": ["default"], "dapr-callee-app-id": ["greeter"] });
    expect(ok.trailers["x-app-trailer"]).toBe("kept");
    const denied = await grpcSay(address, "secret", "hi", { "dapr-app-id": "greeter" });
    expect(denied.code).toBe(7);
    expect(denied.details).toContain("E_POLICY_DENIED");
    const text = await (await fetch(`http://127.0.0.1:${sideGrpc.addresses.status!.port}/metrics`)).text();
    expect(metricValue(text, "meshward_policy_denials_total", { caller: `spiffe://${TD}/ns/default/app-a` })).toBe(1);
  });

  it("answers gRPC UNAVAILABLE when the app behind the peer is down", async () => {
    const port = grpcApp.port;
    await grpcApp.close();
    const r = await grpcSay(`127.0.0.1:${out()}`, "say", "x", { "dapr-app-id": "greeter" });
    expect(r.code).toBe(14);
    void port;
    grpcApp = await startGrpcApp();
  });

  it("refuses a peer that presents another SPIFFE ID than the app id asked for (HTTP 502, gRPC UNAVAILABLE)", async () => {
    const before = httpApp.seen.length;
    const r = await httpGet(out(), "/v1/secret-data", { "dapr-app-id": "impostor", authorization: "Bearer do-not-leak" });
    expect(r.status).toBe(502);
    expect(JSON.parse(r.body)).toMatchObject({ error: "E_PEER_IDENTITY" });
    expect(JSON.parse(r.body).message).toContain(`spiffe://${TD}/ns/default/impostor`);
    const g = await grpcSay(`127.0.0.1:${out()}`, "say", "x", { "dapr-app-id": "impostor" });
    expect(g.code).toBe(14);
    expect(httpApp.seen.length).toBe(before);
    const text = await (await fetch(`http://127.0.0.1:${sideA.addresses.status!.port}/metrics`)).text();
    expect(metricValue(text, "meshward_tls_handshake_failures_total", { direction: "outbound", reason: "spiffe_mismatch" })).toBeGreaterThanOrEqual(2);
  });

  it("answers 404 with a clear message for an unknown app id, or when no app id is given", async () => {
    const unknown = await httpGet(out(), "/v1/x", { "dapr-app-id": "nobody" });
    expect(unknown.status).toBe(404);
    expect(JSON.parse(unknown.body).message).toContain("--peer nobody=HOST:PORT");
    const g = await grpcSay(`127.0.0.1:${out()}`, "say", "x", { "dapr-app-id": "nobody" });
    expect(g.code).toBe(5);
  });

  it("answers curl's CONNECT (an app misconfigured to use the sidecar as a forward proxy) with 405", async () => {
    const r = await exec("curl", ["-sS", "-p", "-x", `http://127.0.0.1:${out()}`, "-w", "%{http_connect}", "-o", "/dev/null", "http://app-b:80/"]);
    expect(r.stdout).toBe("405");
  });

  it("pools keep-alive connections to the peer and resumes TLS sessions for new ones", async () => {
    const { Agent } = await import("node:http");
    const agent = new Agent({ keepAlive: true, maxSockets: 4 });
    await Promise.all(Array.from({ length: 20 }, (_, i) => httpGet(out(), `/v1/pool/${i}`, { "dapr-app-id": "app-b" }, agent)));
    agent.destroy();
    const text = await (await fetch(`http://127.0.0.1:${sideB.addresses.status!.port}/metrics`)).text();
    // 20 requests through at most a handful of pooled mTLS connections.
    expect(metricValue(text, "meshward_tls_handshakes_total", { direction: "inbound", result: "ok" })).toBeLessThan(12);
  });
});

describe("TCP mode: local port per upstream app, bytes over mTLS", () => {
  let ca: MeshCa;
  let echo: { port: number; close(): Promise<void> };
  let sideB: TestSidecar;
  let sideA: TestSidecar;

  beforeAll(async () => {
    ca = await startMeshCa();
    echo = await startTcpEcho();
    const policy = join(ca.dir, "tcp-policy.yaml");
    writeFileSync(policy, `kind: Configuration\nspec:\n  accessControl:\n    defaultAction: deny\n    trustDomain: ${TD}\n    policies:\n      - appId: app-a\n        namespace: default\n        trustDomain: ${TD}\n        defaultAction: allow\n`);
    sideB = await startTestSidecar(ca, { appId: "echo", app: `127.0.0.1:${echo.port}`, protocol: "tcp", policy });
    sideA = await startTestSidecar(ca, { appId: "app-a", app: "127.0.0.1:1", peers: { echo: `127.0.0.1:${sideB.addresses.inbound.port}` }, tcpUpstreams: { echo: "127.0.0.1:0" } });
  });
  afterAll(async () => {
    await sideA?.close();
    await sideB?.close();
    await echo?.close();
    await ca?.close();
  });

  const roundTrip = (port: number, payload: Buffer) =>
    new Promise<{ data: Buffer; closed: boolean }>((resolve) => {
      const socket = netConnect(port, "127.0.0.1");
      const chunks: Buffer[] = [];
      socket.on("data", (d: Buffer) => {
        chunks.push(d);
        if (Buffer.concat(chunks).length >= payload.length) {
          socket.end();
          resolve({ data: Buffer.concat(chunks), closed: false });
        }
      });
      socket.on("error", () => undefined);
      socket.on("close", () => resolve({ data: Buffer.concat(chunks), closed: true }));
      socket.write(payload);
    });

  it("pipes bytes both ways (256 KiB round trip through two sidecars)", async () => {
    const payload = Buffer.alloc(256 * 1024);
    for (let i = 0; i < payload.length; i++) payload[i] = i % 251;
    const r = await roundTrip(sideA.addresses.tcp.echo!.port, payload);
    expect(r.data.equals(payload)).toBe(true);
  });

  it("wires egress entries (src/proxy/egress.ts) into the sidecar: plaintext in, mTLS with the workload SVID out", async () => {
    const side = await startTestSidecar(ca, {
      appId: "app-a",
      app: "127.0.0.1:1",
      egress: [{ listen: "127.0.0.1:0", backend: `127.0.0.1:${sideB.addresses.inbound.port}`, mtls: true, expectSpiffeId: `spiffe://${TD}/ns/default/echo` }],
    });
    try {
      expect(side.readyLine()).toMatch(/egress\.0=127\.0\.0\.1:\d+/);
      const r = await roundTrip(side.addresses.egress[0]!.port, Buffer.from("through egress"));
      expect(r.data.toString()).toBe("through egress");
    } finally {
      await side.close();
    }
  });

  it("ends a TCP tunnel at the inbound's maxConnectionAge (a tunnel is one request for its whole life: it was never retired)", async () => {
    const aged = await startTestSidecar(ca, { appId: "echo", app: `127.0.0.1:${echo.port}`, protocol: "tcp", limits: { maxConnectionAge: "1s" } });
    const caller = await startTestSidecar(ca, { appId: "app-a", app: "127.0.0.1:1", peers: { echo: `127.0.0.1:${aged.addresses.inbound.port}` }, tcpUpstreams: { echo: "127.0.0.1:0" } });
    const socket = netConnect(caller.addresses.tcp.echo!.port, "127.0.0.1");
    try {
      socket.on("error", () => undefined);
      const closed = new Promise<number>((resolve) => socket.once("close", () => resolve(Date.now())));
      const opened = Date.now();
      socket.write("one");
      expect(String(await new Promise((resolve) => socket.once("data", resolve)))).toBe("one");
      const at = await Promise.race([closed, new Promise<number>((resolve) => setTimeout(() => resolve(-1), 8_000))]);
      expect(at).toBeGreaterThan(0);
      expect(at - opened).toBeGreaterThanOrEqual(900);
    } finally {
      socket.destroy();
      await caller.close();
      await aged.close();
    }
  });

  it("closes a TCP connection from a caller the policy denies", async () => {
    const other = await startTestSidecar(ca, { appId: "stranger", app: "127.0.0.1:1", peers: { echo: `127.0.0.1:${sideB.addresses.inbound.port}` }, tcpUpstreams: { echo: "127.0.0.1:0" } });
    try {
      const r = await roundTrip(other.addresses.tcp.echo!.port, Buffer.from("PING\r\n"));
      expect(r.closed).toBe(true);
      expect(r.data.length).toBe(0);
      const text = await (await fetch(`http://127.0.0.1:${sideB.addresses.status!.port}/metrics`)).text();
      expect(metricValue(text, "meshward_policy_denials_total", { caller: `spiffe://${TD}/ns/default/stranger` })).toBe(1);
    } finally {
      await other.close();
    }
  });
});

describe("TCP mode with a real Redis behind the inbound sidecar", () => {
  let ca: MeshCa;
  let redis: ReturnType<typeof spawn> | undefined;
  let redisPort: number;
  let sideB: TestSidecar;
  let sideA: TestSidecar;

  beforeAll(async () => {
    ca = await startMeshCa();
    // redis-server cannot bind port 0 (0 disables TCP): take a free port and hand it over.
    redisPort = await new Promise<number>((resolve) => {
      const s = createNetServer().listen(0, "127.0.0.1", () => {
        const port = (s.address() as { port: number }).port;
        s.close(() => resolve(port));
      });
    });
    redis = spawn("redis-server", ["--port", String(redisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: ["ignore", "pipe", "ignore"] });
    await new Promise<void>((resolve, reject) => {
      let out = "";
      redis!.stdout!.on("data", (d) => {
        out += d;
        if (out.includes("Ready to accept connections")) resolve();
      });
      redis!.once("exit", (code) => reject(new Error(`redis-server exited ${code}: ${out}`)));
    });
    sideB = await startTestSidecar(ca, { appId: "cache", app: `127.0.0.1:${redisPort}`, protocol: "tcp" });
    sideA = await startTestSidecar(ca, { appId: "app-a", app: "127.0.0.1:1", peers: { cache: `127.0.0.1:${sideB.addresses.inbound.port}` }, tcpUpstreams: { cache: "127.0.0.1:0" } });
  });
  afterAll(async () => {
    await sideA?.close();
    await sideB?.close();
    redis?.kill("SIGKILL");
    await ca?.close();
  });

  it("answers redis-cli through outbound A → inbound B, and refuses redis-cli straight at the mTLS port", async () => {
    const port = String(sideA.addresses.tcp.cache!.port);
    const set = await exec("redis-cli", ["-h", "127.0.0.1", "-p", port, "SET", "mesh", "ok"]);
    expect(set.stdout.trim()).toBe("OK");
    const get = await exec("redis-cli", ["-h", "127.0.0.1", "-p", port, "GET", "mesh"]);
    expect(get.stdout.trim()).toBe("ok");
    const direct = await exec("redis-cli", ["-h", "127.0.0.1", "-p", String(sideB.addresses.inbound.port), "PING"], { timeoutMs: 10_000 });
    expect(direct.stdout).not.toContain("PONG");
  });
});
