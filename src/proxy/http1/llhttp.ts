import { MeshwardError } from "../../errors.ts";
import { loadNodeParser } from "./llhttp-node.ts";
import { loadWasmParser } from "./llhttp-wasm.ts";
import { RAW_BODY_MIN, STOP_AFTER_HEAD } from "./message-parser.ts";
import type { MessageEvents, MessageParser, MessageParserFactory } from "./message-parser.ts";

export type { MessageEvents, MessageHead, MessageParser, ParseFailure } from "./message-parser.ts";

/**
 * The HTTP/1 parser the relay uses: llhttp, the parser every Node HTTP server already trusts
 * with request smuggling (CL+TE, duplicate Content-Length, bare LF, obs-fold and invalid
 * Transfer-Encoding are refused in strict mode), driven directly.
 *
 * Why not node:http: for a proxy, node:http builds an IncomingMessage stream, a ServerResponse,
 * a ClientRequest and an agent queue per hop, per request; on the development machine that
 * capped a sidecar pair at ~4k small requests/s, where relaying with this parser does ~10k
 * (bench/proxy).
 *
 * Two builds of llhttp stand behind one interface (message-parser.ts):
 * - "node" (llhttp-node.ts): Node's own C build, reached through `_http_common`'s HTTPParser,
 *   which Node keeps for compatibility but does not document (DEP0199, a documentation-only
 *   deprecation since Node 24: it may warn or go away in a later major);
 * - "wasm" (llhttp-wasm.ts): the WebAssembly build undici ships, pinned to an exact undici
 *   release, driven by an adapter of our own. It depends on no Node internal.
 *
 * The choice: "wasm" by default, "node" as its fallback (measured 2026-12-03, Node v20.20.2,
 * undici 7.30.2, a shared 2-core machine under load; bench/proxy/README.md has the tables):
 * - speed, parser alone (bench/proxy/parser.ts, 9 interleaved rounds, two runs; wasm/node
 *   medians, the range of per-round ratios across both runs): pipelined small GETs 1.38–1.61×
 *   (1.26–1.83), a new parser per request 2.9–3.2× (2.4–3.9), 13-byte responses 1.9–2.0×
 *   (1.6–2.2), 16 KiB chunked bodies 8.4–9.8× (5.6–13.4), 1 MiB chunked 3.9–4.6× (3.0–6.9).
 *   Node's binding pays for a C++ → JavaScript call per callback batch, a copied Buffer per
 *   body chunk and an Error object per pause; the adapter decodes a head's fields with one
 *   latin1 decode per 2 KiB of input and hands bodies on as slices of the chunk they came in.
 * - speed, a sidecar pair (bench/proxy/compare.ts --parsers, wrk -c32): the same within the
 *   machine's noise, the parser being ~11 % of a sidecar's time. CPU per request, wasm/node,
 *   medians of three runs (6, 8, 10 rounds): outbound 92 %, 103 %, 89 %; inbound 94 %, 104 %,
 *   88 %. 1 MiB bodies bypass the parser in both (RAW_BODY_MIN): 95 % / 100 %.
 * - the smuggling-refusal suites (test/proxy/http1-relay, http1-wire, inbound-http,
 *   test/security/differential): 771 of 771 with each build; the two adapters agree event for
 *   event and refusal for refusal (test/proxy/http1-parsers.test.ts).
 * - support: the WebAssembly build depends on no Node internal; `_http_common` is DEP0199.
 *
 * At start-up `checkHttp1Parser()` loads the preferred build (MESHWARD_HTTP1_PARSER=node|wasm,
 * else the default) and proves on a fixed set of messages that it behaves as the relay expects
 * (callbacks, header batching, chunked bodies with trailers, pausing after a head, stopping
 * after a head and resuming there (an empty chunk completing a bodiless request), strict
 * refusals, the header-size limit). If it cannot be loaded or fails, the other build is checked
 * and used, with one warning; if both fail the sidecar refuses to start (E_RUNTIME_UNSUPPORTED) —
 * it never guesses at a parser that might disagree with the app's about where a request ends.
 */

