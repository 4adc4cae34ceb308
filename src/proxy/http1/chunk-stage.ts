/**
 * HTTP/1.1 chunked framing of body pieces with few writes. A piece llhttp hands on is framed as
 * one chunk ("<hex size>\r\n" + data + "\r\n"). Written as three writes each, a body of 1-byte
 * chunks became three queued writes (a Buffer and a queue entry each, ~50× the bytes on the wire)
 * per byte, and a read of 64 KiB of such a body became ~33,000 of them before the writer could
 * say it was full (review bounds HIGH-1/2). Small pieces are instead copied into a stage and the
 * stage leaves as one write at the end of the read (or when it is full), so what is queued is
 * counted by the stream's writableLength within a few bytes, and the reader stops on it.
 */

/** Pieces shorter than this are copied into the stage; longer ones are written as they are (three writes, corked). */
export const SMALL_CHUNK = 4096;
/**
 * A piece handed on as it is (not copied) keeps alive the whole buffer it is a slice of: for an
 * HTTP/2 DATA frame, the socket read it came in (64 KiB in plaintext, 16 KiB through TLS). Pieces
 * that keep more than this many times their bytes are copied first (`unpinned`), so that what is
 * queued for a side that does not read costs at most this many times its bytes. A full DATA frame
 * (16 KiB) from a 64 KiB read keeps ~4 times its bytes and is passed on as it is.
 */
export const MAX_PIN_RATIO = 5;

/** `chunk`, or a copy of it when it keeps alive more than MAX_PIN_RATIO times its bytes (the copy keeps only its own). */
export function unpinned(chunk: Buffer): Buffer {
  if (chunk.buffer.byteLength <= MAX_PIN_RATIO * chunk.length) return chunk;
  const copy = Buffer.allocUnsafeSlow(chunk.length);
  chunk.copy(copy);
  return copy;
}

/** A stage after the first one in a read (the first is sized to its piece, from Node's buffer pool). */
const STAGE_BYTES = 16 * 1024;
/** Room a small piece takes besides its data: up to 3 hex digits (SMALL_CHUNK - 1 = 0xfff) and two CRLFs. */
const FRAMING = 7;
const HEX = [48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 97, 98, 99, 100, 101, 102];

/** Chunk framing for pieces of SMALL_CHUNK bytes or more: the size line, written before the piece and CRLF. */
export function chunkSizeLine(length: number): Buffer {
  return Buffer.from(`${length.toString(16)}\r\n`, "latin1");
}

function frame(out: Buffer, at: number, data: Buffer): number {
  const n = data.length;
  if (n >= 256) out[at++] = HEX[n >> 8]!;
  if (n >= 16) out[at++] = HEX[(n >> 4) & 15]!;
  out[at++] = HEX[n & 15]!;
  out[at++] = 13;
  out[at++] = 10;
  at += data.copy(out, at);
  out[at++] = 13;
  out[at++] = 10;
  return at;
}

/**
 * Small pieces framed back to back, taken out as one buffer. Holds a buffer only while a read is
 * being handled: `take()` at the end of it lets the buffer go (what was taken stays valid), so an
 * idle connection holds nothing here. Unframed (`framed` false), the pieces are only copied back
 * to back: a body whose framing is not chunked (a Content-Length body toward an HTTP/1 app, any
 * body toward an HTTP/2 caller).
 */
export class ChunkStage {
  #buffer: Buffer | undefined;
  #start = 0;
  #end = 0;

  constructor(private readonly framed = true) {}

  /** Whether bytes wait to be taken. */
  get staged(): boolean {
    return this.#end !== this.#start;
  }

  /**
   * Frames a piece shorter than SMALL_CHUNK as one chunk after those staged (unframed: copies it).
   * Returns the bytes staged before it when the stage had no room for it (to be written first),
   * else undefined. An empty piece is left out: framed, it would read as the last chunk.
   */
  add(data: Buffer): Buffer | undefined {
    if (data.length === 0) return undefined;
    const need = this.framed ? data.length + FRAMING : data.length;
    let buffer = this.#buffer;
    let full: Buffer | undefined;
    if (buffer === undefined || buffer.length - this.#end < need) {
      full = this.#end !== this.#start ? buffer!.subarray(this.#start, this.#end) : undefined;
      // The first stage of a read fits its piece (a small body costs what one framed chunk did),
      // from Node's buffer pool; a later one of STAGE_BYTES is its own: from Node 22 the pool's
      // slabs are 64 KiB and 16 KiB comes from them, so a few queued bytes taken out of a stage
      // (a copy, also from the pool) kept a slab alive per few stages (21 KiB a read queued for an
      // app that does not read, two 1-byte DATA frames a read, on Node 26).
      buffer = this.#buffer = buffer === undefined ? Buffer.allocUnsafe(need) : Buffer.allocUnsafeSlow(Math.max(need, STAGE_BYTES));
      this.#start = this.#end = 0;
    }
    this.#end = this.framed ? frame(buffer, this.#end, data) : this.#end + data.copy(buffer, this.#end);
    return full;
  }

  /**
   * The staged bytes (undefined when none); the stage is empty after, and holds no buffer. A stage
   * of STAGE_BYTES holding only a few bytes is copied out (to Node's buffer pool), not handed on
   * whole: a sender whose every read ends with a few small pieces in a new stage (two 1-byte DATA
   * frames a read) would otherwise queue 16 KiB of stage per few bytes counted.
   */
  take(): Buffer | undefined {
    const buffer = this.#buffer;
    if (buffer === undefined) return undefined;
    this.#buffer = undefined;
    const bytes = this.#end !== this.#start ? buffer.subarray(this.#start, this.#end) : undefined;
    this.#start = this.#end = 0;
    // The stage's own size, not its ArrayBuffer's: the first stage of a read comes from the pool.
    if (bytes !== undefined && buffer.length > MAX_PIN_RATIO * bytes.length) return Buffer.from(bytes);
    return bytes;
  }
}
