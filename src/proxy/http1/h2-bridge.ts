import { constants as h2 } from "node:http2";
import type { OutgoingHttpHeaders, ServerHttp2Stream } from "node:http2";
import type { CanonicalH2Request } from "../canonical.ts";
import type { BodyInspector } from "../method-override-body.ts";
import { forwardableHeaders } from "../headers.ts";
import { answerH2, resetAfterAnswer } from "../respond.ts";
import type { ProxyAnswer } from "../respond.ts";
import { BODY_TIMEOUT_ANSWER, IdleTimer, upstreamTimeoutError } from "../stream-idle.ts";
import type { RevokeStream, StreamIdleRule } from "../stream-idle.ts";
import type { MessageHead } from "./llhttp.ts";
import { maySendAgain } from "./pool.ts";
import type { Http1Pool, ResponseSink, UpstreamConnection } from "./pool.ts";
import { ChunkStage, chunkSizeLine, SMALL_CHUNK, unpinned } from "./chunk-stage.ts";
import { H2Intake } from "../h2-intake.ts";
import { declaredFraming, expectsContinue, headersObject, upstreamRequestHead } from "./wire.ts";
import type { BodyFraming } from "./wire.ts";

export interface H2ToHttp1Hooks {
  /** Header lines added to the forwarded request ("name: value\r\n"…). */
  readonly addHeaders: string;
  /** What to answer when the upstream fails before responding, or sent no response in time (isUpstreamTimeout: 504). */
  readonly onUpstreamError: (error: Error) => ProxyAnswer;
  /** Called once with the final status (0 when the exchange broke). */
  readonly done: (status: number) => void;
  /** How long the stream may go without a byte either way once it is forwarded (limits.idleTimeout). */
  readonly idle: StreamIdleRule;
  /**
   * Reads the body before it is forwarded; a problem refuses the request (the app never gets the
   * body's end) with the answer `refused` gives (which also logs it).
   */
  readonly bodyCheck?: { readonly inspector: BodyInspector; readonly refused: (problem: string) => ProxyAnswer };
}

const CRLF = Buffer.from("\r\n");
const WAIT_FOR_TRAILERS = Object.freeze({ waitForTrailers: true });

/** Ends a response whose trailers were waited for: empty trailers go as an empty END_STREAM DATA frame. */
function sendNoTrailers(this: ServerHttp2Stream): void {
  this.sendTrailers({});
}

/**
 * HTTP/2 in (a caller that is not gRPC), HTTP/1.1 out on a pooled upstream connection. The
 * head goes through upstreamRequestHead, the one framing function the HTTP/1 relay uses too:
 * an HTTP/2 body ends with END_STREAM and needs no length, so it is sent with its declared
 * Content-Length, or chunked, and a request that ended with its HEADERS frame is sent with
 * neither. A body that does not match its declared length never reaches the app: the upstream
 * connection is closed instead. Once it has a connection, the stream ends as an HTTP/1 exchange
 * does after `idle.ms` without a byte read from the caller or written to it: 408 while the body is
 * due, 504 when the app sent no response, RST_STREAM (CANCEL) once the response has started; the
 * connection to the app is closed (it is in the middle of the exchange). Returns how to end it
 * early with a refusal, as forwardH2 does.
 */
export function forwardH2ToHttp1(stream: ServerHttp2Stream, request: CanonicalH2Request, endStream: boolean, pool: Http1Pool, hooks: H2ToHttp1Hooks): RevokeStream {
  const framing: BodyFraming = endStream ? "none" : request.contentLength !== undefined ? "length" : "chunked";
  const head = upstreamRequestHead(request.method, request.target.target, request.rawHeaders, framing, hooks.addHeaders, request.authority ?? pool.authority);
  const exchange = new H2Exchange(stream, request, framing, head, pool, hooks, endStream);
  exchange.connect();
  return (answer) => exchange.revoke(answer);
}

class H2Exchange implements ResponseSink {
  readonly method: string;
  readonly downstream: ServerHttp2Stream;
  #upstream: UpstreamConnection | undefined;
  /** Waiting for a connection from the pool: withdrawn if the stream closes first. */
  #acquiring: Promise<UpstreamConnection> | undefined;
  #requestComplete: boolean;
  #bodyBytes = 0;
  #status = 0;
  #responded = false;
  #attempts = 0;
  #finished = false;
  #inspector: BodyInspector | undefined;
  /** Runs from the first connection to the app until the exchange is over. */
  #idle: IdleTimer | undefined;
  /** Small DATA frames for the app, staged until the end of the session's read (a setImmediate) or a full stage. */
  #requestStage: ChunkStage | undefined;
  #requestFlush: NodeJS.Immediate | undefined;
  /** Reads the caller's body; holds it (as bytes, at most a window of them) while the app's connection is full. */
  readonly #intake: H2Intake;
  /** Reading from the caller stopped until the app's connection drains. */
  #holdingCaller = false;
  /** Small response pieces for the caller, staged until the end of the app's read (onReadEnd). */
  readonly #responseStage = new ChunkStage(false);
  /** The caller sent `expect: 100-continue`: the app's `100 Continue` is passed on to it. */
  readonly #expectsContinue: boolean;

