import { mkdtempSync, rmSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { connect as h2Connect } from "node:http2";
import { connect as netConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, type BrowserContext } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { allowedHostProblem } from "../../src/config/fields.ts";
import { checkOutboundHost, compileOutboundHosts } from "../../src/proxy/outbound-host.ts";
import { startHttpApp, type HttpApp } from "../helpers/app-servers.ts";
import { runCli } from "../helpers/cli.ts";
import { metricValue, startMeshCa, startTestSidecar, type MeshCa, type TestSidecarWithApp } from "./fixtures.ts";

/**
 * The outbound port is plain HTTP on loopback and speaks for the workload. A web page in a browser
 * on the same host can rebind its own DNS name to 127.0.0.1 and then send same-origin requests to
 * that port, a custom dapr-app-id header included (no CORS preflight within one origin); only the
 * Host header still gives the page away. The sidecar answers 421 E_OUTBOUND_HOST unless Host is
 * loopback, an IP literal, the routed app id or a name in outboundAllowedHosts.
 *
 * Real Chromium (Debian's /usr/bin/chromium, playwright-core) maps rebind.meshward.test to
 * 127.0.0.1 with --host-resolver-rules: what a rebound DNS answer gives the page.
 */
const REBOUND = "rebind.meshward.test";
/** A namespaced app id is a registrable name too (.default, .shop are public suffixes' look-alikes or real ones). */
const NAMESPACED = "inventory.default";
const CHROMIUM_ARGS = [`--host-resolver-rules=MAP ${REBOUND} 127.0.0.1, MAP ${NAMESPACED} 127.0.0.1`, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function get(port: number, path: string, headers: Record<string, string>): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: "127.0.0.1", port, path, headers, agent: false, timeout: 10_000 }, (res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on("timeout", () => req.destroy(new Error("timed out")));
    req.on("error", reject);
    req.end();
  });
}

function h2Get(port: number, headers: Record<string, string>): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const session = h2Connect(`http://127.0.0.1:${port}`);
    session.on("error", reject);
    const stream = session.request({ ":method": "GET", ":path": "/items/7", ...headers });
    if (headers[":method"] === "POST") stream.write(Buffer.from([0, 0, 0, 0, 0]));
    let status = 0;
    let responseHeaders: Reply["headers"] = {};
    let body = "";
    stream.on("response", (h) => {
      status = Number(h[":status"]);
      responseHeaders = h as Reply["headers"];
    });
    stream.on("trailers", (t) => Object.assign(responseHeaders, t));
    stream.on("data", (d: Buffer) => (body += d.toString()));
    stream.on("error", (e) => {
      session.destroy();
      reject(e);
    });
    stream.on("end", () => {
      session.close();
      resolve({ status, headers: responseHeaders, body });
    });
    stream.end();
  });
}

/** Raw bytes to the port; everything until the sidecar closes. */
function raw(port: number, bytes: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host: "127.0.0.1", port }, () => socket.write(bytes));
    let text = "";
    socket.setTimeout(10_000, () => socket.destroy(new Error("timed out")));
    socket.on("data", (d: Buffer) => (text += d.toString("latin1")));
    socket.on("close", () => resolve(text));
    socket.on("error", reject);
  });
}

describe("outbound Host allow list (pure)", () => {
  const rule = compileOutboundHosts(["gw.example", "*.corp.example"]);
  it("accepts no Host, IP literals, loopback names, the routed app id and allowed names", () => {
    for (const host of [undefined, "", "127.0.0.1:3500", "127.9.9.9", "[::1]:3500", "10.1.2.3:80", "[fe80::1]", "localhost:3500", "LOCALHOST", "app.localhost", "inventory", "Inventory:3500", "gw.example", "gw.example.:8080", "a.corp.example", "b.a.corp.example"]) {
      expect(checkOutboundHost(host, "inventory", rule), String(host)).toEqual({ ok: true });
    }
  });
  it("refuses any other name, a suffix's bare domain, a look-alike, and a malformed Host", () => {
    for (const host of ["rebind.meshward.test", "evil.example:3500", "corp.example", "xcorp.example", "gw.example.evil", "inventory.evil", "localhost.evil", "a b", "x:99999"]) {
      const decision = checkOutboundHost(host, "inventory", rule);
      expect(decision.ok, host).toBe(false);
    }
  });
  it("accepts the routed app id as Host only when it is one label: a namespaced id (orders.shop) is a name anyone may register", () => {
    for (const host of ["orders.shop", "orders.shop:3500", "ORDERS.SHOP", "orders.shop."]) expect(checkOutboundHost(host, "orders.shop", compileOutboundHosts([])), host).toEqual({ ok: false, host: host.toLowerCase().replace(/(:\d+|\.)$/, "") });
    expect(checkOutboundHost("127.0.0.1:3500", "orders.shop", compileOutboundHosts([]))).toEqual({ ok: true });
    expect(checkOutboundHost("orders.shop", "orders.shop", compileOutboundHosts(["orders.shop"]))).toEqual({ ok: true });
  });
  it("remembers an accepted (Host, app id) pair only for that app id", () => {
    const cached = compileOutboundHosts([]);
    expect(checkOutboundHost("inventory", "inventory", cached)).toEqual({ ok: true });
    expect(checkOutboundHost("inventory", "inventory", cached)).toEqual({ ok: true });
    // Host: inventory is the routed app only when the request goes to inventory.
    expect(checkOutboundHost("inventory", "billing", cached)).toEqual({ ok: false, host: "inventory" });
    expect(checkOutboundHost("rebind.meshward.test", "inventory", cached).ok).toBe(false);
    expect(checkOutboundHost("inventory", "inventory", cached)).toEqual({ ok: true });
  });
  it("* turns the check off", () => {
    expect(checkOutboundHost("rebind.meshward.test", "inventory", compileOutboundHosts(["*"]))).toEqual({ ok: true });
  });
  it("validates the configured entries", () => {
    for (const ok of ["*", "gw.example", "*.corp.example", "GW.Example", "gw.example.", "my_gw"]) expect(allowedHostProblem(ok), ok).toBeUndefined();
    for (const bad of ["", "http://gw.example", "gw.example:8080", "gw.*.example", "*gw.example", "[::1]", "gw example", "-gw.example", "a..b"]) expect(allowedHostProblem(bad), bad).toBeDefined();
  });
});