export type Http1ParserName = "node" | "wasm";

export const DEFAULT_HTTP1_PARSER: Http1ParserName = "wasm";

/** Loads one build and returns its factory; throws when it is not available here. */
export type ParserLoader = () => MessageParserFactory;

const LOADERS: Readonly<Record<Http1ParserName, ParserLoader>> = {
  node: loadNodeParser,
  wasm: () => loadWasmParser(),
};

export interface ParserSelection {
  readonly name: Http1ParserName;
  readonly create: MessageParserFactory;
  /** Set when the preferred build was not used: which one, and why. */
  readonly fallback?: { readonly from: Http1ParserName; readonly problem: string };
}

/** The build MESHWARD_HTTP1_PARSER asks for, else the default. */
export function preferredHttp1Parser(env: Readonly<Record<string, string | undefined>> = process.env): Http1ParserName {
  const value = env.MESHWARD_HTTP1_PARSER;
  if (value === undefined || value === "") return DEFAULT_HTTP1_PARSER;
  if (value === "node" || value === "wasm") return value;
  throw new MeshwardError("E_CONFIG_INVALID", `MESHWARD_HTTP1_PARSER must be "node" or "wasm" (got ${JSON.stringify(value.slice(0, 40))})`);
}

/**
 * Loads and self-checks the preferred build, else the other one. Throws E_RUNTIME_UNSUPPORTED
 * when neither passes. `loaders` replaces how a build is loaded (tests).
 */
export function selectHttp1Parser(prefer: Http1ParserName, loaders: Partial<Record<Http1ParserName, ParserLoader>> = {}): ParserSelection {
  const order: Http1ParserName[] = prefer === "node" ? ["node", "wasm"] : ["wasm", "node"];
  const problems: string[] = [];
  for (const name of order) {
    let problem: string | undefined;
    let create: MessageParserFactory | undefined;
    try {
      create = (loaders[name] ?? LOADERS[name])();
      problem = http1ParserSelfTest(create);
    } catch (error) {
      problem = error instanceof Error ? error.message : String(error);
    }
    if (problem === undefined && create !== undefined) {
      return name === prefer ? { name, create } : { name, create, fallback: { from: prefer, problem: problems[0] ?? "" } };
    }
    problems.push(`${name}: ${problem}`);
  }
  throw new MeshwardError(
    "E_RUNTIME_UNSUPPORTED",
    `this Node.js (${process.version}) has no HTTP/1 parser the sidecar can trust (${problems.join("; ")}); run the sidecar on Node 20, 22, 24 or 26 (tested), or report the version`,
  );
}

interface WarnLogger {
  warn(fields: object, message: string): void;
}

let active: ParserSelection | undefined;
let warned = false;

/**
 * Chooses the parser once per process (see selectHttp1Parser) and returns the choice. Throws
 * E_RUNTIME_UNSUPPORTED when no build passes its self-check. A fallback is logged once, on the
 * first call that has a logger.
 */
export function checkHttp1Parser(logger?: WarnLogger): ParserSelection {
  active ??= selectHttp1Parser(preferredHttp1Parser());
  if (active.fallback !== undefined && logger !== undefined && !warned) {
    warned = true;
    logger.warn(
      { event: "http1-parser-fallback", parser: active.name, preferred: active.fallback.from, problem: active.fallback.problem },
      `the ${active.fallback.from} HTTP/1 parser is not usable here; using the ${active.name} build of llhttp instead`,
    );
  }
  return active;
}

/** A strict (non-lenient) parser for requests or responses, one per connection, from the chosen build. */
export function createMessageParser(kind: "request" | "response", maxHeaderBytes: number, events: MessageEvents): MessageParser {
  return (active ?? checkHttp1Parser()).create(kind, maxHeaderBytes, events);
}

/**
 * Proves a build behaves as the relay expects on a fixed set of messages: callbacks and their
 * arguments (the start of each message included), header batching, chunked bodies with trailers, pausing after a head, the large-body
 * bypass, a stop after an upgrade head, stopping after a head when asked and resuming there, the
 * strict refusal of CL+TE and the header-size limit.
 * Returns what is wrong, or undefined.
 */
