import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import { canonicalTarget, contentTypeProblem, isRefusal, isRpcOverHttp, requestFieldsProblem, withoutUnderscoreFields } from "../canonical.ts";
import type { UnderscoreAction } from "../canonical.ts";
import type { CanonicalTarget, EscapedSlashAction } from "../canonical.ts";
import type { BodyInspector } from "../method-override-body.ts";
import { SIDECAR_BUSY } from "../held-budget.ts";
import type { HeldAccount } from "../held-budget.ts";
import { answerText } from "../respond.ts";
import type { ProxyAnswer } from "../respond.ts";
import { eventNow, holdClock, releaseClock } from "../event-clock.ts";
import { BODY_TIMEOUT_ANSWER, upstreamTimeoutError } from "../stream-idle.ts";
import { ChunkStage, chunkSizeLine, SMALL_CHUNK, unpinned } from "./chunk-stage.ts";
import { createMessageParser } from "./llhttp.ts";
import { STOP_AFTER_HEAD } from "./message-parser.ts";
import type { MessageHead, MessageParser } from "./llhttp.ts";
import { maySendAgain } from "./pool.ts";
import type { Http1Pool, ResponseSink, UpstreamConnection } from "./pool.ts";
import { declaredFraming, downstreamResponseHead, findHeader, interimResponseHead, requestFramingProblem, requestHost, lastChunk, requestHeadBytes, trailerSectionBytes, upstreamRequestHead } from "./wire.ts";
import type { BodyFraming } from "./wire.ts";

/** A request as the policy judges it and the upstream receives it: the parsed head and its canonical target. */
export interface RelayRequest {
  readonly head: MessageHead;
  readonly method: string;
  readonly target: CanonicalTarget;
  /** The received Host (undefined: an HTTP/1.0 request without one). */
  readonly host: string | undefined;
  /** A gRPC-Web or Connect call (isRpcOverHttp): judged by the gRPC rules and the HTTP rules. */
  readonly rpcOverHttp: boolean;
}

/** Where a request goes: an upstream pool, with the lines to add and what to say if it fails. */
export interface ForwardDecision {
  readonly upstream: Http1Pool;
  /** Header lines added to the forwarded request ("name: value\r\n"…). */
  readonly addHeaders: string;
  /** What to answer when the upstream fails before responding, or sent no response in time (isUpstreamTimeout: 504). */
  readonly onUpstreamError: (error: Error) => ProxyAnswer;
  /** Called once with the final status (0 when the exchange broke). */
  readonly done: (status: number) => void;
  /** Reads the body before it is forwarded; a problem refuses the request (the app never gets the body's end). */
  readonly bodyInspector?: BodyInspector;
}

/** The proxy answers itself (denied, unknown app); `done` as for a forward. */
export interface AnswerDecision {
  readonly answer: ProxyAnswer;
  readonly done?: (status: number) => void;
}

export type ClientErrorReason = "header_too_large" | "header_timeout" | "body_timeout" | "bad_request" | "ambiguous_request" | "connect" | "transfer_coding" | "http_version" | "max_held_request_bytes";

export interface Http1RelayOptions {
  readonly maxHeaderBytes: number;
  /** Time from a request's first byte to the end of its headers (slowloris guard). */
  readonly headersTimeout: number;
  /**
   * Close a connection with no request in flight and no bytes for this long; and end an exchange
   * on which no byte was read from the client or written to it for this long (Envoy's
   * stream_idle_timeout): 408 while its request body is still due, 504 when the whole request is
   * with the upstream and no response came (the decision's onUpstreamError is given an
   * upstreamTimeoutError), the connection cut once the response has started.
   * Waiting for an upstream connection is bounded by the pool and the dial instead.
   */
  readonly idleTimeout: number;
  /** What to do with %2F and %5C in a path (Envoy's path_with_escaped_slashes_action). */
  readonly escapedSlashes: EscapedSlashAction;
  /** What to do with a field name holding '_', in heads and trailer sections (Envoy's headers_with_underscores_action; default reject). */
  readonly headersWithUnderscores?: UnderscoreAction;
  /** Told of the fields removed from a request (headersWithUnderscores: drop), names as received. */
  droppedFields?(names: readonly string[], socket: Socket): void;
  /** Decides each request, in order, once its head has arrived and was made canonical. */
  decide(request: RelayRequest, socket: Socket): ForwardDecision | AnswerDecision;
  /**
   * A bodiless Upgrade request (WebSocket, h2c) with the bytes that followed its head; the
   * socket is the callee's from now on. (CONNECT is refused here: a sidecar is no forward proxy.)
   */
  upgrade(request: RelayRequest, socket: Socket, rest: Buffer): void;
  /** A request refused before it could be decided; the relay has answered it and closes the connection. */
  clientError(reason: ClientErrorReason, detail: string, socket: Socket): void;
  /** Whether this connection should close after the current response (draining, age cap). */
  closeAfterResponse(socket: Socket): boolean;
  /**
   * Where the body bytes held for a request before it has a connection to the app are counted
   * (limits.maxHeldRequestBytes, the inbound's HeldBudget): past it the request is refused with
   * `503 E_SIDECAR_BUSY` (reason max_held_request_bytes) and the connection closed. Without it
   * only the per-exchange bound (MAX_PENDING_BODY) applies.
   */
  readonly heldAccount?: (socket: Socket) => HeldAccount;
}

