import { createServer, type Server } from "node:http";
import { connect as http2Connect, createServer as createH2cServer, type ClientHttp2Session, type ClientHttp2Stream, type Http2Server, type ServerHttp2Session } from "node:http2";
import { readFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { connect as tlsConnect } from "node:tls";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { metricValue, startMeshCa, startTestSidecar, type MeshCa, type TestSidecarWithApp } from "./fixtures.ts";

// limits.idleTimeout closes an idle HTTP/1.1 connection; an idle HTTP/2 connection stayed open
// until the age cap (1 h), holding a listener slot. Now it gets GOAWAY after idleTimeout without
// a frame either way, and ends once its open streams have. The outbound lets its own session to a
// peer go after half of its idleTimeout, before the peer's idleTimeout closes it (a stream
// started as the peer's GOAWAY is on its way would be refused). A stream silent that long ends by
// its own idle rule (h2-stream-idle.test.ts), not by the session's GOAWAY.
const IDLE = "2s";

describe("HTTP/2 sessions idle for limits.idleTimeout", () => {
  let ca: MeshCa;
  let app: Server;
  let callee: TestSidecarWithApp;
  let peer: TestSidecarWithApp;
  let caller: TestSidecarWithApp;
  let client: { cert: string; key: string };
  const sessions: ClientHttp2Session[] = [];

  beforeAll(async () => {
    ca = await startMeshCa();
    app = createServer((req, res) => {
      req.on("end", () => res.end(`ok ${req.url}`));
      req.resume();
    });
    await new Promise<void>((resolve) => app.listen(0, "127.0.0.1", resolve));
    const appAddress = `127.0.0.1:${(app.address() as AddressInfo).port}`;
    callee = await startTestSidecar(ca, { appId: "callee", app: appAddress, limits: { idleTimeout: IDLE } });
    // The peer keeps idle connections 30 s: only the caller can close its session within the test.
    peer = await startTestSidecar(ca, { appId: "peer", app: appAddress, limits: { idleTimeout: "30s" } });
    caller = await startTestSidecar(ca, { appId: "caller", app: "127.0.0.1:1", outbound: "127.0.0.1:0", peers: { peer: `127.0.0.1:${peer.addresses.inbound.port}` }, limits: { idleTimeout: IDLE } });
    client = await ca.clientFiles("default", "web");
  }, 60_000);
  afterEach(() => {
    for (const session of sessions.splice(0)) session.destroy();
  });
  afterAll(async () => {
    await caller?.close();
    await peer?.close();
    await callee?.close();
    app?.closeAllConnections();
    await new Promise<void>((resolve) => (app ? app.close(() => resolve()) : resolve()));
    await ca?.close();
  });

  /** A session that records the GOAWAY it gets and when it closes. */
  function watched(session: ClientHttp2Session): { goaway: Promise<number>; closed: Promise<void> } {
    sessions.push(session);
    session.on("error", () => undefined);
    return {
      goaway: new Promise((resolve) => session.once("goaway", (code: number) => resolve(code))),
      closed: new Promise((resolve) => session.once("close", () => resolve())),
    };
  }
  const inboundSession = () => {
    const port = callee.addresses.inbound.port;
    return http2Connect(`https://127.0.0.1:${port}`, {
      createConnection: () => tlsConnect({ host: "127.0.0.1", port, ALPNProtocols: ["h2"], ca: ca.bundlePem, cert: readFileSync(client.cert), key: readFileSync(client.key), checkServerIdentity: () => undefined }),
    });
  };
  /** The status and body a request stream gets. */
  const answerOf = (stream: ClientHttp2Stream) =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      let body = "";
      let status = 0;
      stream.on("response", (h) => (status = Number(h[":status"])));
      stream.on("data", (d: Buffer) => (body += d.toString()));
      stream.on("end", () => resolve({ status, body }));
      stream.on("error", reject);
    });
  const get = (session: ClientHttp2Session, path: string, headers: Record<string, string> = {}) => answerOf(session.request({ ":path": path, ...headers }));
  /** Resolves "open" if `what` has not settled after `ms`: bounded, so a session never closed fails the test. */
  const within = <T>(what: Promise<T>, ms: number) => Promise.race([what, new Promise<"open">((resolve) => setTimeout(() => resolve("open"), ms))]);

  it("the inbound sends GOAWAY (NO_ERROR) to an idle mTLS HTTP/2 session and closes it", async () => {
    const session = inboundSession();
    const { goaway, closed } = watched(session);
    expect(await get(session, "/one")).toEqual({ status: 200, body: "ok /one" });
    expect(await within(goaway, 15_000)).toBe(0);
    expect(await within(closed, 15_000)).toBeUndefined();
  });

  it("a stream still open when the session goes idle is not cut by the GOAWAY: it gets its own answer (408, its body stopped), then the session closes", async () => {
    const session = inboundSession();
    const { goaway, closed } = watched(session);
    const stream = session.request({ ":path": "/slow", ":method": "POST" });
    stream.write("first part");
    const answer = answerOf(stream);
    // Nothing more is sent: the session goes idle (GOAWAY) and so does the stream (408), in either order.
    expect(await within(goaway, 15_000)).toBe(0);
    expect(await answer).toMatchObject({ status: 408 });
    expect(await within(closed, 15_000)).toBeUndefined();
  });

  it("the outbound closes an idle plaintext HTTP/2 session from its app, and lets its own idle session to the peer go first", async () => {
    const session = http2Connect(`http://127.0.0.1:${caller.addresses.outbound!.port}`);
    const { goaway, closed } = watched(session);
    expect(await get(session, "/via-peer", { "dapr-app-id": "peer" })).toEqual({ status: 200, body: "ok /via-peer" });
    const peerMetrics = async () => (await fetch(`http://127.0.0.1:${peer.addresses.status!.port}/metrics`)).text();
    expect(metricValue(await peerMetrics(), "meshward_connections_active", { direction: "inbound" })).toBe(1);
    expect(await within(goaway, 15_000)).toBe(0);
    expect(await within(closed, 15_000)).toBeUndefined();
    // The peer keeps idle connections 30 s; the caller let its session go after 1 s (half of its 2 s).
    const peerConnections = async () => metricValue(await peerMetrics(), "meshward_connections_active", { direction: "inbound" });
    const deadline = Date.now() + 15_000;
    while ((await peerConnections()) !== 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
    expect(await peerConnections()).toBe(0);
  });
});

