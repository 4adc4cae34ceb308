import type { Socket } from "node:net";

export type FirstBytes = ChunkKind | "closed" | "timeout";
/** What a first chunk looks like. */
export type ChunkKind = "tls" | "h2c" | "http1" | "garbage";

const TLS_HANDSHAKE = 0x16;
const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
const HTTP_METHOD = /^[A-Z]{3,10} /;

/**
 * Reads the first bytes of a new connection and puts them back (TLSSocket and the HTTP
 * parsers pick up buffered data), then says what they look like: a TLS handshake record
 * (0x16), the HTTP/2 prior-knowledge preface, an HTTP/1 request line, or anything else. A first
 * chunk too short to tell (a request line cut before the space after its method) waits for more.
 */
export function sniffFirstBytes(socket: Socket, timeoutMs: number, onResult: (kind: FirstBytes, first: Buffer | undefined) => void): void {
  let done = false;
  let seen: Buffer | undefined;
  const finish = (kind: FirstBytes, chunk?: Buffer) => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    socket.removeListener("data", onData);
    socket.removeListener("close", onClose);
    socket.removeListener("error", onClose);
    if (chunk !== undefined) {
      socket.pause();
      socket.unshift(chunk);
    }
    onResult(kind, chunk);
  };
  const onData = (chunk: Buffer) => {
    seen = seen === undefined ? chunk : Buffer.concat([seen, chunk]);
    const kind = classify(seen);
    if (kind !== "more") finish(kind, seen);
  };
  const onClose = () => finish("closed");
  const timer = setTimeout(() => finish("timeout"), timeoutMs);
  timer.unref();
  socket.on("data", onData);
  socket.once("close", onClose);
  socket.once("error", onClose);
}

/** Request-line bytes after which an HTTP/1 method must have ended (the longest is 10 letters). */
const METHOD_WINDOW = 12;

/**
 * What the first bytes of a connection are, or "more" while they are too few to tell: a
 * beginning of the HTTP/2 preface or uppercase letters that may yet be a method and its space.
 */
export function classify(first: Buffer): ChunkKind | "more" {
  if (first.length === 0) return "more";
  if (first[0] === TLS_HANDSHAKE) return "tls";
  const head = first.subarray(0, Math.min(first.length, H2_PREFACE.length));
  if (H2_PREFACE.subarray(0, head.length).equals(head)) return head.length >= 4 ? "h2c" : "more";
  const start = first.subarray(0, METHOD_WINDOW).toString("latin1");
  if (HTTP_METHOD.test(start)) return "http1";
  return first.length < METHOD_WINDOW && /^[A-Z]+$/.test(start) ? "more" : "garbage";
}

/**
 * The same sniff for a listener where every request may come on a new connection (the
 * outbound): the first chunk is handed on instead of put back (no pause, unshift and re-read),
 * and one sweep per listener closes connections that sent nothing in time instead of a timer
 * per connection. A connection that closes before its first byte is just forgotten.
 */
export class FirstChunkWatch {
  readonly #waiting = new Map<Socket, number>();
  readonly #sweeper: NodeJS.Timeout;

  constructor(
    private readonly timeoutMs: number,
    private readonly onTimeout: (socket: Socket) => void,
  ) {
    this.#sweeper = setInterval(() => this.#sweep(), Math.max(50, Math.min(1000, Math.floor(timeoutMs / 4))));
    this.#sweeper.unref();
  }

  /**
   * Calls `onFirst` with the first bytes once they tell what they are (usually the first chunk),
   * inside a 'data' event: the callee must take the socket over at once (attach its own 'data'
   * listener, or pause it), or later chunks are lost.
   */
  watch(socket: Socket, onFirst: (kind: ChunkKind, first: Buffer) => void): void {
    this.#waiting.set(socket, Date.now());
    let seen: Buffer | undefined;
    const onData = (chunk: Buffer) => {
      seen = seen === undefined ? chunk : Buffer.concat([seen, chunk]);
      const kind = classify(seen);
      if (kind === "more") return;
      socket.removeListener("data", onData);
      if (this.#waiting.delete(socket)) onFirst(kind, seen);
    };
    socket.on("data", onData);
  }

  close(): void {
    clearInterval(this.#sweeper);
    this.#waiting.clear();
  }

  #sweep(): void {
    const oldest = Date.now() - this.timeoutMs;
    for (const [socket, since] of this.#waiting) {
      if (socket.destroyed) {
        this.#waiting.delete(socket);
      } else if (since <= oldest) {
        this.#waiting.delete(socket);
        this.onTimeout(socket);
      }
    }
  }
}
