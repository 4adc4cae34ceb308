import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createServer as createHttpServer } from "node:http";
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import { connect as netConnect, createServer as createNetServer } from "node:net";
import type { AddressInfo, Server as NetServer, Socket } from "node:net";
import { Duplex } from "node:stream";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { checkHttp1Parser, createMessageParser } from "../../src/proxy/http1/llhttp.ts";
import type { MessageHead } from "../../src/proxy/http1/llhttp.ts";
import { Http1Pool } from "../../src/proxy/http1/pool.ts";
import { Http1Relay } from "../../src/proxy/http1/relay.ts";
import type { ClientErrorReason } from "../../src/proxy/http1/relay.ts";
import { isUpstreamTimeout, upstreamTimeoutAnswer } from "../../src/proxy/stream-idle.ts";
import { exec } from "../helpers/exec.ts";
import { waitFor } from "../helpers/wait.ts";
import { startHttpApp } from "../helpers/app-servers.ts";
import type { HttpApp } from "../helpers/app-servers.ts";

/**
 * The HTTP/1.1 relay the sidecar runs on both sides, on its own: a plaintext listener in front
 * of it (the sidecar puts TLS there), real upstreams (Node's http server, or a raw socket
 * server where an upstream must misbehave on purpose) and real clients (curl, or a raw socket
 * where the exact bytes on the wire are the point).
 */

interface RelayUnderTest {
  readonly port: number;
  readonly pool: Http1Pool;
  readonly decided: MessageHead[];
  /** The canonical target of each decided request: what the policy would judge. */
  readonly judged: string[];
  /** The relay's side of each client connection. */
  readonly sockets: ReadonlySet<Socket>;
  readonly clientErrors: ClientErrorReason[];
  /** `later`: what the callee read from the socket after taking it over. */
  readonly upgrades: { head: MessageHead; rest: string; later: string }[];
  readonly statuses: number[];
  /** Hands the relay a connection directly (a stream standing in for a socket). */
  serve(socket: Socket): void;
  close(): Promise<void>;
}

const running: { close(): Promise<void> | void }[] = [];
afterEach(async () => {
  for (const thing of running.splice(0).reverse()) await thing.close();
});

async function listen(server: NetServer | Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return (server.address() as AddressInfo).port;
}

