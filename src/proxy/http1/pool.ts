import type { Duplex } from "node:stream";
import { createMessageParser } from "./llhttp.ts";
import type { MessageHead, MessageParser } from "./llhttp.ts";
import { findHeader } from "./wire.ts";
import { eventNow, holdClock, releaseClock } from "../event-clock.ts";
import { IDEMPOTENT_METHODS, idleLimitForHint, keepAliveTimeoutMs, MAX_REQUEST_ATTEMPTS } from "../../util/keep-alive.ts";

/** Where one exchange's response goes; attached to an upstream connection for that exchange. */
export interface ResponseSink {
  /** The request method, so that the answer to HEAD is read without a body. */
  readonly method: string;
  /** Where the response is written: corked while one upstream chunk is parsed, so a head and its body leave in one write. */
  readonly downstream: Duplex;
  onHead(head: MessageHead): void;
  onBody(chunk: Buffer): void;
  onComplete(trailers: readonly string[]): void;
  /** Called once each chunk read from the upstream has been parsed (downstream still corked): writes what was gathered from it. */
  onReadEnd?(): void;
  /** The connection failed or closed before the response completed. `responded`: bytes of it had arrived. */
  onFailure(error: Error, responded: boolean): void;
}

/**
 * Marks an error that ended a connection's first exchange before any response byte: the upstream
 * closed a connection it had just accepted (for an mTLS peer over TLS 1.3: possibly its refusal of
 * our certificate, which a Node server makes by closing after the handshake, without an alert).
 */
export const CLOSED_BEFORE_FIRST_RESPONSE = Symbol("meshward.http1.closedBeforeFirstResponse");

export function closedBeforeFirstResponse(error: unknown): boolean {
  return typeof error === "object" && error !== null && (error as Record<symbol, unknown>)[CLOSED_BEFORE_FIRST_RESPONSE] === true;
}

/**
 * Whether a request whose upstream connection failed before any response byte goes again. Only
 * after a reused connection, which the upstream may have closed while idle, and only a whole
 * request without a body whose method is idempotent. Each connection that failed has left the
 * pool, so when several idle ones were closed together (an app restart, a keep-alive timer firing
 * for all of them) the attempts move on until a new connection, as Go's net/http does, and not
 * past MAX_REQUEST_ATTEMPTS.
 */
export function maySendAgain(failed: UpstreamConnection | undefined, method: string, bodiless: boolean, attempts: number): boolean {
  return failed?.reused === true && bodiless && IDEMPOTENT_METHODS.has(method) && attempts < MAX_REQUEST_ATTEMPTS;
}

/** One keep-alive HTTP/1.1 connection to an upstream, with its response parser. */
export class UpstreamConnection {
  #sink: ResponseSink | undefined;
  #responded = false;
  #keepAlive = true;
  #dead = false;
  /** Served an exchange before: a failure before any response byte may be the upstream closing it idle. */
  reused = false;
  idleSince = 0;
  /** How long it may stay idle, from the upstream's `Keep-Alive: timeout=N` on its last response. */
  idleLimitMs: number | undefined;
  #keepAliveHeader: string | undefined;
  /** Verified under trust that has changed since: closed instead of going back to the pool. */
  retired = false;
  readonly #parser: MessageParser;

