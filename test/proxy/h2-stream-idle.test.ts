import { createServer, type IncomingMessage, type Server } from "node:http";
import { connect as http2Connect, constants as h2, createServer as createH2cServer, type ClientHttp2Session, type ClientHttp2Stream, type Http2Server, type ServerHttp2Stream } from "node:http2";
import { readFileSync } from "node:fs";
import type { AddressInfo, Socket } from "node:net";
import { connect as tlsConnect } from "node:tls";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { waitFor } from "../helpers/wait.ts";
import { metricValue, startMeshCa, startTestSidecar, type MeshCa, type TestSidecarWithApp } from "./fixtures.ts";

// Found by review: an HTTP/2 stream forwarded to the app had no idle timer of its own, only its
// session's (a GOAWAY, after which open streams may run for ever). A stream the app never answered,
// or whose caller stopped sending its body or reading the response, held its connection (or HTTP/2
// stream) to the app until the caller left. HTTP/1 exchanges already ended after limits.idleTimeout
// without a byte either way; HTTP/2 streams now do too, on the inbound (the mTLS hop) and on the
// outbound (h2c from the app): 408 E_BODY_TIMEOUT while the body is due, 504 E_UPSTREAM_TIMEOUT
// when the whole request is upstream and no response came, RST_STREAM (CANCEL) once the response
// has started; and the upstream connection or stream is let go. A stream whose body keeps moving
// is not cut. Outcomes are asserted within generous bounds (idleTimeout is 1 s, bounds 15 s).
const BOUND_MS = 15_000;

/** What a stream got: its status, headers and body, and the RST_STREAM code it closed with. */
interface Outcome {
  readonly status: number;
  readonly headers: Record<string, unknown>;
  readonly trailers: Record<string, unknown>;
  readonly body: string;
  readonly rstCode: number;
}

/** The outcome once the stream closes, or "still open" after BOUND_MS (the stream is then closed). */
function outcomeOf(stream: ClientHttp2Stream, read = true): Promise<Outcome | "still open"> {
  return new Promise((resolve) => {
    let status = 0;
    let headers: Record<string, unknown> = {};
    let trailers: Record<string, unknown> = {};
    let body = "";
    stream.on("error", () => undefined);
    stream.on("response", (h) => {
      status = Number(h[":status"]);
      headers = { ...h };
    });
    stream.on("trailers", (t) => (trailers = { ...t }));
    if (read) stream.on("data", (d: Buffer) => (body += d.toString()));
    const timer = setTimeout(() => {
      resolve("still open");
      stream.close(h2.NGHTTP2_CANCEL);
    }, BOUND_MS);
    stream.once("close", () => {
      clearTimeout(timer);
      resolve({ status, headers, trailers, body, rstCode: stream.rstCode ?? -1 });
    });
  });
}