  constructor(
    private readonly stream: ServerHttp2Stream,
    private readonly request: CanonicalH2Request,
    private readonly framing: BodyFraming,
    private readonly head: string,
    private readonly pool: Http1Pool,
    private readonly hooks: H2ToHttp1Hooks,
    endStream: boolean,
  ) {
    this.method = request.method;
    this.downstream = stream;
    this.#requestComplete = endStream;
    this.#inspector = hooks.bodyCheck?.inspector;
    this.#expectsContinue = !endStream && expectsContinue(request.rawHeaders);
    // Held (not read) until a connection to the app takes the body.
    this.#intake = H2Intake.of(stream);
    stream.on("error", () => undefined);
    stream.once("close", () => {
      this.#idle?.stop();
      this.#dropRequestStage();
      // The caller went away (or reset the stream) before its request or the response completed.
      if (this.#upstream !== undefined && (!this.#finished || !this.#requestComplete)) {
        this.#upstream.destroy();
        this.#upstream = undefined;
      }
      if (this.#acquiring !== undefined) this.pool.cancel(this.#acquiring);
      this.#acquiring = undefined;
      this.#finish(0);
    });
  }

  connect(): void {
    this.#attempts++;
    let acquired: UpstreamConnection | Promise<UpstreamConnection>;
    try {
      acquired = this.pool.acquire();
    } catch (error) {
      return this.onFailure(error as Error, false);
    }
    if (acquired instanceof Promise) {
      const pending = acquired;
      this.#acquiring = pending;
      const settled = () => {
        if (this.#acquiring === pending) this.#acquiring = undefined;
      };
      pending.then(
        (connection) => {
          settled();
          this.#attach(connection);
        },
        (error: Error) => {
          settled();
          this.onFailure(error, false);
        },
      );
    } else this.#attach(acquired);
  }

  #attach(connection: UpstreamConnection): void {
    if (this.#finished) return void this.pool.release(connection);
    this.#upstream = connection;
    if (this.#idle === undefined) this.#idle = new IdleTimer(this.hooks.idle.ms, () => this.#idleTimedOut());
    else this.#idle.touch();
    connection.attach(this);
    connection.socket.write(this.head, "latin1");
    if (this.#requestComplete) return;
    const upstream = connection.socket;
    this.#requestStage = new ChunkStage(this.framing === "chunked");
    const data = (chunk: Buffer): void => {
      if (this.#upstream?.socket !== upstream) return;
      this.#idle?.touch();
      this.#bodyBytes += chunk.length;
      if (this.framing === "length" && this.#bodyBytes > this.request.contentLength!) return this.#bodyMismatch();
      const problem = this.#inspect(chunk);
      if (problem !== undefined) return this.#refuse(problem);
      // An empty DATA frame: framed, it would be the last chunk and end the body early.
      if (chunk.length === 0) return;
      if (chunk.length < SMALL_CHUNK) {
        // Staged: the DATA frames of one read from the caller leave in one write (a stage of 16 KiB at
        // most), so that what waits for the app is counted by its writableLength, as on the HTTP/1 side.
        const full = this.#requestStage!.add(chunk);
        if (full !== undefined) this.#toApp(upstream, full);
        this.#requestFlush ??= setImmediate(() => {
          this.#requestFlush = undefined;
          this.#flushRequestStage(upstream);
        });
        return;
      }
      this.#flushRequestStage(upstream);
      if (this.framing !== "chunked") return this.#toApp(upstream, chunk);
      upstream.cork();
      upstream.write(chunkSizeLine(chunk.length));
      upstream.write(chunk);
      this.#toApp(upstream, CRLF);
      upstream.uncork();
    };
    const end = (): void => {
      if (this.#upstream?.socket !== upstream) return;
      this.#idle?.touch();
      if (this.framing === "length" && this.#bodyBytes !== this.request.contentLength) return this.#bodyMismatch();
      const problem = this.#inspect(undefined);
      if (problem !== undefined) return this.#refuse(problem);
      this.#flushRequestStage(upstream);
      this.#dropRequestStage();
      if (this.framing === "chunked") upstream.write("0\r\n\r\n", "latin1");
      this.#requestComplete = true;
      if (this.#finished && this.#upstream !== undefined) {
        this.#releaseUpstream();
        this.#idle?.stop();
      }
    };
    this.#intake.start({ data, end });
  }

  /**
   * Body bytes to the app. When its connection holds a socket buffer it has not read, reading from
   * the caller stops (the stream's flow-control window stops opening; what it still lets in is
   * held as bytes, H2Intake) until it drains.
   */
  #toApp(upstream: UpstreamConnection["socket"], bytes: Buffer): void {
    if (upstream.write(bytes) || this.#holdingCaller) return;
    this.#holdingCaller = true;
    this.#intake.hold();
    upstream.once("drain", () => {
      this.#holdingCaller = false;
      this.#intake.release();
    });
  }

  /** The staged small frames go to the app, if it is still this exchange's. */
  #flushRequestStage(upstream: UpstreamConnection["socket"]): void {
    const staged = this.#requestStage?.take();
    if (staged !== undefined && this.#upstream?.socket === upstream) this.#toApp(upstream, staged);
  }

  /** What was staged is not sent: the body ended, or the app's connection was given up. */
  #dropRequestStage(): void {
    if (this.#requestFlush !== undefined) clearImmediate(this.#requestFlush);
    this.#requestFlush = undefined;
    this.#requestStage?.take();
  }

  /** A chunk (or the end: undefined) judged before it is forwarded; a Content-Length body's last chunk is its end too. */
  #inspect(chunk: Buffer | undefined): string | undefined {
    const inspector = this.#inspector;
    if (inspector === undefined) return undefined;
    const problem = chunk === undefined ? undefined : inspector.push(chunk);
    if (problem !== undefined || (chunk !== undefined && !(this.framing === "length" && this.#bodyBytes === this.request.contentLength))) return problem;
    this.#inspector = undefined;
    return inspector.end();
  }

  /** The body showed what the policy did not judge: the app's connection is closed before it has all of it, the caller answered 400. */
  #refuse(problem: string): void {
    const connection = this.#upstream;
    this.#upstream = undefined;
    connection?.destroy();
    const answer = this.hooks.bodyCheck!.refused(problem);
    if (!this.stream.headersSent && !this.stream.closed) {
      answerH2(this.stream, answer, false);
      // The caller may still be sending the body: RST_STREAM (NO_ERROR) once the answer is out frees the stream.
      resetAfterAnswer(this.stream);
    } else if (!this.stream.closed) this.stream.close(h2.NGHTTP2_PROTOCOL_ERROR);
    this.#finish(this.stream.headersSent ? 0 : answer.status);
  }

  #bodyMismatch(): void {
    const connection = this.#upstream;
    this.#upstream = undefined;
    connection?.destroy();
    if (!this.stream.closed) this.stream.close(h2.NGHTTP2_PROTOCOL_ERROR);
    this.#finish(0);
  }

  onHead(response: MessageHead): void {
    if (response.status === 101) {
      const connection = this.#upstream;
      this.#upstream = undefined;
      connection?.destroy();
      return this.onFailure(Object.assign(new Error("the upstream switched protocols without being asked to"), { code: "E_UPSTREAM_PROTOCOL" }), true);
    }
    if (response.status < 200) {
      // The app's 100 Continue: the caller waits for it before sending its body (Node's
      // 'continue' event, Java's expectContinue). It comes only from an app that has the request,
      // so only to a caller the policy allowed. Other interim responses are dropped.
      if (response.status === 100 && this.#expectsContinue && !this.#responded && !this.stream.headersSent && !this.stream.closed) {
        this.#idle?.touch();
        try {
          this.stream.additionalHeaders({ ":status": 100 });
        } catch {
          // The stream cannot take it any more (closing): its own end follows.
        }
      }
      return;
    }
    if (this.stream.destroyed || this.stream.closed) return;
    const headers: OutgoingHttpHeaders = forwardableHeaders(headersObject(response.rawHeaders));
    // A Content-Length goes on only when it frames the body (or describes a HEAD answer's).
    if (declaredFraming(response.rawHeaders) !== "length") delete headers["content-length"];
    this.#status = response.status;
    this.#responded = true;
    this.#idle?.touch();
    try {
      // With trailers to come, ending the stream early (RST_STREAM CANCEL) cannot pass for the
      // end of the response: close() ends the writable side first, which would otherwise send END_STREAM.
      this.stream.respond({ ...headers, ":status": response.status }, WAIT_FOR_TRAILERS);
      this.stream.once("wantTrailers", sendNoTrailers);
    } catch (error) {
      // A field HTTP/2 cannot carry (node:http2 refuses it): the exchange fails as a whole.
      this.#responded = false;
      this.onFailure(error as Error, true);
    }
  }

  onBody(chunk: Buffer): void {
    if (!this.#responded || this.stream.closed) return;
    this.#idle?.touch();
    if (chunk.length === 0) return;
    if (chunk.length < SMALL_CHUNK) {
      // Staged: the small pieces of one read from the app (1-byte chunks, a row per write) leave in
      // one write (onReadEnd), so that the caller's stream counts the bytes it holds.
      const full = this.#responseStage.add(chunk);
      if (full !== undefined) this.#toCaller(full);
      return;
    }
    const staged = this.#responseStage.take();
    if (staged !== undefined) this.stream.write(staged);
    // Queued for a caller that may not read: not as a slice keeping the app's whole read alive.
    this.#toCaller(unpinned(chunk));
  }

  /** The app's read is parsed (the stream still corked): the pieces staged from it go in one write. */
  onReadEnd(): void {
    const staged = this.#responseStage.take();
    if (staged !== undefined && this.#responded && !this.stream.closed) this.#toCaller(staged);
  }

  /** Response bytes to the caller; once its stream holds its highWaterMark, nothing more is read from the app until it drains. */
  #toCaller(bytes: Buffer): void {
    if (this.stream.write(bytes)) return;
    const upstream = this.#upstream?.socket;
    if (upstream !== undefined && !upstream.isPaused()) {
      upstream.pause();
      this.stream.once("drain", () => upstream.resume());
    }
  }

  onComplete(): void {
    if (!this.#responded) return; // the end of an interim (1xx) response
    const staged = this.#responseStage.take();
    if (!this.stream.closed) {
      if (staged !== undefined) this.stream.write(staged);
      this.stream.end();
    }
    if (this.#requestComplete) this.#releaseUpstream();
    this.#finish(this.#status);
  }

  onFailure(error: Error, responded: boolean): void {
    if (this.#finished) return;
    const connection = this.#upstream;
    this.#upstream = undefined;
    if (!responded && maySendAgain(connection, this.method, this.framing === "none", this.#attempts)) return this.connect();
    connection?.destroy();
    if (this.#responded || this.stream.headersSent) {
      if (!this.stream.closed) this.stream.close(h2.NGHTTP2_INTERNAL_ERROR);
      return this.#finish(0);
    }
    const answer = this.hooks.onUpstreamError(error);
    answerH2(this.stream, answer, false);
    // The sidecar's answer in place of the app's (503 E_APP_BUSY, 502/503 E_UPSTREAM_*): a caller
    // still holding its side open would keep the stream, its header block and its held body
    // (limits.maxHeldRequestBytes) until its connection closes; #finish stops the idle clock.
    resetAfterAnswer(this.stream);
    this.#finish(answer.status);
  }

  /**
   * No byte read from the caller or written to it for idle.ms: a body that stopped coming (408),
   * an app that sent no response (504), or a response the caller stopped reading or the app
   * stopped sending (RST_STREAM CANCEL).
   */
  #idleTimedOut(): void {
    if (this.#finished) {
      const connection = this.#upstream;
      this.#upstream = undefined;
      connection?.destroy();
      // Answered early (before the whole body came), and the rest of the body stopped coming.
      if (!this.stream.closed) this.stream.close(this.stream.writableFinished ? h2.NGHTTP2_NO_ERROR : h2.NGHTTP2_CANCEL);
      return;
    }
    this.#endEarly(() => {
      if (this.#requestComplete) return this.hooks.onUpstreamError(upstreamTimeoutError(this.hooks.idle.ms));
      this.hooks.idle.bodyTimedOut(`no byte of the request body arrived for ${this.hooks.idle.ms} ms`);
      return BODY_TIMEOUT_ANSWER;
    });
  }

  /** The proxy's refusal in place of the rest of the exchange (see RevokeStream); nothing once it is over. */
  revoke(answer: ProxyAnswer): void {
    if (this.#finished) return;
    if (this.#acquiring !== undefined) this.pool.cancel(this.#acquiring);
    this.#acquiring = undefined;
    this.#endEarly(answer);
  }

  /** Ends the exchange before the app does: `answer` while no response has started, else a cut; the app's connection is closed. */
  #endEarly(answer: ProxyAnswer | (() => ProxyAnswer)): void {
    const connection = this.#upstream;
    this.#upstream = undefined;
    connection?.destroy();
    if (this.stream.closed || this.stream.destroyed) return this.#finish(0);
    if (this.#responded || this.stream.headersSent) {
      this.stream.close(h2.NGHTTP2_CANCEL);
      return this.#finish(0);
    }
    const answered = typeof answer === "function" ? answer() : answer;
    answerH2(this.stream, answered, false);
    resetAfterAnswer(this.stream);
    this.#finish(answered.status);
  }

  #releaseUpstream(): void {
    const connection = this.#upstream;
    this.#upstream = undefined;
    if (connection !== undefined) this.pool.release(connection);
  }

  #finish(status: number): void {
    if (this.#finished) return;
    this.#finished = true;
    // An app that answered before the whole body came still gets the rest: the clock runs until then.
    if (this.#upstream === undefined || this.#requestComplete) this.#idle?.stop();
    this.hooks.done(status);
  }
}
