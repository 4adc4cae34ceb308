import { createServer, type Server } from "node:http";
import type { ClientHttp2Session } from "node:http2";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { inboundH2Session, metricValue, outboundH2Session, startMeshCa, startTestSidecar, type MeshCa, type TestSidecarWithApp } from "./fixtures.ts";

// limits.maxHeaderBytes was enforced on HTTP/1.1 only (431); over HTTP/2 the sidecar merely
// advertised it (SETTINGS_MAX_HEADER_LIST_SIZE), and 20 KiB and 60 KiB header blocks reached the
// app past the default 16 KiB. Now an HTTP/2 block is counted as the HTTP/1 relay counts a head
// and refused before the policy and the app: 431 E_HEADER_TOO_LARGE, gRPC RESOURCE_EXHAUSTED.
// Sidecars run in-process on real sockets; limits.maxHeaderBytes is 4096 here. node:http2 applies
// its own limits (SETTINGS_MAX_HEADER_LIST_SIZE by RFC 7541's count, +32 bytes a field, and a
// number of fields) once the caller has acknowledged the sidecar's SETTINGS: they sit above
// maxHeaderBytes (h2HeaderLimits), so that a block over it gets 431 after the first exchange too.

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

  // Many small fields: node:http2 counts each 32 bytes more (RFC 7541) and, by default, refuses a
  // block of more than 128 fields. With its limits at maxHeaderBytes (as advertised before), a block
  // meshward would forward (440 fields, 4,021 bytes as counted) was reset by node:http2 before
  // meshward saw it (RST_STREAM ENHANCE_YOUR_CALM), and so was one just over it, where HTTP/1.1 gets
  // 431. The session's first exchange is small: node:http2 applies its limits once the caller has
  // acknowledged the sidecar's SETTINGS.
  const fields = (count: number): Record<string, string> => Object.fromEntries(Array.from({ length: count }, (_, i) => [`x${i.toString(36).padStart(3, "0")}`, "v"]));
  /** The response, or the stream's error code when it was reset (node:http2 refused the block). */
  const attempt = (session: ClientHttp2Session, headers: Record<string, string>, body?: string) =>
    exchange(session, headers, body).then(
      (answer) => answer.headers,
      (error: Error & { code?: string }) => ({ reset: error.code, message: error.message }),
    );
  const warm = async (session: ClientHttp2Session, headers: Record<string, string>) => {
    await attempt(session, headers);
    return session;
  };

  it("inbound: 440 small fields under maxHeaderBytes are forwarded, 460 just over it get 431, gRPC grpc-status 8; thousands are still refused by node:http2", async () => {
    const session = await warm(inbound(), { ":path": "/warm" });
    expect(await attempt(session, { ":path": "/many-under", ...fields(440) })).toEqual(expect.objectContaining({ ":status": 200 }));
    expect(reached).toContain("/many-under");
    const over = await attempt(session, { ":path": "/many-over", ...fields(460) });
    expect(over).toEqual(expect.objectContaining({ ":status": 431, "x-meshward-error": "E_HEADER_TOO_LARGE" }));
    // 1,000 fields (9,061 bytes as counted, 37,000 by RFC 7541): still meshward's answer.
    expect(await attempt(session, { ":path": "/many-1000", ...fields(1000) })).toEqual(expect.objectContaining({ ":status": 431 }));
    const grpc = await attempt(session, { ":method": "POST", ":path": "/pkg.Svc/Call", "content-type": "application/grpc", ...fields(460) }, "\0\0\0\0\0");
    expect(grpc).toEqual(expect.objectContaining({ ":status": 200, "grpc-status": "8", "x-meshward-error": "E_HEADER_TOO_LARGE" }));
    // Far past any sane size (3,000 fields): node:http2 refuses it itself, before buffering more.
    expect(await attempt(session, { ":path": "/many-far", ...fields(3000) })).toEqual(expect.objectContaining({ reset: "ERR_HTTP2_STREAM_ERROR" }));
    expect(reached).not.toContain("/many-over");
    expect(reached).not.toContain("/many-1000");
    expect(reached).not.toContain("/many-far");
  });

  it("outbound h2c: 440 small fields under maxHeaderBytes are routed, 460 just over it get 431; thousands are still refused by node:http2", async () => {
    const session = await warm(outbound(), { ":path": "/warm", "dapr-app-id": "callee" });
    // Routed: the unreachable peer answers 502.
    expect(await attempt(session, { ":path": "/many-under", "dapr-app-id": "callee", ...fields(440) })).toEqual(expect.objectContaining({ ":status": 502 }));
    expect(await attempt(session, { ":path": "/many-over", "dapr-app-id": "callee", ...fields(460) })).toEqual(expect.objectContaining({ ":status": 431, "x-meshward-error": "E_HEADER_TOO_LARGE" }));
    expect(await attempt(session, { ":path": "/many-far", "dapr-app-id": "callee", ...fields(3000) })).toEqual(expect.objectContaining({ reset: "ERR_HTTP2_STREAM_ERROR" }));
  });
});