/** A plain HTTP/1.1 app that records the socket each request came on, by path. */
async function startRecordingApp(): Promise<{ server: Server; port: number; socketOf: Map<string, Socket>; close(): Promise<void> }> {
  const socketOf = new Map<string, Socket>();
  const chunk = Buffer.alloc(1 << 20, 97);
  const server = createServer((req: IncomingMessage, res) => {
    const path = req.url ?? "/";
    socketOf.set(path, req.socket);
    let received = 0;
    req.on("data", (d: Buffer) => (received += d.length));
    if (path.startsWith("/big")) {
      // 64 MiB, written as the connection takes it.
      res.writeHead(200, { "content-length": 64 * chunk.length });
      let sent = 0;
      const pump = () => {
        while (sent < 64 && !res.destroyed) {
          sent++;
          if (!res.write(chunk)) return void res.once("drain", pump);
        }
        res.end();
      };
      pump();
      return;
    }
    // /early… is answered before its body has come; /never… and /upload… are never answered;
    // anything else gets the body size once it ended.
    if (path.startsWith("/early")) return void res.writeHead(413).end("too large");
    if (path.startsWith("/never") || path.startsWith("/upload")) return;
    // /stall… starts a response of unknown length and sends nothing more.
    if (path.startsWith("/stall")) return void res.writeHead(200, { "content-type": "text/plain" }).write("partial");
    req.on("end", () => res.end(`got ${received}`));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    server,
    port: (server.address() as AddressInfo).port,
    socketOf,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

describe("HTTP/2 streams with no byte either way for limits.idleTimeout end", () => {
  let ca: MeshCa;
  let app: Awaited<ReturnType<typeof startRecordingApp>>;
  let grpcApp: Http2Server;
  /** The gRPC app's streams, by path. */
  const grpcStreams = new Map<string, ServerHttp2Stream>();
  let callee: TestSidecarWithApp;
  let grpcCallee: TestSidecarWithApp;
  let far: TestSidecarWithApp;
  let caller: TestSidecarWithApp;
  let client: { cert: string; key: string };
  const sessions: ClientHttp2Session[] = [];

  beforeAll(async () => {
    ca = await startMeshCa();
    app = await startRecordingApp();
    grpcApp = createH2cServer();
    grpcApp.on("stream", (stream, headers) => {
      stream.on("error", () => undefined);
      const path = String(headers[":path"]);
      grpcStreams.set(path, stream);
      stream.resume(); // reads the request; answers /pkg.Svc/Silent with one message and then nothing, others never
      if (path === "/pkg.Svc/Silent") {
        stream.respond({ ":status": 200, "content-type": "application/grpc" });
        stream.write(Buffer.from([0, 0, 0, 0, 0]));
      }
      // Answers in full before the request has ended, then asks the client to stop sending
      // (RST_STREAM NO_ERROR, RFC 9113 §8.1), as grpc-go does after its trailers.
      if (path === "/pkg.Svc/AnswerEarly") {
        stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
        stream.on("wantTrailers", () => {
          stream.sendTrailers({ "grpc-status": "0" });
          setImmediate(() => stream.close(h2.NGHTTP2_NO_ERROR));
        });
        stream.end(Buffer.from([0, 0, 0, 0, 0]));
      }
    });
    await new Promise<void>((resolve) => grpcApp.listen(0, "127.0.0.1", resolve));
    const appAt = `127.0.0.1:${app.port}`;
    callee = await startTestSidecar(ca, { appId: "slow", app: appAt, limits: { idleTimeout: "1s" } });
    grpcCallee = await startTestSidecar(ca, { appId: "grpc-slow", app: `127.0.0.1:${(grpcApp.address() as AddressInfo).port}`, limits: { idleTimeout: "1s" } });
    // The far peer waits 30 s: within the test only the caller's outbound can time a stream out.
    far = await startTestSidecar(ca, { appId: "far", app: appAt, limits: { idleTimeout: "30s" } });
    caller = await startTestSidecar(ca, { appId: "caller", app: "127.0.0.1:1", outbound: "127.0.0.1:0", peers: { far: `127.0.0.1:${far.addresses.inbound.port}` }, limits: { idleTimeout: "1s" } });
    client = await ca.clientFiles("default", "web");
  }, 60_000);
  afterEach(() => {
    for (const session of sessions.splice(0)) session.destroy();
  });
  afterAll(async () => {
    await caller?.close();
    await far?.close();
    await grpcCallee?.close();
    await callee?.close();
    await app?.close();
    for (const stream of grpcStreams.values()) stream.destroy();
    await new Promise<void>((resolve) => (grpcApp ? grpcApp.close(() => resolve()) : resolve()));
    await ca?.close();
  });

  /** An mTLS HTTP/2 session to a sidecar's inbound, as the workload "web". */
  const inbound = (sidecar: TestSidecarWithApp): ClientHttp2Session => {
    const port = sidecar.addresses.inbound.port;
    const session = http2Connect(`https://127.0.0.1:${port}`, {
      createConnection: () => tlsConnect({ host: "127.0.0.1", port, ALPNProtocols: ["h2"], ca: ca.bundlePem, cert: readFileSync(client.cert), key: readFileSync(client.key), checkServerIdentity: () => undefined }),
    });
    session.on("error", () => undefined);
    sessions.push(session);
    return session;
  };
  /** A plaintext HTTP/2 session to the caller's outbound, as its app. */
  const outbound = (): ClientHttp2Session => {
    const session = http2Connect(`http://127.0.0.1:${caller.addresses.outbound!.port}`);
    session.on("error", () => undefined);
    sessions.push(session);
    return session;
  };
  const metrics = async (sidecar: TestSidecarWithApp) => (await fetch(`http://127.0.0.1:${sidecar.addresses.status!.port}/metrics`)).text();
  const appSocketCloses = (path: string) => waitFor(`the app connection of ${path} to close`, () => app.socketOf.get(path)?.destroyed === true, BOUND_MS);

  it("inbound (mTLS): a request the app never answers gets 504 E_UPSTREAM_TIMEOUT, counted, and its app connection closes", async () => {
    const before = metricValue(await metrics(callee), "meshward_sidecar_upstream_errors_total", { direction: "inbound", reason: "app_timeout" });
    const outcome = await outcomeOf(inbound(callee).request({ ":path": "/never-inbound" }));
    expect(outcome).not.toBe("still open");
    const got = outcome as Outcome;
    expect(got.status).toBe(504);
    expect(got.headers["x-meshward-error"]).toBe("E_UPSTREAM_TIMEOUT");
    expect(JSON.parse(got.body)).toMatchObject({ error: "E_UPSTREAM_TIMEOUT" });
    await appSocketCloses("/never-inbound");
    expect(metricValue(await metrics(callee), "meshward_sidecar_upstream_errors_total", { direction: "inbound", reason: "app_timeout" })).toBe(before + 1);
  }, 30_000);

  it("inbound (mTLS): a body that stops coming gets 408 E_BODY_TIMEOUT, counted, and its app connection closes", async () => {
    const before = metricValue(await metrics(callee), "meshward_sidecar_refused_total", { direction: "inbound", reason: "body_timeout" });
    const stream = inbound(callee).request({ ":path": "/upload-inbound", ":method": "POST", "content-length": "100" });
    stream.write("x");
    const outcome = await outcomeOf(stream);
    expect(outcome).not.toBe("still open");
    const got = outcome as Outcome;
    expect(got.status).toBe(408);
    expect(got.headers["x-meshward-error"]).toBe("E_BODY_TIMEOUT");
    await appSocketCloses("/upload-inbound");
    expect(metricValue(await metrics(callee), "meshward_sidecar_refused_total", { direction: "inbound", reason: "body_timeout" })).toBe(before + 1);
  }, 30_000);

  it("inbound (mTLS): a response the caller stops reading is reset (CANCEL), and its app connection closes", async () => {
    const stream = inbound(callee).request({ ":path": "/big-inbound" });
    stream.pause(); // reads nothing: the stream's flow-control window fills
    const outcome = await outcomeOf(stream, false);
    expect(outcome).not.toBe("still open");
    const got = outcome as Outcome;
    expect(got.status).toBe(200);
    expect(got.rstCode).toBe(h2.NGHTTP2_CANCEL);
    await appSocketCloses("/big-inbound");
  }, 30_000);

  it("inbound (mTLS): a response the app stops sending is reset (CANCEL), not ended as if it were whole, and its app connection closes", async () => {
    const outcome = await outcomeOf(inbound(callee).request({ ":path": "/stall-inbound" }));
    expect(outcome).not.toBe("still open");
    const got = outcome as Outcome;
    expect(got.status).toBe(200);
    expect(got.body).toBe("partial");
    expect(got.rstCode).toBe(h2.NGHTTP2_CANCEL);
    await appSocketCloses("/stall-inbound");
  }, 30_000);

  it("inbound (mTLS): after an early answer (413), a body that stops coming ends the stream and the app connection closes", async () => {
    const stream = inbound(callee).request({ ":path": "/early-inbound", ":method": "POST", "content-length": "100" });
    stream.write("x");
    const outcome = await outcomeOf(stream);
    expect(outcome).not.toBe("still open");
    const got = outcome as Outcome;
    expect(got.status).toBe(413);
    expect(got.body).toBe("too large");
    await appSocketCloses("/early-inbound");
  }, 30_000);

  it("inbound (mTLS): a body that keeps coming, however long in all, is not cut", async () => {
    const stream = inbound(callee).request({ ":path": "/drip-inbound", ":method": "POST" });
    const outcome = outcomeOf(stream);
    // A byte every 100 ms: 2.5 s in all, well past idleTimeout, never idle for a tenth of it.
    for (let i = 0; i < 25; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      stream.write("x");
    }
    stream.end();
    const got = (await outcome) as Outcome;
    expect(got.status).toBe(200);
    expect(got.body).toBe("got 25");
  }, 30_000);

  it("inbound (mTLS) gRPC: a call the app never answers gets E_UPSTREAM_TIMEOUT (UNAVAILABLE) and its stream to the app is reset", async () => {
    const path = "/pkg.Svc/Never";
    const stream = inbound(grpcCallee).request({ ":path": path, ":method": "POST", "content-type": "application/grpc", te: "trailers" });
    stream.end(Buffer.from([0, 0, 0, 0, 0]));
    const outcome = await outcomeOf(stream);
    expect(outcome).not.toBe("still open");
    const got = outcome as Outcome;
    expect(got.status).toBe(200);
    // A trailers-only answer: grpc-status arrives with the headers.
    expect(got.headers["grpc-status"]).toBe("14");
    expect(got.headers["x-meshward-error"]).toBe("E_UPSTREAM_TIMEOUT");
    await waitFor("the app's stream to close", () => grpcStreams.get(path)?.closed === true, BOUND_MS);
    expect(grpcStreams.get(path)!.rstCode).toBe(h2.NGHTTP2_CANCEL);
  }, 30_000);

  it("inbound (mTLS) gRPC: a call whose response stops after its first message is reset (CANCEL), and so is its stream to the app", async () => {
    const path = "/pkg.Svc/Silent";
    const stream = inbound(grpcCallee).request({ ":path": path, ":method": "POST", "content-type": "application/grpc", te: "trailers" });
    stream.end(Buffer.from([0, 0, 0, 0, 0]));
    const outcome = await outcomeOf(stream);
    expect(outcome).not.toBe("still open");
    const got = outcome as Outcome;
    expect(got.status).toBe(200);
    expect(got.body.length).toBe(5);
    expect(got.rstCode).toBe(h2.NGHTTP2_CANCEL);
    await waitFor("the app's stream to close", () => grpcStreams.get(path)?.closed === true, BOUND_MS);
    expect(grpcStreams.get(path)!.rstCode).toBe(h2.NGHTTP2_CANCEL);
  }, 30_000);

  it("inbound (mTLS) gRPC: a call whose request stream stops gets E_BODY_TIMEOUT and its stream to the app is reset", async () => {
    const path = "/pkg.Svc/Stalled";
    const stream = inbound(grpcCallee).request({ ":path": path, ":method": "POST", "content-type": "application/grpc", te: "trailers" });
    stream.write(Buffer.from([0, 0, 0, 0, 0]));
    const outcome = await outcomeOf(stream);
    expect(outcome).not.toBe("still open");
    const got = outcome as Outcome;
    expect(got.headers["x-meshward-error"]).toBe("E_BODY_TIMEOUT");
    expect(got.headers["grpc-status"]).toBe("13");
    await waitFor("the app's stream to close", () => grpcStreams.get(path)?.closed === true, BOUND_MS);
  }, 30_000);

  // Found in stop 40/41: the upstream's RST_STREAM NO_ERROR after a complete early answer was not
  // passed on, so the caller's upload stayed open (the answer's idle timer had stopped) until the
  // caller ended it. It is now passed on once the caller has the whole answer.
  it("inbound (mTLS): an upstream that answers in full and resets NO_ERROR while the caller still sends: the caller gets the answer, then NO_ERROR", async () => {
    const path = "/pkg.Svc/AnswerEarly";
    const stream = inbound(grpcCallee).request({ ":path": path, ":method": "POST", "content-type": "application/grpc", te: "trailers" });
    stream.write(Buffer.from([0, 0, 0, 0, 1, 120])); // one message; the request stays open
    const outcome = await outcomeOf(stream);
    expect(outcome).not.toBe("still open");
    const got = outcome as Outcome;
    expect(got.status).toBe(200);
    expect(got.trailers["grpc-status"]).toBe("0");
    expect(got.rstCode).toBe(h2.NGHTTP2_NO_ERROR);
  }, 30_000);

  it("outbound (h2c from the app): a request the peer never answers gets 504 E_UPSTREAM_TIMEOUT, counted, and the peer lets go of its app connection", async () => {
    const before = metricValue(await metrics(caller), "meshward_sidecar_upstream_errors_total", { direction: "outbound", reason: "peer_timeout" });
    const outcome = await outcomeOf(outbound().request({ ":path": "/never-outbound", "dapr-app-id": "far" }));
    expect(outcome).not.toBe("still open");
    const got = outcome as Outcome;
    expect(got.status).toBe(504);
    expect(got.headers["x-meshward-error"]).toBe("E_UPSTREAM_TIMEOUT");
    // The far sidecar (idleTimeout 30 s) saw its caller's stream reset and closed its app connection.
    await appSocketCloses("/never-outbound");
    expect(metricValue(await metrics(caller), "meshward_sidecar_upstream_errors_total", { direction: "outbound", reason: "peer_timeout" })).toBe(before + 1);
  }, 30_000);

  it("outbound (h2c from the app): a body that keeps coming, however long in all, is not cut", async () => {
    const stream = outbound().request({ ":path": "/drip-outbound", ":method": "POST", "dapr-app-id": "far" });
    const outcome = outcomeOf(stream);
    for (let i = 0; i < 25; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      stream.write("x");
    }
    stream.end();
    const got = (await outcome) as Outcome;
    expect(got.status).toBe(200);
    expect(got.body).toBe("got 25");
  }, 30_000);
});
