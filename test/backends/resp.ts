import { connect as netConnect } from "node:net";
import type { Socket } from "node:net";
import { connect as tlsConnect } from "node:tls";
import type { ConnectionOptions } from "node:tls";

export interface PingResult {
  /** The first reply line, e.g. "+PONG", or undefined when the connection failed. */
  readonly reply: string | undefined;
  readonly error: string | undefined;
}

/** Sends RESP `PING` on an open socket and reads one reply line (or the failure). */
export function pingOver(socket: Socket, timeoutMs = 5_000): Promise<PingResult> {
  return new Promise((resolve) => {
    let data = "";
    let settled = false;
    const done = (result: PingResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => done({ reply: undefined, error: "timeout" }), timeoutMs);
    socket.on("data", (chunk: Buffer) => {
      data += chunk.toString("utf8");
      const end = data.indexOf("\r\n");
      if (end >= 0) done({ reply: data.slice(0, end), error: undefined });
    });
    socket.on("error", (error: Error & { code?: string }) => done({ reply: undefined, error: `${error.code ?? ""} ${error.message}`.trim() }));
    socket.on("close", () => done({ reply: undefined, error: "closed" }));
    socket.write("*1\r\n$4\r\nPING\r\n");
  });
}

/** PING over TLS with the given options (cert/key/ca/servername...). */
export function tlsPing(options: ConnectionOptions): Promise<PingResult> {
  return pingOver(tlsConnect(options));
}

/** PING in plaintext (through an egress). */
export function plainPing(host: string, port: number): Promise<PingResult> {
  return pingOver(netConnect({ host, port }));
}
