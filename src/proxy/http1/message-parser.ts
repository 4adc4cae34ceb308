/**
 * The interface the relay parses HTTP/1 with, whatever llhttp build is behind it
 * (llhttp-node.ts: Node's own; llhttp-wasm.ts: a pinned WebAssembly build). Both adapters give
 * the same events for the same bytes; test/proxy/http1-parsers.test.ts holds them to it.
 */

/** The head of one HTTP/1 message, as received. */
export interface MessageHead {
  /** Request method (requests only; "" for responses). */
  readonly method: string;
  /** Request target as sent (requests only). */
  readonly url: string;
  /** Response status (responses only; 0 for requests). */
  readonly status: number;
  readonly statusMessage: string;
  /** The HTTP version as received (llhttp parses 0.9, 1.0, 1.1 and 2.0 in a request line). */
  readonly httpMajor: number;
  readonly httpMinor: number;
  /** Name, value, name, value… in the order and case received. */
  readonly rawHeaders: readonly string[];
  /** Connection: upgrade with Upgrade, or CONNECT: the parser stops after this head. */
  readonly upgrade: boolean;
  /** What the message says about the connection after it (HTTP version + Connection header). */
  readonly keepAlive: boolean;
}

/**
 * onHead's answer when what follows the head must wait (a pipelined request that cannot be
 * started yet): execute returns the bytes consumed up to the end of this head, and the next
 * execute resumes right there with the bytes that followed it (an empty chunk when none have
 * come yet: it runs what needs no input, such as a bodiless message's onComplete).
 */
export const STOP_AFTER_HEAD = "stop";

export interface MessageEvents {
  /**
   * The first byte of a message was consumed (CR/LF between messages are not one). Optional: a
   * parser without it makes no call per message.
   */
  onMessageBegin?(): void;
  /**
   * Return true for a response that has no body whatever its headers say (the answer to HEAD);
   * STOP_AFTER_HEAD to stop parsing after this head.
   */
  onHead(head: MessageHead): boolean | typeof STOP_AFTER_HEAD;
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
  /**
   * Parses a chunk; returns the bytes consumed (fewer than given after an upgrade head, or after
   * a head onHead answered STOP_AFTER_HEAD) or the failure.
   */
  execute(chunk: Buffer): number | ParseFailure;
  /** The stream ended: completes a close-delimited body, or fails for a message cut short. */
  finish(): ParseFailure | undefined;
  close(): void;
}

/** Makes a strict (non-lenient) parser for requests or responses, one per connection. */
export type MessageParserFactory = (kind: "request" | "response", maxHeaderBytes: number, events: MessageEvents) => MessageParser;

export const EMPTY: readonly string[] = [];
/** llhttp's HPE_PAUSED: returned from on_headers_complete, execute() stops right after the head. */
export const PAUSE = 21;
/**
 * Bodies at least this long bypass llhttp. Pausing costs an Error object from Node's binding
 * and a re-initialisation, more than copying a small body (measured: small requests 10.3k →
 * 8.1k req/s through a sidecar pair when every body took the bypass; 1 MiB bodies 200 →
 * 266–298 MB/s).
 */
export const RAW_BODY_MIN = 16 * 1024;

/** The Content-Length of a message that has no Transfer-Encoding, else -1 (llhttp has validated both). */
export function knownLength(rawHeaders: readonly string[]): number {
  let length = -1;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    if (name.length === 14 && name.toLowerCase() === "content-length") length = Number(rawHeaders[i + 1]);
    else if (name.length === 17 && name.toLowerCase() === "transfer-encoding") return -1;
  }
  return Number.isSafeInteger(length) ? length : -1;
}

/**
 * What onHeadersComplete tells llhttp after the head, the same for both builds: 1 skips the body
 * (the answer to HEAD), PAUSE stops before a large body of known length (the adapter hands its
 * bytes on itself) or where onHead asked to stop, 0 parses on. When it pauses, `pause` gets the
 * length of the body to hand on raw (0: none) and whether execute must return there.
 */
export function afterHead(head: MessageHead, events: MessageEvents, pause: (rawLength: number, stop: boolean) => void): number {
  const answer = events.onHead(head);
  if (answer === true) return 1;
  const stop = answer === STOP_AFTER_HEAD;
  const code = head.status;
  const length = head.upgrade || (code >= 100 && code < 200) || code === 204 || code === 304 ? -1 : knownLength(head.rawHeaders);
  if (length < RAW_BODY_MIN) {
    if (!stop) return 0;
    pause(0, true);
    return PAUSE;
  }
  pause(length, stop);
  return PAUSE;
}