const CLIENT_ERRORS: Readonly<Record<ClientErrorReason, ProxyAnswer>> = {
  header_too_large: { status: 431, grpcStatus: 13, code: "E_HEADER_TOO_LARGE", message: "Request Header Fields Too Large" },
  header_timeout: { status: 408, grpcStatus: 13, code: "E_HEADER_TIMEOUT", message: "Request Timeout" },
  body_timeout: BODY_TIMEOUT_ANSWER,
  bad_request: { status: 400, grpcStatus: 13, code: "E_BAD_REQUEST", message: "Bad Request" },
  ambiguous_request: { status: 400, grpcStatus: 13, code: "E_AMBIGUOUS_REQUEST", message: "Bad Request" },
  transfer_coding: { status: 501, grpcStatus: 13, code: "E_TRANSFER_CODING_UNSUPPORTED", message: "Not Implemented" },
  http_version: { status: 505, grpcStatus: 13, code: "E_HTTP_VERSION_UNSUPPORTED", message: "HTTP Version Not Supported" },
  connect: { status: 405, grpcStatus: 13, code: "E_CONNECT_UNSUPPORTED", message: "the sidecar is not a forward proxy: CONNECT is not accepted" },
  max_held_request_bytes: SIDECAR_BUSY,
};

/**
 * Bytes of answers the client has not read yet past which nothing more is answered or read
 * from it (the sidecar's own answers as well as the app's); reading resumes on 'drain'.
 */
const UNREAD_ANSWER_BYTES = 64 * 1024;

/** How long a connection the sidecar closed after a response may stay open waiting for the client's side. */
const CLOSE_GRACE_MS = 1000;

/**
 * HTTP/1.1 reverse proxying on raw sockets: each client connection is parsed with llhttp,
 * each request decided and forwarded on a pooled upstream connection, each response relayed
 * back with hop-by-hop fields removed and the framing the client understands. Requests on one
 * connection are answered in order (pipelined ones wait their turn, reading paused); one that
 * waits is parsed to the end of its head, the bytes after it kept unparsed until it is next.
 */
export class Http1Relay {
  readonly #connections = new Set<ClientConnection>();
  readonly #sweeper: NodeJS.Timeout;

  constructor(readonly options: Http1RelayOptions) {
    this.#sweeper = setInterval(() => this.#sweep(), Math.max(50, Math.min(1000, Math.floor(Math.min(options.headersTimeout, options.idleTimeout) / 4))));
    this.#sweeper.unref();
  }

