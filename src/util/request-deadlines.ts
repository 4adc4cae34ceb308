import type { IncomingMessage, ServerResponse } from "node:http";
import type { Socket } from "node:net";

export interface RequestDeadlines {
  /** A request's head must be complete within this long of the connection being ready (TLS done) or of the previous response. */
  readonly headersMs: number;
  /** Its body must be complete within this long of its head. */
  readonly bodyMs: number;
  /**
   * Its response must be wholly handed to the connection (`finish`) within this long of the
   * request being complete; unset, a response may take as long as it likes. A caller that sends
   * a request and never reads the answer otherwise keeps the connection, and the unsent answer in
   * memory, for as long as it stays connected.
   */
  readonly responseMs?: number;
}

type Deadline = "headers" | "body" | "response";

interface DeadlineServer {
  on(event: "secureConnection", listener: (socket: Socket & { alpnProtocol?: string | false | null }) => void): unknown;
  on(event: "request", listener: (req: IncomingMessage | { httpVersion: string }, res: ServerResponse | object) => void): unknown;
}

/**
 * Request deadlines for an HTTP/1.1 server that gets its connections through
 * `emit("connection")` (a gated listener) rather than its own listen(). Node checks
 * `headersTimeout` and `requestTimeout` from a timer that only a listening server starts, so
 * there they never fire: a caller could send half a request and hold its connection, and its
 * share of any body budget, for as long as it liked. A connection past a deadline is destroyed.
 * On an HTTP/2 server with `allowHTTP1`, only the HTTP/1.1 connections get deadlines (an HTTP/2
 * session's requests come whole in HEADERS frames; its idle time is the session's own timeout).
 */
export function enforceRequestDeadlines(server: DeadlineServer, deadlines: RequestDeadlines): void {
  const timers = new WeakMap<Socket, { readonly timer: NodeJS.Timeout; readonly what: Deadline }>();
  const clear = (socket: Socket, what?: Deadline) => {
    const armed = timers.get(socket);
    if (armed === undefined || (what !== undefined && armed.what !== what)) return;
    clearTimeout(armed.timer);
    timers.delete(socket);
  };
  const arm = (socket: Socket, what: Deadline, ms: number) => {
    clear(socket);
    if (socket.destroyed) return;
    const timer = setTimeout(() => {
      timers.delete(socket);
      socket.destroy();
    }, ms);
    timer.unref();
    timers.set(socket, { timer, what });
  };
  server.on("secureConnection", (socket) => {
    if (socket.alpnProtocol === "h2") return;
    arm(socket, "headers", deadlines.headersMs);
    socket.once("close", () => clear(socket));
  });
  server.on("request", (message, response) => {
    if (message.httpVersion === "2.0") return;
    const req = message as IncomingMessage;
    const res = response as ServerResponse;
    const socket = req.socket;
    // Once the request is whole: its response's deadline, if there is one.
    const complete = () => {
      if (deadlines.responseMs !== undefined) arm(socket, "response", deadlines.responseMs);
      else clear(socket);
    };
    if (req.complete) complete();
    else {
      arm(socket, "body", deadlines.bodyMs);
      req.once("end", () => {
        // Only the body's own deadline: a body drained after the response must not clear (or
        // replace) the next head's.
        if (res.writableFinished) clear(socket, "body");
        else complete();
      });
    }
    // The next request on a kept-alive connection gets the same time for its head.
    res.once("finish", () => arm(socket, "headers", deadlines.headersMs));
  });
}
