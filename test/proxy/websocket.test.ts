/**
 * WebSocket through the sidecar pair: Chromium (a real WebSocket client) → outbound sidecar A
 * → mTLS → inbound sidecar B → an app speaking RFC 6455 (test/helpers/ws-app.ts). The policy
 * decides on the upgrade request; the app sees the caller's SPIFFE ID in x-forwarded-client-cert. Refusals: a denied path (403), a peer with the
 * wrong SPIFFE ID (502), an h2c upgrade with a body (501); an h2c upgrade without one is
 * answered as the plain request it also is.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { request, type IncomingMessage } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, type BrowserContext } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Sidecar } from "../../src/proxy/sidecar.ts";
import { clientTextFrame, openWebSocket, startWsApp, WS_HEADERS, type WsApp } from "../helpers/ws-app.ts";
import { metricValue, startMeshCa, startTestSidecar, TD, type MeshCa, type SidecarWithApp } from "./fixtures.ts";

/** A raw upgrade request: resolves with the status the proxy answered and the body when it did not upgrade. */
function upgradeRequest(port: number, path: string, headers: Record<string, string>): Promise<{ status: number; body: string; headers: IncomingMessage["headers"] }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path, headers });
    req.on("upgrade", (res, socket) => {
      socket.destroy();
      resolve({ status: res.statusCode ?? 0, body: "", headers: res.headers });
    });
    req.on("response", (res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
    });
    req.on("error", reject);
    req.end();
  });
}


