import { createServer, type Server } from "node:http";
import { connect as http2Connect, type ClientHttp2Session } from "node:http2";
import { readFileSync } from "node:fs";
import { connect as netConnect, type AddressInfo, type Socket } from "node:net";
import { connect as tlsConnect } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { metricValue, startMeshCa, startTestSidecar, type MeshCa, type TestSidecarWithApp } from "./fixtures.ts";
import { H2_PREFACE, h2Frame } from "../helpers/raw-h2.ts";

// limits.headersTimeout (the slowloris guard) held for HTTP/1 only. An HTTP/2 caller that sent
// the preface, then a HEADERS frame without END_HEADERS whose payload it trickled a byte at a
// time, never became a stream: no policy decision, no 408, and the connection stayed until the
// age cap (1 h) — 768 such connections from 7 addresses held the whole inbound listener. Now a
// header block that has begun must be complete within headersTimeout, and so must a connection's
// first request; and a connection with no stream open closes at idleTimeout even when the caller
// keeps sending PINGs or frames of unknown types. Sidecars run in-process on real sockets; the
// bounded waits (`within`) only turn a connection that is never closed into a failure.

const PREFACE = H2_PREFACE;
const FLAG_END_STREAM = 0x1;
const FLAG_END_HEADERS = 0x4;
const frame = h2Frame;
/** HPACK literal header field without indexing, new name. */
const literal = (name: string, value: string) => Buffer.concat([Buffer.from([0x00, name.length]), Buffer.from(name), Buffer.from([value.length]), Buffer.from(value)]);
/** GET / (static table: :method GET, :path /, :scheme http) with :authority and a padding field. */
const BLOCK = Buffer.concat([Buffer.from([0x82, 0x84, 0x86]), literal(":authority", "127.0.0.1"), literal("x-pad", "a".repeat(100))]);
const SETTINGS = frame(4, 0, 0, Buffer.alloc(0));
const PING = frame(6, 0, 0, Buffer.alloc(8));
const UNKNOWN = frame(0xbb, 0, 0, Buffer.from("xyz"));

/** A raw HTTP/2 client connection: the GOAWAY code it got (if any), whether it closed. */
interface Raw {
  readonly socket: Socket;
  readonly goaway: () => number | undefined;
  readonly statuses: () => number;
  readonly closed: Promise<void>;
}
function raw(socket: Socket): Raw {
  socket.on("error", () => undefined);
  let pending = Buffer.alloc(0);
  let goaway: number | undefined;
  let headers = 0;
  socket.on("data", (chunk: Buffer) => {
    pending = Buffer.concat([pending, chunk]);
    while (pending.length >= 9) {
      const length = pending.readUIntBE(0, 3);
      if (pending.length < 9 + length) break;
      const type = pending[3];
      if (type === 7) goaway = pending.readUInt32BE(9 + 4);
      if (type === 1) headers++;
      pending = pending.subarray(9 + length);
    }
  });
  return { socket, goaway: () => goaway, statuses: () => headers, closed: new Promise((resolve) => socket.once("close", () => resolve())) };
}
/** Writes `bytes` one at a time, every 100 ms, until the connection closes. */
function trickle(socket: Socket, bytes: Buffer): void {
  let i = 0;
  const timer = setInterval(() => {
    if (!socket.writable || i >= bytes.length) return void clearInterval(timer);
    socket.write(bytes.subarray(i, ++i));
  }, 100);
  socket.once("close", () => clearInterval(timer));
}
/** Writes `bytes` every 100 ms until the connection closes. */
function repeat(socket: Socket, bytes: Buffer): void {
  const timer = setInterval(() => {
    if (socket.writable) socket.write(bytes);
  }, 100);
  socket.once("close", () => clearInterval(timer));
}
/** Resolves "open" if `what` has not settled after `ms`: bounded, so a connection never closed fails the test. */
const within = <T>(what: Promise<T>, ms: number) => Promise.race([what, new Promise<"open">((resolve) => setTimeout(() => resolve("open"), ms))]);

