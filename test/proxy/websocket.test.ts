/**
 * WebSocket through the sidecar pair: Chromium (a real WebSocket client) → outbound sidecar A
 * → mTLS → inbound sidecar B → an app speaking RFC 6455 (the minimal server below: Node has no
 * WebSocket server built in). The policy decides on the upgrade request; the app sees the
 * caller's SPIFFE ID in x-forwarded-client-cert. Refusals: a denied path (403), a peer with the
 * wrong SPIFFE ID (502), an h2c upgrade with a body (501); an h2c upgrade without one is
 * answered as the plain request it also is.
 */
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, request, type IncomingMessage, type Server } from "node:http";
import type { Duplex } from "node:stream";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, type BrowserContext } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Sidecar } from "../../src/proxy/sidecar.ts";
import { metricValue, startMeshCa, startTestSidecar, TD, type MeshCa, type SidecarWithApp } from "./fixtures.ts";

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/** Text frames only, payloads under 64 KiB: what this test sends. */
function decodeFrames(buffer: Buffer): { frames: { opcode: number; payload: Buffer }[]; rest: Buffer } {
  const frames: { opcode: number; payload: Buffer }[] = [];
  let offset = 0;
  while (buffer.length - offset >= 6) {
    const opcode = buffer[offset]! & 0x0f;
    let length = buffer[offset + 1]! & 0x7f;
    let at = offset + 2;
    if (length === 126) {
      length = buffer.readUInt16BE(at);
      at += 2;
    }
    if (buffer.length < at + 4 + length) break;
    const mask = buffer.subarray(at, at + 4);
    const payload = Buffer.from(buffer.subarray(at + 4, at + 4 + length).map((byte, i) => byte ^ mask[i % 4]!));
    frames.push({ opcode, payload });
    offset = at + 4 + length;
  }
  return { frames, rest: buffer.subarray(offset) };
}

function textFrame(text: string): Buffer {
  const payload = Buffer.from(text);
  const header = payload.length < 126 ? Buffer.from([0x81, payload.length]) : Buffer.from([0x81, 126, payload.length >> 8, payload.length & 0xff]);
  return Buffer.concat([header, payload]);
}

interface WsApp {
  readonly port: number;
  readonly upgrades: { url: string; xfcc: string | undefined; dapr: (string | string[] | undefined)[] }[];
  readonly plain: { url: string; upgrade: string | undefined }[];
  closed: number;
  close(): Promise<void>;
}

/** Echoes each text message back as "<xfcc URI> says: <text>". */
async function startWsApp(): Promise<WsApp> {
  const app: WsApp = {
    port: 0,
    upgrades: [],
    plain: [],
    closed: 0,
    close: async () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
  const sockets = new Set<Duplex>();
  const server: Server = createServer((req, res) => {
    app.plain.push({ url: req.url ?? "", upgrade: req.headers.upgrade });
    res.end("plain answer");
  });
  server.on("upgrade", (req: IncomingMessage, socket: Duplex) => {
    sockets.add(socket);
    const xfcc = req.headers["x-forwarded-client-cert"] as string | undefined;
    // Dapr's caller attribution as the app read it (node:http joins repeated fields with ", ").
    const dapr = ["dapr-caller-app-id", "dapr-caller-namespace", "dapr-callee-app-id"].map((name) => req.headers[name]);
    app.upgrades.push({ url: req.url ?? "", xfcc, dapr });
    const accept = createHash("sha1").update(`${req.headers["sec-websocket-key"]}${GUID}`).digest("base64");
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
    const caller = /URI=([^;,]+)/.exec(xfcc ?? "")?.[1] ?? "nobody";
    let pending: Buffer = Buffer.alloc(0);
    socket.on("data", (chunk: Buffer) => {
      const { frames, rest } = decodeFrames(Buffer.concat([pending, chunk]));
      pending = rest;
      for (const frame of frames) {
        if (frame.opcode === 0x1) socket.write(textFrame(`${caller} says: ${frame.payload.toString()}`));
        if (frame.opcode === 0x8) socket.end(Buffer.from([0x88, 0x00]));
      }
    });
    socket.on("error", () => undefined);
    socket.once("close", () => {
      app.closed += 1;
      sockets.delete(socket);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const close = app.close;
  app.close = async () => {
    for (const socket of sockets) socket.destroy();
    await close();
  };
  return Object.assign(app, { port: (server.address() as { port: number }).port });
}

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

const WS_HEADERS = (appId: string) => ({ connection: "Upgrade", upgrade: "websocket", "sec-websocket-version": "13", "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==", "dapr-app-id": appId });

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
    const socket = await new Promise<Duplex>((resolve, reject) => {
      const req = request({ host: "127.0.0.1", port: outbound(), path: "/ws/quiet", headers: WS_HEADERS("chat") });
      req.on("upgrade", (_res, upgraded) => resolve(upgraded));
      req.on("response", (res) => reject(new Error(`not upgraded: ${res.statusCode}`)));
      req.on("error", reject);
      req.end();
    });
    try {
      await new Promise((r) => setTimeout(r, 1500));
      const payload = Buffer.from("still there?");
      const mask = Buffer.from([1, 2, 3, 4]);
      socket.write(Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, Buffer.from(payload.map((byte, i) => byte ^ mask[i % 4]!))]));
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
