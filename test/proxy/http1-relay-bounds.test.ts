import { createServer as createHttpServer } from "node:http";
import type { Server } from "node:http";
import { connect as netConnect, createServer as createNetServer } from "node:net";
import type { AddressInfo, Server as NetServer, Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { collectGarbage } from "../helpers/memory.ts";
import { ChunkStage, SMALL_CHUNK } from "../../src/proxy/http1/chunk-stage.ts";
import { Http1Pool } from "../../src/proxy/http1/pool.ts";
import { Http1Relay } from "../../src/proxy/http1/relay.ts";

/**
 * Found by review (bounds HIGH-1, HIGH-2): a chunked body of tiny chunks, to an app that does not
 * read it or from an app to a caller that does not read, was re-framed as three writes per chunk
 * (a Buffer and a queue entry each) for a whole read before the writer said it was full: ~1.5 MiB
 * of heap per connection in this process (~30-100 MiB of sidecar RSS with TLS). What the relay
 * holds is now the bytes queued (one write per read of small chunks). Measured here as the heap
 * left after a full GC once the relay has stopped reading, and as the writes made to the app.
 */

const running: (() => void)[] = [];

/** `count` connections to the relay that write `request(i)` and never read what comes back. */
function callersThatDoNotRead(port: number, count: number, request: (i: number) => string): void {
  for (let i = 0; i < count; i++) {
    const client = netConnect({ host: "127.0.0.1", port });
    client.on("error", () => undefined);
    client.pause();
    running.push(() => client.destroy());
    client.write(request(i));
  }
}
afterEach(() => {
  for (const stop of running.splice(0).reverse()) stop();
});

async function listen(server: NetServer | Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  running.push(() => server.close());
  return (server.address() as AddressInfo).port;
}

/** Counts the writes made to a socket. */
function countWrites(socket: Socket, count: () => void): Socket {
  const write = socket.write.bind(socket) as (...args: unknown[]) => boolean;
  socket.write = ((...args: unknown[]) => {
    count();
    return write(...args);
  }) as typeof socket.write;
  return socket;
}

async function startRelay(appPort: number): Promise<{ port: number; relay: Http1Relay; relaySockets: Socket[]; appWrites: () => number; callerWrites: () => number; appRead: () => number }> {
  let writes = 0;
  let callerWrites = 0;
  const appSockets: Socket[] = [];
  const pool = new Http1Pool({
    dial: () => {
      const socket = netConnect({ host: "127.0.0.1", port: appPort });
      appSockets.push(socket);
      return countWrites(socket, () => writes++);
    },
    authority: `127.0.0.1:${appPort}`,
    maxHeaderBytes: 16 * 1024,
    idleMs: 4000,
    maxIdle: 8,
  });
  const relay = new Http1Relay({
    maxHeaderBytes: 16 * 1024,
    headersTimeout: 60_000,
    idleTimeout: 60_000,
    escapedSlashes: "reject",
    decide: () => ({ upstream: pool, addHeaders: "", onUpstreamError: (error) => ({ status: 503, grpcStatus: 14, code: "E_UPSTREAM_UNREACHABLE", message: error.message }), done: () => undefined }),
    upgrade: (_request, socket) => void socket.destroy(),
    clientError: () => undefined,
    closeAfterResponse: () => false,
  });
  const relaySockets: Socket[] = [];
  const server = createNetServer((socket) => {
    relaySockets.push(socket);
    relay.serve(countWrites(socket, () => callerWrites++));
  });
  const port = await listen(server);
  running.push(() => {
    relay.close();
    pool.close();
    for (const socket of relaySockets) socket.destroy();
  });
  return { port, relay, relaySockets, appWrites: () => writes, callerWrites: () => callerWrites, appRead: () => appSockets.reduce((sum, socket) => sum + socket.bytesRead, 0) };
}

/** Waits until `value` holds still for 300 ms (the relay stopped reading; bounded, so one that never stops fails). */
async function settled(value: () => number, what: string): Promise<number> {
  let before = -1;
  for (const deadline = Date.now() + 30_000; value() !== before; ) {
    if (Date.now() > deadline) throw new Error(`${what} never stopped growing: ${value()}`);
    before = value();
    await new Promise((resolve) => setTimeout(resolve, 300));
  }
  return before;
}

function heapNow(): number {
  collectGarbage();
  return process.memoryUsage().heapUsed;
}

const CONNECTIONS = 8;
const MiB = 1024 * 1024;

describe("HTTP/1.1 relay: memory held for peers that do not read", () => {
  it("a chunked upload of 1-byte chunks to an app that does not read: heap held is about the bytes queued, one write per client read", async () => {
    // A busy app that reads nothing yet (a raw socket: node:http in this process would read the
    // body from its socket in C++ whatever JavaScript pauses, and its memory would count here).
    const appSockets: Socket[] = [];
    const app = createNetServer((socket) => {
      socket.pause();
      appSockets.push(socket);
    });
    const appPort = await listen(app);
    running.push(() => appSockets.forEach((socket) => socket.destroy()));
    const { port, relaySockets, appWrites } = await startRelay(appPort);
    const base = heapNow();
    const tiny = Buffer.from("1\r\na\r\n".repeat(10_000));
    const clients: Socket[] = [];
    for (let i = 0; i < CONNECTIONS; i++) {
      const client = netConnect({ host: "127.0.0.1", port });
      client.on("error", () => undefined);
      running.push(() => client.destroy());
      client.write("POST /up HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n");
      clients.push(client);
    }
    let stop = false;
    const pump = (async () => {
      while (!stop) {
        for (const client of clients) if (client.writableLength < MiB) client.write(tiny);
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    })();
    await new Promise<void>((resolve) => setTimeout(resolve, 300));
    const read = await settled(() => relaySockets.reduce((sum, socket) => sum + socket.bytesRead, 0), "the relay's reading");
    const held = heapNow() - base;
    stop = true;
    await pump;
    // Several MiB of 1-byte chunks were read and re-framed (6 wire bytes each).
    expect(read).toBeGreaterThan(CONNECTIONS * 64 * 1024);
    // Before: ~3 writes per chunk read (~3 × read / 6); now at most one per client read or large chunk.
    expect(appWrites()).toBeLessThan(read / 1000);
    // Before: ~12 MiB for 8 connections (1.5 MiB each); now the bytes queued (~100 KiB each) and less.
    expect(held).toBeLessThan(4 * MiB);
  }, 60_000);

  it("a response of small writes (node:http rows) and of 1-byte chunks to callers that do not read: heap held is about the bytes queued", async () => {
    let rows = 0;
    const app = createHttpServer((req, res) => {
      const pump = () => {
        while (!res.destroyed) {
          rows++;
          if (!res.write("id,name,qty,9999\n")) return void res.once("drain", pump);
        }
      };
      if (req.url === "/rows") {
        res.writeHead(200, { "content-type": "text/csv" });
        return pump();
      }
      // 1-byte chunks framed by hand on the app's socket, as fast as the sidecar takes them.
      const socket = res.socket!;
      socket.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
      const tiny = Buffer.from("1\r\na\r\n".repeat(10_000));
      const raw = () => {
        while (!socket.destroyed) {
          rows++;
          if (!socket.write(tiny)) return void socket.once("drain", raw);
        }
      };
      raw();
    });
    const appPort = await listen(app);
    running.push(() => app.closeAllConnections());
    const { port, relaySockets, callerWrites, appRead } = await startRelay(appPort);
    const base = heapNow();
    callersThatDoNotRead(port, CONNECTIONS, (i) => `GET ${i % 2 === 0 ? "/rows" : "/tiny"} HTTP/1.1\r\nHost: app\r\n\r\n`);
    await new Promise<void>((resolve) => setTimeout(resolve, 300));
    await settled(() => rows, "the app's writing");
    const queued = relaySockets.reduce((sum, socket) => sum + socket.writableLength, 0);
    const held = heapNow() - base;
    const read = appRead();
    expect(read).toBeGreaterThan(CONNECTIONS * 64 * 1024);
    // Before: 3 writes per piece (a 17-byte row or a 1-byte chunk); now at most one per read from the app or large piece.
    expect(callerWrites()).toBeLessThan(read / 1000);
    // The relay stopped reading each app with a bounded queue toward its caller.
    expect(queued).toBeLessThan(CONNECTIONS * 160 * 1024);
    // Before: ~11 MiB for 8 connections; now the bytes queued and less.
    expect(held).toBeLessThan(4 * MiB);
  }, 60_000);
});

/**
 * Found by review (bounds MEDIUM-5): a caller that pipelines many small requests on one
 * connection and does not read the answers had one whole read of them parsed ahead: ~1,800
 * exchanges (each a head, its header array and a queue entry) per 64 KiB read of tiny GETs,
 * 0.7-1.2 MiB of sidecar RSS per connection. The parser now stops after the head of a request that
 * has to wait and keeps the rest of the read as bytes. Counted with Http1Relay.backlog(): at
 * most the exchange being answered and the one after it, and less than one read held.
 * Run with MESHWARD_HTTP1_PARSER=node and =wasm (the relay uses the process-wide build).
 */
describe("HTTP/1.1 relay: pipelined requests from callers that do not read", () => {
  const GET = "GET /x HTTP/1.1\r\nHost: app\r\n\r\n";
  const REQUESTS = 2000;

  for (const [what, size] of [
    ["a large answer the caller does not read keeps the first exchange open", 1 << 20],
    ["small answers pile up unread until the caller's socket is full", 16 * 1024],
  ] as const) {
    it(`2,000 tiny GETs in one write, never read (${what}): at most two exchanges parsed, less than one read held`, async () => {
      let answered = 0;
      const answer = Buffer.alloc(size, 97);
      const app = createHttpServer((_req, res) => {
        answered++;
        res.writeHead(200, { "content-length": answer.length }).end(answer);
      });
      const appPort = await listen(app);
      running.push(() => app.closeAllConnections());
      const { port, relay, relaySockets } = await startRelay(appPort);
      const base = heapNow();
      callersThatDoNotRead(port, CONNECTIONS, () => GET.repeat(REQUESTS));
      await new Promise<void>((resolve) => setTimeout(resolve, 300));
      const read = await settled(() => relaySockets.reduce((sum, socket) => sum + socket.bytesRead, 0) + answered, "the relay's reading and the app's answering");
      const backlog = relay.backlog();
      const held = heapNow() - base;
      expect(backlog).toHaveLength(CONNECTIONS);
      // The callers' requests were read (a read each at least), and most are still unanswered.
      expect(read).toBeGreaterThan(CONNECTIONS * 16 * 1024);
      expect(answered).toBeLessThan((CONNECTIONS * REQUESTS) / 2);
      // Before: the rest of each read parsed (~1,500-1,800 exchanges per connection); now the one
      // being answered (or waiting for the caller to read) and at most one after it.
      expect(Math.max(...backlog.map((b) => b.exchanges))).toBeLessThanOrEqual(2);
      expect(Math.max(...backlog.map((b) => b.heldBytes))).toBeLessThanOrEqual(64 * 1024);
      expect(held).toBeLessThan(2 * MiB);
    }, 60_000);
  }
});

describe("chunk framing of small pieces", () => {
  it("frames every size below SMALL_CHUNK exactly as `<hex>\\r\\n<data>\\r\\n`, staged back to back or one at a time", () => {
    const stage = new ChunkStage();
    let staged = "";
    let expected = "";
    for (let n = 1; n < SMALL_CHUNK; n += n < 300 ? 1 : 37) {
      const data = Buffer.alloc(n, n & 0xff);
      const framed = `${n.toString(16)}\r\n${data.toString("latin1")}\r\n`;
      const alone = new ChunkStage();
      expect(alone.add(data)).toBeUndefined();
      expect(alone.take()?.toString("latin1")).toBe(framed);
      staged += stage.add(data)?.toString("latin1") ?? "";
      expected += framed;
    }
    staged += stage.take()?.toString("latin1") ?? "";
    expect(staged).toBe(expected);
    expect(stage.take()).toBeUndefined();
  });

  it("leaves an empty piece out, framed or not (framed, it would read as the last chunk: '0\\r\\n\\r\\n')", () => {
    for (const framed of [true, false]) {
      const stage = new ChunkStage(framed);
      expect(stage.add(Buffer.alloc(0))).toBeUndefined();
      expect(stage.staged).toBe(false);
      expect(stage.take()).toBeUndefined();
      let out = "";
      for (const piece of ["ab", "", "c", ""]) out += stage.add(Buffer.from(piece))?.toString("latin1") ?? "";
      out += stage.take()?.toString("latin1") ?? "";
      expect(out).toBe(framed ? "2\r\nab\r\n1\r\nc\r\n" : "abc");
    }
  });

  it("unframed (a body not chunked), copies pieces back to back, handing a full stage out before the piece that does not fit", () => {
    const stage = new ChunkStage(false);
    let out = "";
    let expected = "";
    for (let n = 1; n < SMALL_CHUNK; n += 97) {
      const data = Buffer.alloc(n, 97 + (n % 26));
      out += stage.add(data)?.toString("latin1") ?? "";
      expected += data.toString("latin1");
    }
    out += stage.take()?.toString("latin1") ?? "";
    expect(out).toBe(expected);
    expect(stage.take()).toBeUndefined();
  });
});