describe("HTTP/2: limits.headersTimeout and limits.idleTimeout on the connection", () => {
  let ca: MeshCa;
  let app: Server;
  /** headersTimeout 1 s, idleTimeout 30 s: only the headers deadline can close a connection in a test. */
  let callee: TestSidecarWithApp;
  /** headersTimeout 1 s, idleTimeout 2 s. */
  let idler: TestSidecarWithApp;
  /** The outbound (h2c from the app), headersTimeout 1 s, idleTimeout 30 s. */
  let caller: TestSidecarWithApp;
  let client: { cert: string; key: string };
  const sockets: Socket[] = [];
  const sessions: ClientHttp2Session[] = [];

  beforeAll(async () => {
    ca = await startMeshCa();
    app = createServer((req, res) => {
      req.resume();
      req.on("end", () => {
        const delay = req.url === "/slow" ? 2500 : 0;
        setTimeout(() => res.end(`ok ${req.url}`), delay);
      });
    });
    await new Promise<void>((resolve) => app.listen(0, "127.0.0.1", resolve));
    const appAddress = `127.0.0.1:${(app.address() as AddressInfo).port}`;
    callee = await startTestSidecar(ca, { appId: "callee", app: appAddress, mode: "permissive", limits: { headersTimeout: "1s", idleTimeout: "30s" } });
    idler = await startTestSidecar(ca, { appId: "idler", app: appAddress, limits: { headersTimeout: "1s", idleTimeout: "2s" } });
    caller = await startTestSidecar(ca, { appId: "caller", app: "127.0.0.1:1", outbound: "127.0.0.1:0", peers: { callee: `127.0.0.1:${callee.addresses.inbound.port}` }, limits: { headersTimeout: "1s", idleTimeout: "30s" } });
    client = await ca.clientFiles("default", "web");
  }, 60_000);
  afterAll(async () => {
    for (const socket of sockets) socket.destroy();
    for (const session of sessions) session.destroy();
    await caller?.close();
    await idler?.close();
    await callee?.close();
    app?.closeAllConnections();
    await new Promise<void>((resolve) => (app ? app.close(() => resolve()) : resolve()));
    await ca?.close();
  });

  const mtls = (port: number) =>
    new Promise<Raw>((resolve, reject) => {
      const socket = tlsConnect({ host: "127.0.0.1", port, ALPNProtocols: ["h2"], ca: ca.bundlePem, cert: readFileSync(client.cert), key: readFileSync(client.key), checkServerIdentity: () => undefined }, () => resolve(raw(socket)));
      sockets.push(socket);
      socket.once("error", reject);
    });
  const plain = (port: number) =>
    new Promise<Raw>((resolve, reject) => {
      const socket = netConnect({ host: "127.0.0.1", port }, () => resolve(raw(socket)));
      sockets.push(socket);
      socket.once("error", reject);
    });
  const refusedHeaderTimeouts = async (sidecar: TestSidecarWithApp, direction: string) =>
    metricValue(await (await fetch(`http://127.0.0.1:${sidecar.addresses.status!.port}/metrics`)).text(), "meshward_sidecar_refused_total", { direction, reason: "header_timeout" });
  /** The rest of a HEADERS frame for `stream` (no END_HEADERS) after its 9-byte frame header. */
  const unfinished = (stream: number) => frame(1, FLAG_END_STREAM, stream, BLOCK);

  it("inbound mTLS: a header block trickled after a first, complete request is cut (GOAWAY ENHANCE_YOUR_CALM), counted as header_timeout", async () => {
    const before = await refusedHeaderTimeouts(callee, "inbound");
    const conn = await mtls(callee.addresses.inbound.port);
    conn.socket.write(Buffer.concat([PREFACE, SETTINGS, frame(1, FLAG_END_STREAM | FLAG_END_HEADERS, 1, BLOCK)]));
    const block = unfinished(3);
    conn.socket.write(block.subarray(0, 9));
    trickle(conn.socket, block.subarray(9));
    expect(await within(conn.closed, 20_000)).toBeUndefined();
    expect(conn.statuses()).toBe(1); // the first request was answered
    expect(conn.goaway()).toBe(11); // ENHANCE_YOUR_CALM
    expect(await refusedHeaderTimeouts(callee, "inbound")).toBe(before + 1);
  });

  it("inbound PERMISSIVE h2c: a first header block trickled from the start is cut", async () => {
    const conn = await plain(callee.addresses.inbound.port);
    conn.socket.write(Buffer.concat([PREFACE, SETTINGS]));
    const block = unfinished(1);
    conn.socket.write(block.subarray(0, 9));
    trickle(conn.socket, block.subarray(9));
    expect(await within(conn.closed, 20_000)).toBeUndefined();
    expect(conn.goaway()).toBe(11);
  });

  it("inbound mTLS: a complete HEADERS frame without END_HEADERS, then a CONTINUATION frame trickled, is cut", async () => {
    // (Many 1-byte CONTINUATION frames are nghttp2's to refuse: it allows 8.)
    const conn = await mtls(callee.addresses.inbound.port);
    conn.socket.write(Buffer.concat([PREFACE, SETTINGS, frame(1, FLAG_END_STREAM, 1, BLOCK.subarray(0, 3))]));
    const continuation = frame(9, FLAG_END_HEADERS, 1, BLOCK.subarray(3));
    conn.socket.write(continuation.subarray(0, 9));
    trickle(conn.socket, continuation.subarray(9));
    expect(await within(conn.closed, 20_000)).toBeUndefined();
    expect(conn.goaway()).toBe(11);
  });

  it("inbound mTLS: a connection that sends only PINGs and never a request is closed (GOAWAY NO_ERROR)", async () => {
    const before = await refusedHeaderTimeouts(callee, "inbound");
    const conn = await mtls(callee.addresses.inbound.port);
    conn.socket.write(Buffer.concat([PREFACE, SETTINGS]));
    repeat(conn.socket, PING);
    expect(await within(conn.closed, 20_000)).toBeUndefined();
    expect(conn.goaway()).toBe(0);
    expect(await refusedHeaderTimeouts(callee, "inbound")).toBe(before + 1);
  });

  it("outbound h2c: a header block from the app trickled from the start is cut, counted as header_timeout", async () => {
    const before = await refusedHeaderTimeouts(caller, "outbound");
    const conn = await plain(caller.addresses.outbound!.port);
    conn.socket.write(Buffer.concat([PREFACE, SETTINGS]));
    const block = unfinished(1);
    conn.socket.write(block.subarray(0, 9));
    trickle(conn.socket, block.subarray(9));
    expect(await within(conn.closed, 20_000)).toBeUndefined();
    expect(conn.goaway()).toBe(11);
    expect(await refusedHeaderTimeouts(caller, "outbound")).toBe(before + 1);
  });

  it("a connection with no stream open closes at idleTimeout though the caller keeps sending PINGs and frames of unknown types", async () => {
    const conn = await mtls(idler.addresses.inbound.port);
    conn.socket.write(Buffer.concat([PREFACE, SETTINGS, frame(1, FLAG_END_STREAM | FLAG_END_HEADERS, 1, BLOCK)]));
    repeat(conn.socket, Buffer.concat([PING, UNKNOWN]));
    expect(await within(conn.closed, 20_000)).toBeUndefined();
    expect(conn.statuses()).toBe(1);
    expect(conn.goaway()).toBe(0);
  });

  it("an idle connection between requests, and a request the app answers late, are not cut by headersTimeout", async () => {
    const port = callee.addresses.inbound.port;
    const session = http2Connect(`https://127.0.0.1:${port}`, {
      createConnection: () => tlsConnect({ host: "127.0.0.1", port, ALPNProtocols: ["h2"], ca: ca.bundlePem, cert: readFileSync(client.cert), key: readFileSync(client.key), checkServerIdentity: () => undefined }),
    });
    sessions.push(session);
    session.on("error", () => undefined);
    let goaway: number | undefined;
    session.on("goaway", (code: number) => (goaway = code));
    const get = (path: string) =>
      new Promise<string>((resolve, reject) => {
        const stream = session.request({ ":path": path });
        let body = "";
        stream.on("data", (d: Buffer) => (body += d.toString()));
        stream.on("end", () => resolve(body));
        stream.on("error", reject);
      });
    expect(await get("/one")).toBe("ok /one");
    // 2.5 s idle: past headersTimeout (1 s), within idleTimeout (30 s).
    await new Promise((resolve) => setTimeout(resolve, 2500));
    expect(await get("/two")).toBe("ok /two");
    // The app answers after 2.5 s: an open stream is not "waiting for headers".
    expect(await get("/slow")).toBe("ok /slow");
    expect(goaway).toBeUndefined();
    expect(session.closed || session.destroyed).toBe(false);
  });
});
