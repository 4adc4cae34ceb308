import { authorityProblem } from "../canonical.ts";
import { connectionListed, forwardedTrailer, forwardedValue, hasLength, HOP_BY_HOP, IDENTITY_LENGTHS, lengthTable } from "../headers.ts";
import type { MessageHead } from "./llhttp.ts";

/** How a message's body is delimited on the wire (RFC 9112 §6). */
export type BodyFraming = "none" | "length" | "chunked" | "close";

/** The value of the first header called `lowerName` (case-insensitive), or undefined. */
export function findHeader(rawHeaders: readonly string[], lowerName: string): string | undefined {
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    if (name.length === lowerName.length && name.toLowerCase() === lowerName) return rawHeaders[i + 1];
  }
  return undefined;
}

/** Node's IncomingMessage.headers shape (lowercase names, repeated values joined), for code that takes one. */
export function headersObject(rawHeaders: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!.toLowerCase();
    const value = rawHeaders[i + 1]!;
    out[name] = out[name] === undefined ? value : `${out[name]}, ${value}`;
  }
  return out;
}

const NOTHING_LISTED: ReadonlySet<string> = new Set();
/** Lengths of the names endToEndLines may drop or rewrite when Connection lists nothing else (hop-by-hop, content-length, identity). */
const SPECIAL_LENGTHS = lengthTable([...[...HOP_BY_HOP, "content-length"].map((name) => name.length), ...IDENTITY_LENGTHS]);

/** The names Connection lists beyond the hop-by-hop ones (which go anyway); usually none. */
function listedBeyondHopByHop(rawHeaders: readonly string[]): ReadonlySet<string> {
  let values: string[] | undefined;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    if (name.length === 10 && name.toLowerCase() === "connection") (values ??= []).push(rawHeaders[i + 1]!);
  }
  if (values === undefined) return NOTHING_LISTED;
  if (values.length === 1 && values[0]!.length === 10 && values[0]!.toLowerCase() === "keep-alive") return NOTHING_LISTED;
  const listed = connectionListed(values);
  for (const name of HOP_BY_HOP) listed.delete(name);
  return listed.size === 0 ? NOTHING_LISTED : listed;
}

/**
 * The end-to-end header lines of a message ("Name: value\r\n"…): fields forwardedValue drops
 * (hop-by-hop, identity headers in any spelling) removed, Content-Length kept only when
 * `keepLength`, Host only when `keepHost`.
 */
function endToEndLines(rawHeaders: readonly string[], keepLength: boolean, keepHost = true): string {
  const listed = listedBeyondHopByHop(rawHeaders);
  // Unless Connection names other fields, only a name as long as a hop-by-hop one, Content-Length
  // or an identity header can be one of them: the others go on without being lowercased and looked up.
  const checkEvery = listed.size > 0;
  let lines = "";
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    if (!checkEvery && !hasLength(SPECIAL_LENGTHS, name.length) && (keepHost || name.length !== 4)) {
      lines += `${name}: ${rawHeaders[i + 1]}\r\n`;
      continue;
    }
    const lower = name.toLowerCase();
    if (lower === "content-length") {
      // The digits llhttp (or the HTTP/2 check) framed the body with, without leading zeros.
      if (keepLength) lines += `${name}: ${rawHeaders[i + 1]!.replace(/^0+(?=\d)/, "")}\r\n`;
      continue;
    }
    if (lower === "host") {
      // Whatever Connection names, the one Host the request was judged with goes on (RFC 9112 §3.2).
      if (keepHost) lines += `${name}: ${rawHeaders[i + 1]}\r\n`;
      continue;
    }
    const value = forwardedValue(lower, rawHeaders[i + 1]!, listed);
    if (value !== undefined) lines += `${lower === "te" ? lower : name}: ${value}\r\n`;
  }
  return lines;
}

/**
 * The request head as it goes upstream (always HTTP/1.1, keep-alive): the canonical `target`,
 * the end-to-end fields, and the body framed as `framing` says — the one place a forwarded
 * request is framed, for HTTP/1 and HTTP/2 callers alike: Content-Length or chunked when there
 * is a body, neither when there is none (but `content-length: 0` for POST, PUT and PATCH). `host` replaces the received Host when given (an
 * HTTP/1.0 request without one, an absolute-form target, an HTTP/2 :authority).
 */
