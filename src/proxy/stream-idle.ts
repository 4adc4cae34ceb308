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
