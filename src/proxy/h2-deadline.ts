import { constants as h2 } from "node:http2";
import type { ServerHttp2Session, ServerHttp2Stream } from "node:http2";
import type { Socket } from "node:net";
import { CLOSE_GRACE_MS } from "./respond.ts";

/**
 * The deadlines of an HTTP/2 connection as a whole, which node:http2 does not have:
 *
 * - **headers** (`limits.headersTimeout`, the HTTP/1 relay's slowloris guard): a connection whose
 *   first request (stream) is not complete within it of the session's start, or on which a
 *   header block that has begun is not complete within it, is closed: GOAWAY (`NO_ERROR` when
 *   no block had begun, else `ENHANCE_YOUR_CALM`) and destroyed. A header block that has begun is
 *   nghttp2's own count, `session.state.lastProcStreamID` (the last stream whose HEADERS frame it
 *   began to read, set before the header block is read), ahead of the last stream node:http2
 *   handed over (`stream` event). A HEADERS frame without END_HEADERS whose CONTINUATION frames
 *   (or its own payload) are trickled a byte a second never became a stream: before, nothing
 *   ended it before the age cap (1 h): `closeWhenIdle`'s graceful `session.close()` waits for
 *   the stream nghttp2 has half received, and sends not even its GOAWAY (measured on Node 20).
 * - **idle** (`limits.idleTimeout`): a connection with no stream open for that long is closed
 *   (GOAWAY `NO_ERROR`) whatever else comes — PING, SETTINGS, WINDOW_UPDATE, unknown frame types —
 *   as Envoy's `idle_timeout` counts active streams only. (node:http2's session timer, which
 *   `closeWhenIdle` uses and which still closes a connection with streams open but no frame either
 *   way, skips PING and SETTINGS only while nobody listens for them.)
 *
 * A connection closed by these deadlines, or whose session is over (also by `closeWhenIdle`), that
 * is still open CLOSE_GRACE_MS later (a caller that keeps its side open after the GOAWAY: node:http2
 * ends ours and waits for it) is destroyed.
 *
 * One sweeper per listener checks every session (like the relay's), at a quarter of the shorter
 * deadline, 50 ms to 1 s: a deadline is met within one sweep.
 *
 * A stream node:http2 or nghttp2 refused after its HEADERS had begun (a header list past Node's
 * own limit, memory) leaves lastProcStreamID ahead with no stream: such a connection is closed
 * after headersTimeout unless another stream comes, rather than after idleTimeout.
 */
export interface H2DeadlineOptions {
  readonly headersTimeout: number;
  readonly idleTimeout: number;
  /** A connection closed by the headers deadline: counted and logged (reason header_timeout). */
  readonly headerTimedOut: (socket: Socket, detail: string) => void;
}

interface Watched {
  readonly session: ServerHttp2Session;
  readonly socket: Socket;
  readonly startedAt: number;
  /** Highest stream id handed over (`stream` event); 0 before the first. */
  seen: number;
  /** Streams open (from `stream` to `close`). */
  active: number;
  /** When the last open stream closed (or the session started). */
  idleSince: number;
  /** A header block seen begun (lastProcStreamID ahead of `seen`), and since when. */
  blockId: number;
  blockSince: number;
  /** When the session was told to close (0: not yet). */
  closingAt: number;
}

export class H2Deadlines {
  readonly #watched = new Map<ServerHttp2Session, Watched>();
  readonly #sweeper: NodeJS.Timeout;

  constructor(private readonly options: H2DeadlineOptions) {
    const every = Math.max(50, Math.min(1000, Math.floor(Math.min(options.headersTimeout, options.idleTimeout) / 4)));
    this.#sweeper = setInterval(() => this.#sweep(Date.now()), every);
    this.#sweeper.unref();
  }

  /** Watches a server session from its start (call in the server's `session` event). */
  watch(session: ServerHttp2Session, socket: Socket): void {
    const now = Date.now();
    const watched: Watched = { session, socket, startedAt: now, seen: 0, active: 0, idleSince: now, blockId: 0, blockSince: 0, closingAt: 0 };
    this.#watched.set(session, watched);
    session.on("stream", (stream: ServerHttp2Stream) => {
      const id = stream.id ?? 0;
      if (id > watched.seen) watched.seen = id;
      watched.blockId = 0;
      watched.active++;
      stream.once("close", () => {
        watched.active--;
        if (watched.active === 0) watched.idleSince = Date.now();
      });
    });
    const forget = () => this.#watched.delete(session);
    session.once("close", forget);
    socket.once("close", forget);
  }

  close(): void {
    clearInterval(this.#sweeper);
    this.#watched.clear();
  }

  #sweep(now: number): void {
    for (const watched of this.#watched.values()) this.#check(watched, now);
  }

  #check(watched: Watched, now: number): void {
    const { session, socket } = watched;
    const options = this.options;
    if (socket.destroyed) return void this.#watched.delete(session);
    if (watched.closingAt !== 0) {
      if (now - watched.closingAt > CLOSE_GRACE_MS) socket.destroy();
      return;
    }
    // Over, but the socket waits for the caller's side to close (after a graceful close, node:http2
    // ends its side and waits): given CLOSE_GRACE_MS as ours are.
    if (session.destroyed) {
      watched.closingAt = now;
      return;
    }
    // Closing by someone else (age cap, drain: GOAWAY, then drainTimeout for its streams).
    if (session.closed) return;
    const begun = session.state.lastProcStreamID ?? 0;
    if (begun > watched.seen) {
      if (watched.blockId !== begun) {
        watched.blockId = begun;
        watched.blockSince = now;
      }
    } else {
      watched.blockId = 0;
    }
    if (watched.blockId !== 0) {
      // A header block begun: within headersTimeout of the session's start for the first
      // request, else of when it was first seen (at most one sweep after it began).
      const since = watched.seen === 0 ? watched.startedAt : watched.blockSince;
      if (now - since > options.headersTimeout) return this.#expire(watched, now, h2.NGHTTP2_ENHANCE_YOUR_CALM, `the header block of HTTP/2 stream ${watched.blockId} was not complete within headersTimeout (${options.headersTimeout} ms)`);
    } else if (watched.seen === 0 && now - watched.startedAt > options.headersTimeout) {
      return this.#expire(watched, now, h2.NGHTTP2_NO_ERROR, `no HTTP/2 request arrived within headersTimeout (${options.headersTimeout} ms) of the connection's start`);
    }
    if (watched.active === 0 && watched.blockId === 0 && now - watched.idleSince > options.idleTimeout) {
      watched.closingAt = now;
      session.close();
      // A graceful close waits for streams nghttp2 still has: nothing is open here, so no wait.
      if (!session.destroyed) session.destroy();
    }
  }

  #expire(watched: Watched, now: number, code: number, detail: string): void {
    watched.closingAt = now;
    this.options.headerTimedOut(watched.socket, detail);
    // destroy(error, code) sends GOAWAY with `code` (destroy(undefined, code) would send NO_ERROR:
    // undefined takes the first parameter's default); the error goes to the session's 'error'
    // listener, which the listeners have.
    if (code === h2.NGHTTP2_NO_ERROR) watched.session.destroy();
    else watched.session.destroy(new Error(detail), code);
  }
}
