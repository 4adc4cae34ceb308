import { randomBytes } from "node:crypto";

/** Node's ticketKeys format: 16 bytes name, 16 bytes HMAC secret, 16 bytes AES key. */
export const TICKET_KEYS_BYTES = 48;
export const DEFAULT_TICKET_KEY_ROTATION_MS = 60 * 60 * 1000;

/**
 * Session-ticket keys with their own rotation schedule, independent of certificate rotation,
 * so a certificate swap does not force every client into a full handshake.
 */
export class TicketKeyRing {
  #keys: Buffer;
  #timer: NodeJS.Timeout | undefined;
  readonly #listeners = new Set<(keys: Buffer) => void>();

  constructor(
    readonly rotationMs: number = DEFAULT_TICKET_KEY_ROTATION_MS,
    private readonly random: (size: number) => Buffer = randomBytes,
  ) {
    this.#keys = this.random(TICKET_KEYS_BYTES);
    if (rotationMs > 0) {
      this.#timer = setInterval(() => this.rotate(), rotationMs);
      this.#timer.unref();
    }
  }

  current(): Buffer {
    return this.#keys;
  }

  /** `notify: false` when the caller republishes the options itself. */
  rotate(notify = true): Buffer {
    this.#keys = this.random(TICKET_KEYS_BYTES);
    if (notify) for (const listener of this.#listeners) listener(this.#keys);
    return this.#keys;
  }

  onRotate(listener: (keys: Buffer) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  close(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#listeners.clear();
  }
}
