import { createRequire } from "node:module";
import { MeshwardError } from "../../errors.ts";

/**
 * Node's own HTTP/1 parser (llhttp, the C parser behind node:http), driven directly.
 *
 * Why not node:http: for a proxy, node:http builds an IncomingMessage stream, a ServerResponse,
 * a ClientRequest and an agent queue per hop, per request; on the development machine that
 * capped a sidecar pair at ~4k small requests/s, where relaying with this parser does ~10k
 * (bench/proxy).
 * Why this parser and not a hand-written one: it is the parser every Node HTTP server already
 * trusts with request smuggling (CL+TE, duplicate Content-Length, bare LF, obs-fold are refused
 * in strict mode), with header size limits enforced in C.
 *
 * It is reached through `_http_common`, which Node keeps for compatibility but does not
 * document (DEP0199, a documentation-only deprecation since Node 24: it may warn or go away in a
 * later major). `checkHttp1Parser()` proves at start-up that it behaves as this module expects,
 * and the sidecar refuses to start otherwise (fail closed, with an error that says so) — it never
 * guesses at a parser that might disagree with the app's about where a request ends.
 */

interface NativeError extends Error {
  code?: string;
  reason?: string;
  bytesParsed?: number;
}

interface NativeParser {
  initialize(type: number, resource: object, maxHeaderSize: number, lenientFlags: number): void;
  execute(data: Buffer): number | NativeError;
  finish(): undefined | NativeError;
  resume(): void;
  close(): void;
  [callback: number]: unknown;
}

interface NativeParserClass {
  new (): NativeParser;
  readonly REQUEST: number;
  readonly RESPONSE: number;
  readonly kOnHeaders: number;
  readonly kOnHeadersComplete: number;
  readonly kOnBody: number;
  readonly kOnMessageComplete: number;
}

let native: { Parser: NativeParserClass; methods: readonly string[] } | undefined;
function load(): { Parser: NativeParserClass; methods: readonly string[] } {
  if (native !== undefined) return native;
  const common = createRequire(import.meta.url)("_http_common") as { HTTPParser?: NativeParserClass; methods?: readonly string[] };
  if (typeof common.HTTPParser !== "function" || !Array.isArray(common.methods)) throw unsupported("_http_common has no HTTPParser");
  native = { Parser: common.HTTPParser, methods: common.methods };
  return native;
}

/** The head of one HTTP/1 message, as received. */
export interface MessageHead {
  /** Request method (requests only; "" for responses). */
  readonly method: string;
  /** Request target as sent (requests only). */
  readonly url: string;
  /** Response status (responses only; 0 for requests). */
  readonly status: number;
  readonly statusMessage: string;
  readonly httpMinor: number;
  /** Name, value, name, value… in the order and case received. */
  readonly rawHeaders: readonly string[];
  /** Connection: upgrade with Upgrade, or CONNECT: the parser stops after this head. */
  readonly upgrade: boolean;
  /** What the message says about the connection after it (HTTP version + Connection header). */
  readonly keepAlive: boolean;
}

export interface MessageEvents {
  /** Return true for a response that has no body whatever its headers say (the answer to HEAD). */
  onHead(head: MessageHead): boolean;
  onBody(chunk: Buffer): void;
  /** `trailers`: name/value pairs of a chunked message's trailer section (usually empty). */
  onComplete(trailers: readonly string[]): void;
}

/** A parse failure: `code` is llhttp's (HPE_HEADER_OVERFLOW, HPE_INVALID_METHOD, …). */
export interface ParseFailure {
  readonly code: string;
  readonly reason: string;
}

export interface MessageParser {
  /** Parses a chunk; returns the bytes consumed (fewer than given after an upgrade head) or the failure. */
  execute(chunk: Buffer): number | ParseFailure;
  /** The stream ended: completes a close-delimited body, or fails for a message cut short. */
  finish(): ParseFailure | undefined;
  close(): void;
}

