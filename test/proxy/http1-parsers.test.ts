import { describe, expect, it } from "vitest";
import { DEFAULT_HTTP1_PARSER, checkHttp1Parser, http1ParserSelfTest, preferredHttp1Parser, selectHttp1Parser } from "../../src/proxy/http1/llhttp.ts";
import { createNodeParser } from "../../src/proxy/http1/llhttp-node.ts";
import { createWasmParser } from "../../src/proxy/http1/llhttp-wasm.ts";
import { RAW_BODY_MIN, STOP_AFTER_HEAD } from "../../src/proxy/http1/message-parser.ts";
import type { MessageParserFactory } from "../../src/proxy/http1/message-parser.ts";
import { isMeshwardError } from "../../src/errors.ts";

// The two llhttp builds behind MessageParser (Node's own through _http_common, and the
// WebAssembly build undici ships: undici lib/dispatcher/client-h1.js drives the same module)
// must agree event for event, refusal for refusal, on the same bytes however they are split.

interface Case {
  readonly name: string;
  readonly kind: "request" | "response";
  readonly input: string;
  readonly maxHeaderBytes?: number;
  /** Responses to HEAD: onHead answers true. */
  readonly head?: boolean;
  /** Ends the stream after the input (close-delimited bodies, cut-short messages). */
  readonly finish?: boolean;
}

