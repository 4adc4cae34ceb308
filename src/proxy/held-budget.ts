import { GrpcStatus } from "./respond.ts";
import type { ProxyAnswer } from "./respond.ts";
import { addressShare } from "../util/held-budget.ts";

/**
 * The request bytes one listener holds for its callers, shared by all its connections
 * (limits.maxHeldRequestBytes): a HeldBudget (src/util/held-budget.ts, shared with the CA's gRPC
 * API). What is counted is what a caller can make the sidecar keep in memory by not finishing a
 * request, and that no other bound caps process-wide:
 *
 * - an HTTP/2 request's header block (as h2RequestHeadBytes counts it), from its HEADERS frame
 *   until the stream closes: up to limits.maxConcurrentStreams of them per connection;
 * - the HTTP/2 request body bytes H2Intake holds while the stream waits (for a connection to the
 *   app, or for the app to read): up to one flow-control window per stream (h2StreamWindow: 16 KiB
 *   at the defaults);
 * - the HTTP/1.1 request body bytes the relay holds before the request has a connection to the
 *   app (waiting for the pool, or pipelined behind another request): up to 1 MiB per connection.
 *
 * Each source address may hold at most perAddressShare of them, so that one caller pod cannot take
 * the whole budget. A request that would go past either is refused with SIDECAR_BUSY (503; gRPC
 * RESOURCE_EXHAUSTED) instead of held: the sidecar stops growing.
 */
export { HeldAccount, HeldBudget } from "../util/held-budget.ts";

/** The per-address share of the budget: max × maxConnectionsPerAddress / maxConnections, at least 1 MiB + 64 KiB (one HTTP/1 body held) and at most max. */
export function perAddressShare(max: number, maxConnections: number, maxConnectionsPerAddress: number): number {
  return addressShare(max, maxConnections, maxConnectionsPerAddress, (1 << 20) + (64 << 10));
}

/** node:http2's (and RFC 9113's) default SETTINGS_INITIAL_WINDOW_SIZE, the largest window the inbound advertises. */
export const DEFAULT_H2_WINDOW = 65_535;
/** The smallest: one DATA frame of the default SETTINGS_MAX_FRAME_SIZE, and one buffer H2Intake holds bytes in. */
export const MIN_H2_WINDOW = 16 * 1024;

/**
 * The flow-control window the inbound gives each HTTP/2 stream of a caller (its
 * SETTINGS_INITIAL_WINDOW_SIZE): what a stream whose app reads slower than the caller sends holds
 * (H2Intake holds the stream once the app side's write buffer is full, and the caller may still
 * send what is left of its window). Sized so that one connection's limits.maxConcurrentStreams
 * streams, each backed up by a window, fit the caller address's share of the budget: an honest
 * client multiplexing that many calls on one connection to a slow app is slowed by flow control,
 * not refused with E_SIDECAR_BUSY. In whole 16 KiB buffers (what H2Intake counts), at least
 * 16 KiB, at most the default 65,535 (16 KiB at the defaults: 2.67 MiB / 100 streams). The budget
 * itself is unchanged: a caller that ignores the window, or opens more streams than fit, is
 * refused past its share as before.
 */
export function h2StreamWindow(perAddress: number, maxConcurrentStreams: number): number {
  const buffers = Math.floor(perAddress / Math.max(1, maxConcurrentStreams) / MIN_H2_WINDOW);
  return Math.max(MIN_H2_WINDOW, Math.min(DEFAULT_H2_WINDOW, buffers * MIN_H2_WINDOW));
}

/** A request refused because the listener holds limits.maxHeldRequestBytes of requests already (or its caller address its share). */
export const SIDECAR_BUSY: ProxyAnswer = {
  status: 503,
  grpcStatus: GrpcStatus.RESOURCE_EXHAUSTED,
  code: "E_SIDECAR_BUSY",
  message: "Service Unavailable: the sidecar holds as many unfinished requests as limits.maxHeldRequestBytes allows (or this caller address its share of them); retry later",
};
