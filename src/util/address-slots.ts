/** Which cap refused a slot (a metric label: keep the set closed). */
export const STREAM_REFUSALS = ["max_streams", "max_streams_per_address"] as const;
export type StreamRefusal = (typeof STREAM_REFUSALS)[number];

/**
 * Slots held at once, from everyone and per source address: what bounds the HTTP/2 streams a CA
 * holds open. Streams per connection alone do not: a caller without a credential may open
 * every connection the connection caps allow and fill each with streams it never ends, at
 * ~11 KB of server memory each (measured: 500 connections × 100 streams took a CA from 161 to
 * 729 MiB, past its 512 Mi limit).
 */
export class AddressSlots {
  #open = 0;
  readonly #perAddress = new Map<string, number>();

  constructor(
    private readonly max: number,
    private readonly maxPerAddress: number,
  ) {}

  /** Takes a slot for `address`; returns the cap that refuses it instead. Give it back with `release`. */
  take(address: string): StreamRefusal | undefined {
    if (this.#open >= this.max) return "max_streams";
    const held = this.#perAddress.get(address) ?? 0;
    if (held >= this.maxPerAddress) return "max_streams_per_address";
    this.#open += 1;
    this.#perAddress.set(address, held + 1);
    return undefined;
  }

  release(address: string): void {
    const held = this.#perAddress.get(address);
    if (held === undefined) return;
    this.#open -= 1;
    if (held <= 1) this.#perAddress.delete(address);
    else this.#perAddress.set(address, held - 1);
  }

  get open(): number {
    return this.#open;
  }
}
