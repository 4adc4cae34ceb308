import { connect as h2connect, constants as h2constants, createServer as createH2Server } from "node:http2";
import type { ClientHttp2Session, Http2Server, IncomingHttpHeaders, ServerHttp2Stream } from "node:http2";
import { connect as netConnect, createServer as createNetServer } from "node:net";
import type { AddressInfo, Server as NetServer, Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { canonicalH2Request, isRefusal } from "../../src/proxy/canonical.ts";
import { forwardH2ToHttp1 } from "../../src/proxy/http1/h2-bridge.ts";
import { Http1Pool } from "../../src/proxy/http1/pool.ts";

/**
 * The inbound's HTTP/2-caller-to-HTTP/1.1-app bridge on its own, when pooled connections to the
 * app turn out closed as a request is written on them. A real HTTP/2 client (node:http2) and a
 * raw socket app, because the app must drop connections at exact moments; the relay's side of
 * the same rule is in http1-relay.test.ts.
 */

const running: (() => void)[] = [];
afterEach(() => {
  for (const stop of running.splice(0).reverse()) stop();
});

async function listen(server: NetServer | Http2Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return (server.address() as AddressInfo).port;
}

/**
 * An app that answers the first request of each connection (the first two only once both have
 * arrived, so that two connections are opened) and drops a connection when a second request
 * arrives on it: two idle connections the app closed together.
 */
async function startClosingApp(): Promise<{ port: number; connections: number; /** Request lines as they arrived. */ requests: string[] }> {
  const state = { port: 0, connections: 0, requests: [] as string[] };
  const sockets = new Set<Socket>();
  const held: Socket[] = [];
  const answer = (socket: Socket) => socket.write("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
  const server = createNetServer((socket) => {
    state.connections++;
    sockets.add(socket);
    socket.on("error", () => undefined);
    let received = "";
    socket.on("data", (chunk: Buffer) => {
      received += chunk.toString("latin1");
      const messages = received.split("\r\n\r\n");
      const heads = messages.length - 1;
      const latest = messages[heads - 1]!;
      state.requests.push(latest.slice(0, latest.indexOf(" HTTP/1.1")));
      if (heads !== 1) return void socket.destroy();
      if (state.connections > 2) return answer(socket);
      held.push(socket);
      if (held.length === 2) held.splice(0).forEach(answer);
    });
  });
  state.port = await listen(server);
  running.push(() => {
    for (const socket of sockets) socket.destroy();
    server.close();
  });
  return state;
}

async function startBridge(appPort: number): Promise<{ port: number; pool: Http1Pool; statuses: number[] }> {
  const pool = new Http1Pool({ dial: () => netConnect({ host: "127.0.0.1", port: appPort }), authority: `127.0.0.1:${appPort}`, maxHeaderBytes: 16 * 1024, idleMs: 4000, maxIdle: 8 });
  const statuses: number[] = [];
  const server = createH2Server();
  server.on("stream", (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number) => {
    stream.on("error", () => undefined);
    const request = canonicalH2Request(headers, "reject");
    if (isRefusal(request)) throw new Error(`the test sent a refused request: ${request.refused}`);
    forwardH2ToHttp1(stream, request, (flags & h2constants.NGHTTP2_FLAG_END_STREAM) !== 0, pool, {
      addHeaders: "",
      onUpstreamError: (error) => ({ status: 503, grpcStatus: 14, code: "E_UPSTREAM_UNREACHABLE", message: error.message }),
      done: (status) => statuses.push(status),
      idle: { ms: 30_000, bodyTimedOut: () => undefined },
    });
  });
  const port = await listen(server);
  running.push(() => {
    pool.close();
    server.close();
  });
  return { port, pool, statuses };
}

function request(session: ClientHttp2Session, method: string, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ":method": method, ":path": path }, { endStream: true });
    stream.on("response", (headers) => resolve(Number(headers[":status"])));
    stream.on("error", reject);
    stream.resume();
  });
}

describe("HTTP/2 caller, HTTP/1.1 app: pooled app connections closed together", () => {
  it("a GET moves on past both to a new connection; a bodiless POST is not sent again (RFC 9110 §9.2.2)", async () => {
    const app = await startClosingApp();
    const bridge = await startBridge(app.port);
    const session = h2connect(`http://127.0.0.1:${bridge.port}`);
    running.push(() => session.destroy());
    session.on("error", () => undefined);

    expect(await Promise.all([request(session, "GET", "/a"), request(session, "GET", "/b")])).toEqual([200, 200]);
    expect(bridge.pool.size).toBe(2);

    expect(await request(session, "GET", "/c")).toBe(200);
    expect(app.connections).toBe(3);

    expect(await request(session, "POST", "/d")).toBe(503);
    expect(app.connections).toBe(3);
    expect(app.requests).toEqual(expect.arrayContaining(["GET /a", "GET /b"]));
    expect(app.requests.slice(2)).toEqual(["GET /c", "GET /c", "GET /c", "POST /d"]);
    expect(bridge.statuses).toEqual([200, 200, 200, 503]);
  });
});
