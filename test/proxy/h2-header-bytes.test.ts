import { createServer, type Server } from "node:http";
import type { ClientHttp2Session } from "node:http2";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { inboundH2Session, metricValue, outboundH2Session, startMeshCa, startTestSidecar, type MeshCa, type TestSidecarWithApp } from "./fixtures.ts";

// limits.maxHeaderBytes was enforced on HTTP/1.1 only (431); over HTTP/2 the sidecar merely
// advertised it (SETTINGS_MAX_HEADER_LIST_SIZE), and 20 KiB and 60 KiB header blocks reached the
// app past the default 16 KiB. Now an HTTP/2 block is counted as the HTTP/1 relay counts a head
// and refused before the policy and the app: 431 E_HEADER_TOO_LARGE, gRPC RESOURCE_EXHAUSTED.
// Sidecars run in-process on real sockets; limits.maxHeaderBytes is 4096 here. Each block over
// the limit is its connection's first request: node:http2 applies the advertised
// SETTINGS_MAX_HEADER_LIST_SIZE itself (RST_STREAM ENHANCE_YOUR_CALM, RFC 9113's count: +32 bytes
// a field) only once the caller has acknowledged the sidecar's SETTINGS, and never past that the
// reviewer's 20 KiB and 60 KiB blocks got through.

const MAX = 4096;

describe("HTTP/2: limits.maxHeaderBytes", () => {
  let ca: MeshCa;
  let app: Server;
  /** The paths of the requests that reached the app. */
  const reached: string[] = [];
  let callee: TestSidecarWithApp;
  let caller: TestSidecarWithApp;
  let client: { cert: string; key: string };
  const sessions: ClientHttp2Session[] = [];

  beforeAll(async () => {
    ca = await startMeshCa();
    app = createServer({ maxHeaderSize: 256 * 1024 }, (req, res) => {
      reached.push(req.url ?? "");
      req.resume();
      req.on("end", () => res.end(`ok ${req.url}`));
    });
    await new Promise<void>((resolve) => app.listen(0, "127.0.0.1", resolve));
    const appAddress = `127.0.0.1:${(app.address() as AddressInfo).port}`;
    callee = await startTestSidecar(ca, { appId: "callee", app: appAddress, limits: { maxHeaderBytes: MAX } });
    // The peer's address refuses connections: a request the outbound dialled would get 502.
    caller = await startTestSidecar(ca, { appId: "caller", app: "127.0.0.1:1", outbound: "127.0.0.1:0", peers: { callee: "127.0.0.1:1" }, limits: { maxHeaderBytes: MAX } });
    client = await ca.clientFiles("default", "web");
  }, 60_000);
  afterAll(async () => {
    for (const session of sessions) session.destroy();
    await caller?.close();
    await callee?.close();
    app?.closeAllConnections();
    await new Promise<void>((resolve) => (app ? app.close(() => resolve()) : resolve()));
    await ca?.close();
  });

  const inbound = () => inboundH2Session(callee.addresses.inbound.port, client, ca.bundlePem, sessions);
  const outbound = () => outboundH2Session(caller.addresses.outbound!.port, sessions);
  /** The response headers (and trailers) and body a request gets. */
  const exchange = (session: ClientHttp2Session, headers: Record<string, string>, body?: string) =>
    new Promise<{ headers: Record<string, unknown>; body: string }>((resolve, reject) => {
      const stream = session.request(headers);
      let got: Record<string, unknown> = {};
      let text = "";
      stream.on("response", (h) => (got = { ...h }));
      stream.on("trailers", (t) => (got = { ...got, ...t }));
      stream.on("data", (d: Buffer) => (text += d.toString()));
      stream.on("end", () => resolve({ headers: got, body: text }));
      stream.on("error", reject);
      stream.end(body);
    });
  const refused = async (sidecar: TestSidecarWithApp, direction: string) =>
    metricValue(await (await fetch(`http://127.0.0.1:${sidecar.addresses.status!.port}/metrics`)).text(), "meshward_sidecar_refused_total", { direction, reason: "header_too_large" });

  it("inbound: a header block over maxHeaderBytes gets 431 E_HEADER_TOO_LARGE and never reaches the app; one under it is forwarded", async () => {
    const before = await refused(callee, "inbound");
    const session = inbound();
    const big = await exchange(session, { ":path": "/big", "x-pad": "a".repeat(MAX + 100) });
    expect(big.headers[":status"]).toBe(431);
    expect(big.headers["x-meshward-error"]).toBe("E_HEADER_TOO_LARGE");
    const small = await exchange(session, { ":path": "/small", "x-pad": "a".repeat(MAX - 400) });
    expect(small).toEqual({ headers: expect.objectContaining({ ":status": 200 }), body: "ok /small" });
    expect(reached).toEqual(["/small"]);
    expect(await refused(callee, "inbound")).toBe(before + 1);
  });

  it("inbound gRPC: metadata over maxHeaderBytes gets grpc-status 8 (RESOURCE_EXHAUSTED)", async () => {
    const answer = await exchange(inbound(), { ":method": "POST", ":path": "/pkg.Svc/Call", "content-type": "application/grpc", "x-pad": "a".repeat(MAX + 100) }, "\0\0\0\0\0");
    expect(answer.headers[":status"]).toBe(200);
    expect(answer.headers["grpc-status"]).toBe("8");
    expect(answer.headers["x-meshward-error"]).toBe("E_HEADER_TOO_LARGE");
  });

  it("outbound h2c: a header block over maxHeaderBytes gets 431 without dialling the peer", async () => {
    const before = await refused(caller, "outbound");
    const answer = await exchange(outbound(), { ":path": "/big", "dapr-app-id": "callee", "x-pad": "a".repeat(MAX + 100) });
    expect(answer.headers[":status"]).toBe(431);
    expect(answer.headers["x-meshward-error"]).toBe("E_HEADER_TOO_LARGE");
    expect(await refused(caller, "outbound")).toBe(before + 1);
    // Under it, the request is routed (and the unreachable peer answers 502).
    expect((await exchange(outbound(), { ":path": "/small", "dapr-app-id": "callee" })).headers[":status"]).toBe(502);
  });
});