// The inbound's own HTTP/2 session to a gRPC app is let go after the app pool's 4 s without a
// frame, as its idle HTTP/1 connections are: an app that closes idle connections itself
// (grpc-go's and grpc-js's max-connection-idle) would otherwise refuse a stream the sidecar
// started as the app's GOAWAY was on its way. node:http2's server stands in for the gRPC app: what
// is checked is the session the sidecar keeps to it, the same for any HTTP/2 server.
describe("the inbound's HTTP/2 session to a gRPC app", () => {
  let ca: MeshCa;
  let app: Http2Server;
  let callee: TestSidecarWithApp;
  let client: { cert: string; key: string };
  const appSessions: { goaway: Promise<number>; closed: Promise<void> }[] = [];
  let session: ClientHttp2Session | undefined;

  beforeAll(async () => {
    ca = await startMeshCa();
    app = createH2cServer();
    app.on("session", (s: ServerHttp2Session) => {
      s.on("error", () => undefined);
      appSessions.push({
        goaway: new Promise((resolve) => s.once("goaway", (code: number) => resolve(code))),
        closed: new Promise((resolve) => s.once("close", () => resolve())),
      });
    });
    app.on("stream", (stream, headers) => {
      stream.on("error", () => undefined);
      stream.resume();
      stream.on("end", () => {
        stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
        stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0", "x-path": String(headers[":path"]) }));
        stream.end();
      });
    });
    await new Promise<void>((resolve) => app.listen(0, "127.0.0.1", resolve));
    // The caller's side stays open (30 s): only the session to the app can close in the test.
    callee = await startTestSidecar(ca, { appId: "grpc-callee", app: `127.0.0.1:${(app.address() as AddressInfo).port}`, limits: { idleTimeout: "30s" } });
    client = await ca.clientFiles("default", "web");
  }, 60_000);
  afterAll(async () => {
    session?.destroy();
    await callee?.close();
    await new Promise<void>((resolve) => (app ? app.close(() => resolve()) : resolve()));
    await ca?.close();
  });

  /** A gRPC-shaped call through the inbound: its grpc-status and the path the app saw. */
  const call = (path: string) =>
    new Promise<{ grpcStatus: string; path: string }>((resolve, reject) => {
      const stream = session!.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers" });
      stream.on("trailers", (t) => resolve({ grpcStatus: String(t["grpc-status"]), path: String(t["x-path"]) }));
      stream.on("error", reject);
      stream.resume();
      stream.end(Buffer.from([0, 0, 0, 0, 0]));
    });
  const within = <T>(what: Promise<T>, ms: number) => Promise.race([what, new Promise<"open">((resolve) => setTimeout(() => resolve("open"), ms))]);

  it("sends GOAWAY (NO_ERROR) to the app after 4 s idle, and the next call opens a new session", async () => {
    const port = callee.addresses.inbound.port;
    session = http2Connect(`https://127.0.0.1:${port}`, {
      createConnection: () => tlsConnect({ host: "127.0.0.1", port, ALPNProtocols: ["h2"], ca: ca.bundlePem, cert: readFileSync(client.cert), key: readFileSync(client.key), checkServerIdentity: () => undefined }),
    });
    session.on("error", () => undefined);
    expect(await call("/pkg.Svc/One")).toEqual({ grpcStatus: "0", path: "/pkg.Svc/One" });
    expect(appSessions).toHaveLength(1);
    expect(await within(appSessions[0]!.goaway, 15_000)).toBe(0);
    expect(await within(appSessions[0]!.closed, 15_000)).toBeUndefined();
    expect(await call("/pkg.Svc/Two")).toEqual({ grpcStatus: "0", path: "/pkg.Svc/Two" });
    expect(appSessions).toHaveLength(2);
  }, 40_000);
});