  /**
   * Takes over a connected socket (plaintext or TLS) whose bytes are HTTP/1. `first`: a chunk
   * already read from it (inside its 'data' event), parsed before anything else.
   */
  serve(socket: Socket, first?: Buffer): void {
    const connection = new ClientConnection(socket, this.options, () => this.#connections.delete(connection));
    this.#connections.add(connection);
    connection.start(first);
  }

  /**
   * Judges again every forwarded exchange still open (one per connection: pipelined requests are
   * decided in turn) with the request it was decided on. One `judge` refuses is ended as a fresh
   * refusal would be: answered with it, the connection closing after, when no response has
   * started; the connection cut once one has. Its upstream connection is closed either way (it
   * is in the middle of the exchange).
   */
  revalidate(judge: (request: RelayRequest, socket: Socket) => ProxyAnswer | undefined): void {
    for (const connection of this.#connections) connection.revalidate(judge);
  }

  /**
   * What each open connection holds of its caller's requests: exchanges parsed and not answered
   * yet (the one being answered included), and bytes read but not parsed (for the bounds tests).
   */
  backlog(): { exchanges: number; heldBytes: number }[] {
    return [...this.#connections].map((connection) => connection.backlog());
  }

  close(): void {
    clearInterval(this.#sweeper);
  }

  #sweep(): void {
    const now = eventNow();
    for (const connection of this.#connections) connection.checkTimers(now);
  }
}

/** One request/response exchange on a client connection. */
class Exchange implements ResponseSink {
  readonly method: string;
  readonly downstream: Socket;
  decision: ForwardDecision | undefined;
  /** The request as decided (forwarded ones), judged again by revalidate. */
  request: RelayRequest | undefined;
  /** The proxy's own answer, written once the chunk that carried the head is parsed. */
  answer: AnswerDecision | undefined;
  upstream: UpstreamConnection | undefined;
  /** Waiting for an upstream connection (the pool is at its cap, or dialling): withdrawn if the exchange is abandoned. */
  acquiring: Promise<UpstreamConnection> | undefined;
  /** Known from the head: body bytes of a pipelined request are framed (and held) before it is forwarded. */
  readonly requestFraming: BodyFraming;
  /** The declared Content-Length ("length" framing), read when there is an inspector. */
  bodyLength = 0;
  requestComplete = false;
  /** Body bytes that arrived before the request was decided (pipelined behind another), as received. */
  unjudged: Buffer[] | undefined;
  /** The request ended before it was decided: its trailers. */
  endedWith: readonly string[] | undefined;
  inspector: BodyInspector | undefined;
  /** Body bytes read so far (for an inspector: when a Content-Length body is whole). */
  bodySeen = 0;
  /** Body bytes (already framed for upstream) that arrived before the upstream connection. */
  pending: Buffer[] | undefined = [];
  pendingBytes = 0;
  /** What pendingBytes holds against the listener's budget (Http1RelayOptions.heldAccount). */
  held: HeldAccount | undefined;
  /** Bytes kept to send again if a reused upstream connection turns out to be closed. */
  sentHead = "";
  /** Upstream connections tried for this request. */
  attempts = 0;
  responseFraming: BodyFraming = "none";
  responded = false;
  status = 0;
  closeAfter = false;
  finished = false;

  started = false;

  constructor(
    readonly head: MessageHead,
    private readonly client: ClientConnection,
  ) {
    this.method = head.method;
    this.downstream = client.socket;
    this.requestFraming = declaredFraming(head.rawHeaders);
  }

  onHead(response: MessageHead): void {
    this.client.responseHead(this, response);
  }
  onBody(chunk: Buffer): void {
    this.client.responseBody(this, chunk);
  }
  onComplete(trailers: readonly string[]): void {
    this.client.responseComplete(this, trailers);
  }
  onReadEnd(): void {
    this.client.responseReadEnd(this);
  }
  onFailure(error: Error, responded: boolean): void {
    this.client.upstreamFailed(this, error, responded);
  }
}

const MAX_PENDING_BODY = 1 << 20;
/** What a held body piece costs besides its bytes (a Buffer and its queue entry), as the budget counts it. */
const PENDING_PIECE_COST = 128;
const CRLF = Buffer.from("\r\n");

const isTls = (socket: Socket): boolean => (socket as { encrypted?: boolean }).encrypted === true;

class ClientConnection {
  readonly #parser: MessageParser;
  /** queue[0] is being answered; later entries were pipelined behind it. */
  readonly #queue: Exchange[] = [];
  /** The request llhttp is parsing now (the newest). */
  #parsing: Exchange | undefined;
  #headStartedAt = 0;
  #idleSince = eventNow();
  /** When a byte of the exchange in progress (queue[0]) was last read from or written to the client. */
  #activeAt = 0;
  /** When the response that closes the connection was with the kernel (0: not closing, or not yet). */
  #closingSince = 0;
  /** When the connection was ended after its last response (0: not ended). */
  #flushingSince = 0;
  #upgrade: { head: MessageHead; rest: Buffer | undefined } | undefined;
  /**
   * The parser stopped after the head of a request that has to wait its turn (the newest in the
   * queue): the bytes read after that head, unparsed (at most the rest of one read; empty when
   * the head ended the read). Parsed when that request is next; reading stays paused meanwhile.
   */
  #held: Buffer | undefined;
  /** The parser stopped in the chunk being parsed now. */
  #stopped = false;
  /** The client ended its side while bytes were held: acted on once they are parsed. */
  #endedWhileHeld = false;
  /** Bytes after the requests in the queue could not be parsed: refused once those are answered. */
  #failAfter: { reason: ClientErrorReason; detail: string } | undefined;
  #gone = false;
  #handedOver = false;
  #readingPaused = false;
  #awaitingDrain = false;
  #advancing = false;
  #advanceAgain = false;
  readonly #onDataBound = (chunk: Buffer) => this.#onData(chunk);

  /** The upstream socket corked while a client chunk is parsed (its request head and body leave in one write). */
  #corked: Duplex | undefined;
  #executing = false;
  /** Small pieces of a chunked request body framed for #stagedFor's upstream, written once the client chunk is parsed. */
  readonly #requestStage = new ChunkStage();
  #stagedFor: Exchange | undefined;
  /** Small pieces of a chunked response framed for the client, written once the upstream's chunk is parsed. */
  readonly #responseStage = new ChunkStage();

  constructor(
    readonly socket: Socket,
    private readonly options: Http1RelayOptions,
    private readonly onGone: () => void,
  ) {
    this.#parser = createMessageParser("request", options.maxHeaderBytes, {
      // A head's clock starts at its first byte, also when it follows the end of the request
      // before it in the same read (or in bytes held): the read that started a head is not the
      // only place one begins. Before, such a head was timed only from the read after, and a
      // client that never sent one kept the half head until idleTimeout, with no 408.
      onMessageBegin: () => {
        if (this.#headStartedAt === 0) this.#headStartedAt = eventNow();
      },
      onHead: (head) => {
        this.#headStartedAt = 0;
        if (this.#gone) return false;
        if (requestHeadBytes(head) > options.maxHeaderBytes) {
          this.#refuse("header_too_large", "the request head is larger than maxHeaderBytes");
          return false;
        }
        if (head.upgrade) {
          this.#upgrade = { head, rest: undefined };
          return false;
        }
        const exchange = new Exchange(head, this);
        this.#parsing = exchange;
        this.#queue.push(exchange);
        if (this.#queue.length === 1) this.#advance();
        if (exchange.started || this.#gone) return false;
        // It waits (another is being answered, or the client has answers to read): nothing after
        // its head is parsed until it is next, so a read of pipelined requests costs its bytes,
        // not a queue of parsed requests (#held).
        this.#pauseReading();
        this.#stopped = true;
        return STOP_AFTER_HEAD;
      },
      onBody: (chunk) => {
        const exchange = this.#parsing;
        if (exchange !== undefined) this.#requestBody(exchange, chunk);
      },
      onComplete: (trailers) => {
        const exchange = this.#parsing;
        this.#parsing = undefined;
        if (exchange === undefined) return;
        exchange.requestComplete = true;
        // Counted like a head: llhttp counts names and values only, so 16,000 empty fields fit.
        // The app has the body but not its end: refusing destroys the upstream connection.
        if (trailers.length > 0 && trailerSectionBytes(trailers) > options.maxHeaderBytes) return this.#refuse("header_too_large", "the request's trailer section is larger than maxHeaderBytes");
        // Refused in a trailer section as in the head: a framework that merges trailers into the
        // headers (Apache httpd's MergeTrailers) would run another method, or route another
        // target, than the one judged.
        const underscores = options.headersWithUnderscores ?? "reject";
        const override = trailers.length > 0 ? requestFieldsProblem(trailers, underscores) : undefined;
        if (override !== undefined) return this.#refuse("ambiguous_request", `the request's trailer section is refused: ${override}`);
        if (underscores === "drop" && trailers.length > 0) {
          const kept = withoutUnderscoreFields(trailers);
          if (kept !== undefined) {
            options.droppedFields?.(kept.dropped, socket);
            trailers = kept.fields;
          }
        }
        if (!exchange.started) {
          exchange.endedWith = trailers;
          return;
        }
        this.#requestEnd(exchange, trailers);
        if (exchange.finished) this.#next(exchange);
      },
    });
    socket.on("data", this.#onDataBound);
    socket.on("end", () => {
      // The client stopped sending: a request cut short is abandoned; answered ones still finish.
      if (this.#held !== undefined) this.#endedWhileHeld = true;
      else if (this.#parsing !== undefined && !this.#parsing.requestComplete) this.#abandon();
    });
    socket.on("error", () => undefined);
    socket.once("close", () => this.#closed());
  }

  /** Starts reading; called once the relay tracks this connection (the first chunk may end it at once). */
  start(first: Buffer | undefined): void {
    if (first !== undefined) this.#onData(first);
    // A chunk put back by the first-bytes sniffer is parsed now rather than a tick later: on a
    // paused socket with a 'data' listener, read() hands it to that listener synchronously.
    else if (this.socket.readableLength > 0) this.socket.read();
    if (this.socket.isPaused() && !this.#readingPaused && !this.#gone && this.#upgrade === undefined) this.socket.resume();
  }

  backlog(): { exchanges: number; heldBytes: number } {
    return { exchanges: this.#queue.length, heldBytes: this.#held?.length ?? 0 };
  }

  checkTimers(now: number): void {
    // A client that keeps the connection open after `connection: close` is not waited for.
    if (this.#closingSince !== 0 && now - this.#closingSince > CLOSE_GRACE_MS) return void this.socket.destroy();
    if (this.#flushingSince !== 0) {
      if (this.#closingSince === 0 && now - this.#flushingSince > this.options.idleTimeout) this.socket.destroy();
      return;
    }
    if (this.#gone) return;
    if (this.#headStartedAt !== 0 && now - this.#headStartedAt > this.options.headersTimeout) return this.#refuse("header_timeout", "the request headers did not arrive in time");
    const first = this.#queue[0];
    if (first !== undefined && first.started && !first.finished && first.acquiring === undefined && now - this.#activeAt > this.options.idleTimeout) return this.#exchangeIdle(first);
    if (this.#queue.length === 0 && this.#headStartedAt === 0 && now - this.#idleSince > this.options.idleTimeout) this.socket.destroy();
  }

  #onData(chunk: Buffer): void {
    if (this.#gone || this.#failAfter !== undefined) return;
    if (this.#held !== undefined) {
      // Read while bytes are held (reading is paused then; a chunk already on its way): kept with them.
      this.#held = Buffer.concat([this.#held, chunk]);
      this.#pauseReading();
      return;
    }
    this.#parse(chunk);
  }

  /** Parses the held bytes: the request the parser stopped after is next in line. */
  #parseHeld(): void {
    const held = this.#held!;
    this.#held = undefined;
    this.#parse(held);
    if (this.#endedWhileHeld && this.#held === undefined && !this.#gone) {
      this.#endedWhileHeld = false;
      if (this.#parsing !== undefined && !this.#parsing.requestComplete) this.#abandon();
    }
  }

  #parse(chunk: Buffer): void {
    // One reading of the clock for everything this read sets off (event-clock.ts).
    const outer = holdClock();
    try {
      this.#idleSince = eventNow();
      this.#activeAt = this.#idleSince;
      if (this.#parsing === undefined && this.#headStartedAt === 0) this.#headStartedAt = this.#idleSince;
      this.#executing = true;
      const result = this.#parser.execute(chunk);
      this.#executing = false;
      if (this.#stopped) {
        this.#stopped = false;
        if (typeof result === "number" && !this.#gone) this.#held = chunk.subarray(result);
      }
      if (this.#stagedFor !== undefined) this.#flushRequestStage();
      this.#corked?.uncork();
      this.#corked = undefined;
      const first = this.#queue[0];
      if (first?.answer !== undefined) this.#answer(first);
      if (typeof result !== "number") {
        const reason: ClientErrorReason = result.code === "HPE_HEADER_OVERFLOW" ? "header_too_large" : "bad_request";
        const detail = `${result.code}: ${result.reason}`;
        // A request whose head was fine but whose body is not, and that waits behind others: dropped.
        const bad = this.#parsing;
        if (bad !== undefined && !bad.started && this.#queue.length > 1 && this.#queue[this.#queue.length - 1] === bad) {
          this.#queue.pop();
          bad.finished = true;
          bad.held?.close();
          this.#parsing = undefined;
        }
        // The requests before the bad bytes were read whole and may already be with the app: they
        // are answered first, in order (a 400 now would take the place of the first one's answer);
        // the refusal follows. After one that closes the connection nothing more is read (RFC 9112
        // §9.6; llhttp reports the bytes after it as HPE_CLOSED_CONNECTION), so it ends there.
        if (this.#parsing === undefined && this.#queue.length > 0) {
          this.#failAfter = { reason, detail };
          this.#headStartedAt = 0;
          return;
        }
        return this.#refuse(reason, detail);
      }
      if (this.#upgrade !== undefined && this.#upgrade.rest === undefined) {
        this.#upgrade.rest = chunk.subarray(result);
        this.#headStartedAt = 0;
        this.socket.removeListener("data", this.#onDataBound);
        this.socket.pause();
        if (this.#queue.length === 0) this.#handOver();
      }
    } finally {
      releaseClock(outer);
    }
  }

  /** The canonical form of a request, or undefined after refusing it (the connection closes). */
  #canonical(head: MessageHead): RelayRequest | undefined {
    const framing = requestFramingProblem(head);
    if (framing !== undefined) {
      this.#refuse(framing.status === 501 ? "transfer_coding" : framing.status === 505 ? "http_version" : "ambiguous_request", `the request is refused: ${framing.problem}`);
      return undefined;
    }
    const target = canonicalTarget(head.method, head.url, this.options.escapedSlashes);
    if (isRefusal(target)) {
      this.#refuse("ambiguous_request", `the request target is refused: ${target.refused}`);
      return undefined;
    }
    const underscores = this.options.headersWithUnderscores ?? "reject";
    const ambiguous = requestFieldsProblem(head.rawHeaders, underscores) ?? contentTypeProblem(head.rawHeaders);
    if (ambiguous !== undefined) {
      this.#refuse("ambiguous_request", `the request is refused: ${ambiguous}`);
      return undefined;
    }
    // headersWithUnderscores: drop: the request is judged and forwarded without them.
    let judged = head;
    if (underscores === "drop") {
      const kept = withoutUnderscoreFields(head.rawHeaders);
      if (kept !== undefined) {
        this.options.droppedFields?.(kept.dropped, this.socket);
        judged = { ...head, rawHeaders: kept.fields };
      }
    }
    const host = requestHost(judged.rawHeaders, judged.httpMinor, target.authority);
    if ("problem" in host) {
      this.#refuse("bad_request", `the request is refused: ${host.problem}`);
      return undefined;
    }
    return { head: judged, method: judged.method, target, host: host.host, rpcOverHttp: isRpcOverHttp(judged.rawHeaders, target) };
  }

  /** The request's head is complete and it is first in line: decide, then forward or answer. */
  #start(exchange: Exchange): void {
    exchange.started = true;
    this.#activeAt = eventNow();
    const request = this.#canonical(exchange.head);
    if (request === undefined) return;
    let decision: ForwardDecision | AnswerDecision;
    try {
      decision = this.options.decide(request, this.socket);
    } catch (error) {
      // A fault in deciding one request must not take the listener down with it.
      decision = { answer: { status: 500, grpcStatus: 13, code: "E_INTERNAL", message: `the sidecar could not decide this request: ${(error as Error).message}` } };
    }
    if ("answer" in decision) {
      // Its body is read and dropped. Answered once this chunk is parsed, when it is known
      // whether the body is all here; one still arriving closes the connection after.
      exchange.pending = undefined;
      exchange.unjudged = undefined;
      exchange.answer = decision;
      if (!this.#executing) this.#answer(exchange);
      return;
    }
    exchange.decision = decision;
    exchange.request = request;
    // An absolute-form target's authority is the Host (RFC 9112 §3.2.2); an HTTP/1.0 request
    // without Host gets the upstream's.
    const host = request.target.authority ?? (request.host === undefined ? decision.upstream.authority : undefined);
    exchange.sentHead = upstreamRequestHead(request.method, request.target.target, request.head.rawHeaders, exchange.requestFraming, decision.addHeaders, host);
    exchange.inspector = decision.bodyInspector;
    if (exchange.inspector !== undefined && exchange.requestFraming === "length") exchange.bodyLength = Number(findHeader(exchange.head.rawHeaders, "content-length"));
    this.#connect(exchange);
    const unjudged = exchange.unjudged ?? [];
    exchange.unjudged = undefined;
    for (const chunk of unjudged) this.#forwardBody(exchange, chunk);
    if (exchange.endedWith !== undefined) this.#requestEnd(exchange, exchange.endedWith);
    // Written outside a client chunk's parse (a pipelined request started after a response): sent now.
    if (!this.#executing) {
      if (this.#stagedFor !== undefined) this.#flushRequestStage();
      this.#unbatch();
    }
  }

  #answer(exchange: Exchange): void {
    const decision = exchange.answer!;
    exchange.answer = undefined;
    const close = !exchange.requestComplete || !exchange.head.keepAlive || this.options.closeAfterResponse(this.socket);
    exchange.closeAfter = close;
    this.socket.write(answerText(decision.answer, close));
    exchange.status = decision.answer.status;
    exchange.responded = true;
    decision.done?.(decision.answer.status);
    this.#finish(exchange);
  }

  #connect(exchange: Exchange): void {
    exchange.attempts++;
    let acquired: UpstreamConnection | Promise<UpstreamConnection>;
    try {
      acquired = exchange.decision!.upstream.acquire();
    } catch (error) {
      return this.upstreamFailed(exchange, error as Error, false);
    }
    if (acquired instanceof Promise) {
      const pending = acquired;
      exchange.acquiring = pending;
      pending.then(
        (connection) => {
          if (exchange.acquiring === pending) exchange.acquiring = undefined;
          this.#attach(exchange, connection);
        },
        (error: Error) => {
          if (exchange.acquiring === pending) exchange.acquiring = undefined;
          this.upstreamFailed(exchange, error, false);
        },
      );
    } else {
      this.#attach(exchange, acquired);
    }
  }

  #attach(exchange: Exchange, connection: UpstreamConnection): void {
    if (this.#gone || exchange.finished) return void exchange.decision!.upstream.release(connection);
    exchange.upstream = connection;
    this.#activeAt = eventNow();
    connection.attach(exchange);
    const pending = exchange.pending ?? [];
    exchange.pending = undefined;
    const { socket } = connection;
    this.#batch(socket);
    socket.write(exchange.sentHead, "latin1");
    for (const bytes of pending) socket.write(bytes);
    if (!this.#executing) this.#unbatch();
    if (exchange.pendingBytes > 0) {
      exchange.pendingBytes = 0;
      exchange.held?.give(exchange.held.held);
      this.#resumeReading();
    }
  }

  /** Counts `bytes` more held for `exchange` before it has an upstream; false when that is past the budget (the connection is refused). */
  #holdPending(exchange: Exchange, bytes: number): boolean {
    const make = this.options.heldAccount;
    if (make === undefined) return true;
    exchange.held ??= make(this.socket);
    // Each piece is a Buffer of its own (unpinned): counted with what one costs besides its bytes.
    if (exchange.held.take(bytes + PENDING_PIECE_COST)) return true;
    this.#refuse("max_held_request_bytes", "the listener holds limits.maxHeldRequestBytes of unfinished requests (or this address its share)");
    return false;
  }

  #requestBody(exchange: Exchange, chunk: Buffer): void {
    if (exchange.decision === undefined && exchange.responded) return; // answered by the proxy: dropped
    if (!exchange.started) {
      // Judged, inspected and framed once the request is decided; reading stops past a bound.
      if (!this.#holdPending(exchange, chunk.length)) return;
      (exchange.unjudged ??= []).push(unpinned(chunk));
      exchange.pendingBytes += chunk.length;
      if (exchange.pendingBytes > MAX_PENDING_BODY) this.#pauseReading();
      return;
    }
    this.#forwardBody(exchange, chunk);
  }

  #forwardBody(exchange: Exchange, chunk: Buffer): void {
    if (exchange.finished || exchange.decision === undefined) return;
    const inspector = exchange.inspector;
    if (inspector !== undefined) {
      exchange.bodySeen += chunk.length;
      let problem = inspector.push(chunk);
      // The chunk that completes a Content-Length body completes it for the app too: the end is judged first.
      if (problem === undefined && exchange.requestFraming === "length" && exchange.bodySeen >= exchange.bodyLength) {
        exchange.inspector = undefined;
        problem = inspector.end();
      }
      if (problem !== undefined) return this.#refuse("ambiguous_request", `the request is refused: ${problem}`);
    }
    if (exchange.requestFraming !== "chunked") return this.#requestBytes(exchange, chunk);
    // An empty piece carries nothing, and framed it would be the last chunk: never written.
    if (chunk.length === 0) return;
    if (chunk.length < SMALL_CHUNK) {
      // Framed into the stage: one write per client chunk parsed, however many chunks it held.
      if (this.#stagedFor !== exchange && this.#stagedFor !== undefined) this.#flushRequestStage();
      this.#stagedFor = exchange;
      const full = this.#requestStage.add(chunk);
      if (full !== undefined) this.#requestBytes(exchange, full);
      return;
    }
    if (this.#stagedFor !== undefined) this.#flushRequestStage();
    this.#requestBytes(exchange, chunkSizeLine(chunk.length));
    this.#requestBytes(exchange, chunk);
    this.#requestBytes(exchange, CRLF);
  }

  /** Writes the framed small pieces staged (they go before anything else written for that request). */
  #flushRequestStage(): void {
    const exchange = this.#stagedFor!;
    this.#stagedFor = undefined;
    const bytes = this.#requestStage.take();
    if (bytes !== undefined) this.#requestBytes(exchange, bytes);
  }

  /** The request's body ended (after its trailers, if any): judged, then its end forwarded. */
  #requestEnd(exchange: Exchange, trailers: readonly string[]): void {
    if (exchange.finished || exchange.decision === undefined) return;
    const inspector = exchange.inspector;
    exchange.inspector = undefined;
    const problem = inspector?.end();
    if (problem !== undefined) return this.#refuse("ambiguous_request", `the request is refused: ${problem}`);
    if (this.#stagedFor !== undefined) this.#flushRequestStage();
    if (exchange.requestFraming === "chunked") this.#requestBytes(exchange, Buffer.from(lastChunk(trailers), "latin1"));
  }

  #requestBytes(exchange: Exchange, bytes: Buffer): void {
    if (exchange.finished) return;
    if (exchange.upstream === undefined) {
      // Not connected yet, or queued behind a pipelined request: hold it, and stop reading past a bound.
      if (exchange.pending === undefined) return;
      if (!this.#holdPending(exchange, bytes.length)) return;
      exchange.pending.push(unpinned(bytes));
      exchange.pendingBytes += bytes.length;
      if (exchange.pendingBytes > MAX_PENDING_BODY) this.#pauseReading();
      return;
    }
    const upstream = exchange.upstream.socket;
    this.#batch(upstream);
    if (!upstream.write(bytes) && !this.#readingPaused) {
      this.#pauseReading();
      upstream.once("drain", () => this.#resumeReading());
    }
  }

  // --- the response, from the upstream connection --------------------------------------

  responseHead(exchange: Exchange, response: MessageHead): void {
    this.#activeAt = eventNow();
    if (response.status === 101) {
      // Only an Upgrade request may be answered 101, and those never come here: a broken upstream.
      const connection = exchange.upstream;
      exchange.upstream = undefined;
      connection?.destroy();
      return this.upstreamFailed(exchange, Object.assign(new Error("the upstream switched protocols without being asked to"), { code: "E_UPSTREAM_PROTOCOL" }), true);
    }
    if (response.status < 200) {
      if (exchange.head.httpMinor >= 1) this.socket.write(interimResponseHead(response), "latin1");
      return;
    }
    const keepAlive = exchange.head.keepAlive && exchange.requestComplete && !this.options.closeAfterResponse(this.socket);
    const { text, framing, close } = downstreamResponseHead(response, exchange.method, { httpMinor: exchange.head.httpMinor, keepAlive });
    exchange.closeAfter = close;
    exchange.responseFraming = framing;
    exchange.status = response.status;
    exchange.responded = true;
    this.socket.write(text, "latin1");
  }

  responseBody(exchange: Exchange, chunk: Buffer): void {
    if (!exchange.responded) return;
    this.#activeAt = eventNow();
    let writable: boolean;
    if (exchange.responseFraming !== "chunked") {
      writable = this.socket.write(chunk);
    } else if (chunk.length === 0) {
      return; // framed, an empty piece would be the last chunk
    } else if (chunk.length < SMALL_CHUNK) {
      // Framed into the stage, written at the end of the upstream's chunk (responseReadEnd).
      const full = this.#responseStage.add(chunk);
      if (full === undefined) return;
      writable = this.socket.write(full);
    } else {
      // The pool corks the client socket while it parses: these leave in one write.
      const staged = this.#responseStage.take();
      if (staged !== undefined) this.socket.write(staged);
      this.socket.write(chunkSizeLine(chunk.length));
      this.socket.write(chunk);
      writable = this.socket.write(CRLF);
    }
    if (!writable) this.#holdUpstream(exchange);
  }

  /** The upstream's chunk is parsed: the small pieces staged from it go in one write. */
  responseReadEnd(exchange: Exchange): void {
    const staged = this.#responseStage.take();
    if (staged !== undefined && !this.socket.write(staged)) this.#holdUpstream(exchange);
  }

  /** The client's socket holds its highWaterMark of unread answer: nothing more is read from the upstream until it drains. */
  #holdUpstream(exchange: Exchange): void {
    const upstream = exchange.upstream?.socket;
    if (upstream !== undefined && !upstream.isPaused()) {
      upstream.pause();
      this.socket.once("drain", () => upstream.resume());
    }
  }

  responseComplete(exchange: Exchange, trailers: readonly string[]): void {
    if (!exchange.responded) return; // the end of an interim (1xx) response
    if (exchange.responseFraming === "chunked") {
      const staged = this.#responseStage.take();
      if (staged !== undefined) this.socket.write(staged);
      this.socket.write(lastChunk(trailers), "latin1");
    }
    const connection = exchange.upstream;
    exchange.upstream = undefined;
    if (connection !== undefined) {
      if (exchange.requestComplete) exchange.decision!.upstream.release(connection);
      else connection.destroy();
    }
    exchange.decision!.done(exchange.status);
    this.#finish(exchange);
  }

  upstreamFailed(exchange: Exchange, error: Error, responded: boolean): void {
    if (exchange.finished || this.#gone) return;
    const connection = exchange.upstream;
    exchange.upstream = undefined;
    const decision = exchange.decision!;
    if (!responded && maySendAgain(connection, exchange.head.method, exchange.requestFraming === "none" && exchange.requestComplete, exchange.attempts)) {
      exchange.pending = [];
      return this.#connect(exchange);
    }
    if (exchange.responded) {
      // Part of the response is already with the client: all we can do is cut the connection.
      decision.done(0);
      exchange.finished = true;
      exchange.held?.close();
      this.socket.destroy();
      return;
    }
    this.#answerAndClose(exchange, decision, decision.onUpstreamError(error));
  }

  /** The sidecar's own answer in place of the upstream's (none of it sent yet); the connection closes after it. */
  #answerAndClose(exchange: Exchange, decision: ForwardDecision, answer: ProxyAnswer): void {
    exchange.closeAfter = true;
    exchange.responded = true;
    exchange.status = answer.status;
    this.socket.write(answerText(answer, true));
    decision.done(answer.status);
    this.#finish(exchange);
  }

  /**
   * No byte of this exchange was read from the client or written to it for idleTimeout: a body
   * that stopped coming (408), an upstream that sent no response (504), or a response the client
   * stopped reading or the upstream stopped sending (cut). The upstream connection is closed: it
   * is in the middle of the exchange.
   */
  #exchangeIdle(exchange: Exchange): void {
    const decision = exchange.decision;
    const connection = exchange.upstream;
    exchange.upstream = undefined;
    connection?.destroy();
    if (decision === undefined || exchange.responded) {
      decision?.done(0);
      exchange.finished = true;
      exchange.held?.close();
      this.#gone = true;
      this.socket.destroy();
      return;
    }
    let answer: ProxyAnswer;
    if (!exchange.requestComplete) {
      this.options.clientError("body_timeout", `no byte of the request body arrived for ${this.options.idleTimeout} ms`, this.socket);
      answer = CLIENT_ERRORS.body_timeout;
    } else {
      // Counted and answered (504) where the side's other upstream failures are.
      answer = decision.onUpstreamError(upstreamTimeoutError(this.options.idleTimeout));
    }
    this.#answerAndClose(exchange, decision, answer);
  }

  /** See Http1Relay.revalidate: only the first exchange in line can have been forwarded and be open. */
  revalidate(judge: (request: RelayRequest, socket: Socket) => ProxyAnswer | undefined): void {
    const exchange = this.#queue[0];
    if (this.#gone || exchange === undefined || exchange.finished || exchange.decision === undefined || exchange.request === undefined) return;
    const refusal = judge(exchange.request, this.socket);
    if (refusal === undefined) return;
    const decision = exchange.decision;
    const connection = exchange.upstream;
    exchange.upstream = undefined;
    connection?.destroy();
    // Still waiting for a connection: its place in the pool's queue goes to the next request.
    if (exchange.acquiring !== undefined) decision.upstream.cancel(exchange.acquiring);
    exchange.acquiring = undefined;
    if (exchange.responded) {
      decision.done(0);
      exchange.finished = true;
      exchange.held?.close();
      this.#gone = true;
      this.socket.destroy();
      return;
    }
    // Its body may still be on its way: the connection closes after the refusal.
    this.#answerAndClose(exchange, decision, refusal);
  }

  // --- sequencing ------------------------------------------------------------------------

  /** The response is written; the exchange leaves the queue once its request was read too. */
  #finish(exchange: Exchange): void {
    exchange.finished = true;
    exchange.held?.close();
    if (exchange.closeAfter) {
      this.#gone = true;
      // A plaintext client that asked to close and sent nothing more: the connection is closed as
      // soon as the response is with the kernel (as node:http's destroySoon and nginx do), not
      // after its FIN, which saves a wake-up per connection. Otherwise, or when unread bytes
      // could turn the close into a reset that loses the response, the client's side is awaited.
      if (!exchange.head.keepAlive && exchange.requestComplete && this.#queue.length === 1 && this.#parsing === undefined && !isTls(this.socket)) {
        process.nextTick(() => this.#closeNow());
        return;
      }
      this.#closeGracefully();
      return;
    }
    if (exchange.requestComplete) this.#next(exchange);
  }

  /** After the response left (the socket was uncorked): close at once if all of it is with the kernel. */
  #closeNow(): void {
    if (this.socket.destroyed) return;
    if (this.socket.writableLength === 0 && this.socket.readableLength === 0) return void this.socket.destroy();
    this.#closeGracefully();
  }

  /**
   * Ends our side and lets the client close its own. The sweeper (no timer per connection)
   * destroys the socket CLOSE_GRACE_MS after the response was flushed, or after idleTimeout
   * while a client too slow to take the rest of the response makes no progress.
   */
  #closeGracefully(): void {
    this.socket.end();
    this.#flushingSince = eventNow();
    if (this.socket.writableLength === 0) this.#closingSince = this.#flushingSince;
    else this.socket.once("finish", () => (this.#closingSince = eventNow()));
  }

  #next(exchange: Exchange): void {
    if (this.#queue[0] !== exchange) return;
    this.#queue.shift();
    this.#idleSince = eventNow();
    this.#advance();
  }

  /**
   * Starts the next request in line, or reads on, unless the client has too much unread. A
   * request the proxy answers at once finishes inside #start and asks for the next one: that
   * call only marks another round, so a long run of such answers loops instead of recursing.
   */
  #advance(): void {
    if (this.#advancing) {
      this.#advanceAgain = true;
      return;
    }
    this.#advancing = true;
    try {
      do {
        this.#advanceAgain = false;
        this.#advanceOnce();
      } while (this.#advanceAgain);
    } finally {
      this.#advancing = false;
    }
  }

  #advanceOnce(): void {
    if (this.#gone) return;
    if (this.#congested()) {
      this.#pauseReading();
      if (!this.#awaitingDrain) {
        this.#awaitingDrain = true;
        this.socket.once("drain", () => {
          this.#awaitingDrain = false;
          this.#advance();
        });
      }
      return;
    }
    const first = this.#queue[0];
    if (first !== undefined) {
      if (first.started) return;
      // The parser stopped after its head: its body (and what follows) is parsed first, as for
      // any request that waited, so that a body the parser refuses never reaches the app.
      if (this.#held !== undefined) {
        this.#parseHeld();
        if (this.#gone || this.#queue[0] !== first || first.started) return;
      }
      this.#start(first);
      // Its body is still due (the head ended a read): read on.
      if (!first.finished && !first.requestComplete) this.#resumeReading();
      return;
    }
    if (this.#held !== undefined) return this.#parseHeld();
    if (this.#failAfter !== undefined) return this.#refuse(this.#failAfter.reason, this.#failAfter.detail);
    if (this.#upgrade?.rest !== undefined) return this.#handOver();
    this.#resumeReading();
  }

  #congested(): boolean {
    return this.socket.writableLength > UNREAD_ANSWER_BYTES;
  }

  #handOver(): void {
    const upgrade = this.#upgrade!;
    const { head } = upgrade;
    if (head.method === "CONNECT") return this.#refuse("connect", "CONNECT");
    // The parser hands the connection over right after the head: a body would be read by
    // nobody here and by the app as the start of whatever follows.
    if (declaredFraming(head.rawHeaders) === "chunked" || Number(findHeader(head.rawHeaders, "content-length") ?? 0) !== 0) {
      return this.#refuse("ambiguous_request", "the request is refused: an Upgrade request must not carry a body");
    }
    const request = this.#canonical(head);
    if (request === undefined) return;
    this.#gone = true;
    this.#handedOver = true;
    this.onGone();
    setImmediate(() => this.#parser.close());
    this.options.upgrade(request, this.socket, upgrade.rest ?? Buffer.alloc(0));
  }

  #batch(upstream: Duplex): void {
    if (this.#corked === upstream) return;
    this.#corked?.uncork();
    upstream.cork();
    this.#corked = upstream;
  }

  #unbatch(): void {
    this.#corked?.uncork();
    this.#corked = undefined;
  }

  #pauseReading(): void {
    if (this.#readingPaused) return;
    this.#readingPaused = true;
    this.socket.pause();
  }

  #resumeReading(): void {
    // After an Upgrade head the socket's bytes are the callee's: no listener here would get them.
    if (!this.#readingPaused || this.#gone || this.#held !== undefined || this.#upgrade !== undefined) return;
    if (this.#queue.length > 1 || (this.#queue[0]?.pendingBytes ?? 0) > MAX_PENDING_BODY || this.#congested()) return;
    this.#readingPaused = false;
    this.socket.resume();
  }

  #refuse(reason: ClientErrorReason, detail: string): void {
    if (this.#gone) return;
    this.options.clientError(reason, detail, this.socket);
    const busy = this.#queue.some((exchange) => exchange.responded && !exchange.finished);
    this.#gone = true;
    const answer = reason === "ambiguous_request" || reason === "bad_request" || reason === "transfer_coding" || reason === "http_version" ? { ...CLIENT_ERRORS[reason], message: detail } : CLIENT_ERRORS[reason];
    if (!busy && this.socket.writable) this.socket.end(answerText(answer, true));
    setTimeout(() => this.socket.destroy(), busy ? 0 : 1000).unref();
    this.#abandon();
  }

  /** Ends every exchange still open (the client went away or was refused). */
  #abandon(): void {
    this.#held = undefined;
    this.#requestStage.take();
    this.#stagedFor = undefined;
    for (const exchange of this.#queue) {
      if (exchange.finished) continue;
      exchange.finished = true;
      exchange.held?.close();
      exchange.upstream?.destroy();
      exchange.upstream = undefined;
      // Still waiting for a connection: its place in the pool's queue goes to the next request.
      if (exchange.acquiring !== undefined) exchange.decision?.upstream.cancel(exchange.acquiring);
      exchange.acquiring = undefined;
      (exchange.decision?.done ?? (() => undefined))(0);
    }
    this.#queue.length = 0;
  }

  #closed(): void {
    if (this.#handedOver) return;
    this.#abandon();
    this.#gone = true;
    this.onGone();
    setImmediate(() => this.#parser.close());
  }
}