const EMPTY: readonly string[] = [];
/** llhttp's HPE_PAUSED: returned from on_headers_complete, execute() stops right after the head. */
const PAUSE = 21;
/**
 * Bodies at least this long bypass llhttp. Pausing costs an Error object from the binding and a
 * re-initialisation, more than copying a small body (measured: small requests 10.3k → 8.1k req/s
 * through a sidecar pair when every body took the bypass; 1 MiB bodies 200 → 266–298 MB/s).
 */
const RAW_BODY_MIN = 16 * 1024;

/** The Content-Length of a message that has no Transfer-Encoding, else -1 (llhttp has validated both). */
function knownLength(rawHeaders: readonly string[]): number {
  let length = -1;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    if (name.length === 14 && name.toLowerCase() === "content-length") length = Number(rawHeaders[i + 1]);
    else if (name.length === 17 && name.toLowerCase() === "transfer-encoding") return -1;
  }
  return Number.isSafeInteger(length) ? length : -1;
}

/** A strict (non-lenient) parser for requests or responses, one per connection. */
export function createMessageParser(kind: "request" | "response", maxHeaderBytes: number, events: MessageEvents): MessageParser {
  const { Parser, methods } = load();
  const parser = new Parser();
  const type = kind === "request" ? Parser.REQUEST : Parser.RESPONSE;
  parser.initialize(type, {}, maxHeaderBytes, 0);
  // A large body of known length is not run through llhttp: its binding copies every body chunk
  // into a new Buffer, a copy per byte and the GC work after it. The parser pauses after such a
  // head, the body's bytes are handed on as slices of the chunks they came in, and the parser
  // starts afresh at the next message.
  let rawLeft = 0;
  let pausedForBody = false;
  // llhttp hands headers over in slices of 32 fields when there are more, and trailers the same way.
  let pending: string[] = [];
  let pendingUrl = "";
  let inBody = false;
  parser[Parser.kOnHeaders] = (headers: string[], url: string | undefined) => {
    for (const value of headers) pending.push(value);
    if (!inBody && url) pendingUrl += url;
  };
  parser[Parser.kOnHeadersComplete] = (
    _major: number,
    minor: number,
    headers: string[] | undefined,
    method: number | undefined,
    url: string | undefined,
    status: number | undefined,
    statusMessage: string | undefined,
    upgrade: boolean,
    keepAlive: boolean,
  ): number => {
    const rawHeaders = headers ?? pending;
    if (headers !== undefined && pending.length > 0) rawHeaders.unshift(...pending);
    pending = [];
    const target = url ?? pendingUrl;
    pendingUrl = "";
    inBody = true;
    const code = status ?? 0;
    const skipBody = events.onHead({
      method: method === undefined ? "" : (methods[method] ?? ""),
      url: target,
      status: code,
      statusMessage: statusMessage ?? "",
      httpMinor: minor,
      rawHeaders,
      upgrade,
      keepAlive,
    });
    if (skipBody) return 1;
    if (upgrade || (code >= 100 && code < 200) || code === 204 || code === 304) return 0;
    const length = knownLength(rawHeaders);
    if (length < RAW_BODY_MIN) return 0;
    rawLeft = length;
    pausedForBody = true;
    return PAUSE;
  };
  parser[Parser.kOnBody] = (chunk: Buffer) => events.onBody(chunk);
  parser[Parser.kOnMessageComplete] = () => {
    const trailers = pending.length > 0 ? pending : EMPTY;
    pending = [];
    inBody = false;
    events.onComplete(trailers);
  };
  const failure = (error: NativeError): ParseFailure => ({ code: error.code ?? "HPE_UNKNOWN", reason: error.reason ?? error.message });
  const bodyDone = () => {
    parser.initialize(type, {}, maxHeaderBytes, 0);
    inBody = false;
    events.onComplete(EMPTY);
  };
  return {
    execute(chunk) {
      let offset = 0;
      while (offset < chunk.length) {
        if (rawLeft > 0) {
          const take = Math.min(rawLeft, chunk.length - offset);
          events.onBody(offset === 0 && take === chunk.length ? chunk : chunk.subarray(offset, offset + take));
          rawLeft -= take;
          offset += take;
          if (rawLeft === 0) bodyDone();
          continue;
        }
        const result = parser.execute(offset === 0 ? chunk : chunk.subarray(offset));
        if (typeof result === "number") return offset + result;
        if (result.code !== "HPE_PAUSED" || !pausedForBody) return failure(result);
        pausedForBody = false;
        parser.resume();
        offset += result.bytesParsed ?? 0;
      }
      return chunk.length;
    },
    finish() {
      if (rawLeft > 0) return { code: "HPE_INVALID_EOF_STATE", reason: `the stream ended ${rawLeft} bytes before the end of the body` };
      const result = parser.finish();
      return result instanceof Error ? failure(result) : undefined;
    },
    close() {
      parser.close();
    },
  };
}

