import { request as httpRequest } from "node:http";
import { connect as h2Connect } from "node:http2";
import type { ClientHttp2Session } from "node:http2";
import { createServer, type AddressInfo, type Server, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitFor } from "../helpers/wait.ts";
import { startMeshCa, startTestSidecar, type MeshCa, type TestSidecarWithApp } from "./fixtures.ts";

// Found by review: waiting for a connection to the app had no deadline. With maxConnections 8, one
// h2c connection with 8 unanswered streams held every app connection, and an HTTP/1 GET then got
// no answer at all. A request now waits at most limits.idleTimeout for a connection, then gets
// 503 E_APP_BUSY in the sidecar's JSON shape. The app is a raw TCP server: it answers GET /fast
// and never answers anything else. The streams that hold the app connections keep sending their
// bodies (a byte every 100 ms): an HTTP/2 stream with no byte either way ends after idleTimeout
// too (h2-stream-idle.test.ts), and its connection would be freed.
describe("inbound: a request waiting for a connection to the app gets 503 after idleTimeout", () => {
  const CAP = 3;
  let ca: MeshCa;
  let app: Server;
  let callee: TestSidecarWithApp;
  const appSockets = new Set<Socket>();

  beforeAll(async () => {
    app = createServer((socket) => {
      appSockets.add(socket);
      socket.once("close", () => appSockets.delete(socket));
      socket.on("error", () => undefined);
      socket.on("data", (chunk: Buffer) => {
        if (chunk.toString("latin1").startsWith("GET /fast ")) socket.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
      });
    });
    await new Promise<void>((resolve) => app.listen(0, "127.0.0.1", resolve));
    ca = await startMeshCa();
    callee = await startTestSidecar(ca, {
      appId: "busy",
      app: `127.0.0.1:${(app.address() as AddressInfo).port}`,
      mode: "permissive",
      limits: { maxConnections: CAP, idleTimeout: "1s" },
    });
  }, 60_000);
  afterAll(async () => {
    await callee?.close();
    for (const socket of appSockets) socket.destroy();
    await new Promise<void>((resolve) => (app ? app.close(() => resolve()) : resolve()));
    await ca?.close();
  });

  const get = (path: string) =>
    new Promise<{ status: number; error: string | undefined; body: string } | "no answer">((resolve, reject) => {
      const req = httpRequest({ host: "127.0.0.1", port: callee.addresses.inbound.port, path, agent: false, timeout: 15_000 }, (res) => {
        let body = "";
        res.on("data", (d: Buffer) => (body += d.toString()));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, error: res.headers["x-meshward-error"] as string | undefined, body }));
      });
      req.on("timeout", () => {
        req.destroy();
        resolve("no answer");
      });
      req.on("error", reject);
      req.end();
    });

  it("answers 503 E_APP_BUSY while unanswered HTTP/2 streams hold every app connection, and serves again once they are gone", async () => {
    let session: ClientHttp2Session | undefined;
    let drip: NodeJS.Timeout | undefined;
    try {
      session = h2Connect(`http://127.0.0.1:${callee.addresses.inbound.port}`);
      session.on("error", () => undefined);
      const streams = Array.from({ length: CAP }, () => session!.request({ ":path": "/slow", ":method": "POST" }).on("error", () => undefined));
      drip = setInterval(() => {
        for (const stream of streams) if (!stream.closed) stream.write("x");
      }, 100);
      await waitFor("the streams to take every app connection", () => appSockets.size === CAP);

      const answer = await get("/fast");
      expect(answer).not.toBe("no answer");
      const { status, error, body } = answer as { status: number; error: string | undefined; body: string };
      expect(status).toBe(503);
      expect(error).toBe("E_APP_BUSY");
      expect(JSON.parse(body)).toMatchObject({ error: "E_APP_BUSY" });
    } finally {
      clearInterval(drip);
      session?.destroy();
    }
    // The streams' app connections are let go with them: the next request is served.
    await waitFor("the app connections of the streams to close", () => appSockets.size === 0);
    expect(await get("/fast")).toMatchObject({ status: 200, body: "ok" });
  }, 60_000);
});
