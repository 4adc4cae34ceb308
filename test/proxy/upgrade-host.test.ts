import { readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { connect as tlsConnect } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startMeshCa, startTestSidecar, type MeshCa, type TestSidecarWithApp } from "./fixtures.ts";

// RFC 9110 §7.6.1 lets Connection name fields to drop; the HTTP/1 relay never drops the Host the
// request was judged with (RFC 9112 §3.2). The Upgrade path (WebSocket) did: with
// `Connection: Upgrade, host` the app got node:http's own `Host: localhost:80`, so an app that
// picks its virtual host from Host served another one than the request named.
describe("the Host of an upgrade request", () => {
  let ca: MeshCa;
  let app: Server;
  let inbound: TestSidecarWithApp;
  let tls: { cert: string; key: string; ca: string };
  const seen: string[] = [];

  beforeAll(async () => {
    ca = await startMeshCa();
    app = createServer((req, res) => {
      seen.push(`${req.method} ${req.url} host=${req.headers.host}`);
      res.end("ok");
    });
    app.on("upgrade", (req, socket) => {
      seen.push(`UPGRADE ${req.url} host=${req.headers.host}`);
      socket.end("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    });
    await new Promise<void>((resolve) => app.listen(0, "127.0.0.1", resolve));
    inbound = await startTestSidecar(ca, { appId: "inventory", namespace: "shop", app: `127.0.0.1:${(app.address() as AddressInfo).port}` });
    const files = await ca.clientFiles("shop", "orders");
    tls = { cert: readFileSync(files.cert, "utf8"), key: readFileSync(files.key, "utf8"), ca: ca.bundlePem };
  }, 60_000);
  afterAll(async () => {
    await inbound?.close();
    app?.closeAllConnections();
    await new Promise<void>((resolve) => (app ? app.close(() => resolve()) : resolve()));
    await ca?.close();
  });

  /** Raw bytes over mTLS to the inbound; everything until it closes. */
  const send = (bytes: string) =>
    new Promise<string>((resolve, reject) => {
      const socket = tlsConnect({ host: "127.0.0.1", port: inbound.addresses.inbound.port, ...tls, ALPNProtocols: ["http/1.1"], checkServerIdentity: () => undefined }, () => socket.write(bytes));
      let text = "";
      socket.on("data", (d: Buffer) => (text += d.toString("latin1")));
      socket.on("close", () => resolve(text));
      socket.on("error", reject);
      socket.setTimeout(10_000, () => socket.destroy());
    });

  it("reaches the app as sent when Connection names host, on a plain request and on an Upgrade", async () => {
    expect(await send("GET /plain HTTP/1.1\r\nHost: tenant-a.example\r\nConnection: close, host\r\n\r\n")).toMatch(/^HTTP\/1\.1 200 /);
    expect(await send("GET /ws HTTP/1.1\r\nHost: tenant-a.example\r\nConnection: Upgrade, host\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")).toMatch(/^HTTP\/1\.1 400 /);
    expect(seen).toEqual(["GET /plain host=tenant-a.example", "UPGRADE /ws host=tenant-a.example"]);
  });
});
