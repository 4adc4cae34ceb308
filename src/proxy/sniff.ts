import type { Socket } from "node:net";

export type FirstBytes = ChunkKind | "closed" | "timeout";
/** What a first chunk looks like. */
export type ChunkKind = "tls" | "h2c" | "http1" | "garbage";

const TLS_HANDSHAKE = 0x16;
const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
const HTTP_METHOD = /^[A-Z]{3,10} /;

/**
 * Reads the first chunk of a new connection and puts it back (TLSSocket and the HTTP
 * parsers pick up buffered data), then says what it looks like: a TLS handshake record
 * (0x16), the HTTP/2 prior-knowledge preface, an HTTP/1 request line, or anything else.
 */
export function sniffFirstBytes(socket: Socket, timeoutMs: number, onResult: (kind: FirstBytes, first: Buffer | undefined) => void): void {
  let done = false;
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
  const onData = (chunk: Buffer) => finish(classify(chunk), chunk);
  const onClose = () => finish("closed");
  const timer = setTimeout(() => finish("timeout"), timeoutMs);
  timer.unref();
  socket.on("data", onData);
  socket.once("close", onClose);
  socket.once("error", onClose);
}

export function classify(chunk: Buffer): ChunkKind {
  if (chunk.length === 0) return "garbage";
  if (chunk[0] === TLS_HANDSHAKE) return "tls";
  const head = chunk.subarray(0, Math.min(chunk.length, H2_PREFACE.length));
  if (head.length >= 3 && H2_PREFACE.subarray(0, head.length).equals(head)) return "h2c";
  if (HTTP_METHOD.test(chunk.subarray(0, 12).toString("latin1"))) return "http1";
  return "garbage";
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
   * Calls `onFirst` with the first chunk, inside its 'data' event: the callee must take the
   * socket over at once (attach its own 'data' listener, or pause it), or later chunks are lost.
   */
  watch(socket: Socket, onFirst: (kind: ChunkKind, first: Buffer) => void): void {
    this.#waiting.set(socket, Date.now());
    socket.once("data", (chunk: Buffer) => {
      if (!this.#waiting.delete(socket)) return;
      onFirst(classify(chunk), chunk);
    });
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