function unsupported(what: string): MeshwardError {
  return new MeshwardError(
    "E_RUNTIME_UNSUPPORTED",
    `this Node.js (${process.version}) does not provide the HTTP/1 parser the sidecar drives (${what}); run the sidecar on Node 20, 22, 24 or 26 (tested), or report the version`,
  );
}

let checked = false;

/**
 * Proves the parser behaves as this module expects (callbacks, their arguments, header
 * batching, chunked bodies with trailers, pausing after a head, strict refusals) on a fixed set
 * of messages.
 * Throws E_RUNTIME_UNSUPPORTED otherwise. Cheap; runs once per process.
 */
export function checkHttp1Parser(): void {
  if (checked) return;
  const problem = selfTest();
  if (problem !== undefined) throw unsupported(problem);
  checked = true;
}

function selfTest(): string | undefined {
  try {
    const seen: string[] = [];
    const many = Array.from({ length: 40 }, (_, i) => `x-h${i}: v${i}\r\n`).join("");
    const parser = createMessageParser("request", 16 * 1024, {
      onHead: (h) => {
        seen.push(`${h.method} ${h.url} 1.${h.httpMinor} ${h.rawHeaders.length} ${h.rawHeaders[0]}=${h.rawHeaders[1]} ${h.keepAlive} ${h.upgrade}`);
        return false;
      },
      onBody: (chunk) => seen.push(`body ${chunk.length > 8 ? `${chunk.length} bytes` : chunk.toString("latin1")}`),
      onComplete: (trailers) => seen.push(`done ${trailers.join("=")}`),
    });
    // The large body takes the paused path; "GET / HTTP/1.1" inside it must stay body.
    const large = `GET / HTTP/1.1\r\n\r\n${"b".repeat(RAW_BODY_MIN)}`;
    const input = Buffer.from(`POST /a?b HTTP/1.1\r\nHost: h\r\n${many}Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX-T: 1\r\n\r\nPUT /l HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcPUT /m HTTP/1.1\r\nHost: h\r\nContent-Length: ${large.length}\r\n\r\n${large}GET /w HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nraw`);
    const consumed = parser.execute(input);
    const strict = createMessageParser("request", 16 * 1024, { onHead: () => false, onBody: () => undefined, onComplete: () => undefined });
    const smuggled = strict.execute(Buffer.from("POST / HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"));
    strict.close();
    parser.close();
    const expected = ["POST /a?b 1.1 84 Host=h true false", "body hi", "done X-T=1", "PUT /l 1.1 4 Host=h true false", "body abc", "done ", "PUT /m 1.1 4 Host=h true false", `body ${large.length} bytes`, "done ", "GET /w 1.1 4 Connection=upgrade true true", "done "];
    if (JSON.stringify(seen) !== JSON.stringify(expected)) return `unexpected parse: ${JSON.stringify(seen)}`;
    if (consumed !== input.length - 3) return `execute did not stop after the upgrade head (${JSON.stringify(consumed)})`;
    if (typeof smuggled === "number") return "a request with both Content-Length and Transfer-Encoding was accepted";
    return undefined;
  } catch (error) {
    return (error as Error).message;
  }
}
