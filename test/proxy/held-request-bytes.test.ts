import { readFileSync } from "node:fs";
import { createServer as createHttpServer } from "node:http";
import type { ServerResponse } from "node:http";
import { connect as http2Connect, constants as h2constants, createServer as createH2Server } from "node:http2";
import type { ClientHttp2Session, ClientHttp2Stream, ServerHttp2Stream } from "node:http2";
import { createServer as createNetServer } from "node:net";
import type { AddressInfo } from "node:net";
import { connect as tlsConnect } from "node:tls";
import type { ConnectionOptions, TLSSocket } from "node:tls";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { h2StreamWindow, perAddressShare } from "../../src/proxy/held-budget.ts";
import { waitFor } from "../helpers/wait.ts";
import { metricValue, startMeshCa, startTestSidecar, type MeshCa, type TestSidecarWithApp } from "./fixtures.ts";

/**
 * limits.maxHeldRequestBytes: the request bytes the inbound holds for all its callers together
 * (HTTP/2 header blocks of open streams, bodies held before the app takes them). Before it, each
 * HTTP/2 stream waiting for a connection to the app held up to a window (64 KiB) and one
 * connection 100 of them, whatever the number of connections (measured: ~9 MiB of RSS per
 * connection, 128 connections +1.1 GiB); each HTTP/1.1 request waiting for one held up to 1 MiB.
 * A real sidecar, a real app and real mTLS callers on loopback; nothing is timed.
 */
