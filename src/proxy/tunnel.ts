import type { Socket } from "node:net";
import { TUNNEL_END_GRACE_MS } from "../transport/common.ts";

/**
 * Joins the two sockets of a TCP tunnel (a TCP-mode inbound connection and its app connection,
 * a tcpUpstreams connection and its peer) both ways, passing a half-close on: when one side
 * sends its FIN (a client that writes its request, shuts down its sending side and reads the
 * reply: `nc -N`, whois, an HTTP/1.0 client reading to EOF), the other side's sending half is
 * ended (`end()`: FIN, or TLS close_notify then FIN) and bytes keep flowing the other way until
 * that side ends too. Each socket closes once both of its directions are done; one that closes
 * on an error, a timeout or a reset takes the other down at once. Without allowHalfOpen Node ends
 * a socket's sending side as soon as its peer's FIN is read, so the tunnel tore down both ways
 * and the reply was lost.
 *
 * Bounds stay the caller's: its idle timer (limits.idleTimeout, a half-closed tunnel included)
 * and the age cap destroy one side, and with it the other. A socket left after its partner
 * closed cleanly (both of its directions done) is destroyed TUNNEL_END_GRACE_MS later if it is
 * still open then.
 */
export function joinTunnel(a: Socket, b: Socket): void {
  a.allowHalfOpen = true;
  b.allowHalfOpen = true;
  const follow = (closed: Socket, other: Socket) => {
    closed.once("close", () => {
      if (other.destroyed) return;
      // The other side has sent all it will and was ended by the pipe: let it finish its writes.
      if (other.readableEnded && !closed.errored) {
        other.end();
        const grace = setTimeout(() => other.destroy(), TUNNEL_END_GRACE_MS);
        grace.unref();
        other.once("close", () => clearTimeout(grace));
        return;
      }
      other.destroy();
    });
  };
  follow(a, b);
  follow(b, a);
  a.pipe(b);
  b.pipe(a);
}
