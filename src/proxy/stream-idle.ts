import { GrpcStatus } from "./respond.ts";
import type { ProxyAnswer } from "./respond.ts";

/**
 * The code of the error an exchange's upstream is failed with when it sent no response for
 * limits.idleTimeout; the side's onUpstreamError counts it and answers upstreamTimeoutAnswer.
 */
export const UPSTREAM_TIMEOUT = "E_UPSTREAM_TIMEOUT";

export function upstreamTimeoutError(idleMs: number): Error {
  return Object.assign(new Error(`sent no response for ${idleMs} ms (limits.idleTimeout)`), { code: UPSTREAM_TIMEOUT });
}

export function isUpstreamTimeout(error: unknown): boolean {
  return (error as { code?: unknown } | undefined)?.code === UPSTREAM_TIMEOUT;
}

/** 504 for an upstream error from upstreamTimeoutError; `upstream` names it ("the app at 127.0.0.1:8080"). */
export function upstreamTimeoutAnswer(upstream: string, error: Error): ProxyAnswer {
  return { status: 504, grpcStatus: GrpcStatus.UNAVAILABLE, code: UPSTREAM_TIMEOUT, message: `${upstream} ${error.message}` };
}

/** A request body that stopped coming for limits.idleTimeout (HTTP/1 and HTTP/2 alike). */
export const BODY_TIMEOUT_ANSWER: ProxyAnswer = { status: 408, grpcStatus: GrpcStatus.INTERNAL, code: "E_BODY_TIMEOUT", message: "Request Timeout: the rest of the request body did not arrive in time" };

/** The idle rule of one forwarded HTTP/2 stream, as the HTTP/1 relay applies it to an exchange. */
export interface StreamIdleRule {
  /** limits.idleTimeout */
  readonly ms: number;
  /** The request body stopped coming: counted and logged (refused, reason body_timeout) before the 408. */
  readonly bodyTimedOut: (detail: string) => void;
}

/**
 * Ends a forwarded stream early with the proxy's refusal: `answer` while no response has started,
 * RST_STREAM (CANCEL) once one has; what it holds upstream is let go. Nothing once it is over.
 */
export type RevokeStream = (answer: ProxyAnswer) => void;

/**
 * One stream's idle clock: `touch()` on every byte read from the caller or written to it;
 * `onIdle` runs once when no touch came for `ms`. A touch only reads the clock: the one timer is
 * re-armed when it fires early, not on every chunk.
 */
export class IdleTimer {
  #last = Date.now();
  #timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly ms: number,
    private readonly onIdle: () => void,
  ) {
    this.#arm(ms);
  }

  touch(): void {
    this.#last = Date.now();
  }

  stop(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #arm(delayMs: number): void {
    this.#timer = setTimeout(() => this.#check(), delayMs);
    this.#timer.unref();
  }

  #check(): void {
    const idle = Date.now() - this.#last;
    if (idle < this.ms) return this.#arm(this.ms - idle);
    this.#timer = undefined;
    this.onIdle();
  }
}
