import { createRequire } from "node:module";
import { EMPTY, afterHead } from "./message-parser.ts";
import type { MessageEvents, MessageParser, ParseFailure } from "./message-parser.ts";

/**
 * Node's own llhttp (the C parser behind node:http), driven directly through `_http_common`'s
 * HTTPParser. Node keeps that module for compatibility but does not document it (DEP0199, a
 * documentation-only deprecation since Node 24): see llhttp.ts for why it is used, and what
 * takes over when it is gone.
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
  readonly kOnMessageBegin?: number;
  readonly kOnHeaders: number;
  readonly kOnHeadersComplete: number;
  readonly kOnBody: number;
  readonly kOnMessageComplete: number;
}

/** An empty chunk backed by memory: the binding takes a null data pointer for finish(). */
const NOTHING = Buffer.alloc(1).subarray(0, 0);

let native: { Parser: NativeParserClass; methods: readonly string[] } | undefined;

/** Loads `_http_common`'s parser; throws (a plain Error) when this Node has none. */
export function loadNodeParser(): typeof createNodeParser {
  if (native === undefined) {
    const common = createRequire(import.meta.url)("_http_common") as { HTTPParser?: NativeParserClass; methods?: readonly string[] };
    if (typeof common.HTTPParser !== "function" || !Array.isArray(common.methods)) throw new Error("_http_common has no HTTPParser");
    if (typeof common.HTTPParser.kOnMessageBegin !== "number") throw new Error("_http_common's HTTPParser has no kOnMessageBegin");
    native = { Parser: common.HTTPParser, methods: common.methods };
  }
  return createNodeParser;
}

/** A strict (non-lenient) parser for requests or responses, one per connection. */
export function createNodeParser(kind: "request" | "response", maxHeaderBytes: number, events: MessageEvents): MessageParser {
  loadNodeParser();
  const { Parser, methods } = native!;
  const parser = new Parser();
  const type = kind === "request" ? Parser.REQUEST : Parser.RESPONSE;
  parser.initialize(type, {}, maxHeaderBytes, 0);
  // A large body of known length is not run through llhttp: its binding copies every body chunk
  // into a new Buffer, a copy per byte and the GC work after it. The parser pauses after such a
  // head, the body's bytes are handed on as slices of the chunks they came in, and the parser
  // starts afresh at the next message.
  let rawLeft = 0;
  let paused = false;
  // onHead asked to stop after the head: execute returns there, and the next one parses on.
  let stop = false;
  const pause = (length: number, stopHere: boolean) => {
    rawLeft = length;
    paused = true;
    stop = stopHere;
  };
  // llhttp hands headers over in slices of 32 fields when there are more, and trailers the same way.
  let pending: string[] = [];
  let pendingUrl = "";
  let inBody = false;
  let upgraded = false;
  const onMessageBegin = events.onMessageBegin;
  if (onMessageBegin !== undefined) {
    // Node's binding calls it from llhttp's on_message_begin (loadNodeParser checked the slot exists).
    // After an upgrade head the bytes are not HTTP/1: the binding would begin a message on the
    // next execute; the WebAssembly build consumes nothing more there, and neither reports one.
    parser[Parser.kOnMessageBegin!] = () => {
      if (!upgraded) onMessageBegin.call(events);
    };
  }
  parser[Parser.kOnHeaders] = (headers: string[], url: string | undefined) => {
    for (const value of headers) pending.push(value);
    if (!inBody && url) pendingUrl += url;
  };
  parser[Parser.kOnHeadersComplete] = (
    major: number,
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
    if (upgrade) upgraded = true;
    const head = {
      method: method === undefined ? "" : (methods[method] ?? ""),
      url: target,
      status: status ?? 0,
      statusMessage: statusMessage ?? "",
      httpMajor: major,
      httpMinor: minor,
      rawHeaders,
      upgrade,
      keepAlive,
    };
    return afterHead(head, events, pause);
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
      // An empty chunk runs llhttp too: after a stop it completes a bodiless message.
      do {
        if (rawLeft > 0) {
          if (offset === chunk.length) break;
          const take = Math.min(rawLeft, chunk.length - offset);
          events.onBody(offset === 0 && take === chunk.length ? chunk : chunk.subarray(offset, offset + take));
          rawLeft -= take;
          offset += take;
          if (rawLeft === 0) bodyDone();
          continue;
        }
        const result = parser.execute(chunk.length === 0 ? NOTHING : offset === 0 ? chunk : chunk.subarray(offset));
        if (typeof result === "number") return offset + result;
        if (result.code !== "HPE_PAUSED" || !paused) return failure(result);
        paused = false;
        parser.resume();
        offset += result.bytesParsed ?? 0;
        if (stop) {
          stop = false;
          return offset;
        }
      } while (offset < chunk.length);
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