export function upstreamRequestHead(method: string, target: string, rawHeaders: readonly string[], framing: BodyFraming, addLines: string, host: string | undefined): string {
  const received = endToEndLines(rawHeaders, framing === "length", host === undefined);
  const lines = host === undefined ? received : `host: ${host}\r\n${received}`;
  const framed = framing === "chunked" ? "transfer-encoding: chunked\r\n" : framing === "none" && CONTENT_METHODS.has(method) ? "content-length: 0\r\n" : "";
  return `${method} ${target} HTTP/1.1\r\n${lines}${framed}${addLines}\r\n`;
}

/**
 * Methods whose requests are defined to carry content (RFC 9110 §8.6: a user agent SHOULD send
 * Content-Length for them): without a body they go on with `content-length: 0`, since some
 * servers answer 411 to a POST that has neither (lighttpd does, to an HTTP/2 POST ended by its
 * HEADERS frame, which carries no length).
 */
const CONTENT_METHODS: ReadonlySet<string> = new Set(["POST", "PUT", "PATCH"]);

/**
 * The bytes a request head takes on the wire, less optional whitespace (which is neither kept
 * nor forwarded): the request line, each field line with its ": " and CRLF, the final CRLF.
 * llhttp's own limit counts only the names and values, so 10,000 empty fields passed it.
 */
export function requestHeadBytes(head: MessageHead): number {
  let bytes = head.method.length + head.url.length + 12;
  const fields = head.rawHeaders;
  for (let i = 0; i < fields.length; i++) bytes += fields[i]!.length + 2;
  return bytes + 2;
}

/** The same count for a trailer section: each field line with its ": " and CRLF, the final CRLF. */
export function trailerSectionBytes(trailers: readonly string[]): number {
  let bytes = 2;
  for (let i = 0; i < trailers.length; i++) bytes += trailers[i]!.length + 2;
  return bytes;
}

/**
 * The request's one Host value (undefined for an HTTP/1.0 request without one), or why its
 * Host fields are refused (RFC 9112 §3.2, §3.2.2).
 */
export function requestHost(rawHeaders: readonly string[], httpMinor: number, absoluteAuthority: string | undefined): { host: string | undefined } | { problem: string } {
  let host: string | undefined;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    if (name.length !== 4 || name.toLowerCase() !== "host") continue;
    if (host !== undefined) return { problem: "more than one Host field (RFC 9112 §3.2)" };
    host = rawHeaders[i + 1]!;
  }
  if (host === undefined && httpMinor >= 1) return { problem: "an HTTP/1.1 request without Host (RFC 9112 §3.2)" };
  const invalid = host === undefined ? undefined : authorityProblem(host);
  if (invalid !== undefined) return { problem: `${invalid} (RFC 9112 §3.2: 400 for an invalid Host)` };
  if (host !== undefined && absoluteAuthority !== undefined && host.toLowerCase() !== absoluteAuthority.toLowerCase()) return { problem: "an absolute-form target whose authority differs from Host" };
  return { host };
}

/** Why a request's version or transfer coding is refused, and the status that says so. */
export interface FramingProblem {
  readonly status: 400 | 501 | 505;
  readonly problem: string;
}

/**
 * What llhttp (strict) accepts that the relay must not forward: an HTTP version other than 1.0
 * and 1.1 (llhttp also parses "HTTP/2.0", whose minor version 0 would pass for 1.0, and 0.9:
 * RFC 9110 §15.6.6, 505); a Transfer-Encoding other than exactly "chunked" (RFC 9112 §6.1: a
 * coding the server does not understand gets 501, as in Envoy's HTTP/1 codec; forwarded as plain
 * chunked, "gzip, chunked" would reach the app with its coding dropped); a Transfer-Encoding in
 * an HTTP/1.0 request (RFC 9112 §6.1: faulty framing). Undefined when none applies.
 */