describe("WebSocket through the sidecar pair", () => {
  let ca: MeshCa;
  let app: WsApp;
  let chat: SidecarWithApp;
  let impostor: SidecarWithApp;
  let client: Sidecar;
  let context: BrowserContext;
  let userDataDir: string;

  beforeAll(async () => {
    ca = await startMeshCa();
    app = await startWsApp();
    const policy = join(ca.dir, "ws-policy.yaml");
    writeFileSync(
      policy,
      `kind: Configuration\nspec:\n  accessControl:\n    defaultAction: deny\n    trustDomain: ${TD}\n    policies:\n      - appId: web\n        namespace: default\n        trustDomain: ${TD}\n        defaultAction: deny\n        operations:\n          - name: /ws/**\n            httpVerb: ["GET"]\n            action: allow\n          - name: /plain\n            httpVerb: ["GET"]\n            action: allow\n`,
    );
    // Short header and idle timeouts: an open WebSocket must outlive both.
    const limits = { headersTimeout: "500ms", idleTimeout: "500ms" };
    chat = await startTestSidecar(ca, { appId: "chat", app: `127.0.0.1:${app.port}`, policy, limits });
    impostor = await startTestSidecar(ca, { appId: "impostor", app: `127.0.0.1:${app.port}` });
    const inboundOf = (s: SidecarWithApp) => `127.0.0.1:${s.addresses.inbound.port}`;
    // "lookalike" is served by the impostor's sidecar: A must refuse it.
    client = await startTestSidecar(ca, { appId: "web", app: "127.0.0.1:1", outbound: "127.0.0.1:0", peers: { chat: inboundOf(chat), lookalike: inboundOf(impostor) }, limits });
    userDataDir = mkdtempSync(join(tmpdir(), "meshward-chromium-ws-"));
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: "/usr/bin/chromium",
      headless: true,
      // ws://chat:<port>/ reaches the outbound sidecar with Host: chat, which routes it.
      args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--host-resolver-rules=MAP chat 127.0.0.1"],
    });
  }, 60_000);

  afterAll(async () => {
    await context?.close().catch(() => undefined);
    for (const s of [client, chat, impostor]) await s?.close();
    await app?.close();
    await ca?.close();
    if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
  });

  const outbound = () => client.addresses.outbound!.port;

  it("carries a browser's WebSocket both ways, with the caller's SPIFFE ID at the app", async () => {
    const page = await context.newPage();
    const replies = await page.evaluate(async (url: string) => {
      const ws = new WebSocket(url);
      const received: string[] = [];
      await new Promise<void>((resolve, reject) => {
        ws.onopen = () => {
          ws.send("hello");
          ws.send("x".repeat(300));
        };
        ws.onmessage = (event) => {
          received.push(String(event.data));
          if (received.length === 2) resolve();
        };
        ws.onerror = () => reject(new Error("websocket error"));
      });
      ws.close();
      return received;
    }, `ws://chat:${outbound()}/ws/room-1`);
    await page.close();
    const caller = `spiffe://${TD}/ns/default/web`;
    expect(replies).toEqual([`${caller} says: hello`, `${caller} says: ${"x".repeat(300)}`]);
    expect(app.upgrades.at(-1)).toEqual({ url: "/ws/room-1", xfcc: `By=spiffe://${TD}/ns/default/chat;URI=${caller}`, dapr: ["web", "default", "chat"] });
    // The browser's close reaches the app through both sidecars.
    await expect.poll(() => app.closed, { timeout: 5000 }).toBeGreaterThanOrEqual(1);
  });

  it("keeps a quiet WebSocket open past the sidecars' header and idle timeouts", async () => {
    const socket = await openWebSocket(outbound(), "/ws/quiet", WS_HEADERS("chat"));
    try {
      await new Promise((r) => setTimeout(r, 1500));
      socket.write(clientTextFrame("still there?"));
      const reply = await new Promise<Buffer>((resolve, reject) => {
        socket.once("data", resolve);
        socket.once("close", () => reject(new Error("the WebSocket was closed")));
      });
      expect(reply.subarray(2).toString()).toBe(`spiffe://${TD}/ns/default/web says: still there?`);
    } finally {
      socket.destroy();
    }
  });

  it("refuses an upgrade the policy denies, before it reaches the app, and counts it", async () => {
    const before = app.upgrades.length;
    const denied = await upgradeRequest(outbound(), "/admin/socket", WS_HEADERS("chat"));
    expect(denied.status).toBe(403);
    expect(JSON.parse(denied.body)).toMatchObject({ error: "E_POLICY_DENIED", caller: `spiffe://${TD}/ns/default/web` });
    expect(app.upgrades.length).toBe(before);
    expect(metricValue(await chat.metrics.text(), "meshward_policy_denials_total", { caller: `spiffe://${TD}/ns/default/web` })).toBeGreaterThanOrEqual(1);

    const page = await context.newPage();
    const outcome = await page.evaluate(async (url: string) => {
      const ws = new WebSocket(url);
      return await new Promise<string>((resolve) => {
        ws.onopen = () => resolve("open");
        ws.onclose = (event) => resolve(`closed ${event.code}`);
      });
    }, `ws://chat:${outbound()}/admin/socket`);
    await page.close();
    expect(outcome).toBe("closed 1006");
    expect(app.upgrades.length).toBe(before);
  });

  it("refuses to upgrade towards a sidecar that is not the app asked for", async () => {
    const before = app.upgrades.length;
    const refused = await upgradeRequest(outbound(), "/ws/room-1", WS_HEADERS("lookalike"));
    expect(refused.status).toBe(502);
    expect(JSON.parse(refused.body).error).toBe("E_PEER_IDENTITY");
    expect(app.upgrades.length).toBe(before);
  });

  it("answers an h2c upgrade as the plain request it also is, and refuses one with a body", async () => {
    const plain = await upgradeRequest(outbound(), "/plain", { connection: "Upgrade, HTTP2-Settings", upgrade: "h2c", "http2-settings": "AAMAAABkAARAAAAAAAIAAAAA", "dapr-app-id": "chat" });
    expect(plain.status).toBe(200);
    expect(plain.body).toBe("plain answer");
    expect(app.plain.at(-1)).toEqual({ url: "/plain", upgrade: undefined });

    const withBody = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request({ host: "127.0.0.1", port: outbound(), path: "/plain", method: "POST", headers: { connection: "Upgrade", upgrade: "h2c", "content-length": "5", "dapr-app-id": "chat" } }, (res) => {
        let body = "";
        res.on("data", (d) => (body += d));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on("error", reject);
      req.end("hello");
    });
    // An upgrade's body would be read by nobody here and by the app as its next request.
    expect(withBody.status).toBe(400);
    expect(JSON.parse(withBody.body).error).toBe("E_AMBIGUOUS_REQUEST");
    const before = app.upgrades.length;
    const websocketWithBody = await upgradeRequest(outbound(), "/ws/room-1", { ...WS_HEADERS("chat"), "content-length": "5" });
    expect(websocketWithBody.status).toBe(400);
    expect(app.upgrades.length).toBe(before);
  });
});