async function startRelay(upstreamPort: number, options: { idleTimeout?: number; headersTimeout?: number } = {}): Promise<RelayUnderTest> {
  const pool = new Http1Pool({ dial: () => netConnect({ host: "127.0.0.1", port: upstreamPort }), authority: `127.0.0.1:${upstreamPort}`, maxHeaderBytes: 16 * 1024, idleMs: 4000, maxIdle: 8 });
  const decided: MessageHead[] = [];
  const judged: string[] = [];
  const clientErrors: ClientErrorReason[] = [];
  const upgrades: RelayUnderTest["upgrades"] = [];
  const statuses: number[] = [];
  const relay = new Http1Relay({
    maxHeaderBytes: 4096,
    headersTimeout: options.headersTimeout ?? 5000,
    idleTimeout: options.idleTimeout ?? 30_000,
    escapedSlashes: "reject",
    decide: ({ head, target }) => {
      decided.push(head);
      judged.push(target.target);
      if (head.url === "/boom") throw new Error("a bug in deciding");
      if (head.url.startsWith("/deny")) return { answer: { status: 403, grpcStatus: 7, code: "E_POLICY_DENIED", message: "no" }, done: (s) => statuses.push(s) };
      return {
        upstream: pool,
        addHeaders: "x-forwarded-client-cert: By=spiffe://td/ns/default/b;URI=spiffe://td/ns/default/a\r\n",
        // As the sidecar's sides answer: an upstream that sent no response in time gets 504.
        onUpstreamError: (error) => (isUpstreamTimeout(error) ? upstreamTimeoutAnswer(`the upstream 127.0.0.1:${upstreamPort}`, error) : { status: 503, grpcStatus: 14, code: "E_UPSTREAM_UNREACHABLE", message: error.message }),
        done: (s) => statuses.push(s),
      };
    },
    upgrade: ({ head }, socket, rest) => {
      const upgrade = { head, rest: rest.toString("latin1"), later: "" };
      upgrades.push(upgrade);
      // The relay hands the socket over paused (a 'data' listener alone does not resume it).
      socket.on("data", (chunk: Buffer) => (upgrade.later += chunk.toString("latin1")));
      socket.resume();
      socket.end("HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: test\r\n\r\nswitched");
    },
    clientError: (reason) => clientErrors.push(reason),
    closeAfterResponse: () => false,
  });
  const sockets = new Set<Socket>();
  const server = createNetServer((socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    relay.serve(socket);
  });
  const port = await listen(server);
  const handle = {
    port,
    pool,
    decided,
    judged,
    sockets,
    clientErrors,
    upgrades,
    statuses,
    serve: (socket: Socket) => relay.serve(socket),
    close: async () => {
      relay.close();
      pool.close();
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  running.push(handle);
  return handle;
}

async function startServer(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ port: number; requests: IncomingMessage[] }> {
  const requests: IncomingMessage[] = [];
  const server = createHttpServer((req, res) => {
    requests.push(req);
    handler(req, res);
  });
  server.keepAliveTimeout = 30_000;
  const port = await listen(server);
  running.push({ close: () => new Promise<void>((resolve) => (server.closeAllConnections(), server.close(() => resolve()))) });
  return { port, requests };
}

/** Reads a request body to its end: its size and SHA-256 (hex). */
function readBody(req: IncomingMessage, onEnd: (size: number, sha256: string) => void): void {
  const hash = createHash("sha256");
  let size = 0;
  req.on("data", (c: Buffer) => {
    hash.update(c);
    size += c.length;
  });
  req.on("end", () => onEnd(size, hash.digest("hex")));
}

/** A raw upstream: `onRequest` gets each socket and the bytes received so far, and writes what it likes. */
async function startRawServer(onData: (socket: Socket, received: string) => void): Promise<{ port: number; connections: number }> {
  const state = { port: 0, connections: 0 };
  const sockets = new Set<Socket>();
  const server = createNetServer((socket) => {
    state.connections++;
    sockets.add(socket);
    let received = "";
    socket.on("data", (d: Buffer) => {
      received += d.toString("latin1");
      onData(socket, received);
    });
    socket.on("error", () => undefined);
  });
  state.port = await listen(server);
  running.push({
    close: () => {
      for (const socket of sockets) socket.destroy();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  });
  return state;
}

/** Writes `request` on a new connection and reads until `complete(text)` or the connection closes. */
function raw(port: number, request: string | Buffer, complete: (text: string) => boolean = () => false, timeoutMs = 5000): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host: "127.0.0.1", port });
    let text = "";
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no complete answer in ${timeoutMs} ms; got ${JSON.stringify(text)}`));
    }, timeoutMs);
    const finish = (closed: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ text, closed });
    };
    socket.on("data", (d: Buffer) => {
      text += d.toString("latin1");
      if (complete(text)) finish(false);
    });
    socket.on("close", () => finish(true));
    socket.on("error", () => undefined);
    socket.write(request);
  });
}

const count = (text: string, needle: string) => text.split(needle).length - 1;

/** A client connection in memory that collects what the relay answers; destroyed after the test. */
function collectingClient(): { client: Duplex; received: () => string } {
  let received = "";
  const client = new Duplex({
    read() {},
    write(chunk: Buffer, _encoding, callback) {
      received += chunk.toString("latin1");
      callback();
    },
  });
  client.on("error", () => undefined);
  running.push({ close: () => void client.destroy() });
  return { client, received: () => received };
}

describe("llhttp adapter", () => {
  it("passes its start-up self-check on this Node", () => {
    expect(() => checkHttp1Parser()).not.toThrow();
  });

  it.each([
    ["Content-Length with Transfer-Encoding", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "HPE_INVALID_TRANSFER_ENCODING"],
    ["two different Content-Lengths", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcd", "HPE_UNEXPECTED_CONTENT_LENGTH"],
    ["a bare LF inside a header value", "GET / HTTP/1.1\r\nX: a\nb\r\n\r\n", "HPE_CR_EXPECTED"],
    ["a request TE that is not chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", "HPE_INVALID_TRANSFER_ENCODING"],
    ["obs-fold", "GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", "HPE_INVALID_HEADER_TOKEN"],
  ])("refuses %s (request smuggling vectors)", (_name, text, code) => {
    const heads: MessageHead[] = [];
    const parser = createMessageParser("request", 16 * 1024, { onHead: (h) => (heads.push(h), false), onBody: () => undefined, onComplete: () => undefined });
    const result = parser.execute(Buffer.from(text, "latin1"));
    parser.close();
    expect(typeof result).toBe("object");
    expect((result as { code: string }).code).toBe(code);
  });

  it("hands on a large Content-Length body as slices of the input wherever the chunks split, never parsing it as HTTP", () => {
    // Bodies of 16 KiB and more bypass llhttp; the second one carries a request of its own.
    const filler = "x".repeat(20_000);
    const hidden = `GET /hidden HTTP/1.1\r\nHost: a\r\n\r\n${filler}`;
    const text = `POST /one HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloPOST /two HTTP/1.1\r\nHost: a\r\nContent-Length: ${hidden.length}\r\n\r\n${hidden}GET /three HTTP/1.1\r\nHost: a\r\n\r\n`;
    const stream = Buffer.from(text, "latin1");
    const expected = ["head POST /one", "body hello", "done", "head POST /two", `body ${hidden}`, "done", "head GET /three", "done"];
    const bodyStart = text.indexOf("GET /hidden");
    const bodyEnd = bodyStart + hidden.length;
    const splits = new Set<number>();
    for (let i = 0; i <= bodyStart + 40; i++) splits.add(i);
    for (let i = bodyEnd - 40; i <= stream.length; i++) splits.add(i);
    for (let i = bodyStart; i < bodyEnd; i += 997) splits.add(i);
    let sliced = 0;
    for (const split of splits) {
      const events: string[] = [];
      let body = "";
      const parser = createMessageParser("request", 16 * 1024, {
        onHead: (h) => (events.push(`head ${h.method} ${h.url}`), false),
        onBody: (chunk) => {
          if (chunk.buffer === stream.buffer) sliced++;
          body += chunk.toString("latin1");
        },
        onComplete: () => {
          if (body !== "") events.push(`body ${body}`);
          body = "";
          events.push("done");
        },
      });
      const first = parser.execute(stream.subarray(0, split));
      const second = parser.execute(stream.subarray(split));
      parser.close();
      expect([first, second]).toEqual([split, stream.length - split]);
      expect(events).toEqual(expected);
    }
    // Every run handed the large body on as slices of the input (not copies).
    expect(sliced).toBeGreaterThanOrEqual(splits.size);
  });

  it("reports a Content-Length body cut short by the end of the stream", () => {
    const parser = createMessageParser("response", 16 * 1024, { onHead: () => false, onBody: () => undefined, onComplete: () => undefined });
    expect(parser.execute(Buffer.from("HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\nabc"))).toBe(46);
    expect(parser.finish()?.code).toBe("HPE_INVALID_EOF_STATE");
    parser.close();
  });

  it("keeps header names and order as sent, more than 32 of them, and reads trailers", () => {
    const heads: MessageHead[] = [];
    const trailers: (readonly string[])[] = [];
    const names = Array.from({ length: 50 }, (_, i) => `X-Header-${i}`);
    const parser = createMessageParser("request", 16 * 1024, { onHead: (h) => (heads.push(h), false), onBody: () => undefined, onComplete: (t) => trailers.push(t) });
    const text = `PUT /p?q=1 HTTP/1.1\r\n${names.map((n, i) => `${n}: ${i}\r\n`).join("")}Transfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nChecksum: abc\r\n\r\n`;
    expect(parser.execute(Buffer.from(text))).toBe(text.length);
    parser.close();
    expect(heads[0]!.method).toBe("PUT");
    expect(heads[0]!.url).toBe("/p?q=1");
    expect(heads[0]!.rawHeaders.filter((_, i) => i % 2 === 0)).toEqual([...names, "Transfer-Encoding"]);
    expect(trailers).toEqual([["Checksum", "abc"]]);
  });
});

describe("HTTP/1.1 relay", () => {
  let app: HttpApp;
  beforeAll(async () => {
    app = await startHttpApp();
  });
  afterAll(async () => {
    await app.close();
  });

  it("forwards requests from curl with the added header, drops a caller's XFCC and hop-by-hop fields, keeps the connection", async () => {
    const relay = await startRelay(app.port);
    const url = `http://127.0.0.1:${relay.port}`;
    const result = await exec("curl", ["-sS", "-H", "X-Forwarded-Client-Cert: By=forged", "-H", "Connection: keep-alive, X-Secret-Hop", "-H", "X-Secret-Hop: 1", "-H", "X-Keep: yes", `${url}/a`, `${url}/b?c=d`, "-w", "\\n%{num_connects}\\n"]);
    expect(result.code).toBe(0);
    const [first, second] = result.stdout.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as { url: string; headers: Record<string, string> });
    expect(first!.url).toBe("/a");
    expect(second!.url).toBe("/b?c=d");
    expect(first!.headers["x-forwarded-client-cert"]).toBe("By=spiffe://td/ns/default/b;URI=spiffe://td/ns/default/a");
    expect(first!.headers["x-keep"]).toBe("yes");
    expect(first!.headers["x-secret-hop"]).toBeUndefined();
    // curl reused its connection for the second URL: the relay kept it open.
    expect(result.stdout.trim().split("\n").pop()).toBe("0");
    expect(relay.statuses).toEqual([200, 200]);
  });

  it("answers pipelined requests in order on one connection, the slow one first", async () => {
    const relay = await startRelay(app.port);
    const { text } = await raw(relay.port, "GET /slow?ms=300 HTTP/1.1\r\nHost: a\r\n\r\nGET /fast HTTP/1.1\r\nHost: a\r\n\r\nGET /deny HTTP/1.1\r\nHost: a\r\n\r\n", (t) => count(t, "HTTP/1.1 ") === 3 && t.endsWith("\n"));
    const slow = text.indexOf('"url":"/slow?ms=300"');
    const fast = text.indexOf('"url":"/fast"');
    expect(slow).toBeGreaterThan(0);
    expect(fast).toBeGreaterThan(slow);
    expect(text.indexOf("HTTP/1.1 403")).toBeGreaterThan(fast);
  });

  it("re-chunks a chunked upload with its trailers, and relays a chunked response with trailers (trailers survive)", async () => {
    const upstream = await startServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        res.writeHead(200, { "transfer-encoding": "chunked", trailer: "x-sum" });
        res.write(Buffer.concat(chunks).toString().toUpperCase());
        res.addTrailers({ "x-sum": `got-${req.trailers["x-upload-sum"]}` });
        res.end();
      });
    });
    const relay = await startRelay(upstream.port);
    const { text } = await raw(relay.port, "POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: x-upload-sum\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nx-upload-sum: 11\r\n\r\n", (t) => t.endsWith("\r\n\r\n") && t.includes("\r\n0\r\n"));
    expect(text).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(text.toLowerCase()).toContain("transfer-encoding: chunked\r\n");
    expect(text).toContain("b\r\nHELLO WORLD\r\n0\r\nx-sum: got-11\r\n\r\n");
  });

  it("re-chunks a close-delimited upstream body for an HTTP/1.1 client, and sends it close-delimited to an HTTP/1.0 client", async () => {
    const upstream = await startRawServer((socket, received) => {
      if (received.includes("\r\n\r\n")) socket.end("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nuntil the end");
    });
    const relay = await startRelay(upstream.port);
    const http11 = await raw(relay.port, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", (t) => t.endsWith("0\r\n\r\n"));
    expect(http11.text.toLowerCase()).toContain("transfer-encoding: chunked");
    expect(http11.text).toContain("d\r\nuntil the end\r\n0\r\n\r\n");
    expect(http11.closed).toBe(false);
    const http10 = await raw(relay.port, "GET / HTTP/1.0\r\nHost: a\r\n\r\n");
    expect(http10.closed).toBe(true);
    expect(http10.text.toLowerCase()).not.toContain("transfer-encoding");
    expect(http10.text.toLowerCase()).toContain("connection: close");
    expect(http10.text.endsWith("\r\n\r\nuntil the end")).toBe(true);
  });

  it("keeps an HTTP/1.0 client's keep-alive, and reads HEAD, 204 and 304 answers without a body", async () => {
    const upstream = await startServer((req, res) => {
      if (req.url === "/none") return void res.writeHead(204).end();
      if (req.url === "/same") return void res.writeHead(304, { etag: '"x"' }).end();
      res.writeHead(200, { "content-type": "text/plain", "content-length": "5" });
      res.end(req.method === "HEAD" ? undefined : "hello");
    });
    const relay = await startRelay(upstream.port);
    const { text, closed } = await raw(
      relay.port,
      "HEAD /h HTTP/1.1\r\nHost: a\r\n\r\nGET /none HTTP/1.1\r\nHost: a\r\n\r\nGET /same HTTP/1.1\r\nHost: a\r\n\r\nGET /g HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
      (t) => t.endsWith("hello"),
    );
    expect(closed).toBe(false);
    const answers = text.split(/(?=HTTP\/1\.1 )/);
    expect(answers.map((a) => a.slice(0, 12))).toEqual(["HTTP/1.1 200", "HTTP/1.1 204", "HTTP/1.1 304", "HTTP/1.1 200"]);
    expect(answers[0]!.toLowerCase()).toContain("content-length: 5\r\n");
    expect(answers[0]!.endsWith("\r\n\r\n")).toBe(true);
    expect(answers[3]!.toLowerCase()).toContain("connection: keep-alive\r\n");
  });

  it("relays 100 Continue to curl and the upload that follows it", async () => {
    const upstream = await startServer((req, res) => readBody(req, (_size, sha256) => res.end(sha256)));
    const relay = await startRelay(upstream.port);
    const body = Buffer.alloc(300_000, 7);
    const result = await exec("curl", ["-sS", "-v", "-H", "Expect: 100-continue", "--data-binary", "@-", `http://127.0.0.1:${relay.port}/upload`], { input: body });
    expect(result.code).toBe(0);
    expect(result.stderr).toContain("HTTP/1.1 100 Continue");
    expect(result.stdout).toBe(createHash("sha256").update(body).digest("hex"));
  });

  it.each([
    ["chunked", true],
    ["Content-Length", false],
  ])("moves 24 MiB each way with backpressure, byte for byte, bodies %s (curl)", async (_framing, chunked) => {
    const upstream = await startServer((req, res) => {
      readBody(req, (size, sha256) => {
        res.writeHead(200, { "x-upload-sha256": sha256, "x-upload-size": String(size), ...(chunked ? {} : { "content-length": String(24 << 20) }) });
        const block = Buffer.alloc(1 << 20);
        let sent = 0;
        const pump = () => {
          while (sent < 24) {
            block.fill(sent);
            sent++;
            if (!res.write(Buffer.from(block))) return void res.once("drain", pump);
          }
          res.end();
        };
        pump();
      });
    });
    const relay = await startRelay(upstream.port);
    const dir = mkdtempSync(join(tmpdir(), "meshward-relay-"));
    try {
      const upload = Buffer.alloc(24 << 20, 3);
      writeFileSync(join(dir, "upload"), upload);
      const result = await exec("curl", ["-sS", "-D", join(dir, "headers"), "-o", join(dir, "download"), ...(chunked ? ["-H", "Transfer-Encoding: chunked"] : []), "--data-binary", `@${join(dir, "upload")}`, `http://127.0.0.1:${relay.port}/x`], { timeoutMs: 60_000 });
      expect(result.code).toBe(0);
      const expected = createHash("sha256");
      for (let i = 0; i < 24; i++) expected.update(Buffer.alloc(1 << 20, i));
      expect(createHash("sha256").update(readFileSync(join(dir, "download"))).digest("hex")).toBe(expected.digest("hex"));
      const headers = readFileSync(join(dir, "headers"), "utf8");
      expect(headers).toContain(`x-upload-sha256: ${createHash("sha256").update(upload).digest("hex")}`);
      expect(headers).toContain(`x-upload-size: ${24 << 20}`);
      expect(headers.toLowerCase()).toContain(chunked ? "transfer-encoding: chunked" : `content-length: ${24 << 20}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);

  it("relays a long pipelined mix of bodies byte-exact however the client's writes are split (seeded, 5 rounds)", async () => {
    const upstream = await startServer((req, res) => {
      readBody(req, (size, sha256) => {
        const trailer = req.trailers["x-t"];
        const body = `${req.method} ${req.url} ${size} ${sha256.slice(0, 16)}${trailer ? ` t=${trailer}` : ""}`;
        // Answers alternate between a known length and chunked, so both framings go back too.
        if (size % 2 === 0) res.writeHead(200, { "content-length": Buffer.byteLength(body) }).end(body);
        else res.writeHead(200).end(body);
      });
    });
    const relay = await startRelay(upstream.port);
    let seed = 20261123;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let round = 0; round < 5; round++) {
      const expected: string[] = [];
      const parts: Buffer[] = [];
      for (let i = 0; i < 12; i++) {
        const size = [0, 1, 700, 20_000, 70_001][Math.floor(random() * 5)]!;
        const body = Buffer.alloc(size, 97 + ((round + i) % 26));
        const digest = createHash("sha256").update(body).digest("hex").slice(0, 16);
        const path = `/r${round}/${i}`;
        if (size === 0 && random() < 0.5) {
          parts.push(Buffer.from(`GET ${path} HTTP/1.1\r\nHost: a\r\n\r\n`));
          expected.push(`GET ${path} 0 ${createHash("sha256").digest("hex").slice(0, 16)}`);
        } else if (random() < 0.5) {
          parts.push(Buffer.from(`POST ${path} HTTP/1.1\r\nHost: a\r\nContent-Length: ${size}\r\n\r\n`), body);
          expected.push(`POST ${path} ${size} ${digest}`);
        } else {
          const half = Math.floor(size / 2);
          parts.push(Buffer.from(`PUT ${path} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n`));
          for (const piece of [body.subarray(0, half), body.subarray(half)]) if (piece.length > 0) parts.push(Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from("\r\n"));
          parts.push(Buffer.from(`0\r\nx-t: ${i}\r\n\r\n`));
          expected.push(`PUT ${path} ${size} ${digest} t=${i}`);
        }
      }
      const stream = Buffer.concat(parts);
      const answers = await new Promise<string>((resolve, reject) => {
        const socket = netConnect({ host: "127.0.0.1", port: relay.port });
        let text = "";
        const timer = setTimeout(() => (socket.destroy(), reject(new Error(`round ${round}: only ${text.length} bytes back: ${JSON.stringify(text.replace(/\r\n(date|Date): [^\r]*/g, ""))} expected ${JSON.stringify(expected)}`))), 15_000);
        socket.on("data", (d: Buffer) => {
          text += d.toString("latin1");
          if (expected.every((line) => text.includes(line))) {
            clearTimeout(timer);
            socket.destroy();
            resolve(text);
          }
        });
        socket.on("error", reject);
        // Random write sizes, some with a pause between them.
        let at = 0;
        const next = () => {
          if (at >= stream.length) return;
          const size = 1 + Math.floor(random() * (random() < 0.3 ? 8 : 40_000));
          socket.write(stream.subarray(at, at + size));
          at += size;
          if (random() < 0.2) setTimeout(next, 1);
          else next();
        };
        next();
      });
      const positions = expected.map((line) => answers.indexOf(line));
      expect(positions.every((p, i) => p > 0 && (i === 0 || p > positions[i - 1]!))).toBe(true);
      expect(answers.split("HTTP/1.1 200 OK").length - 1).toBe(expected.length);
    }
  }, 60_000);

  // The parser stops after the head of a request that has to wait (bounds MEDIUM-5) and resumes
  // there once it is next: the reads below end exactly at that point, inside a body, inside a
  // head, or after every byte. Before, a request whose head ended a read while another was being
  // answered never got its body read (reading stayed paused once it was started).
  it("answers pipelined requests in order however the reads split them, a head ending a read exactly where the parser stops included", async () => {
    const gates: (() => void)[] = [];
    const upstream = await startServer((req, res) => {
      readBody(req, (size, sha256) => {
        const answer = () => res.end(`${req.method} ${req.url} ${size} ${sha256.slice(0, 16)}`);
        if (req.url === "/gate") gates.push(answer);
        else answer();
      });
    });
    const relay = await startRelay(upstream.port);
    const sha = (text: string) => createHash("sha256").update(text).digest("hex").slice(0, 16);
    const first = "GET /gate HTTP/1.1\r\nHost: a\r\n\r\nPOST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n";
    const rest = ["hello", "worldGET /deny HTTP/1.1\r\nHost: a\r\n\r\nPUT /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /d HTTP/1.1\r\nHo", "st: a\r\n\r\nGET /e HTTP/1.1\r\nHost: a\r\n\r\n"];
    const expected = [`GET /gate 0 ${sha("")}`, `POST /b 10 ${sha("helloworld")}`, "HTTP/1.1 403", `PUT /c 3 ${sha("abc")}`, `GET /d 0 ${sha("")}`, `GET /e 0 ${sha("")}`];
    const bytes = (text: string) => [...Buffer.from(text, "latin1")].map((byte) => Buffer.from([byte]));
    for (const [name, reads, later] of [
      // The first read ends with /b's head, where the parser stops; the rest comes while /gate is answered.
      ["cut at the stop", [Buffer.from(first)], rest.map((text) => Buffer.from(text))],
      ["one byte a read", bytes(first), bytes(rest.join(""))],
      ["one read", [Buffer.from(first + rest.join(""))], []],
    ] as const) {
      const { client, received: answers } = collectingClient();
      const forwarded = upstream.requests.length;
      relay.serve(client as unknown as Socket);
      for (const chunk of reads) client.push(chunk);
      await waitFor(`${name}: /gate at the upstream`, () => gates.length === 1, 5000, 10);
      for (const chunk of later) client.push(chunk);
      gates.pop()!();
      await waitFor(`${name}: every answer (${JSON.stringify(answers())})`, () => expected.every((line) => answers().includes(line)), 5000, 10);
      const positions = expected.map((line) => answers().indexOf(line));
      expect(positions.every((p, i) => i === 0 || p > positions[i - 1]!), name).toBe(true);
      expect(count(answers(), "HTTP/1.1 "), name).toBe(expected.length);
      expect(answers().toLowerCase(), name).not.toContain("connection: close");
      expect(upstream.requests.slice(forwarded).map((req) => req.url), name).toEqual(["/gate", "/b", "/c", "/d", "/e"]);
      expect(client.destroyed, name).toBe(false);
      client.destroy();
    }
  });

  it("refuses smuggling and oversized headers with 400/431 before anything reaches the upstream", async () => {
    const upstream = await startRawServer(() => undefined);
    const relay = await startRelay(upstream.port);
    const smuggle = await raw(relay.port, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n");
    expect(smuggle.text).toMatch(/^HTTP\/1\.1 400 /);
    expect(smuggle.closed).toBe(true);
    const big = await raw(relay.port, `GET / HTTP/1.1\r\nHost: a\r\nX-Big: ${"a".repeat(8000)}\r\n\r\n`);
    expect(big.text).toMatch(/^HTTP\/1\.1 431 /);
    expect(upstream.connections).toBe(0);
    expect(relay.decided).toHaveLength(0);
    expect(relay.clientErrors).toEqual(["bad_request", "header_too_large"]);
  });

  it("answers the requests read before bad bytes first (the app may be acting on them), then refuses, and reads nothing after a request that closes", async () => {
    // Found by the red team (test/security pipelined-after-http10 on h1-out, 2026-12-03): with a
    // pooled upstream connection at hand the first request is forwarded while its chunk is still
    // parsed; a parse error later in that chunk used to answer 400 in its place and drop the
    // app's answer, so the client was told "refused" for a request the app had carried out.
    const upstream = await startServer((req, res) => res.end(`ok ${req.url}`));
    const relay = await startRelay(upstream.port);
    const warm = await raw(relay.port, "GET /warm HTTP/1.1\r\nHost: a\r\n\r\n", (t) => t.includes("ok /warm"));
    expect(warm.text).toMatch(/^HTTP\/1\.1 200 /);
    const bad = await raw(relay.port, "GET /first HTTP/1.1\r\nHost: a\r\n\r\nGET /second HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    expect(bad.text).toMatch(/^HTTP\/1\.1 200 [^]*ok \/first[^]*HTTP\/1\.1 400 /);
    expect(bad.closed).toBe(true);
    // RFC 9112 §9.6: nothing after a request that closes the connection is processed (or refused).
    const closing = await raw(relay.port, "GET /third HTTP/1.0\r\nHost: a\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n");
    expect(closing.text).toMatch(/^HTTP\/1\.1 200 [^]*ok \/third$/);
    const closeOption = await raw(relay.port, "GET /fourth HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n");
    expect(closeOption.text).toMatch(/^HTTP\/1\.1 200 [^]*ok \/fourth$/);
    expect(upstream.requests.map((r) => r.url)).toEqual(["/warm", "/first", "/third", "/fourth"]);
    expect(relay.clientErrors).toEqual(["bad_request"]);
  });

  it("sends a bodiless request again when a reused upstream connection turns out closed, but never a request with a body", async () => {
    // An upstream that answers the first request of each connection keep-alive, and drops the
    // connection when a second one arrives on it: what a server closing idle connections does
    // when its close crosses our next request.
    const upstream = await startRawServer((socket, received) => {
      const heads = count(received, "\r\n\r\n");
      if (heads === 1 && !received.startsWith("POST") ) socket.write("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
      else if (heads === 1) return;
      else socket.destroy();
    });
    const relay = await startRelay(upstream.port);
    const first = await raw(relay.port, "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n", (t) => t.endsWith("ok"));
    expect(first.text).toMatch(/^HTTP\/1\.1 200/);
    const second = await raw(relay.port, "GET /2 HTTP/1.1\r\nHost: a\r\n\r\n", (t) => t.endsWith("ok"));
    expect(second.text).toMatch(/^HTTP\/1\.1 200/);
    expect(upstream.connections).toBe(2);
    // Connection 2 is pooled again; a POST on it is not repeated (it may have been acted on).
    const post = await raw(relay.port, "POST /3 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi");
    expect(post.text).toMatch(/^HTTP\/1\.1 503 /);
    expect(upstream.connections).toBe(2);
    expect(relay.statuses).toEqual([200, 200, 503]);
  });

  it("two pooled upstream connections closed together: a GET moves on to a new connection, a bodiless POST is not sent again", async () => {
    // Two connections are opened by two requests held until both arrived; each connection is
    // dropped when a second request arrives on it, as when an app closes its idle connections in
    // one go (a restart, one keep-alive timer for all). The pool hands out the second before its
    // close is read, so one attempt more than "once" is needed.
    const held: Socket[] = [];
    const answer = (socket: Socket) => socket.write("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    const upstream = await startRawServer((socket, received) => {
      const heads = count(received, "\r\n\r\n");
      if (heads !== 1) return void socket.destroy();
      if (upstream.connections > 2) return answer(socket);
      held.push(socket);
      if (held.length === 2) held.splice(0).forEach(answer);
    });
    const relay = await startRelay(upstream.port);
    const pair = await Promise.all(["/a", "/b"].map((path) => raw(relay.port, `GET ${path} HTTP/1.1\r\nHost: a\r\n\r\n`, (t) => t.endsWith("ok"))));
    expect(pair.map((r) => r.text.slice(0, 15))).toEqual(["HTTP/1.1 200 OK", "HTTP/1.1 200 OK"]);
    expect(relay.pool.size).toBe(2);

    const get = await raw(relay.port, "GET /c HTTP/1.1\r\nHost: a\r\n\r\n", (t) => t.endsWith("ok"));
    expect(get.text).toMatch(/^HTTP\/1\.1 200/);
    expect(upstream.connections).toBe(3);

    // RFC 9110 §9.2.2: a proxy never sends a non-idempotent request again, with or without a body.
    const post = await raw(relay.port, "POST /d HTTP/1.1\r\nHost: a\r\n\r\n");
    expect(post.text).toMatch(/^HTTP\/1\.1 503 /);
    expect(upstream.connections).toBe(3);
    expect(relay.statuses).toEqual([200, 200, 200, 503]);
  });

  it("gives up a pooled connection idle past the upstream's Keep-Alive timeout hint, before the upstream closes it", async () => {
    // A Node app with keepAliveTimeout 3 s announces `Keep-Alive: timeout=3` and closes an idle
    // connection then; the pool keeps connections 4 s, so without the hint a request at 1.7 s
    // idle would go out on a connection the app is about to close (the POST it carries then
    // fails: it is not sent again). With it the pool closes the connection after 1.5 s idle.
    const server = createHttpServer((_req, res) => res.end("ok"));
    server.keepAliveTimeout = 3_000;
    const ended: string[] = [];
    let connections = 0;
    server.on("connection", (socket: Socket) => {
      connections++;
      // Which side ended the connection: the pool's FIN ('end') or the app's own idle timer.
      socket.once("timeout", () => ended.push("app timeout"));
      socket.once("end", () => ended.push("relay closed"));
    });
    const port = await listen(server);
    running.push({ close: () => new Promise<void>((resolve) => (server.closeAllConnections(), server.close(() => resolve()))) });
    const relay = await startRelay(port);
    const first = await raw(relay.port, "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n", (t) => t.endsWith("ok"));
    expect(first.text).toMatch(/^HTTP\/1\.1 200/);
    await new Promise((resolve) => setTimeout(resolve, 1_700));
    const second = await raw(relay.port, "POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi", (t) => t.endsWith("ok"));
    expect(second.text).toMatch(/^HTTP\/1\.1 200/);
    expect(connections).toBe(2);
    await waitFor("the first connection to the app to end", () => ended.length > 0, 5_000, 20);
    expect(ended).toEqual(["relay closed"]);
  });

  it("answers 503 with a stable code when the upstream is down, and cuts the client when the upstream dies mid-response", async () => {
    const closed = await startRawServer(() => undefined);
    const down = await startRelay(await (async () => {
      const server = createNetServer();
      const port = await listen(server);
      await new Promise<void>((resolve) => server.close(() => resolve()));
      return port;
    })());
    const answer = await raw(down.port, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    expect(answer.text).toMatch(/^HTTP\/1\.1 503 /);
    expect(answer.text).toContain("x-meshward-error: E_UPSTREAM_UNREACHABLE");
    expect(answer.text).toContain("connection: close");
    expect(closed.connections).toBe(0);

    const dying = await startRawServer((socket, received) => {
      if (received.includes("\r\n\r\n")) {
        socket.write("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial");
        setTimeout(() => socket.destroy(), 30);
      }
    });
    const relay = await startRelay(dying.port);
    const cut = await raw(relay.port, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    expect(cut.closed).toBe(true);
    expect(cut.text).toContain("partial");
    expect(relay.statuses).toEqual([0]);
  });

  it("closes the connection after an answer given before the request body arrived (the upstream's early 413, the proxy's 403)", async () => {
    const upstream = await startServer((req, res) => {
      res.writeHead(413, { "content-type": "text/plain" });
      res.end("too big");
      req.resume();
    });
    const relay = await startRelay(upstream.port);
    const early = await raw(relay.port, "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\nstart of a long body");
    expect(early.text).toMatch(/^HTTP\/1\.1 413 /);
    expect(early.text.toLowerCase()).toContain("connection: close");
    expect(early.closed).toBe(true);
    const denied = await raw(relay.port, "POST /deny HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\nstart");
    expect(denied.text).toMatch(/^HTTP\/1\.1 403 /);
    expect(denied.text).toContain("connection: close");
    expect(denied.closed).toBe(true);
    // A denied request whose body was complete leaves the connection open.
    const open = await raw(relay.port, "POST /deny HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nok", (t) => t.endsWith("}\n"));
    expect(open.closed).toBe(false);
    expect(open.text).not.toContain("connection: close");
  });

  it("closes a plaintext connection whose client asked for close once the whole response is out, without waiting for the client's side", async () => {
    const relay = await startRelay(app.port);
    const client = netConnect({ host: "127.0.0.1", port: relay.port });
    let text = "";
    let serverEnded = false;
    client.on("data", (d: Buffer) => (text += d.toString("latin1")));
    client.on("end", () => (serverEnded = true)); // allowHalfOpen is off: Node ends our side too, after this
    client.on("error", () => undefined);
    running.push({ close: () => void client.destroy() });
    client.write("GET /fast-close HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    await waitFor("the relay to close its side", () => serverEnded && relay.sockets.size === 0, 5000, 10);
    expect(text).toMatch(/^HTTP\/1\.1 200 /);
    expect(text.toLowerCase()).toContain("connection: close");
    expect(text).toContain('"url":"/fast-close"');
    expect(relay.statuses).toEqual([200]);
  });

  it("keeps a closing connection until a client too slow to read has taken the whole response, past the close grace", async () => {
    // A stream stands in for the client socket: loopback sockets autotune their buffers to
    // megabytes and Node cannot shrink them, so a real reader cannot make the relay hold the
    // end of a response in its own buffer. This one takes nothing until released.
    const body = "b".repeat(12 * 1024);
    const upstream = await startServer((_req, res) => {
      res.writeHead(200, { "content-type": "text/plain", "content-length": body.length });
      res.end(body);
    });
    const relay = await startRelay(upstream.port, { headersTimeout: 400 }); // the sweeper then runs every 100 ms
    const held: (() => void)[] = [];
    let received = "";
    let reading = false;
    let finished = false;
    const client = new Duplex({
      read() {},
      write(chunk: Buffer, _encoding, callback) {
        received += chunk.toString("latin1");
        if (reading) callback();
        else held.push(() => callback());
      },
      final(callback) {
        finished = true;
        callback();
      },
    });
    relay.serve(client as unknown as Socket);
    client.push("GET /slow HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    await waitFor("the upstream's response", () => relay.statuses.length === 1, 5000, 10);
    await new Promise((resolve) => setTimeout(resolve, 1500)); // past CLOSE_GRACE_MS (1 s) and a sweep
    expect(client.destroyed).toBe(false);
    expect(finished).toBe(false);
    reading = true;
    for (const release of held.splice(0)) release();
    await waitFor("the relay to end the connection", () => finished, 5000, 10);
    expect(received).toMatch(/^HTTP\/1\.1 200 /);
    expect(received.endsWith(`\r\n\r\n${body}`)).toBe(true);
    await waitFor("the relay to destroy the connection after the grace", () => client.destroyed, 5000, 50);
  });

  it("answers 500 when deciding a request throws, and keeps serving the connection", async () => {
    const relay = await startRelay(app.port);
    const { text, closed } = await raw(relay.port, "GET /boom HTTP/1.1\r\nHost: a\r\n\r\nGET /after HTTP/1.1\r\nHost: a\r\n\r\n", (t) => t.includes('"url":"/after"'));
    expect(text).toMatch(/^HTTP\/1\.1 500 /);
    expect(text).toContain("E_INTERNAL");
    expect(closed).toBe(false);
  });

  it("hands an Upgrade request over with the bytes that followed its head, after the requests before it", async () => {
    const relay = await startRelay(app.port);
    const { text } = await raw(relay.port, "GET /before HTTP/1.1\r\nHost: a\r\n\r\nGET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\nearly-frame", (t) => t.endsWith("switched"));
    expect(text.indexOf('"url":"/before"')).toBeGreaterThan(0);
    expect(text.indexOf("HTTP/1.1 101")).toBeGreaterThan(text.indexOf('"url":"/before"'));
    expect(relay.upgrades).toHaveLength(1);
    expect(relay.upgrades[0]!.head.url).toBe("/ws");
    expect(relay.upgrades[0]!.rest).toBe("early-frame");
  });

  // Nothing is read from the client after an Upgrade head until the callee has the socket: a
  // pipelined request with a body before it, forwarded once the request ahead was answered, used
  // to resume reading (its body had waited) with nobody listening, and the bytes that came then
  // were lost to the callee.
  it("reads nothing past an Upgrade head queued behind requests, a body forwarded late included: the callee gets every byte after it", async () => {
    const gates: (() => void)[] = [];
    const upstream = await startServer((req, res) => {
      readBody(req, (size) => {
        const answer = () => res.end(`${req.method} ${req.url} ${size}`);
        if (req.url === "/gate") gates.push(answer);
        else answer();
      });
    });
    const relay = await startRelay(upstream.port);
    const { client, received: answers } = collectingClient();
    relay.serve(client as unknown as Socket);
    client.push(Buffer.from("GET /gate HTTP/1.1\r\nHost: a\r\n\r\nPOST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\nearly-frame"));
    await waitFor("/gate at the upstream", () => gates.length === 1, 5000, 10);
    client.push(Buffer.from("late-frame"));
    gates.pop()!();
    await waitFor(`the hand-over (${JSON.stringify(answers())})`, () => answers().endsWith("switched"), 5000, 10);
    expect(answers().indexOf("POST /b 5")).toBeGreaterThan(answers().indexOf("GET /gate 0"));
    expect(answers().indexOf("HTTP/1.1 101")).toBeGreaterThan(answers().indexOf("POST /b 5"));
    expect(relay.upgrades.map(({ head, rest }) => [head.url, rest])).toEqual([["/ws", "early-frame"]]);
    await waitFor(`the late bytes at the callee (${JSON.stringify(relay.upgrades[0]!.later)})`, () => relay.upgrades[0]!.later === "late-frame", 2000, 10);
  });

  it("closes an idle keep-alive connection after idleTimeout, and a slow head after headersTimeout with 408", async () => {
    const relay = await startRelay(app.port, { idleTimeout: 300, headersTimeout: 300 });
    const idle = await raw(relay.port, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", () => false, 5000);
    expect(idle.closed).toBe(true);
    expect(idle.text).toMatch(/^HTTP\/1\.1 200/);
    const slow = await raw(relay.port, "GET / HTTP/1.1\r\nHost: a\r\n", () => false, 5000);
    expect(slow.text).toMatch(/^HTTP\/1\.1 408 /);
    expect(relay.clientErrors).toEqual(["header_timeout"]);
  });

  it("times a pipelined head that arrived half with the request before it from its first byte: 408 after headersTimeout without another read", async () => {
    // Before, the head timer only started with the read after (never, here): the half head sat
    // until idleTimeout closed the connection silently (30 s here), past the 5 s this waits.
    const relay = await startRelay(app.port, { idleTimeout: 30_000, headersTimeout: 300 });
    const half = await raw(relay.port, "GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHo", () => false, 5000);
    expect(half.closed).toBe(true);
    expect(count(half.text, "HTTP/1.1 200")).toBe(1);
    expect(half.text).toMatch(/\r\n\r\n[^]*HTTP\/1\.1 408 /);
    // The same after a request that waited its turn (its bytes held, parsed when it was next).
    const held = await raw(relay.port, "GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\nGET /three HTTP/1.1\r\nHo", () => false, 5000);
    expect(held.closed).toBe(true);
    expect(count(held.text, "HTTP/1.1 200")).toBe(2);
    expect(held.text).toMatch(/HTTP\/1\.1 408 /);
    expect(relay.decided.map((head) => head.url)).toEqual(["/one", "/one", "/two"]);
    expect(relay.clientErrors).toEqual(["header_timeout", "header_timeout"]);
  });

  it("forwards the canonical target it judged, and refuses ambiguous targets and Host fields with 400 before anything is decided", async () => {
    const upstream = await startServer((req, res) => res.end(`${req.method} ${req.url} host=${req.headers.host}`));
    const relay = await startRelay(upstream.port);
    const ok = (text: string) => /\r\n\r\n.+$/s.test(text);
    const dotted = await raw(relay.port, "GET /items/%2e%2e/admin//x?q=%2F HTTP/1.1\r\nHost: a\r\n\r\n", ok);
    expect(dotted.text).toMatch(/GET \/admin\/x\?q=%2F host=a$/);
    const absolute = await raw(relay.port, "GET http://a/admin/x HTTP/1.1\r\nHost: a\r\n\r\n", ok);
    expect(absolute.text).toMatch(/GET \/admin\/x host=a$/);
    expect(relay.judged).toEqual(["/admin/x?q=%2F", "/admin/x"]);
    for (const bad of [
      "GET /items/..%2fadmin/x HTTP/1.1\r\nHost: a\r\n\r\n",
      "GET /items/1\\..\\..\\admin HTTP/1.1\r\nHost: a\r\n\r\n",
      "GET /items/..;/admin HTTP/1.1\r\nHost: a\r\n\r\n",
      "GET /items/%00 HTTP/1.1\r\nHost: a\r\n\r\n",
      "GET * HTTP/1.1\r\nHost: a\r\n\r\n",
      "GET http://b/admin HTTP/1.1\r\nHost: a\r\n\r\n",
      "GET /items HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    ]) {
      const refused = await raw(relay.port, bad);
      expect(refused.text, bad).toMatch(/^HTTP\/1\.1 400 /);
      expect(refused.closed).toBe(true);
    }
    expect(relay.judged).toHaveLength(2);
    expect(upstream.requests).toHaveLength(2);
  });

  it("counts a head as forwarded, so that many empty fields under llhttp's own count still get 431", async () => {
    const upstream = await startRawServer(() => undefined);
    const relay = await startRelay(upstream.port);
    // 1,500 fields of 1 byte: llhttp counts 1,500 bytes, the head takes ~7,500 (limit 4,096).
    const many = await raw(relay.port, `GET / HTTP/1.1\r\nHost: a\r\n${"X:\r\n".repeat(1500)}\r\n`);
    expect(many.text).toMatch(/^HTTP\/1\.1 431 /);
    expect(upstream.connections).toBe(0);
  });

  it("counts a trailer section the same way: many empty trailer fields get 431 and the app never sees the body's end; a few are forwarded", async () => {
    // Each upstream connection's bytes, and whether it is still open.
    const upstreamConnections: { text: string; open: boolean }[] = [];
    const seen = new WeakMap<Socket, { text: string; open: boolean }>();
    const upstream = await startRawServer((socket, text) => {
      let entry = seen.get(socket);
      if (entry === undefined) {
        const created = { text, open: true };
        entry = created;
        seen.set(socket, created);
        upstreamConnections.push(created);
        socket.once("close", () => (created.open = false));
      }
      entry.text = text;
      const request = text.slice(text.lastIndexOf("POST /upload"));
      if (request.endsWith("\r\n\r\n") && request.includes("\r\n0\r\n")) socket.write("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    });
    const completeRequests = () => upstreamConnections.reduce((n, c) => n + count(c.text, "\r\n0\r\n"), 0);
    const relay = await startRelay(upstream.port);
    const head = "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n";
    const few = await raw(relay.port, `${head}0\r\n${"X-Checksum: 1\r\n".repeat(10)}\r\n`, (text) => text.endsWith("ok"));
    expect(few.text).toMatch(/^HTTP\/1\.1 200 /);
    expect(completeRequests()).toBe(1);
    expect(upstreamConnections.reduce((n, c) => n + count(c.text, "X-Checksum: 1\r\n"), 0)).toBe(10);

    // The head and body first, forwarded at once; then 1,500 empty trailer fields: llhttp counts
    // 1,500 bytes (limit 4,096), the section takes 7,502.
    const client = netConnect({ host: "127.0.0.1", port: relay.port });
    running.push({ close: () => void client.destroy() });
    let answer = "";
    client.on("data", (d: Buffer) => (answer += d.toString("latin1")));
    const clientClosed = new Promise<void>((resolve) => client.once("close", () => resolve()));
    client.write(head);
    await waitFor("the body to reach the upstream", () => upstreamConnections.some((c) => c.text.endsWith("3\r\nabc\r\n")), 5000);
    client.write(`0\r\n${"X:\r\n".repeat(1500)}\r\n`);
    await clientClosed;
    expect(answer).toMatch(/^HTTP\/1\.1 431 /);
    expect(relay.clientErrors).toEqual(["header_too_large"]);
    await waitFor("the upstream connection that had the body to close", () => upstreamConnections.every((c) => !c.open || !c.text.endsWith("3\r\nabc\r\n")), 5000);
    expect(completeRequests()).toBe(1);
  });

  it("stops reading from a client that pipelines requests and never reads the answers, and answers them all once it reads", async () => {
    const upstream = await startRawServer(() => undefined);
    const relay = await startRelay(upstream.port);
    const request = "GET /deny HTTP/1.1\r\nHost: a\r\n\r\n";
    // Enough that the answers (~35 MB) overflow what loopback sockets buffer in the kernel.
    const total = 200_000;
    const client = netConnect({ host: "127.0.0.1", port: relay.port });
    running.push({ close: () => void client.destroy() });
    client.pause();
    await new Promise<void>((resolve) => client.once("connect", () => resolve()));
    client.write(request.repeat(total));
    let maxUnread = 0;
    const sample = () => {
      for (const socket of relay.sockets) maxUnread = Math.max(maxUnread, socket.writableLength);
    };
    const sampler = setInterval(sample, 5);
    const [server] = [...relay.sockets];
    // Reading stops once the answers back up: wait until bytesRead holds still for 500 ms (on a
    // busy machine the relay takes longer to get there), bounded so a relay that never stops
    // reading fails here rather than passing.
    let readBefore = -1;
    for (const deadline = Date.now() + 20_000; server!.bytesRead !== readBefore; ) {
      if (Date.now() > deadline) throw new Error(`the relay kept reading: ${server!.bytesRead} bytes of ${request.length * total}`);
      readBefore = server!.bytesRead;
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    sample();
    clearInterval(sampler);
    // Reading stopped (the kernel's buffers hold the rest) and what waits to be written is bounded.
    expect(readBefore).toBeLessThan(request.length * total);
    expect(maxUnread).toBeLessThan(128 * 1024);
    let answers = 0;
    let tail = "";
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`only ${answers} of ${total} answers`)), 30_000);
      client.on("data", (chunk: Buffer) => {
        const text = tail + chunk.toString("latin1");
        answers += count(text, "HTTP/1.1 403 ");
        tail = text.slice(-("HTTP/1.1 403 ".length - 1)); // too short to hold a whole one
        if (answers >= total) {
          clearTimeout(timer);
          resolve();
        }
      });
      client.resume();
    });
    expect(answers).toBe(total);
    expect(upstream.connections).toBe(0);
  }, 60_000);
});

// Found by review: once a request's head was in, no deadline applied. A POST that sent 1 of 100
// body bytes, and a GET whose large response the client never read, held their client and
// upstream connections until the age cap (for ever on a plaintext PERMISSIVE connection). An
// exchange on which no byte is read from or written to the client for idleTimeout now ends: 408
// while its body is due, 504 when the upstream sent no response, cut once the response started.
describe("HTTP/1.1 relay: an exchange idle for idleTimeout ends", () => {
  /** A raw upstream that keeps count of its open connections. */
  async function upstreamCounting(onData: (socket: Socket, received: string) => void = () => undefined): Promise<{ port: number; open: Set<Socket> }> {
    const open = new Set<Socket>();
    const server = createNetServer((socket) => {
      open.add(socket);
      socket.once("close", () => open.delete(socket));
      socket.on("error", () => undefined);
      let received = "";
      socket.on("data", (d: Buffer) => {
        received += d.toString("latin1");
        onData(socket, received);
      });
    });
    const port = await listen(server);
    running.push({
      close: () => {
        for (const socket of open) socket.destroy();
        return new Promise<void>((resolve) => server.close(() => resolve()));
      },
    });
    return { port, open };
  }

  it("answers 408 E_BODY_TIMEOUT to a request whose body stopped coming, and closes both connections", async () => {
    const upstream = await upstreamCounting();
    const relay = await startRelay(upstream.port, { idleTimeout: 300 });
    const answer = await raw(relay.port, "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nx", () => false, 15_000);
    expect(answer.closed).toBe(true);
    expect(answer.text).toMatch(/^HTTP\/1\.1 408 /);
    expect(answer.text).toContain("x-meshward-error: E_BODY_TIMEOUT");
    expect(relay.clientErrors).toEqual(["body_timeout"]);
    expect(relay.statuses).toEqual([408]);
    await waitFor("the upstream connection to close", () => upstream.open.size === 0, 15_000);
  }, 30_000);

  it("answers 504 E_UPSTREAM_TIMEOUT when the whole request is with an upstream that sends no response", async () => {
    const upstream = await upstreamCounting();
    const relay = await startRelay(upstream.port, { idleTimeout: 300 });
    const answer = await raw(relay.port, "GET /never HTTP/1.1\r\nHost: a\r\n\r\n", () => false, 15_000);
    expect(answer.closed).toBe(true);
    expect(answer.text).toMatch(/^HTTP\/1\.1 504 /);
    expect(answer.text).toContain("x-meshward-error: E_UPSTREAM_TIMEOUT");
    expect(relay.statuses).toEqual([504]);
    expect(relay.clientErrors).toEqual([]);
    await waitFor("the upstream connection to close", () => upstream.open.size === 0, 15_000);
  }, 30_000);

  it("cuts a client that stops reading a large response, and the upstream connection with it", async () => {
    const upstream = await upstreamCounting((socket, received) => {
      if (!received.includes("\r\n\r\n") || (socket as { answered?: boolean }).answered) return;
      (socket as { answered?: boolean }).answered = true;
      const size = 8 * 1024 * 1024;
      socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${size}\r\n\r\n`);
      socket.write(Buffer.alloc(size, 97));
    });
    const relay = await startRelay(upstream.port, { idleTimeout: 300 });
    // A stream stands in for the client socket (loopback buffers autotune to megabytes): it
    // takes nothing of what is written to it.
    const client = new Duplex({ read() {}, write(_chunk, _encoding, _callback) {} });
    client.on("error", () => undefined);
    running.push({ close: () => void client.destroy() });
    relay.serve(client as unknown as Socket);
    client.push("GET /big HTTP/1.1\r\nHost: a\r\n\r\n");
    await waitFor("the relay to cut the client", () => client.destroyed, 15_000);
    expect(relay.statuses).toEqual([0]);
    await waitFor("the upstream connection to close", () => upstream.open.size === 0, 15_000);
  }, 30_000);

  it("keeps an exchange whose body keeps coming, however long it takes in all", async () => {
    const upstream = await startServer((req, res) => readBody(req, (size) => res.end(`got ${size}`)));
    const relay = await startRelay(upstream.port, { idleTimeout: 1000 });
    const client = netConnect({ host: "127.0.0.1", port: relay.port });
    client.on("error", () => undefined);
    running.push({ close: () => void client.destroy() });
    let text = "";
    client.on("data", (d: Buffer) => (text += d.toString("latin1")));
    client.write("POST /drip HTTP/1.1\r\nHost: a\r\nContent-Length: 25\r\n\r\n");
    // A byte every 100 ms: 2.5 s in all, well past idleTimeout, never idle for a tenth of it.
    for (let i = 0; i < 25; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      client.write("x");
    }
    await waitFor("the answer", () => text.endsWith("got 25"), 15_000);
    expect(text).toMatch(/^HTTP\/1\.1 200 /);
    expect(relay.clientErrors).toEqual([]);
  }, 30_000);
});
