import type { Socket } from "node:net";

export type FirstBytes = "tls" | "h2c" | "http1" | "garbage" | "closed" | "timeout";

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

export function classify(chunk: Buffer): FirstBytes {
  if (chunk.length === 0) return "garbage";
  if (chunk[0] === TLS_HANDSHAKE) return "tls";
  const head = chunk.subarray(0, Math.min(chunk.length, H2_PREFACE.length));
  if (head.length >= 3 && H2_PREFACE.subarray(0, head.length).equals(head)) return "h2c";
  if (HTTP_METHOD.test(chunk.subarray(0, 12).toString("latin1"))) return "http1";
  return "garbage";
}