describe("limits.maxHeldRequestBytes: a listener-wide budget for held request bytes", () => {
  const BUDGET = 1024 * 1024;
  /** What each upload below writes: node:http2's default window, more than a stream of these limits may send unread. */
  const WINDOW = 65535;
  /**
   * The flow-control window the inbound gives each stream at these limits (h2StreamWindow: the
   * address's share over maxConcurrentStreams, at least 16 KiB): what a stream that is not read holds.
   */
  const STREAM_WINDOW = 16 * 1024;
  let ca: MeshCa;
  let caller: { cert: string; key: string };
  let sidecar: TestSidecarWithApp | undefined;
  const sessions: ClientHttp2Session[] = [];
  const sockets: TLSSocket[] = [];

  /** The app: requests under /hold wait until releaseAll(); others are answered once their body is read. */
  const holding: ServerResponse[] = [];
  let held = 0;
  const app = createHttpServer((req, res) => {
    let bytes = 0;
    req.on("data", (chunk: Buffer) => (bytes += chunk.length));
    if (req.url?.startsWith("/hold")) {
      held++;
      holding.push(res);
      return;
    }
    req.on("end", () => res.end(`got ${bytes}\n`));
  });
  const releaseAll = () => {
    for (const res of holding.splice(0)) res.end("ok\n");
  };

  beforeAll(async () => {
    ca = await startMeshCa();
    caller = await ca.clientFiles("default", "flooder");
    await new Promise<void>((resolve) => app.listen(0, "127.0.0.1", resolve));
  });
  afterAll(async () => {
    app.closeAllConnections();
    await new Promise<void>((resolve) => app.close(() => resolve()));
    await ca.close();
  });
  afterEach(async () => {
    for (const session of sessions.splice(0)) session.destroy();
    for (const socket of sockets.splice(0)) socket.destroy();
    releaseAll();
    held = 0;
    await sidecar?.close();
    sidecar = undefined;
  });

  const start = async (limits: Record<string, unknown>) => {
    sidecar = await startTestSidecar(ca, { appId: "budgeted", app: `127.0.0.1:${(app.address() as AddressInfo).port}`, limits: { maxHeldRequestBytes: BUDGET, idleTimeout: "10m", ...limits } });
    return sidecar;
  };
  const metrics = async () => (await fetch(`http://127.0.0.1:${sidecar!.addresses.status!.port}/metrics`)).text();
  const refused = async (reason: string) => metricValue(await metrics(), "meshward_sidecar_refused_total", { direction: "inbound", reason });
  const activeInbound = async () => metricValue(await metrics(), "meshward_sidecar_listener_connections_active", { listener: "inbound" });
  const untilNoConnection = async () => {
    for (;;) {
      if ((await activeInbound()) === 0) return;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  };
  const tlsOptions = (from: string) => ({ host: "127.0.0.1", port: sidecar!.addresses.inbound.port, localAddress: from, cert: readFileSync(caller.cert), key: readFileSync(caller.key), ca: ca.bundlePem, checkServerIdentity: () => undefined }) as ConnectionOptions;
  const h2From = (from: string): ClientHttp2Session => {
    const session = http2Connect(`https://127.0.0.1:${sidecar!.addresses.inbound.port}`, { maxSendHeaderBlockLength: 256 * 1024, createConnection: () => tlsConnect({ ...tlsOptions(from), ALPNProtocols: ["h2"] }) });
    sessions.push(session);
    session.on("error", () => undefined);
    return session;
  };
  interface Answer {
    status: number;
    error: string | undefined;
    body: string;
  }
  const answerOf = (stream: ClientHttp2Stream): Promise<Answer> =>
    new Promise((resolve) => {
      let body = "";
      let status = 0;
      let error: string | undefined;
      stream.on("response", (headers) => {
        status = Number(headers[":status"]);
        error = headers["x-meshward-error"] as string | undefined;
      });
      stream.on("data", (chunk: Buffer) => (body += chunk.toString()));
      stream.on("error", () => undefined);
      stream.once("close", () => resolve({ status, error, body }));
    });
  /** An HTTP/1.1 POST over mTLS: `send` bytes of a body of `declared`; the raw answer once the sidecar closes or answers in full. */
  const http1Post = (from: string, declared: number, send: number): Promise<string> =>
    new Promise((resolve) => {
      const socket = tlsConnect({ ...tlsOptions(from), ALPNProtocols: ["http/1.1"] });
      sockets.push(socket);
      let answer = "";
      socket.on("error", () => undefined);
      socket.on("data", (chunk: Buffer) => {
        answer += chunk.toString("latin1");
        const head = answer.indexOf("\r\n\r\n");
        const length = /content-length: (\d+)/i.exec(answer)?.[1];
        if (head >= 0 && length !== undefined && answer.length >= head + 4 + Number(length)) resolve(answer);
      });
      socket.once("close", () => resolve(answer));
      socket.once("secureConnect", () => {
        socket.write(`POST /upload HTTP/1.1\r\nhost: budgeted\r\ncontent-type: application/octet-stream\r\ncontent-length: ${declared}\r\n\r\n`);
        for (let sent = 0; sent < send; sent += 64 * 1024) socket.write(Buffer.alloc(Math.min(64 * 1024, send - sent), 0x62));
      });
    });

  it("HTTP/2: streams waiting for the app hold at most the budget; past it 503 E_SIDECAR_BUSY, and ordinary traffic passes once the flood ends", async () => {
    // Two connections to the app for this address: every further stream waits, holding its body.
    await start({ maxConnectionsPerAddress: 2 });
    const flood = h2From("127.0.0.1");
    const STREAMS = 100;
    const answers: Answer[] = [];
    for (let i = 0; i < STREAMS; i++) {
      const stream = flood.request({ ":method": "POST", ":path": `/hold/${i}`, "content-type": "text/plain" });
      void answerOf(stream).then((answer) => answers.push(answer));
      stream.write(Buffer.alloc(WINDOW, 0x61));
    }
    // 2 streams are with the app; the budget holds at most 63 windows of the others (1 MiB / 16 KiB,
    // their header blocks count too): at least 35 of 100 are refused, instead of all 98 held.
    const minimumRefused = STREAMS - 2 - Math.floor(BUDGET / (STREAM_WINDOW + 1));
    await waitFor("streams refused as over the budget", () => answers.filter((a) => a.error === "E_SIDECAR_BUSY").length >= minimumRefused);
    for (const answer of answers) {
      expect(answer.status).toBe(503);
      expect(answer.error).toBe("E_SIDECAR_BUSY");
      expect(JSON.parse(answer.body)).toMatchObject({ error: "E_SIDECAR_BUSY" });
    }
    expect(held).toBe(2);
    expect(await refused("max_held_request_bytes")).toBeGreaterThanOrEqual(minimumRefused);

    // The flood ends: its streams and their held bytes are let go, and ordinary requests pass.
    flood.destroy();
    await untilNoConnection();
    const calm = h2From("127.0.0.1");
    const upload = calm.request({ ":method": "POST", ":path": "/upload", "content-type": "text/plain" });
    const uploaded = answerOf(upload);
    upload.end(Buffer.alloc(200 * 1024, 0x63));
    expect(await uploaded).toMatchObject({ status: 200, body: `got ${200 * 1024}\n` });
    expect(await http1Post("127.0.0.1", 300 * 1024, 300 * 1024)).toMatch(/^HTTP\/1\.1 200 [^]*got 307200\n$/);
  });

  it("HTTP/2: one caller address holds at most its share; another address is still served", async () => {
    // Share: 2 MiB × 2 / 4 connections = 1 MiB + 64 KiB (its floor), of a 2 MiB budget.
    await start({ maxHeldRequestBytes: 2 * BUDGET, maxConnections: 4, maxConnectionsPerAddress: 2 });
    const flood = h2From("127.0.0.1");
    const answers: Answer[] = [];
    for (let i = 0; i < 100; i++) {
      const stream = flood.request({ ":method": "POST", ":path": `/hold/${i}`, "content-type": "text/plain" });
      void answerOf(stream).then((answer) => answers.push(answer));
      stream.write(Buffer.alloc(WINDOW, 0x61));
    }
    // The share (1 MiB + 64 KiB) holds fewer than 68 windows of 16 KiB with their header blocks: at least 31 of the 98 waiting are refused.
    await waitFor("the flooding address refused at its share", () => answers.filter((a) => a.error === "E_SIDECAR_BUSY").length >= 100 - 2 - Math.floor((BUDGET + 64 * 1024) / (STREAM_WINDOW + 1)));
    // Another caller address: its own request, with a body it holds while it waits for nothing.
    const other = h2From("127.0.0.2");
    const upload = other.request({ ":method": "POST", ":path": "/upload", "content-type": "text/plain" });
    const uploaded = answerOf(upload);
    upload.end(Buffer.alloc(100 * 1024, 0x63));
    expect(await uploaded).toMatchObject({ status: 200, body: `got ${100 * 1024}\n` });
  });

  it("gRPC: a call whose header block does not fit what is left of the budget gets RESOURCE_EXHAUSTED (trailers-only)", async () => {
    await start({ maxConnectionsPerAddress: 2, maxHeaderBytes: 128 * 1024 });
    const flood = h2From("127.0.0.1");
    const answers: Answer[] = [];
    for (let i = 0; i < 100; i++) {
      const stream = flood.request({ ":method": "POST", ":path": `/hold/${i}`, "content-type": "text/plain" });
      void answerOf(stream).then((answer) => answers.push(answer));
      stream.write(Buffer.alloc(WINDOW, 0x61));
    }
    await waitFor("the budget full", () => answers.filter((a) => a.error === "E_SIDECAR_BUSY").length >= 100 - 2 - Math.floor(BUDGET / (STREAM_WINDOW + 1)));
    // At most a window of the budget is left: a 70 KB header block does not fit (a second
    // connection of the same address: node:http2 refuses new streams on the flooded session itself).
    const call = h2From("127.0.0.1").request({ ":method": "POST", ":path": "/pkg.Service/Call", "content-type": "application/grpc", te: "trailers", "x-fill": "f".repeat(70_000) });
    call.on("error", () => undefined);
    const headers = await new Promise<Record<string, unknown>>((resolve) => call.once("response", (h) => resolve(h as Record<string, unknown>)));
    expect(headers).toMatchObject({ ":status": 200, "content-type": "application/grpc", "grpc-status": "8", "x-meshward-error": "E_SIDECAR_BUSY" });
  });

  it("HTTP/1.1: a body held while no connection to the app is free counts; past the budget 503 E_SIDECAR_BUSY, and once the app is free requests pass", async () => {
    // The app may have 4 connections: 4 HTTP/2 requests the app holds take them all.
    await start({ maxConnections: 4, maxConnectionsPerAddress: 4 });
    const hold = h2From("127.0.0.1");
    for (let i = 0; i < 4; i++) void answerOf(hold.request({ ":method": "GET", ":path": `/hold/${i}` }, { endStream: true }));
    await waitFor("the app holding 4 requests", () => held === 4);
    // This POST waits for one of them; its body (1.25 MiB sent of 3 MiB) would be held meanwhile.
    const answer = await http1Post("127.0.0.1", 3 * BUDGET, BUDGET + 256 * 1024);
    expect(answer).toMatch(/^HTTP\/1\.1 503 /);
    expect(answer).toMatch(/\r\nx-meshward-error: E_SIDECAR_BUSY\r\n/i);
    expect(answer).toMatch(/\r\nconnection: close\r\n/i);
    expect(await refused("max_held_request_bytes")).toBe(1);

    releaseAll();
    expect(await http1Post("127.0.0.1", 300 * 1024, 300 * 1024)).toMatch(/^HTTP\/1\.1 200 [^]*got 307200\n$/);
  });

  /** `count` uploads on `session` that write a window and keep their side open (more to come); each with its answer and its close. */
  const openUploads = (session: ClientHttp2Session, count: number) =>
    Array.from({ length: count }, (_, i) => {
      const stream = session.request({ ":method": "POST", ":path": `/upload/${i}`, "content-type": "application/octet-stream" });
      const answer = answerOf(stream);
      let answered: { status: number; error: string | undefined } | undefined;
      stream.on("response", (headers) => (answered = { status: Number(headers[":status"]), error: headers["x-meshward-error"] as string | undefined }));
      stream.write(Buffer.alloc(WINDOW, 0x61));
      return { stream, answer, answered: () => answered };
    });

  it("HTTP/2: uploads answered 503 E_APP_BUSY while the caller keeps its side open are reset (NO_ERROR) and give their bytes back", async () => {
    // The app's 3 connections (maxConnections) are held by another address; the uploads wait for
    // one, then 503 E_APP_BUSY. Before, they stayed open with their header block and held window
    // counted until the caller's connection closed (15 × ~64 KiB of the 1 MiB budget).
    await start({ maxConnections: 3, maxConnectionsPerAddress: 16, idleTimeout: "2s" });
    const holder = h2From("127.0.0.3");
    for (let i = 0; i < 3; i++) void answerOf(holder.request({ ":method": "GET", ":path": `/hold/${i}` }, { endStream: true }));
    await waitFor("the app holding 3 requests", () => held === 3);
    const uploads = openUploads(h2From("127.0.0.1"), 15);
    await waitFor("every upload answered", () => uploads.every((u) => u.answered() !== undefined));
    // The pool's wait and the body's idle clock both run idleTimeout: most get 503 E_APP_BUSY (the
    // app's connection wait), some 408 E_BODY_TIMEOUT (which was already reset before this fix).
    for (const upload of uploads) expect([JSON.stringify({ status: 503, error: "E_APP_BUSY" }), JSON.stringify({ status: 408, error: "E_BODY_TIMEOUT" })]).toContain(JSON.stringify(upload.answered()));
    expect(uploads.filter((u) => u.answered()!.error === "E_APP_BUSY").length).toBeGreaterThan(0);
    await waitFor("every answered upload's stream closed", () => uploads.every((u) => u.stream.closed));
    for (const upload of uploads) {
      expect(upload.stream.rstCode).toBe(h2constants.NGHTTP2_NO_ERROR);
      expect(JSON.parse((await upload.answer).body)).toMatchObject({ error: upload.answered()!.error });
    }
    expect(await refused("max_held_request_bytes")).toBe(0);

    // The app busy again a moment (the held requests above and their connection timed out meanwhile: idleTimeout): a
    // 600 KiB HTTP/1.1 POST from another address waits for it, its body held (before: refused as
    // max_held_request_bytes at once), and passes once the app is free.
    const holder2 = h2From("127.0.0.3");
    for (let i = 3; i < 6; i++) void answerOf(holder2.request({ ":method": "GET", ":path": `/hold/${i}` }, { endStream: true }));
    await waitFor("the app holding 3 more requests", () => held === 6);
    const post = http1Post("127.0.0.2", 600 * 1024, 600 * 1024);
    await Promise.race([post, new Promise((resolve) => setTimeout(resolve, 1000))]);
    releaseAll();
    expect(await post).toMatch(/^HTTP\/1\.1 200 [^]*got 614400\n$/);
    expect(await refused("max_held_request_bytes")).toBe(0);
  });

  it("HTTP/2: uploads answered 502/503 because the app's connection failed are reset (NO_ERROR), not left open", async () => {
    // Nothing listens at the app's address: every connection to it is refused.
    const gone = createNetServer();
    await new Promise<void>((resolve) => gone.listen(0, "127.0.0.1", resolve));
    const deadPort = (gone.address() as AddressInfo).port;
    await new Promise<void>((resolve) => gone.close(() => resolve()));
    sidecar = await startTestSidecar(ca, { appId: "budgeted", app: `127.0.0.1:${deadPort}`, limits: { maxHeldRequestBytes: BUDGET, idleTimeout: "10m" } });
    const uploads = openUploads(h2From("127.0.0.1"), 4);
    await waitFor("every upload answered", () => uploads.every((u) => u.answered() !== undefined));
    for (const upload of uploads) {
      expect(upload.answered()!.status).toBeGreaterThanOrEqual(502);
      expect(upload.answered()!.error).toMatch(/^E_UPSTREAM_/);
    }
    await waitFor("every answered upload's stream closed", () => uploads.every((u) => u.stream.closed));
    for (const upload of uploads) expect(upload.stream.rstCode).toBe(h2constants.NGHTTP2_NO_ERROR);
  });

  it("gRPC: 100 client-streaming calls from one address to a slow app are slowed by flow control, not refused: all complete", async () => {
    // A gRPC-like app (h2c) that reads nothing until every call is backed up, then reads each body
    // whole and answers grpc-status 0 with the bytes it got. Default limits: the address's share is
    // 2.67 MiB (16 MiB × 128 / 768). Before, each backed-up stream held up to a 64 KiB window of
    // the caller's body: about 40 streams filled the share and the others got RESOURCE_EXHAUSTED
    // (E_SIDECAR_BUSY). Now the inbound gives each stream a 16 KiB window: 100 of them fit.
    const CALLS = 100;
    const BODY = 256 * 1024;
    const appStreams = new Map<number, ServerHttp2Stream>();
    let reading = false;
    const grpcApp = createH2Server();
    grpcApp.on("stream", (stream: ServerHttp2Stream, headers) => {
      stream.on("error", () => undefined);
      let bytes = 0;
      stream.on("data", (chunk: Buffer) => (bytes += chunk.length));
      stream.on("end", () => {
        if (stream.closed || stream.destroyed) return;
        stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
        stream.once("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0", "x-bytes": String(bytes) }));
        stream.end();
      });
      if (!reading) stream.pause();
      appStreams.set(Number(headers["x-call"]), stream);
    });
    await new Promise<void>((resolve) => grpcApp.listen(0, "127.0.0.1", resolve));
    try {
      sidecar = await startTestSidecar(ca, { appId: "budgeted", app: `127.0.0.1:${(grpcApp.address() as AddressInfo).port}` });
      const session = h2From("127.0.0.1");
      await new Promise((resolve) => session.once("remoteSettings", resolve));
      expect(session.remoteSettings.initialWindowSize).toBe(STREAM_WINDOW);
      const chunk = Buffer.alloc(16 * 1024, 0x67);
      let sent = 0;
      const calls = Array.from({ length: CALLS }, (_, i) => {
        const stream = session.request({ ":method": "POST", ":path": "/pkg.Uploads/Put", "content-type": "application/grpc", te: "trailers", "x-call": String(i) });
        const call = { stream, grpcStatus: "", error: undefined as string | undefined, bytes: "" };
        stream.on("response", (headers) => {
          if (headers["grpc-status"] !== undefined) call.grpcStatus = String(headers["grpc-status"]);
          call.error = headers["x-meshward-error"] as string | undefined;
        });
        stream.on("trailers", (trailers) => {
          call.grpcStatus = String(trailers["grpc-status"]);
          call.bytes = String(trailers["x-bytes"]);
        });
        stream.on("error", () => undefined);
        stream.resume();
        // As a gRPC client writes: while the stream takes it, then on 'drain'.
        let written = 0;
        const pump = () => {
          while (written < BODY && !stream.destroyed) {
            written += chunk.length;
            if (!stream.write(chunk, () => (sent += chunk.length))) return void stream.once("drain", pump);
          }
          if (!stream.destroyed) stream.end();
        };
        pump();
        return call;
      });
      // Backed up: every call refused or with a full window's worth (65,535 bytes) waiting unread at
      // the app, and the caller sending nothing more over a PING's round trip (no window left to it).
      const backedUp = (i: number) => calls[i]!.stream.closed || (appStreams.get(i)?.readableLength ?? 0) >= 65_535;
      await waitFor("every call backed up behind the app", () => calls.every((_, i) => backedUp(i)));
      for (let before = -1; before !== sent; ) {
        before = sent;
        await new Promise((resolve) => session.ping(resolve));
      }
      reading = true;
      for (const stream of appStreams.values()) stream.resume();
      await waitFor("every call closed", () => calls.every((call) => call.stream.closed), 60_000);
      const outcome = (call: (typeof calls)[number]) => (call.grpcStatus === "0" && call.bytes === String(BODY) ? "ok" : `grpc-status ${call.grpcStatus} ${call.error ?? ""}`.trim());
      const outcomes: Record<string, number> = {};
      for (const call of calls) outcomes[outcome(call)] = (outcomes[outcome(call)] ?? 0) + 1;
      expect(outcomes).toEqual({ ok: CALLS });
      expect(await refused("max_held_request_bytes")).toBe(0);
    } finally {
      for (const session of sessions.splice(0)) session.destroy();
      for (const stream of appStreams.values()) stream.destroy();
      await sidecar?.close();
      sidecar = undefined;
      await new Promise<void>((resolve) => grpcApp.close(() => resolve()));
    }
  });
});

describe("h2StreamWindow: the inbound's per-stream window, sized so that a connection's streams fit the address's share", () => {
  it("is the share over maxConcurrentStreams in 16 KiB steps, from 16 KiB to node:http2's default 65,535", () => {
    const atDefaults = perAddressShare(16 * 1024 * 1024, 768, 128);
    expect(h2StreamWindow(atDefaults, 100)).toBe(16 * 1024);
    // 100 streams of a window each, and their header blocks, fit the 2.67 MiB share.
    expect(100 * (h2StreamWindow(atDefaults, 100) + 1024)).toBeLessThanOrEqual(atDefaults);
    expect(h2StreamWindow(perAddressShare(39_321_600, 768, 128), 100)).toBe(65_535);
    expect(h2StreamWindow(perAddressShare(39_321_599, 768, 128), 100)).toBe(48 * 1024);
    expect(h2StreamWindow(atDefaults, 10_000)).toBe(16 * 1024);
    expect(h2StreamWindow(2 ** 40, 1)).toBe(65_535);
  });
});
