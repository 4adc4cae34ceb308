/**
 * The PostgreSQL wire-protocol preamble around TLS. PostgreSQL does not start with a TLS
 * ClientHello: the client first sends an SSLRequest (8 bytes: int32 length 8, int32 code
 * 80877103) and the server answers one byte, 'S' (go ahead with TLS) or 'N' (no TLS).
 */

export const SSL_REQUEST_CODE = 80877103;
export const GSSENC_REQUEST_CODE = 80877104;

/** int32 length = 8, int32 code = 80877103. */
export const SSL_REQUEST = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);

/** Longest preamble we keep before the startup message is recognised (a StartupMessage is at most 10 000 bytes). */
const MAX_PREAMBLE_BYTES = 64 * 1024;
/**
 * SSLRequests and GSSENCRequests answered before the startup message: libpq sends at most one of
 * each. Without a bound, a client streaming them and never reading had an 'N' queued in memory
 * per 8 bytes it sent.
 */
const MAX_ENCRYPTION_REQUESTS = 2;

export type BackendAnswer = { readonly ok: true } | { readonly ok: false; readonly reason: string };

/**
 * Reads the backend's one-byte answer to our SSLRequest. Anything after the 'S' byte
 * before the TLS handshake would be unauthenticated plaintext injected into the session
 * (CVE-2021-23222), so it is refused.
 */
export function readBackendAnswer(chunk: Buffer): BackendAnswer {
  if (chunk.length === 0) return { ok: false, reason: "the backend answered the SSLRequest with nothing" };
  const first = chunk[0];
  if (first === 0x4e /* N */) return { ok: false, reason: "the backend does not accept TLS (it answered 'N' to SSLRequest); turn on ssl in postgresql.conf" };
  if (first !== 0x53 /* S */) return { ok: false, reason: "the backend did not answer the SSLRequest like PostgreSQL (expected 'S' or 'N')" };
  if (chunk.length > 1) return { ok: false, reason: "the backend sent unencrypted bytes after 'S' (possible injection); refusing" };
  return { ok: true };
}

/**
 * The client side of the preamble: the app talks plaintext to us, but a client that asks
 * for TLS (SSLRequest) or GSSAPI encryption first is answered 'N' so it continues in
 * plaintext on the same connection (libpq sslmode=prefer, `pg` with ssl off never asks).
 */
export class ClientPreamble {
  #buffer: Buffer = Buffer.alloc(0);
  #done = false;
  #encryptionRequests = 0;

  get done(): boolean {
    return this.#done;
  }

  /**
   * Feeds client bytes. Returns the answers to write back to the client ('N' per request)
   * and, once the first real message (StartupMessage or CancelRequest) has begun, the bytes
   * to forward to the backend from then on.
   */
  push(chunk: Buffer): { reply: Buffer; forward: Buffer | undefined; error?: string } {
    if (this.#done) return { reply: Buffer.alloc(0), forward: chunk };
    this.#buffer = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk]);
    const replies: Buffer[] = [];
    while (this.#buffer.length >= 8) {
      const length = this.#buffer.readInt32BE(0);
      const code = this.#buffer.readInt32BE(4);
      if (length === 8 && (code === SSL_REQUEST_CODE || code === GSSENC_REQUEST_CODE)) {
        if (++this.#encryptionRequests > MAX_ENCRYPTION_REQUESTS) {
          return { reply: Buffer.concat(replies), forward: undefined, error: `more than ${MAX_ENCRYPTION_REQUESTS} SSLRequest/GSSENCRequest messages before the startup message` };
        }
        replies.push(Buffer.from("N"));
        this.#buffer = this.#buffer.subarray(8);
        continue;
      }
      this.#done = true;
      const forward = this.#buffer;
      this.#buffer = Buffer.alloc(0);
      return { reply: Buffer.concat(replies), forward };
    }
    if (this.#buffer.length > MAX_PREAMBLE_BYTES) return { reply: Buffer.alloc(0), forward: undefined, error: "the client preamble is too long" };
    return { reply: Buffer.concat(replies), forward: undefined };
  }
}

/**
 * A PostgreSQL ErrorResponse (severity FATAL, SQLSTATE 08006 connection_failure) so a
 * client such as `pg` or psql shows why the egress closed the connection.
 */
export function postgresErrorResponse(message: string): Buffer {
  const field = (type: string, value: string) => Buffer.concat([Buffer.from(type, "ascii"), Buffer.from(value, "utf8"), Buffer.from([0])]);
  const body = Buffer.concat([field("S", "FATAL"), field("V", "FATAL"), field("C", "08006"), field("M", message), Buffer.from([0])]);
  const header = Buffer.alloc(5);
  header.write("E", 0, "ascii");
  header.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([header, body]);
}
