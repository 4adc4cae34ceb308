/**
 * HTTP/2 frames by hand (RFC 9113 §4.1), for tests that need what node:http2's own client never
 * sends: 1-byte DATA frames, unknown frame types, header blocks that never end, shut windows.
 */

/** The client connection preface. */
export const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/** One frame: 24-bit length, type, flags, 31-bit stream id, then the payload. */
export function h2Frame(type: number, flags: number, streamId: number, payload: Buffer): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(streamId, 5);
  return Buffer.concat([head, payload]);
}

/** WINDOW_UPDATE for a stream (or the connection: 0). */
export function h2WindowUpdate(streamId: number, increment: number): Buffer {
  const payload = Buffer.alloc(4);
  payload.writeUInt32BE(increment);
  return h2Frame(8, 0, streamId, payload);
}

/** SETTINGS carrying SETTINGS_INITIAL_WINDOW_SIZE only. */
export function h2InitialWindowSettings(window: number): Buffer {
  const payload = Buffer.alloc(6);
  payload.writeUInt16BE(4, 0);
  payload.writeUInt32BE(window, 2);
  return h2Frame(4, 0, 0, payload);
}

/** An HPACK string literal without Huffman coding (length under 128). */
export function hpackString(value: string): Buffer {
  return Buffer.concat([Buffer.from([value.length]), Buffer.from(value, "latin1")]);
}