  constructor(
    readonly socket: Duplex,
    maxHeaderBytes: number,
    private readonly onGone: (connection: UpstreamConnection) => void,
  ) {
    this.#parser = createMessageParser("response", maxHeaderBytes, {
      onHead: (head) => {
        this.#responded = true;
        if (head.status >= 200) {
          this.#keepAlive = head.keepAlive;
          this.#readKeepAliveHint(findHeader(head.rawHeaders, "keep-alive"));
        }
        const sink = this.#sink;
        if (sink === undefined) return false;
        sink.onHead(head);
        return sink.method === "HEAD";
      },
      onBody: (chunk) => this.#sink?.onBody(chunk),
      onComplete: (trailers) => this.#sink?.onComplete(trailers),
    });
    socket.on("data", (chunk: Buffer) => {
      if (this.#sink === undefined) return void this.#fail(new Error("the upstream sent bytes nobody asked for"));
      const downstream = this.#sink.downstream;
      // One reading of the clock for everything this read sets off (event-clock.ts).
      const outer = holdClock();
      try {
        downstream.cork();
        const result = this.#parser.execute(chunk);
        this.#sink?.onReadEnd?.();
        downstream.uncork();
        if (typeof result !== "number") this.#fail(Object.assign(new Error(`the upstream sent an invalid HTTP/1.1 response: ${result.reason}`), { code: result.code }));
      } finally {
        releaseClock(outer);
      }
    });
    socket.on("end", () => {
      // A close-delimited body ends here; anything else in flight was cut short.
      if (this.#sink !== undefined) this.#parser.finish();
      this.#fail(Object.assign(new Error("the upstream closed the connection"), { code: "ECONNRESET" }));
    });
    socket.on("error", (error: Error) => this.#fail(error));
    socket.on("close", () => this.#fail(Object.assign(new Error("the upstream connection closed"), { code: "ECONNRESET" })));
  }

  /** The upstream sends the same value on every response: it is parsed when it changes only. */
  #readKeepAliveHint(header: string | undefined): void {
    if (header === this.#keepAliveHeader) return;
    this.#keepAliveHeader = header;
    const hintMs = keepAliveTimeoutMs(header);
    this.idleLimitMs = hintMs === undefined ? undefined : idleLimitForHint(hintMs);
  }

  get dead(): boolean {
    return this.#dead;
  }

  /** Whether the last response allows another request on this connection. */
  get keepAlive(): boolean {
    return this.#keepAlive && !this.#dead;
  }

  attach(sink: ResponseSink): void {
    this.#sink = sink;
    this.#responded = false;
  }

  /** The exchange is over (its response completed, or it gave up): the sink hears nothing more. */
  detach(): void {
    this.#sink = undefined;
  }

  destroy(): void {
    this.#fail(undefined);
  }

  #fail(error: Error | undefined): void {
    const sink = this.#sink;
    this.#sink = undefined;
    if (!this.#dead) {
      this.#dead = true;
      this.socket.destroy();
      // Closing llhttp from inside one of its own callbacks is not allowed.
      setImmediate(() => this.#parser.close());
      this.onGone(this);
    }
    if (sink !== undefined && error !== undefined) {
      if (!this.reused && !this.#responded && (error as { code?: unknown }).code === "ECONNRESET") (error as unknown as Record<symbol, unknown>)[CLOSED_BEFORE_FIRST_RESPONSE] = true;
      sink.onFailure(error, this.#responded);
    }
  }
}

export interface Http1PoolOptions {
  /** host:port of the upstream, the Host given to an HTTP/1.0 request that named none. */
  readonly authority: string;
  /** Opens a connection; a promise for one that must be verified first (mTLS peers). */
  readonly dial: () => Duplex | Promise<Duplex>;
  readonly maxHeaderBytes: number;
  /** Idle connections are closed after this long (below common server keep-alive timeouts). */
  readonly idleMs: number;
  /** At most this many idle connections are kept. */
  readonly maxIdle: number;
  /**
   * At most this many connections open at once (idle, busy and being dialled); past it a request
   * waits for one to be released or to close. Unbounded when omitted.
   */
  readonly maxConnections?: number;
  /**
   * How long a request may wait for a connection when maxConnections are open; past it the
   * request fails with E_POOL_TIMEOUT (the caller answers 503). Unbounded when omitted.
   */
  readonly maxWaitMs?: number;
}

interface Waiter {
  resolve(connection: UpstreamConnection): void;
  reject(error: Error): void;
  timer: NodeJS.Timeout | undefined;
}

/** The code of the error a request gets when no connection became free within maxWaitMs. */
export const POOL_TIMEOUT = "E_POOL_TIMEOUT";

/** Keep-alive connections to one upstream, reused last-in first-out. */
export class Http1Pool {
  readonly #idle: UpstreamConnection[] = [];
  readonly #all = new Set<UpstreamConnection>();
  readonly #sweeper: NodeJS.Timeout;
  /** Requests waiting for a connection, first come first served (a Map: a caller that leaves is withdrawn at once). */
  readonly #waiters = new Map<Promise<UpstreamConnection>, Waiter>();
  #dialling = 0;
  #closed = false;
  #shuttingDown = false;

  readonly authority: string;

  constructor(private readonly options: Http1PoolOptions) {
    this.authority = options.authority;
    this.#sweeper = setInterval(() => this.#sweep(), Math.max(100, Math.min(1000, options.idleMs / 2)));
    this.#sweeper.unref();
  }

  /**
   * An idle connection at once, or a new one (a promise when dialling is asynchronous, or when
   * maxConnections are open: then the first to be released or to close makes room).
   */
  acquire(): UpstreamConnection | Promise<UpstreamConnection> {
    for (let connection = this.#idle.pop(); connection !== undefined; connection = this.#idle.pop()) {
      if (connection.dead) continue;
      // Idle past what the upstream said it keeps: its close may be on the way.
      if (connection.idleLimitMs !== undefined && eventNow() - connection.idleSince >= connection.idleLimitMs) {
        connection.destroy();
        continue;
      }
      return connection;
    }
    const max = this.options.maxConnections;
    if (max !== undefined && this.#all.size + this.#dialling >= max && !this.#closed) return this.#wait(max);
    return this.#dial();
  }

  #wait(max: number): Promise<UpstreamConnection> {
    let waiter!: Waiter;
    const pending = new Promise<UpstreamConnection>((resolve, reject) => (waiter = { resolve, reject, timer: undefined }));
    const maxWaitMs = this.options.maxWaitMs;
    if (maxWaitMs !== undefined) {
      waiter.timer = setTimeout(() => {
        if (!this.#waiters.delete(pending)) return;
        waiter.reject(Object.assign(new Error(`no connection to ${this.authority} became free within ${maxWaitMs} ms (all ${max} allowed are in use)`), { code: POOL_TIMEOUT }));
      }, maxWaitMs);
      waiter.timer.unref();
    }
    this.#waiters.set(pending, waiter);
    return pending;
  }

  /** The first waiting request, taken off the queue (its deadline no longer applies). */
  #nextWaiter(): Waiter | undefined {
    for (const [pending, waiter] of this.#waiters) {
      this.#waiters.delete(pending);
      clearTimeout(waiter.timer);
      return waiter;
    }
    return undefined;
  }

  /**
   * Withdraws a request still waiting for a connection (its caller went away): it is neither
   * answered nor given a connection, and does not hold its place in the queue. Does nothing once
   * it has one (the caller releases or destroys that).
   */
  cancel(pending: Promise<UpstreamConnection>): void {
    const waiter = this.#waiters.get(pending);
    if (waiter === undefined) return;
    this.#waiters.delete(pending);
    clearTimeout(waiter.timer);
  }

  /** Requests waiting for a connection now. */
  get waiting(): number {
    return this.#waiters.size;
  }

  #dial(): UpstreamConnection | Promise<UpstreamConnection> {
    const socket = this.options.dial();
    if (!(socket instanceof Promise)) return this.#adopt(socket);
    this.#dialling++;
    return socket.then(
      (s) => {
        this.#dialling--;
        return this.#adopt(s);
      },
      (error: unknown) => {
        this.#dialling--;
        this.#makeRoom();
        throw error;
      },
    );
  }

  /** A connection closed or a dial failed: the first waiting request gets a new connection. */
  #makeRoom(): void {
    const waiter = this.#nextWaiter();
    if (waiter === undefined) return;
    try {
      const next = this.#dial();
      if (next instanceof Promise) next.then(waiter.resolve, waiter.reject);
      else waiter.resolve(next);
    } catch (error) {
      waiter.reject(error as Error);
    }
  }

  /** Gives a connection back after a complete exchange, or closes it when it cannot serve another. */
  release(connection: UpstreamConnection): void {
    connection.detach();
    if (this.#closed || connection.retired || !connection.keepAlive) return void connection.destroy();
    // Paused while a slow client caught up with the last response; idle, it must see the upstream close.
    if (connection.socket.isPaused()) connection.socket.resume();
    connection.reused = true;
    const waiter = this.#nextWaiter();
    if (waiter !== undefined) return waiter.resolve(connection);
    if (this.#idle.length >= this.options.maxIdle) return void connection.destroy();
    connection.idleSince = eventNow();
    this.#idle.push(connection);
  }

  get size(): number {
    return this.#all.size;
  }

  /** No connection open now serves another request: idle ones close, busy ones after their exchange. */
  retireAll(): void {
    for (const connection of this.#all) connection.retired = true;
    for (const connection of this.#idle.splice(0)) connection.destroy();
  }

  /** As retire, for every connection whose socket `predicate` picks (a root removal: those whose server's chain rested on it). */
  retireWhere(predicate: (socket: Duplex) => boolean): void {
    for (const connection of [...this.#all]) if (!connection.retired && predicate(connection.socket)) this.retire(connection.socket);
  }

  /** The connection over `socket` serves no further request: closed now when idle, else after its exchange. */
  retire(socket: Duplex): void {
    for (const connection of this.#all) {
      if (connection.socket !== socket) continue;
      connection.retired = true;
      const at = this.#idle.indexOf(connection);
      if (at >= 0) this.#idle.splice(at, 1)[0]!.destroy();
    }
  }

  /** Serves nothing new: idle connections close now, busy ones after their exchange; the pool (its timer) stops once empty. */
  shutDown(): void {
    this.#shuttingDown = true;
    this.retireAll();
    if (this.#all.size === 0) this.close();
  }

  close(): void {
    this.#closed = true;
    clearInterval(this.#sweeper);
    const waiters = [...this.#waiters.values()];
    this.#waiters.clear();
    for (const waiter of waiters) clearTimeout(waiter.timer);
    for (const waiter of waiters) waiter.reject(Object.assign(new Error("the connection pool was closed"), { code: "ECONNRESET" }));
    for (const connection of [...this.#all]) connection.destroy();
    this.#idle.length = 0;
  }

  #adopt(socket: Duplex): UpstreamConnection {
    if (this.#closed) socket.destroy();
    const connection = new UpstreamConnection(socket, this.options.maxHeaderBytes, (gone) => {
      this.#all.delete(gone);
      const at = this.#idle.indexOf(gone);
      if (at >= 0) this.#idle.splice(at, 1);
      if (this.#shuttingDown && this.#all.size === 0) this.close();
      else if (!this.#closed) this.#makeRoom();
    });
    // Dialled for a request that took the pool just before it shut down: serves that one only.
    if (this.#shuttingDown) connection.retired = true;
    this.#all.add(connection);
    return connection;
  }

  #sweep(): void {
    const oldest = eventNow() - this.options.idleMs;
    while (this.#idle.length > 0 && this.#idle[0]!.idleSince <= oldest) this.#idle.shift()!.destroy();
  }
}