export function http1ParserSelfTest(create: MessageParserFactory): string | undefined {
  try {
    const seen: string[] = [];
    const many = Array.from({ length: 40 }, (_, i) => `x-h${i}: v${i}\r\n`).join("");
    const parser = create("request", 16 * 1024, {
      onMessageBegin: () => seen.push("begin"),
      onHead: (h) => {
        seen.push(`${h.method} ${h.url} ${h.httpMajor}.${h.httpMinor} ${h.rawHeaders.length} ${h.rawHeaders[0]}=${h.rawHeaders[1]} ${h.keepAlive} ${h.upgrade}`);
        return false;
      },
      onBody: (chunk) => seen.push(`body ${chunk.length > 8 ? `${chunk.length} bytes` : chunk.toString("latin1")}`),
      onComplete: (trailers) => seen.push(`done ${trailers.join("=")}`),
    });
    // The large body takes the paused path; "GET / HTTP/1.1" inside it must stay body.
    const large = `GET / HTTP/1.1\r\n\r\n${"b".repeat(RAW_BODY_MIN)}`;
    const input = Buffer.from(`POST /a?b HTTP/1.1\r\nHost: h\r\n${many}Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX-T: 1\r\n\r\nPUT /l HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcPUT /m HTTP/1.1\r\nHost: h\r\nContent-Length: ${large.length}\r\n\r\n${large}GET /w HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nraw`);
    const consumed = parser.execute(input);
    const strict = create("request", 16 * 1024, { onHead: () => false, onBody: () => undefined, onComplete: () => undefined });
    const smuggled = strict.execute(Buffer.from("POST / HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"));
    // Stopped after each head, resumed with the rest (or nothing: the GET completes then).
    const steps: string[] = [];
    const stopping = create("request", 1024, { onHead: (h) => (steps.push(h.url), STOP_AFTER_HEAD), onBody: (chunk) => steps.push(chunk.toString("latin1")), onComplete: () => steps.push("done") });
    const pipelined = Buffer.from("POST /s HTTP/1.1\r\nContent-Length: 2\r\n\r\nokGET /t HTTP/1.1\r\n\r\n");
    const stopsAt = [stopping.execute(pipelined), stopping.execute(pipelined.subarray(39)), stopping.execute(Buffer.alloc(0))];
    stopping.close();
    const small = create("request", 64, { onHead: () => false, onBody: () => undefined, onComplete: () => undefined });
    const overflow = small.execute(Buffer.from(`GET / HTTP/1.1\r\nX: ${"v".repeat(64)}\r\n\r\n`));
    small.close();
    strict.close();
    parser.close();
    const expected = ["begin", "POST /a?b 1.1 84 Host=h true false", "body hi", "done X-T=1", "begin", "PUT /l 1.1 4 Host=h true false", "body abc", "done ", "begin", "PUT /m 1.1 4 Host=h true false", `body ${large.length} bytes`, "done ", "begin", "GET /w 1.1 4 Connection=upgrade true true", "done "];
    if (JSON.stringify(seen) !== JSON.stringify(expected)) return `unexpected parse: ${JSON.stringify(seen)}`;
    if (consumed !== input.length - 3) return `execute did not stop after the upgrade head (${JSON.stringify(consumed)})`;
    if (JSON.stringify([stopsAt, steps]) !== JSON.stringify([[39, 21, 0], ["/s", "ok", "done", "/t", "done"]])) return `stopping after a head: ${JSON.stringify([stopsAt, steps])}`;
    if (typeof smuggled === "number") return "a request with both Content-Length and Transfer-Encoding was accepted";
    if (typeof overflow === "number" || overflow.code !== "HPE_HEADER_OVERFLOW") return `a head over the size limit was not refused (${JSON.stringify(overflow)})`;
    return undefined;
  } catch (error) {
    return (error as Error).message;
  }
}
