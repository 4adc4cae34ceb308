/**
 * Request bytes a server holds for its callers, all connections together, with a share per source
 * address: what a caller can make the process keep in memory by not finishing its requests. The
 * sidecar's inbound (limits.maxHeldRequestBytes; src/proxy/held-budget.ts lists what it counts) and
 * the CA's gRPC API (maxRequestBytes × BUFFERED_REQUESTS of unfinished SignCertificate bodies,
 * src/ca/api/grpc.ts) use it.
 *
 * Each source address may hold at most `perAddress` of them (addressShare: the budget's share of
 * maxConnectionsPerAddress / maxConnections, as for connections), so that one caller cannot take
 * the whole budget and leave every other caller refused. A request that would go past either bound
 * is refused (the sidecar's E_SIDECAR_BUSY, the CA's E_CA_BUSY) instead of held: the process stops
 * growing.
 */
export class HeldBudget {
  #used = 0;
  /**
   * What each address holds, as one cell per address that its takes and gives update in place: a
   * cell at 0 stays (so that the next request of the same caller, usually one stream after another,
   * finds it instead of inserting and deleting a Map entry per request), up to MAX_IDLE_CELLS of
   * them, then every empty one goes. Cells above 0 are bounded by the budget (each holds a byte at
   * least) and, in practice, by the open streams each server allows.
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

  /** Which bound `bytes` more for `address` would go past: "total", "address", or undefined when they fit. */
  wouldRefuse(address: string, bytes: number): "total" | "address" | undefined {
    if (this.#used + bytes > this.max) return "total";
    if (this.usedBy(address) + bytes > this.perAddress) return "address";
    return undefined;
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

/**
 * One source address's share of a budget of `max` bytes: max × maxConnectionsPerAddress /
 * maxConnections (the part of the connections one address may hold), at least `atLeast` (what one
 * caller must be able to hold to be served at all) and at most max. With maxConnectionsPerAddress
 * at or above maxConnections the per-address cap is off, and so is this share (max).
 */
export function addressShare(max: number, maxConnections: number, maxConnectionsPerAddress: number, atLeast: number): number {
  if (maxConnectionsPerAddress >= maxConnections) return max;
  return Math.min(max, Math.max(Math.floor((max * maxConnectionsPerAddress) / maxConnections), atLeast));
}
