import type { Socket } from "node:net";
import type { TLSSocket } from "node:tls";

/**
 * Names a TLS failure that came after a completed handshake. A client that refuses a
 * renegotiation (SSL_OP_NO_RENEGOTIATION, see policy.ts) answers the server's HelloRequest with a
 * no_renegotiation warning; OpenSSL servers then send a fatal alert, which the client reads as a
 * bare "sslv3 alert handshake failure" (ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE) on a connection
 * that was working: without a word about renegotiation, a user looks for the fault in the wrong
 * place. An error object carries no trace of the socket's state, so the sockets of meshward's
 * clients are watched (`watchHandshake`) and their later errors marked.
 */
const AFTER_HANDSHAKE = Symbol("meshward.tls.afterHandshake");
/** Sockets already watched: a keep-alive agent hands the same socket to several requests. */
const watched = new WeakSet<Socket>();

/**
 * Marks every error `socket` emits from now on as one after a completed TLS handshake, carrying
 * the first OpenSSL error the socket reported: a client may replace it by its own (undici
 * destroys the socket with "other side closed" on the end that follows the alert).
 */
export function markHandshakeCompleted(socket: Socket): void {
  watched.add(socket);
  let tlsError: Error | undefined;
  socket.prependListener("error", (error: unknown) => {
    if (typeof error !== "object" || error === null) return;
    if (tlsError === undefined && isOpenSslError(error)) tlsError = error as Error;
    if (tlsError !== undefined) (error as Record<symbol, unknown>)[AFTER_HANDSHAKE] = tlsError;
  });
}

/** Calls markHandshakeCompleted once `socket`'s handshake completes ('secureConnect'). */
export function watchHandshake(socket: TLSSocket | Socket): void {
  if (watched.has(socket)) return;
  watched.add(socket);
  socket.once("secureConnect", () => markHandshakeCompleted(socket));
}

/**
 * For a TLS alert (or another OpenSSL error) read after a completed handshake, anywhere in
 * `error`'s cause chain: what likely happened, with OpenSSL's own text. Otherwise undefined, and
 * the caller says what it said before.
 */
export function tlsAfterHandshakeFailure(error: unknown): string | undefined {
  for (let e: unknown = error, depth = 0; typeof e === "object" && e !== null && depth < 8; e = (e as { cause?: unknown }).cause, depth++) {
    const tlsError = (e as Record<symbol, unknown>)[AFTER_HANDSHAKE];
    if (tlsError instanceof Error) {
      return `the server's TLS connection failed after the handshake (${tlsError.message.trim()}); meshward refuses TLS renegotiation, which the server may have asked for`;
    }
  }
  return undefined;
}

function isOpenSslError(error: object): boolean {
  const { code, message } = error as { code?: unknown; message?: unknown };
  if (typeof code !== "string") return false;
  // node:https and http2 may report OpenSSL's verdict as EPROTO, with the reason in the message.
  return code.startsWith("ERR_SSL_") || (code === "EPROTO" && typeof message === "string" && /SSL routines|alert/.test(message));
}