const many = Array.from({ length: 70 }, (_, i) => `X-Many-${i}: value ${i}\r\n`).join("");
const CASES: Case[] = [
  { name: "pipelined GETs", kind: "request", input: "GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b?x=1 HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n" },
  { name: "HTTP/1.0 without keep-alive", kind: "request", input: "GET / HTTP/1.0\r\nHost: h\r\n\r\n" },
  { name: "HTTP/1.0 keep-alive", kind: "request", input: "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" },
  { name: "Connection: close", kind: "request", input: "GET / HTTP/1.1\r\nConnection: close\r\n\r\n" },
  { name: "a body of known length", kind: "request", input: "POST /p HTTP/1.1\r\nContent-Length: 13\r\n\r\nhello, world!GET / HTTP/1.1\r\n\r\n" },
  { name: "chunked with extensions and trailers", kind: "request", input: "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t  \r\nX-Other: o\r\n\r\n" },
  { name: "header case, order, empty and padded values", kind: "request", input: "GET / HTTP/1.1\r\nHOST: h\r\nx-Empty:\r\nX-Pad:   v  \t \r\nx-empty2: \r\nx-a: 1\r\nX-A: 2\r\n\r\n" },
  { name: "more than 32 headers", kind: "request", input: `GET /${"p".repeat(300)} HTTP/1.1\r\n${many}\r\n` },
  { name: "latin1 bytes in a value", kind: "request", input: "GET / HTTP/1.1\r\nX-L: caf\u00e9\r\n\r\n" },
  { name: "a large body of known length (bypass)", kind: "request", input: `PUT /big HTTP/1.1\r\nContent-Length: 20000\r\n\r\n${"GET / HTTP/1.1\r\n\r\n".repeat(1000).slice(0, 20000)}GET /after HTTP/1.1\r\n\r\n` },
  { name: "upgrade stops after the head", kind: "request", input: "GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x05hello" },
  { name: "CONNECT stops after the head", kind: "request", input: "CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n\x16\x03\x01" },
  { name: "refused: CL and TE", kind: "request", input: "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" },
  { name: "refused: two Content-Lengths", kind: "request", input: "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab" },
  { name: "refused: Content-Length list", kind: "request", input: "POST / HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\na" },
  { name: "refused: bare LF", kind: "request", input: "GET / HTTP/1.1\nHost: h\n\n" },
  { name: "refused: bare LF in a header", kind: "request", input: "GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n" },
  { name: "refused: obs-fold", kind: "request", input: "GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n" },
  { name: "refused: TE not ending in chunked", kind: "request", input: "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n" },
  { name: "refused: TE identity", kind: "request", input: "POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n" },
  { name: "refused: space before the colon", kind: "request", input: "GET / HTTP/1.1\r\nHost : h\r\n\r\n" },
  { name: "refused: NUL in a value", kind: "request", input: "GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n" },
  { name: "refused: invalid method", kind: "request", input: "G@T / HTTP/1.1\r\n\r\n" },
  { name: "refused: invalid version", kind: "request", input: "GET / HTTP/1.2\r\n\r\n" },
  { name: "refused: bad chunk size", kind: "request", input: "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" },
  { name: "refused: chunk data without CRLF", kind: "request", input: "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhiXX0\r\n\r\n" },
  { name: "refused: chunk extensions over 16 KiB", kind: "request", input: `POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;a=${"x".repeat(17 * 1024)}\r\nb\r\n0\r\n\r\n` },
  { name: "refused: head over the limit", kind: "request", maxHeaderBytes: 1024, input: `GET / HTTP/1.1\r\nX: ${"v".repeat(1100)}\r\n\r\n` },
  { name: "refused: head at exactly the limit (Node refuses >=)", kind: "request", maxHeaderBytes: 10, input: "GET /12 HTTP/1.1\r\nab: cdefg\r\n\r\n" },
  { name: "accepted: head one byte under the limit", kind: "request", maxHeaderBytes: 11, input: "GET /12 HTTP/1.1\r\nab: cdefg\r\n\r\n" },
  { name: "refused: trailers over the limit", kind: "request", maxHeaderBytes: 64, input: `POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: ${"t".repeat(80)}\r\n\r\n` },
  { name: "response with a 13-byte body", kind: "response", input: "HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nhello, world!HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n" },
  { name: "response to HEAD skips the body", kind: "response", head: true, input: "HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n" },
  { name: "204 and 304 have no body", kind: "response", input: "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nHTTP/1.1 304 Not Modified\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" },
  { name: "a request, then half of the next head (begun, never completed)", kind: "request", input: "GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHo" },
  { name: "blank lines between pipelined requests are no message", kind: "request", input: "GET /one HTTP/1.1\r\nHost: a\r\n\r\n\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\n" },
  { name: "close-delimited response completes at finish", kind: "response", finish: true, input: "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end" },
  { name: "response cut short fails at finish", kind: "response", finish: true, input: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc" },
  { name: "chunked response with trailers", kind: "response", input: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nGrpc-Status: 0\r\n\r\n" },
  { name: "101 Switching Protocols stops after the head", kind: "response", input: "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nframes" },
  { name: "response without a reason phrase", kind: "response", input: "HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n" },
  { name: "refused: response with two Content-Lengths", kind: "response", input: "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab" },
  { name: "refused: response status out of range", kind: "response", input: "HTTP/1.1 99 X\r\n\r\n" },
];

/** Everything a parser reported, with bodies joined per message (chunk boundaries may differ). */
function run(create: MessageParserFactory, c: Case, sizes: (length: number) => number[]): string[] {
  const log: string[] = [];
  let body: Buffer[] = [];
  const parser = create(c.kind, c.maxHeaderBytes ?? 16 * 1024, {
    // Where each message starts: the relay's head clock (a head begun after the request before it, in one read).
    onMessageBegin: () => log.push("begin"),
    onHead: (h) => {
      log.push(`head ${JSON.stringify(h)}`);
      return c.head === true;
    },
    onBody: (chunk) => body.push(Buffer.from(chunk)),
    onComplete: (trailers) => {
      log.push(`body ${Buffer.concat(body).toString("latin1")}`, `complete ${JSON.stringify(trailers)}`);
      body = [];
    },
  });
  const bytes = Buffer.from(c.input, "latin1");
  let offset = 0;
  let stopped = false;
  for (const size of sizes(bytes.length)) {
    const chunk = bytes.subarray(offset, offset + size);
    offset += size;
    const result = parser.execute(chunk);
    if (typeof result !== "number") {
      log.push(`failure ${result.code}`);
      stopped = true;
      break;
    }
    if (result !== chunk.length) {
      log.push(`stopped ${offset - size + result}`);
      stopped = true;
      break;
    }
  }
  if (!stopped && c.finish === true) {
    const end = parser.finish();
    log.push(end === undefined ? "finished" : `finish failure ${end.code}`);
  }
  parser.close();
  return log;
}

const whole = (length: number) => [length];
const bytewise = (length: number) => Array.from({ length }, () => 1);
const thirds = (length: number) => [Math.floor(length / 3), Math.floor(length / 3), length - 2 * Math.floor(length / 3)];

describe("the two llhttp builds", () => {
  it("both pass the start-up self-check", () => {
    expect(http1ParserSelfTest(createNodeParser)).toBeUndefined();
    expect(http1ParserSelfTest(createWasmParser)).toBeUndefined();
  });

  for (const c of CASES) {
    it(`agree: ${c.name}`, () => {
      const reference = run(createNodeParser, c, whole);
      // Each case proves something: the refusals are refusals, the others parse to the end.
      if (c.name.startsWith("refused")) expect(reference.at(-1)).toMatch(/^failure HPE_/);
      else expect(reference.some((line) => line.startsWith("failure"))).toBe(false);
      expect(run(createWasmParser, c, whole)).toEqual(reference);
      expect(run(createWasmParser, c, thirds)).toEqual(run(createNodeParser, c, thirds));
      expect(run(createWasmParser, c, bytewise)).toEqual(run(createNodeParser, c, bytewise));
    });
  }

  it("the WebAssembly build refuses every smuggling case with Node's code", () => {
    const codes = CASES.filter((c) => c.name.startsWith("refused")).map((c) => [c.name, run(createWasmParser, c, whole).at(-1)]);
    expect(codes).toContainEqual(["refused: CL and TE", "failure HPE_INVALID_TRANSFER_ENCODING"]);
    expect(codes).toContainEqual(["refused: two Content-Lengths", "failure HPE_UNEXPECTED_CONTENT_LENGTH"]);
    expect(codes).toContainEqual(["refused: chunk extensions over 16 KiB", "failure HPE_CHUNK_EXTENSIONS_OVERFLOW"]);
    expect(codes).toContainEqual(["refused: head over the limit", "failure HPE_HEADER_OVERFLOW"]);
  });

  // Node's binding aborts the process on this (pool.ts defers its close); the WebAssembly
  // adapter must not free llhttp's struct while llhttp still runs over it.
  it("the WebAssembly parser closed from inside its own callback is freed after execute returns", () => {
    for (const create of [createWasmParser]) {
      let parser: ReturnType<MessageParserFactory> | undefined;
      const heads: string[] = [];
      parser = create("request", 1024, {
        onHead: (h) => (heads.push(h.url), false),
        onBody: () => undefined,
        onComplete: () => parser!.close(),
      });
      // The second request is not parsed: the parser was closed after the first.
      expect(parser.execute(Buffer.from("GET /x HTTP/1.1\r\n\r\nGET /y HTTP/1.1\r\n\r\n"))).toBe(19);
      expect(heads).toEqual(["/x"]);
      expect(parser.execute(Buffer.from("GET /z HTTP/1.1\r\n\r\n"))).toMatchObject({ code: "HPE_CLOSED_CONNECTION" });
      expect(parser.finish()).toBeUndefined();
    }
  });
});

/**
 * The relay stops the parser after the head of a request that has to wait, keeps the bytes
 * after it, and parses them once the request is next (bounds MEDIUM-5). Both builds stop at the
 * same byte, and resuming gives the events parsing straight through gives, wherever the input
 * was split; an empty chunk after a stop completes a bodiless message.
 */
describe("stopping after a head", () => {
  const large = "GET / HTTP/1.1\r\n\r\n".repeat(Math.ceil(RAW_BODY_MIN / 18)).slice(0, RAW_BODY_MIN + 5);
  const input = [
    "GET /a HTTP/1.1\r\nHost: h\r\n\r\n",
    "POST /b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
    "PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n0\r\nX-T: 1\r\n\r\n",
    `PUT /d HTTP/1.1\r\nContent-Length: ${large.length}\r\n\r\n${large}`,
    "GET /e HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    "\x81\x05hello",
  ].join("");

  /**
   * Feeds `input` split by `sizes`, onHead asking to stop after every head but the upgrade's. A
   * stop goes on with the rest of its chunk; one at a chunk's end with an empty chunk (as the
   * relay does when nothing more was read).
   */
  function drive(create: MessageParserFactory, sizes: (length: number) => number[], stop: boolean): { log: string[]; stops: number[]; end: number } {
    const log: string[] = [];
    const stops: number[] = [];
    let body: Buffer[] = [];
    let asked = false;
    const parser = create("request", 16 * 1024, {
      onHead: (h) => {
        log.push(`head ${h.method} ${h.url} ${JSON.stringify(h.rawHeaders)} ${h.upgrade}`);
        asked = stop && !h.upgrade;
        return asked ? STOP_AFTER_HEAD : false;
      },
      onBody: (chunk) => body.push(Buffer.from(chunk)),
      onComplete: (trailers) => {
        log.push(`body ${Buffer.concat(body).toString("latin1")}`, `complete ${JSON.stringify(trailers)}`);
        body = [];
      },
    });
    const bytes = Buffer.from(input, "latin1");
    let position = 0;
    let end = -1;
    outer: for (const size of sizes(bytes.length)) {
      let chunk = bytes.subarray(position, position + size);
      for (;;) {
        const result = parser.execute(chunk);
        if (typeof result !== "number") {
          log.push(`failure ${result.code}`);
          break outer;
        }
        position += result;
        if (asked) {
          asked = false;
          stops.push(position);
          chunk = chunk.subarray(result);
          continue; // an empty rest: the empty execute
        }
        if (result < chunk.length) {
          end = position; // after the upgrade head: the rest is not HTTP/1
          break outer;
        }
        break;
      }
    }
    parser.close();
    return { log, stops, end };
  }

  const whole = (length: number) => [length];
  const bytewise = (length: number) => Array.from({ length }, () => 1);
  const sevens = (length: number) => Array.from({ length: Math.ceil(length / 7) }, (_, i) => Math.min(7, length - i * 7));

  it("both builds stop at the same bytes and, resumed, report what parsing straight through reports", () => {
    const straight = drive(createNodeParser, whole, false);
    expect(straight.log.filter((line) => line.startsWith("complete"))).toHaveLength(5);
    for (const sizes of [whole, sevens, bytewise]) {
      const node = drive(createNodeParser, sizes, true);
      const wasm = drive(createWasmParser, sizes, true);
      expect(wasm).toEqual(node);
      expect(node.log).toEqual(straight.log);
      // One stop after each head but the upgrade's, right where the head ends.
      const heads = ["GET /a", "POST /b", "PUT /c", "PUT /d"].map((start) => input.indexOf("\r\n\r\n", input.indexOf(start)) + 4);
      expect(node.stops).toEqual(heads);
      expect(node.end).toBe(input.indexOf("\x81"));
    }
    expect(straight.end).toBe(input.indexOf("\x81"));
  });
});

describe("choosing the parser", () => {
  const gone = () => {
    throw new Error("not in this runtime");
  };
  // A build that loads but is lenient: it accepts a request with both CL and TE.
  const lenient = (): MessageParserFactory => (kind, max, events) => {
    const real = createNodeParser(kind, max, events);
    return { execute: (chunk) => (chunk.includes("Content-Length: 2\r\nTransfer-Encoding") ? chunk.length : real.execute(chunk)), finish: () => real.finish(), close: () => real.close() };
  };

  it("uses the preferred build when it passes", () => {
    for (const name of ["wasm", "node"] as const) {
      const selection = selectHttp1Parser(name);
      expect(selection.name).toBe(name);
      expect(selection.fallback).toBeUndefined();
    }
  });

  it("falls back to the other build when the preferred one cannot be loaded", () => {
    const toNode = selectHttp1Parser("wasm", { wasm: gone });
    expect(toNode).toMatchObject({ name: "node", fallback: { from: "wasm" } });
    expect(toNode.fallback?.problem).toContain("not in this runtime");
    expect(selectHttp1Parser("node", { node: gone })).toMatchObject({ name: "wasm", fallback: { from: "node" } });
  });

  it("falls back when the preferred build fails its self-check", () => {
    const selection = selectHttp1Parser(DEFAULT_HTTP1_PARSER, { [DEFAULT_HTTP1_PARSER]: lenient });
    expect(selection.name).not.toBe(DEFAULT_HTTP1_PARSER);
    expect(selection.fallback?.problem).toContain("Content-Length and Transfer-Encoding was accepted");
  });

  it("refuses (E_RUNTIME_UNSUPPORTED) when neither build passes", () => {
    let error: unknown;
    try {
      selectHttp1Parser("wasm", { wasm: gone, node: lenient });
    } catch (caught) {
      error = caught;
    }
    expect(isMeshwardError(error, "E_RUNTIME_UNSUPPORTED")).toBe(true);
    expect((error as Error).message).toMatch(/wasm: not in this runtime; node: .*Transfer-Encoding was accepted/);
  });

  it("reads MESHWARD_HTTP1_PARSER, and refuses a value it does not know", () => {
    expect(preferredHttp1Parser({})).toBe(DEFAULT_HTTP1_PARSER);
    expect(preferredHttp1Parser({ MESHWARD_HTTP1_PARSER: "wasm" })).toBe("wasm");
    expect(preferredHttp1Parser({ MESHWARD_HTTP1_PARSER: "node" })).toBe("node");
    expect(() => preferredHttp1Parser({ MESHWARD_HTTP1_PARSER: "lenient" })).toThrow(/must be "node" or "wasm"/);
  });

  it("the process-wide choice passes its self-check", () => {
    expect(http1ParserSelfTest(checkHttp1Parser().create)).toBeUndefined();
  });
});
