import type { Http2Session } from "node:http2";
import type { Socket } from "node:net";

interface Tracked {
  inFlight: number;
  retiring: boolean;
  session: Http2Session | undefined;
}

/**
 * An HTTP/2 session with no frame either way for `idleMs` is closed gracefully: GOAWAY, and the
 * connection ends once the streams still open (a long, silent one) have. `limits.idleTimeout`
 * closes an idle HTTP/1.1 connection; without this an idle HTTP/2 connection stayed open until
 * the age cap, holding one of the listener's `maxConnections` slots.
 */
export function closeWhenIdle(session: Http2Session, idleMs: number, onIdle?: () => void): void {
  session.setTimeout(idleMs, () => {
    onIdle?.();
    session.close();
  });
}

/**
 * Open connections of one listener and their in-flight requests, for a graceful drain:
 * idle connections close at once, busy HTTP/1 ones after their response (Connection: close),
 * HTTP/2 sessions get GOAWAY; whatever is left at the deadline is destroyed.
 */
export class ConnectionTracker {
  readonly #open = new Map<Socket, Tracked>();
  #draining = false;

  constructor(private readonly onCountChange: (delta: number) => void = () => undefined) {}

  get draining(): boolean {
    return this.#draining;
  }

  get size(): number {
    return this.#open.size;
  }

  add(socket: Socket): void {
    if (this.#open.has(socket)) return;
    this.#open.set(socket, { inFlight: 0, retiring: false, session: undefined });
    this.onCountChange(1);
    socket.once("close", () => {
      if (this.#open.delete(socket)) this.onCountChange(-1);
    });
  }

  attachSession(socket: Socket, session: Http2Session): void {
    const entry = this.#open.get(socket);
    if (entry !== undefined) entry.session = session;
    if (this.#draining) session.close();
  }

  /** Marks a request started on `socket`; the returned function marks it finished (idempotent). */
  begin(socket: Socket): () => void {
    const entry = this.#open.get(socket);
    if (entry === undefined) return () => undefined;
    entry.inFlight++;
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      entry.inFlight--;
      if ((this.#draining || entry.retiring) && entry.inFlight === 0 && entry.session === undefined) socket.end();
    };
  }

  /** Closes one connection gracefully (the age cap): GOAWAY, or end once its request is done. */
  retire(socket: Socket): void {
    const entry = this.#open.get(socket);
    if (entry === undefined) return void socket.end();
    entry.retiring = true;
    if (entry.session !== undefined) entry.session.close();
    else if (entry.inFlight === 0) socket.end();
  }

  retiring(socket: Socket): boolean {
    return this.#open.get(socket)?.retiring === true;
  }

  async drain(deadlineMs: number): Promise<void> {
    this.#draining = true;
    for (const [socket, entry] of this.#open) {
      if (entry.session !== undefined) entry.session.close();
      else if (entry.inFlight === 0) socket.end();
    }
    const started = Date.now();
    while (this.#open.size > 0 && Date.now() - started < deadlineMs) {
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    this.destroyAll();
  }

  destroyAll(): void {
    for (const socket of this.#open.keys()) socket.destroy();
  }
}
