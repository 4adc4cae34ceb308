import { createServer as createNetServer, type Server as NetServer, type Socket } from "node:net";

/** Which cap refused a connection (a metric label: keep the set closed). */
export const CONNECTION_REFUSALS = ["max_connections", "max_connections_per_address"] as const;
export type ConnectionRefusal = (typeof CONNECTION_REFUSALS)[number];

export interface ConnectionGateOptions {
  /** Connections open at once, from everyone. */
  readonly maxConnections: number;
  /** Connections open at once from one source address. */
  readonly maxConnectionsPerAddress: number;
  /** Called with the number of open connections whenever it changes. */
  readonly onChange?: (open: number) => void;
}

/**
 * Admission of accepted TCP connections, before any TLS work: at most `maxConnections` open at
 * once, and at most `maxConnectionsPerAddress` from one source address. An admitted socket holds
 * its slot until it closes. The caller closes a refused socket.
 */
export class ConnectionGate {
  readonly #open = new Set<Socket>();
  readonly #perAddress = new Map<string, number>();

  constructor(private readonly options: ConnectionGateOptions) {}

  /** Takes a slot for `socket` (given back when it closes), or names the cap that refuses it. */
  admit(socket: Socket): ConnectionRefusal | undefined {
    if (this.#open.size >= this.options.maxConnections) return "max_connections";
    const address = sourceAddress(socket.remoteAddress);
    const held = this.#perAddress.get(address) ?? 0;
    if (held >= this.options.maxConnectionsPerAddress) return "max_connections_per_address";
    this.#open.add(socket);
    this.#perAddress.set(address, held + 1);
    socket.once("close", () => {
      this.#open.delete(socket);
      const left = (this.#perAddress.get(address) ?? 1) - 1;
      if (left <= 0) this.#perAddress.delete(address);
      else this.#perAddress.set(address, left);
      this.options.onChange?.(this.#open.size);
    });
    this.options.onChange?.(this.#open.size);
    return undefined;
  }

  /** Connections open now. */
  get open(): number {
    return this.#open.size;
  }

  /** Closes every admitted connection still open (at shutdown, after the grace period). */
  destroyAll(): void {
    for (const socket of this.#open) socket.destroy();
  }
}

/**
 * The key a per-address cap counts under: the peer's IP, an IPv4-mapped IPv6 address as the IPv4
 * address it is (a dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d).
 */
export function sourceAddress(remoteAddress: string | undefined): string {
  if (remoteAddress === undefined) return "(unknown)";
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(remoteAddress);
  return mapped !== null ? mapped[1]! : remoteAddress.toLowerCase();
}

/**
 * A plain TCP listener that admits each accepted socket through `gate` before `server` (a TLS
 * or HTTPS server, which then does the handshake) sees it; a socket over a cap is reset at once,
 * before any TLS work, and reported to `onRefused`.
 */
export function gatedListener(gate: ConnectionGate, server: { emit(event: "connection", socket: Socket): boolean }, onRefused: (reason: ConnectionRefusal, socket: Socket) => void): NetServer {
  return createNetServer((raw: Socket) => {
    const refused = gate.admit(raw);
    if (refused === undefined) {
      server.emit("connection", raw);
      return;
    }
    raw.on("error", () => undefined);
    raw.resetAndDestroy();
    onRefused(refused, raw);
  });
}
