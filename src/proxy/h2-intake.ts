import { constants as h2 } from "node:http2";
import type { Http2Stream } from "node:http2";
import { SMALL_CHUNK, unpinned } from "./http1/chunk-stage.ts";
import type { HeldAccount } from "./held-budget.ts";

/**
 * Reads an HTTP/2 stream's incoming body (a caller's request on a server stream, an app's or a
 * peer's response on a client stream) so that what a stream that is not read may make the
 * sidecar hold costs its bytes, never its frames.
 *
 * node:http2 stops opening a stream's flow-control window while the stream does not read
 * (`pause()` stops its handle), but every DATA frame the window still lets in is handed to the
 * stream as its own Buffer, and that Buffer is a slice of the whole socket read it came in (up to
 * 16 KiB through TLS, 64 KiB in plaintext): a paused stream kept each one, so a caller that sent
 * 1-byte DATA frames, each in its own read padded with frames nobody reads (unknown frame types
 * are not flow-controlled), made one stream of the default 65,535-byte window hold ~1 GiB;
 * plain 1-byte frames ~8 MiB (~110 bytes of Buffer per byte).
 *
 * Here the stream never pauses: it stays flowing and every frame comes through `data`. To hold
 * the caller, its handle stops reading (what `pause()` does) and its `_read`, the one place
 * node:http2 opens the window again (`readStart`), does nothing until `release()`. The frames the
 * window still lets in are copied, back to back, into buffers of 16 KiB: a held stream holds at
 * most one window of bytes (the caller's SETTINGS_INITIAL_WINDOW_SIZE as we advertise it: on the
 * inbound h2StreamWindow, 16 KiB at the default limits; elsewhere node:http2's 64 KiB), whatever
 * the frames. A stream starts held, so one that waits for a connection to the
 * app holds the same.
 *
 * What the sink is handed as it comes is queued by it (toward a side that may not read), so a frame
 * of SMALL_CHUNK bytes or more that keeps alive much more than its bytes (a 4 KiB frame alone in
 * a 64 KiB read, the rest of it frames nobody reads) is copied first (`unpinned`); smaller ones
 * are copied by the sinks' stage (ChunkStage). ("The caller" below is whoever sends on the stream: on a client stream, the
 * app or peer sidecar answering; the window is then the one the sidecar's client session advertises.)
 */
export interface IntakeSink {
  /** A piece of the body, in order; may call hold(). */
  readonly data: (chunk: Buffer) => void;
  /** The body ended (END_STREAM), after every piece. */
  readonly end: () => void;
}

/** Bytes held while the caller is held go into buffers of this size. */
const HELD_BUFFER = 16 * 1024;
/**
 * Far above one flow-control window (at most 64 KiB as the sidecar advertises it): held bytes past this
 * mean node:http2 opened the window again behind `_read` (a Node release that no longer goes
 * through it), so the hold no longer bounds anything. The stream is reset (ENHANCE_YOUR_CALM)
 * rather than held without limit.
 */
export const MAX_HELD_BYTES = 1024 * 1024;
const intakes = new WeakMap<Http2Stream, H2Intake>();

/**
 * What the held bytes of an inbound request are counted against (limits.maxHeldRequestBytes,
 * HeldBudget), and what to do with the stream when the next frame would go past it: the held
 * bytes are let go first.
 */
export interface IntakeBudget {
  readonly account: HeldAccount;
  readonly over: () => void;
}

export class H2Intake {
  /** The stream's intake, made (and the stream held) on first use. */
  static of(stream: Http2Stream, budget?: IntakeBudget): H2Intake {
    let intake = intakes.get(stream);
    if (intake === undefined) intakes.set(stream, (intake = new H2Intake(stream, budget)));
    return intake;
  }

  readonly #stream: Http2Stream;
  #sink: IntakeSink | undefined;
  #holding = false;
  /** END_STREAM came; the sink hears of it once every held piece has gone. */
  #ended = false;
  #endSent = false;
  /** Held bytes, copied back to back: full buffers, then the one being filled (#tail, #tailUsed bytes). */
  readonly #held: Buffer[] = [];
  #tail: Buffer | undefined;
  #tailUsed = 0;
  #heldBytes = 0;
  readonly #budget: IntakeBudget | undefined;
  /** What the held buffers count against the budget (HELD_BUFFER each). */
  #charged = 0;
  /** Over the budget: the stream is being refused, its further frames are dropped. */
  #dropping = false;

