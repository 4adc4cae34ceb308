import { GrpcStatus } from "./respond.ts";
import type { ProxyAnswer } from "./respond.ts";

/**
 * The request bytes one listener holds for its callers, shared by all its connections
 * (limits.maxHeldRequestBytes). What is counted is what a caller can make the sidecar keep in
 * memory by not finishing a request, and that no other bound caps process-wide:
 *
 * - an HTTP/2 request's header block (as h2RequestHeadBytes counts it), from its HEADERS frame
 *   until the stream closes: up to limits.maxConcurrentStreams of them per connection;
 * - the HTTP/2 request body bytes H2Intake holds while the stream waits (for a connection to the
 *   app, or for the app to read): up to one flow-control window per stream (h2StreamWindow: 16 KiB
 *   at the defaults);
 * - the HTTP/1.1 request body bytes the relay holds before the request has a connection to the
 *   app (waiting for the pool, or pipelined behind another request): up to 1 MiB per connection.
 *
 * Each source address may hold at most `perAddress` of them (the budget's share of
 * limits.maxConnectionsPerAddress / limits.maxConnections, as for connections to the app), so that
 * one caller pod cannot take the whole budget. A request that would go past either is refused
 * with SIDECAR_BUSY (503; gRPC RESOURCE_EXHAUSTED) instead of held: the sidecar stops growing.
 */
export class HeldBudget {
  #used = 0;
  /**
   * What each address holds, as one cell per address that its takes and gives update in place: a
   * cell at 0 stays (so that the next request of the same caller, usually one stream after another,
   * finds it instead of inserting and deleting a Map entry per request), up to MAX_IDLE_CELLS of
   * them, then every empty one goes.
   */
  readonly #perAddress = new Map<string, { bytes: number }>();
  /** Cells at 0 bytes in #perAddress. */
  #idle = 0;

  constructor(
    readonly max: number,
    readonly perAddress: number,
  ) {}

  /** Bytes held now, by all callers. */
  get used(): number {
    return this.#used;
  }

  /** Bytes held now for `address`. */
  usedBy(address: string): number {
    return this.#perAddress.get(address)?.bytes ?? 0;
  }

  /** An account for one request of `address`: what it takes is given back by `close()` at the latest. */
  account(address: string): HeldAccount {
    return new HeldAccount(this, address);
  }

  /** @internal */
  take(address: string, bytes: number): boolean {
    const cell = this.#perAddress.get(address);
    const mine = cell === undefined ? 0 : cell.bytes;
    if (this.#used + bytes > this.max || mine + bytes > this.perAddress) return false;
    this.#used += bytes;
    if (cell === undefined) this.#perAddress.set(address, { bytes });
    else {
      if (mine === 0) this.#idle--;
      cell.bytes = mine + bytes;
    }
    return true;
  }

  /** @internal */
  give(address: string, bytes: number): void {
    if (bytes <= 0) return;
    this.#used -= bytes;
    const cell = this.#perAddress.get(address);
    if (cell === undefined || cell.bytes === 0) return;
    const left = cell.bytes - bytes;
    if (left > 0) {
      cell.bytes = left;
      return;
    }
    cell.bytes = 0;
    if (++this.#idle > MAX_IDLE_CELLS) {
      for (const [key, each] of this.#perAddress) if (each.bytes === 0) this.#perAddress.delete(key);
      this.#idle = 0;
    }
  }
}

/** Empty per-address cells a HeldBudget keeps before it drops them all (each is a Map entry and a small object). */
const MAX_IDLE_CELLS = 256;

/** What one request holds against a HeldBudget. */
export class HeldAccount {
  #held = 0;
  #closed = false;

  constructor(
    private readonly budget: HeldBudget,
    private readonly address: string,
  ) {}

  get held(): number {
    return this.#held;
  }

  /** Counts `bytes` more; false (nothing counted) when they do not fit the budget or the address's share. */
  take(bytes: number): boolean {
    if (this.#closed || bytes <= 0) return true;
    if (!this.budget.take(this.address, bytes)) return false;
    this.#held += bytes;
    return true;
  }

  /** Gives `bytes` back (at most what is held). */
  give(bytes: number): void {
    const n = Math.min(bytes, this.#held);
    this.#held -= n;
    this.budget.give(this.address, n);
  }

  /** Gives everything back; later takes count nothing. */
  close(): void {
    this.give(this.#held);
    this.#closed = true;
  }
}

/** The per-address share of the budget: max × maxConnectionsPerAddress / maxConnections, at least 1 MiB + 64 KiB (one HTTP/1 body held) and at most max. */
export function perAddressShare(max: number, maxConnections: number, maxConnectionsPerAddress: number): number {
  if (maxConnectionsPerAddress >= maxConnections) return max;
  return Math.min(max, Math.max(Math.floor((max * maxConnectionsPerAddress) / maxConnections), (1 << 20) + (64 << 10)));
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
