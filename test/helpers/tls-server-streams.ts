import { Socket } from "node:net";
import { TLSSocket } from "node:tls";

/**
 * What each server-side TLSSocket of this process was made over, by local port: `native` when it
 * wraps a net.Socket with its native handle (Node's TLS path, TLSWrap reading the TCP handle in
 * C++), false when it wraps a JS stream (e.g. the handshake byte cap's counting Duplex, which Node
 * puts behind a JSStreamSocket for the connection's life). Hooks TLSSocket.prototype._init once
 * per process and never unhooks it (src/tls/handshake-cap.ts may have hooked it on top since).
 */
export interface TlsServerStream {
  readonly localPort: number | undefined;
  readonly native: boolean;
}

const seen: TlsServerStream[] = [];
let hooked = false;

export function recordTlsServerStreams(): void {
  if (hooked) return;
  const proto = TLSSocket.prototype as unknown as { _init: (this: TLSSocket & { _tlsOptions?: { isServer?: boolean } }, socket: unknown, wrap: unknown) => unknown };
  const init = proto._init;
  if (typeof init !== "function") throw new Error("node:tls's TLSSocket has no _init (a Node release changed it)");
  hooked = true;
  proto._init = function (socket: unknown, wrap: unknown) {
    if (this._tlsOptions?.isServer === true) {
      const native = socket instanceof Socket && (socket as unknown as { _handle?: object })._handle?.constructor.name === "TCP";
      seen.push({ localPort: (socket as { localPort?: number } | undefined)?.localPort, native });
    }
    return init.call(this, socket, wrap);
  };
}

/** The server-side TLS streams recorded so far for connections accepted on `port`. */
export function tlsServerStreamsOn(port: number): TlsServerStream[] {
  return seen.filter((s) => s.localPort === port);
}