export function requestFramingProblem(head: MessageHead): FramingProblem | undefined {
  if (head.httpMajor !== 1 || head.httpMinor > 1) return { status: 505, problem: `HTTP/${head.httpMajor}.${head.httpMinor} on an HTTP/1 connection (only 1.0 and 1.1)` };
  let codings: string | undefined;
  for (let i = 0; i < head.rawHeaders.length; i += 2) {
    const name = head.rawHeaders[i]!;
    if (name.length === 17 && name.toLowerCase() === "transfer-encoding") codings = codings === undefined ? head.rawHeaders[i + 1]! : `${codings},${head.rawHeaders[i + 1]!}`;
  }
  if (codings === undefined) return undefined;
  if (codings.trim().toLowerCase() !== "chunked") return { status: 501, problem: `the transfer coding ${JSON.stringify(codings.slice(0, 64))} is not supported: only "chunked" (RFC 9112 §6.1)` };
  if (head.httpMinor === 0) return { status: 400, problem: "Transfer-Encoding in an HTTP/1.0 request (RFC 9112 §6.1: faulty framing)" };
  return undefined;
}

/**
 * How a message's body is framed according to its headers: chunked when it has a
 * Transfer-Encoding (llhttp refuses a request TE that does not end in chunked, and CL with TE),
 * length with a Content-Length, else none (for a response: close-delimited).
 */
export function declaredFraming(rawHeaders: readonly string[]): BodyFraming {
  let framing: BodyFraming = "none";
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    if (name.length === 17 && name.toLowerCase() === "transfer-encoding") return "chunked";
    if (name.length === 14 && name.toLowerCase() === "content-length") framing = "length";
  }
  return framing;
}

/** Whether a response carries no body whatever its headers say (RFC 9112 §6.3). */
export function responseHasNoBody(requestMethod: string, status: number): boolean {
  return requestMethod === "HEAD" || status === 204 || status === 304 || (status >= 100 && status < 200);
}

/**
 * A response head for the client, and how its body is framed there: a known length stays as
 * it is; a chunked or close-delimited upstream body is re-chunked for an HTTP/1.1 client, and
 * sent close-delimited to an HTTP/1.0 one (which then loses keep-alive).
 */
export function downstreamResponseHead(response: MessageHead, requestMethod: string, client: { httpMinor: number; keepAlive: boolean }): { text: string; framing: BodyFraming; close: boolean } {
  const noBody = responseHasNoBody(requestMethod, response.status);
  const declared = declaredFraming(response.rawHeaders);
  // A Content-Length goes on only when it frames the body (or, on a bodiless answer, describes it).
  const lines = endToEndLines(response.rawHeaders, declared !== "chunked");
  const framing: BodyFraming = noBody ? "none" : declared === "length" ? "length" : client.httpMinor >= 1 ? "chunked" : "close";
  const close = !client.keepAlive || framing === "close";
  let text = `HTTP/1.1 ${response.status} ${response.statusMessage}\r\n${lines}`;
  if (framing === "chunked") text += "transfer-encoding: chunked\r\n";
  if (close) text += "connection: close\r\n";
  else if (client.httpMinor === 0) text += "connection: keep-alive\r\n";
  return { text: `${text}\r\n`, framing, close };
}

/** An interim (1xx) response head, relayed as received minus hop-by-hop fields. */
export function interimResponseHead(response: MessageHead): string {
  return `HTTP/1.1 ${response.status} ${response.statusMessage}\r\n${endToEndLines(response.rawHeaders, false)}\r\n`;
}

/**
 * A trailer section ending a chunked body ("0\r\n" + fields + "\r\n"), with the fields a
 * trailer may not carry on (identity headers in any spelling, framing, routing) left out.
 */
export function lastChunk(trailers: readonly string[]): string {
  let text = "0\r\n";
  for (let i = 0; i < trailers.length; i += 2) {
    if (forwardedTrailer(trailers[i]!.toLowerCase())) text += `${trailers[i]}: ${trailers[i + 1]}\r\n`;
  }
  return `${text}\r\n`;
}

/** Whether a request's fields (name/value pairs) carry `expect: 100-continue`. */
export function expectsContinue(rawHeaders: readonly string[]): boolean {
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    if (rawHeaders[i]!.toLowerCase() === "expect" && rawHeaders[i + 1]!.trim().toLowerCase() === "100-continue") return true;
  }
  return false;
}