  private constructor(stream: Http2Stream, budget: IntakeBudget | undefined) {
    this.#stream = stream;
    this.#budget = budget;
    // `_read` is where node:http2 starts its handle reading (and opens the window again): while
    // held it does nothing. Set once (not swapped per hold), so that the stream keeps its shape.
    const read = stream._read;
    stream._read = (size: number) => {
      if (!this.#holding) read.call(stream, size);
    };
    this.hold();
    stream.on("data", (chunk: Buffer) => {
      if (this.#holding || this.#sink === undefined) return this.#keep(chunk);
      this.#sink.data(chunk.length >= SMALL_CHUNK ? unpinned(chunk) : chunk);
    });
    stream.once("end", () => {
      this.#ended = true;
      if (!this.#holding && this.#sink !== undefined) this.#sendEnd();
    });
  }

  /** Bytes held for the sink (a bound: at most one flow-control window's worth plus what was held when reading stopped). */
  get heldBytes(): number {
    return this.#heldBytes;
  }

  get holding(): boolean {
    return this.#holding;
  }

  /** Hands the body to `sink` from now on: what was held first, then the rest as it comes. */
  start(sink: IntakeSink): void {
    this.#sink = sink;
    this.release();
  }

  /** Stops reading from the caller: its window stays shut, the frames already let in are held as bytes. */
  hold(): void {
    if (this.#holding) return;
    this.#holding = true;
    const stream = this.#stream;
    // `_read` does nothing now (see the constructor); the stream itself keeps flowing, so that
    // each frame that comes is copied and let go.
    if (stream.destroyed) return;
    // pause() stops the handle at once (node:http2's 'pause' listener); resume() lets frames flow
    // to `data` again without reading more (its read() reaches only the `_read` above).
    stream.pause();
    stream.resume();
  }

  /** Reading from the caller goes on: what was held goes to the sink first (which may hold again). */
  release(): void {
    const sink = this.#sink;
    if (!this.#holding || sink === undefined) return;
    this.#holding = false;
    const stream = this.#stream;
    const held = this.#takeHeld(false);
    for (let i = 0; i < held.length; i++) {
      // Each piece is one held buffer (HELD_BUFFER counted), let go as it is passed on.
      this.#uncharge(HELD_BUFFER);
      sink.data(held[i]!);
      if (this.#holding) {
        // Held again: the rest waits, in front of anything that comes meanwhile.
        this.#held.unshift(...held.slice(i + 1));
        this.#heldBytes = this.#held.reduce((sum, piece) => sum + piece.length, 0) + this.#tailUsed;
        return;
      }
    }
    if (this.#ended) return this.#sendEnd();
    // The handle reads again (node:http2 opens the window by what was taken meanwhile).
    if (!stream.destroyed) stream._read(stream.readableHighWaterMark);
  }

  #sendEnd(): void {
    if (this.#endSent) return;
    this.#endSent = true;
    this.#sink!.end();
  }

  #keep(chunk: Buffer): void {
    if (this.#dropping) return;
    if (this.#heldBytes + chunk.length > MAX_HELD_BYTES) {
      this.#takeHeld();
      if (!this.#stream.destroyed) {
        // The reset is reported as the stream's 'error': never an uncaught one.
        this.#stream.on("error", () => undefined);
        this.#stream.close(h2.NGHTTP2_ENHANCE_YOUR_CALM);
      }
      return;
    }
    this.#heldBytes += chunk.length;
    for (let at = 0; at < chunk.length; ) {
      if (this.#tail === undefined || this.#tailUsed === this.#tail.length) {
        // What is counted is what is allocated: a buffer of HELD_BUFFER, however few bytes it holds.
        if (this.#budget !== undefined && !this.#budget.account.take(HELD_BUFFER)) {
          // The listener (or this caller address) holds its limits.maxHeldRequestBytes already:
          // nothing more of this body is kept.
          this.#dropping = true;
          this.#takeHeld();
          if (!this.#stream.destroyed) this.#budget.over();
          return;
        }
        if (this.#tail !== undefined) this.#held.push(this.#tail);
        // Not from Node's buffer pool (64 KiB slabs from Node 22): a held buffer keeps only itself.
        this.#tail = Buffer.allocUnsafeSlow(HELD_BUFFER);
        this.#tailUsed = 0;
        this.#charged += HELD_BUFFER;
      }
      const n = chunk.copy(this.#tail, this.#tailUsed, at);
      this.#tailUsed += n;
      at += n;
    }
  }

  #uncharge(bytes: number): void {
    const n = Math.min(bytes, this.#charged);
    this.#charged -= n;
    this.#budget?.account.give(n);
  }

  /** Takes the held bytes out; `giveBack`: they leave the budget now (else as the caller passes each on). */
  #takeHeld(giveBack = true): Buffer[] {
    const held = this.#held.splice(0);
    if (this.#tail !== undefined && this.#tailUsed > 0) held.push(this.#tail.subarray(0, this.#tailUsed));
    this.#tail = undefined;
    this.#tailUsed = 0;
    if (giveBack) this.#uncharge(this.#charged);
    this.#heldBytes = 0;
    return held;
  }
}