describe("outbound port against DNS rebinding (real sidecars, real Chromium)", () => {
  let ca: MeshCa;
  let app: HttpApp;
  let inventory: TestSidecarWithApp;
  let caller: TestSidecarWithApp;
  let open: TestSidecarWithApp;
  let context: BrowserContext | undefined;
  let userDataDir: string | undefined;

  const port = () => caller.addresses.outbound!.port;
  const refusedCount = async () => {
    const text = await (await fetch(`http://127.0.0.1:${caller.addresses.status!.port}/metrics`)).text();
    return metricValue(text, "meshward_sidecar_refused_total", { direction: "outbound", reason: "host_not_allowed" });
  };
  const appSaw = (path: string) => app.seen.filter((r) => r.url === path).length;

  beforeAll(async () => {
    ca = await startMeshCa();
    app = await startHttpApp();
    inventory = await startTestSidecar(ca, { appId: "inventory", app: `127.0.0.1:${app.port}` });
    const peers = { inventory: `127.0.0.1:${inventory.addresses.inbound.port}`, [NAMESPACED]: `127.0.0.1:${inventory.addresses.inbound.port}` };
    caller = await startTestSidecar(ca, { appId: "web", app: "127.0.0.1:1", outbound: "127.0.0.1:0", peers, outboundAllowedHosts: ["gw.example", "*.corp.example"] });
    open = await startTestSidecar(ca, { appId: "legacy", app: "127.0.0.1:1", outbound: "127.0.0.1:0", peers, outboundAllowedHosts: ["*"] });
  }, 60_000);
  afterAll(async () => {
    await context?.close().catch(() => undefined);
    if (userDataDir !== undefined) rmSync(userDataDir, { recursive: true, force: true });
    await open?.close();
    await caller?.close();
    await inventory?.close();
    await app?.close();
    await ca?.close();
  });

  it("HTTP/1: a foreign Host with dapr-app-id gets 421 E_OUTBOUND_HOST, counted and logged, and never reaches the app", async () => {
    const before = await refusedCount();
    const r = await get(port(), "/items/rebound", { host: `${REBOUND}:${port()}`, "dapr-app-id": "inventory" });
    expect(r.status).toBe(421);
    expect(r.headers["x-meshward-error"]).toBe("E_OUTBOUND_HOST");
    expect(JSON.parse(r.body).message).toContain("outboundAllowedHosts");
    expect(appSaw("/items/rebound")).toBe(0);
    expect(await refusedCount()).toBe(before + 1);
    expect(caller.logs.find((l) => l.event === "outbound-host-refused" && l.host === REBOUND)).toBeDefined();
  });

  it("HTTP/1: loopback, IP literal, the app id itself and allowed names reach the app", async () => {
    for (const host of [`127.0.0.1:${port()}`, `localhost:${port()}`, "[::1]", "inventory", "gw.example", "api.corp.example:443"]) {
      const path = `/items/ok-${host.replace(/[^a-z0-9]/gi, "_")}`;
      const r = await get(port(), path, { host, "dapr-app-id": "inventory" });
      expect(r.status, host).toBe(200);
      expect(appSaw(path), host).toBe(1);
    }
    // Host routing: the Host is the app id, no dapr-app-id needed.
    const routed = await get(port(), "/items/by-host", { host: "inventory" });
    expect(routed.status).toBe(200);
    expect(appSaw("/items/by-host")).toBe(1);
  });

  it("HTTP/1: a namespaced app id is not accepted as its own Host (a registrable name); by dapr-app-id with a loopback Host it is served", async () => {
    for (const headers of [{ host: NAMESPACED }, { host: `${NAMESPACED}:${port()}`, "dapr-app-id": NAMESPACED }] as Record<string, string>[]) {
      const r = await get(port(), "/items/namespaced-host", headers);
      expect(r.status, JSON.stringify(headers)).toBe(421);
      expect(r.headers["x-meshward-error"]).toBe("E_OUTBOUND_HOST");
    }
    expect(appSaw("/items/namespaced-host")).toBe(0);
    const r = await get(port(), "/items/namespaced-by-id", { host: `127.0.0.1:${port()}`, "dapr-app-id": NAMESPACED });
    expect(r.status).toBe(200);
    expect(appSaw("/items/namespaced-by-id")).toBe(1);
  });

  it("absolute-form: the authority is what is checked", async () => {
    const text = await raw(port(), `GET http://${REBOUND}/items/absolute HTTP/1.1\r\nHost: ${REBOUND}\r\ndapr-app-id: inventory\r\nConnection: close\r\n\r\n`);
    expect(text).toMatch(/^HTTP\/1\.1 421 /);
    expect(appSaw("/items/absolute")).toBe(0);
  });

  it("HTTP/2 (h2c) and gRPC: a foreign :authority is refused; a loopback one is served", async () => {
    const refused = await h2Get(port(), { ":authority": `${REBOUND}:${port()}`, "dapr-app-id": "inventory" });
    expect(refused.status).toBe(421);
    expect(refused.headers["x-meshward-error"]).toBe("E_OUTBOUND_HOST");
    const grpc = await h2Get(port(), { ":method": "POST", ":authority": REBOUND, "dapr-app-id": "inventory", "content-type": "application/grpc", te: "trailers" });
    expect(grpc.status).toBe(200);
    expect(grpc.headers["grpc-status"]).toBe("7");
    expect(grpc.headers["x-meshward-error"]).toBe("E_OUTBOUND_HOST");
    const served = await h2Get(port(), { ":authority": `127.0.0.1:${port()}`, "dapr-app-id": "inventory" });
    expect(served.status).toBe(200);
    expect(appSaw("/items/7")).toBe(1);
  });

  it("an Upgrade request with a foreign Host is refused before any connection to the peer", async () => {
    const text = await raw(port(), `GET /items/ws HTTP/1.1\r\nHost: ${REBOUND}\r\ndapr-app-id: inventory\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`);
    expect(text).toMatch(/^HTTP\/1\.1 421 /);
    expect(text).toContain("E_OUTBOUND_HOST");
    expect(appSaw("/items/ws")).toBe(0);
  });

  it("Chromium: a page on a rebound name cannot call a peer through the outbound; with outboundAllowedHosts * it can", async () => {
    userDataDir = mkdtempSync(join(tmpdir(), "meshward-chromium-"));
    context = await chromium.launchPersistentContext(userDataDir, { executablePath: "/usr/bin/chromium", headless: true, args: CHROMIUM_ARGS });
    const page = await context.newPage();
    const attack = (outboundPort: number, path: string) =>
      page.evaluate(
        async ([target]) => {
          const res = await fetch(target!, { headers: { "dapr-app-id": "inventory" } });
          return { status: res.status, error: res.headers.get("x-meshward-error") };
        },
        [path],
      ).then((r) => ({ ...r, port: outboundPort }));

    // The page's origin is the rebound name on the outbound port: same-origin fetches carry any header.
    await page.goto(`http://${REBOUND}:${port()}/`);
    expect(await attack(port(), "/items/from-browser")).toMatchObject({ status: 421, error: "E_OUTBOUND_HOST" });
    expect(appSaw("/items/from-browser")).toBe(0);

    // A page whose own name is a namespaced app id: Host routing would send its same-origin fetch
    // to that app with this workload's identity, without any custom header.
    await page.goto(`http://${NAMESPACED}:${port()}/`);
    const routed = await page.evaluate(async () => {
      const res = await fetch("/items/from-namespaced-origin");
      return { status: res.status, error: res.headers.get("x-meshward-error") };
    });
    expect(routed).toMatchObject({ status: 421, error: "E_OUTBOUND_HOST" });
    expect(appSaw("/items/from-namespaced-origin")).toBe(0);

    // The same page against a sidecar whose guard is off: the call goes through as "legacy".
    await page.goto(`http://${REBOUND}:${open.addresses.outbound!.port}/`);
    expect(await attack(open.addresses.outbound!.port, "/items/from-browser-open")).toMatchObject({ status: 200 });
    expect(appSaw("/items/from-browser-open")).toBe(1);
    const seen = app.seen.find((r) => r.url === "/items/from-browser-open")!;
    expect(String(seen.headers["x-forwarded-client-cert"])).toContain("/legacy");
  }, 60_000);

  it("the CLI refuses a bad --outbound-allowed-host with E_CONFIG_INVALID naming the flag, before asking the CA", async () => {
    const r = await runCli(["sidecar", "--app-id", "web", "--ca", ca.server.address, "--bundle", ca.bundleFile, "--token-file", "/nonexistent", "--outbound", "127.0.0.1:0", "--outbound-allowed-host", "http://gw.example:8080"]);
    expect(r.code).toBe(2); // a flag's value: a usage error
    expect(r.stderr).toContain("E_CONFIG_INVALID");
    expect(r.stderr).toContain("--outbound-allowed-host");
    expect(r.stderr).toContain("no scheme, port, path or brackets");
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });
});
