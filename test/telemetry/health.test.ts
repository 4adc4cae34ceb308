import { afterEach, describe, expect, it } from "vitest";
import { createHealth, createOpsServer, type OpsServer } from "../../src/telemetry/health.ts";
import { createMeshMetrics, createMetrics } from "../../src/telemetry/metrics.ts";

const servers: OpsServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.close()));
});

async function start(config: Parameters<typeof createOpsServer>[0]) {
  const server = createOpsServer(config);
  servers.push(server);
  return { server, address: await server.start() };
}

describe("createHealth", () => {
  it("separates liveness from readiness and reports each check's detail", async () => {
    const health = createHealth();
    health.register("event-loop", () => ({ ok: true }), ["liveness"]);
    health.register("svid", () => ({ ok: false, detail: "no SVID yet" }));
    health.register("ca", async () => ({ ok: true, detail: { latencyMs: 3 } }), ["readiness", "liveness"]);
    expect(await health.run("liveness")).toEqual({ ok: true, checks: { "event-loop": { ok: true }, ca: { ok: true, detail: { latencyMs: 3 } } } });
    expect(await health.run("readiness")).toEqual({
      ok: false,
      checks: { svid: { ok: false, detail: "no SVID yet" }, ca: { ok: true, detail: { latencyMs: 3 } } },
    });
  });

  it("a throwing check fails with the error's description; unregister removes it; names are unique", async () => {
    const health = createHealth();
    const remove = health.register("boom", () => {
      throw new Error("store unreachable");
    });
    expect(await health.run("readiness")).toEqual({ ok: false, checks: { boom: { ok: false, detail: "store unreachable" } } });
    expect(() => health.register("boom", () => ({ ok: true }))).toThrow(/already registered/);
    remove();
    expect(await health.run("readiness")).toEqual({ ok: true, checks: {} });
  });
});

describe("createOpsServer (real HTTP on 127.0.0.1:0)", () => {
  it("serves /metrics as Prometheus text from the given registry", async () => {
    const metrics = createMetrics();
    const mesh = createMeshMetrics(metrics);
    mesh.plaintextConnections.inc(2);
    const { address } = await start({ port: 0, metrics });
    expect(address.host).toBe("127.0.0.1");
    expect(address.port).toBeGreaterThan(0);
    const res = await fetch(`${address.url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toContain("text/plain");
    const body = await res.text();
    const line = body.split("\n").find((l) => l.startsWith("meshward_plaintext_connections_total "));
    expect(line).toBe("meshward_plaintext_connections_total 2");
    expect(body).toContain("# TYPE meshward_tls_handshakes_total counter");
  });

  it("/healthz and /readyz answer 200 or 503 with each check's detail", async () => {
    const health = createHealth();
    let ready = false;
    health.register("alive", () => ({ ok: true }), ["liveness"]);
    health.register("svid", () => ({ ok: ready, detail: ready ? "expires in 23h" : "waiting for the CA" }));
    const { address } = await start({ port: 0, health });

    const live = await fetch(`${address.url}/healthz`);
    expect(live.status).toBe(200);
    expect(await live.json()).toEqual({ status: "ok", checks: { alive: { ok: true } } });

    const notReady = await fetch(`${address.url}/readyz`);
    expect(notReady.status).toBe(503);
    expect(await notReady.json()).toEqual({ status: "failing", checks: { svid: { ok: false, detail: "waiting for the CA" } } });

    ready = true;
    const nowReady = await fetch(`${address.url}/readyz`);
    expect(nowReady.status).toBe(200);
    expect(await nowReady.json()).toEqual({ status: "ok", checks: { svid: { ok: true, detail: "expires in 23h" } } });
  });

  it("routes extra paths, 404s unknown ones, 405s writes to built-ins, 500s a failing handler", async () => {
    const { address } = await start({
      port: 0,
      extraRoutes: {
        "/status.json": (_req, res) => {
          res.writeHead(200, { "content-type": "application/json" }).end('{"identities":[]}');
        },
        "/broken": () => {
          throw new Error("handler bug");
        },
      },
    });
    const extra = await fetch(`${address.url}/status.json?x=1`);
    expect(extra.status).toBe(200);
    expect(await extra.json()).toEqual({ identities: [] });
    expect((await fetch(`${address.url}/nope`)).status).toBe(404);
    expect((await fetch(`${address.url}/healthz`, { method: "POST" })).status).toBe(405);
    const broken = await fetch(`${address.url}/broken`);
    expect(broken.status).toBe(500);
    expect(await broken.text()).toContain("handler bug");
    // Without metrics configured, /metrics does not exist.
    expect((await fetch(`${address.url}/metrics`)).status).toBe(404);
  });

  it("close() stops listening even with an idle keep-alive connection open", async () => {
    const { server, address } = await start({ port: 0 });
    const res = await fetch(`${address.url}/healthz`, { headers: { connection: "keep-alive" } });
    await res.text();
    await server.close();
    expect(server.server.listening).toBe(false);
    await expect(fetch(`${address.url}/healthz`)).rejects.toThrow();
  });

  it("reports a port already in use as E_LISTEN_FAILED", async () => {
    const { address } = await start({ port: 0 });
    const second = createOpsServer({ port: address.port });
    servers.push(second);
    await expect(second.start()).rejects.toMatchObject({ code: "E_LISTEN_FAILED" });
  });
});
