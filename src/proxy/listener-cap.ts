import type { Server, Socket } from "node:net";
import type { Counter, Gauge } from "prom-client";
import type { Metrics } from "../telemetry/metrics.ts";
import { ConnectionGate, sourceAddress } from "../util/connection-gate.ts";

/**
 * The per-listener connection metrics: open connections (read from the listener when scraped, so
 * nothing is counted per connection), the configured cap, and connections closed at the cap.
 */
export interface ListenerMetrics {
  /** meshward_sidecar_listener_connections_active{listener}: open connections, counted as the cap counts them. */
  readonly active: Gauge<"listener">;
  /** meshward_sidecar_listener_connections_max{listener}: the cap (limits.maxConnections). */
  readonly max: Gauge<"listener">;
  /** meshward_sidecar_listener_connections_overflow_total{listener}: connections closed at accept because the cap was reached. */
  readonly overflow: Counter<"listener">;
  /** Listeners whose open connections the active gauge reads at scrape time. */
  readonly listeners: Map<string, Server>;
}

const perRegistry = new WeakMap<Metrics["registry"], ListenerMetrics>();

/** The listener metrics of a registry, created once (the sidecar and each egress share them). */
export function listenerMetrics(metrics: Metrics): ListenerMetrics {
  const known = perRegistry.get(metrics.registry);
  if (known !== undefined) return known;
  const listeners = new Map<string, Server>();
  // Open connections are read when scraped, so nothing is counted per connection: Node keeps
  // the count server.maxConnections is checked against, and getConnections() reads it.
  const active = metrics.gauge({
    name: "meshward_sidecar_listener_connections_active",
    help: "Open connections of each sidecar listener (inbound, outbound, tcp/<app id>, egress/<backend>), including those still in their TLS handshake or first bytes: what limits.maxConnections counts.",
    labelNames: ["listener"],
    async collect() {
      const counts = await Promise.all([...listeners].map(([listener, server]) => new Promise<[string, number | undefined]>((resolve) => server.getConnections((error, count) => resolve([listener, error === null ? count : undefined])))));
      for (const [listener, count] of counts) if (count !== undefined) this.set({ listener }, count);
    },
  });
  const created: ListenerMetrics = {
    active,
    max: metrics.gauge({
      name: "meshward_sidecar_listener_connections_max",
      help: "The connection cap of each sidecar listener (limits.maxConnections).",
      labelNames: ["listener"],
    }),
    overflow: metrics.counter({
      name: "meshward_sidecar_listener_connections_overflow_total",
      help: "Connections each sidecar listener closed at once, before any TLS or HTTP, because limits.maxConnections were open.",
      labelNames: ["listener"],
    }),
    listeners,
  };
  perRegistry.set(metrics.registry, created);
  return created;
}

/** Where refusals are logged: a rate-limited warning (LimitedWarnings), never one line per connection. */
export interface CapWarnings {
  warn(key: string, fields: Record<string, unknown>, message: string): void;
}

/**
 * Caps the open connections of one listener at `maxConnections`, the way Envoy's listener
 * connection limit and overload manager do: past the cap a new connection is closed as soon as it
 * is accepted, on the raw handle, before any socket object, TLS or HTTP work (Node's
 * server.maxConnections, checked in its accept callback); it is counted and logged
 * rate-limited. A closed connection frees its slot at once. Connections the sidecar opens
 * itself (to the app, to peers, to backends) belong to no listener and are not counted.
 * Returns a function that stops reporting the listener (when it closes).
 */
export function capConnections(server: Server, listener: string, maxConnections: number, metrics: ListenerMetrics | undefined, warnings: CapWarnings): () => void {
  server.maxConnections = maxConnections;
  const overflow = metrics?.overflow.labels({ listener }); // bound once: a labelled inc hashes the labels each call
  overflow?.inc(0);
  metrics?.max.set({ listener }, maxConnections);
  metrics?.active.set({ listener }, 0);
  metrics?.listeners.set(listener, server);
  const key = `max-connections|${listener}`;
  server.on("drop", (data?: { remoteAddress?: string; remotePort?: number }) => {
    overflow?.inc();
    warnings.warn(
      key,
      { event: "max-connections", listener, maxConnections, remote: data?.remoteAddress },
      `refused a connection: the ${listener} listener has limits.maxConnections (${maxConnections}) open`,
    );
  });
  return () => {
    if (metrics?.listeners.get(listener) !== server) return;
    metrics.listeners.delete(listener);
    metrics.active.set({ listener }, 0);
  };
}

/** Which per-address cap refused a connection (the reason label of meshward_sidecar_refused_total). */
export type AddressRefusal = "max_connections_per_address" | "max_handshakes_per_address";

/**
 * Connections a caller with a verified TLS handshake is still short of may hold, as a share of
 * `maxConnectionsPerAddress`: half (at least one). A connection is "handshaking" from accept until its TLS
 * handshake has completed (or, in PERMISSIVE mode, its plaintext was accepted), which is where a
 * caller without any certificate can keep it (up to limits.handshakeTimeout).
 */
export function handshakesPerAddress(maxConnectionsPerAddress: number): number {
  return Math.max(1, Math.ceil(maxConnectionsPerAddress / 2));
}

/**
 * Per-source-address caps of one listener, next to its global cap (capConnections): at most
 * `maxPerAddress` connections open from one address (a ConnectionGate, as the CA and the
 * injector count them), of which at most handshakesPerAddress(maxPerAddress) not yet past their
 * TLS handshake. Checked when a connection is accepted, before any byte is read; the caller
 * resets a refused socket, which gives its slot back as it closes. The handshake slot is given
 * back as soon as `established` is called (or the socket closes).
 */
export class AddressCaps {
  /** Per address only: the listener's global cap is capConnections'. */
  readonly #open: ConnectionGate;
  readonly #handshakingFrom = new Map<string, number>();
  /** Sockets still handshaking, by remote address and port (a TLSSocket reports its raw socket's), with their source address. */
  readonly #handshaking = new Map<string, { socket: Socket; address: string }>();
  readonly maxHandshakes: number;

  constructor(readonly maxPerAddress: number) {
    this.maxHandshakes = handshakesPerAddress(maxPerAddress);
    this.#open = new ConnectionGate({ maxConnections: Number.POSITIVE_INFINITY, maxConnectionsPerAddress: maxPerAddress });
  }

  /** Takes an open and a handshaking slot for `socket`, or names the cap that refuses it. */
  admit(socket: Socket): AddressRefusal | undefined {
    const refused = this.#open.admit(socket);
    if (refused !== undefined) return "max_connections_per_address";
    const address = sourceAddress(socket.remoteAddress);
    const handshaking = this.#handshakingFrom.get(address) ?? 0;
    if (handshaking >= this.maxHandshakes) return "max_handshakes_per_address";
    this.#handshakingFrom.set(address, handshaking + 1);
    const key = `${socket.remoteAddress}|${socket.remotePort}`;
    this.#handshaking.set(key, { socket, address });
    socket.once("close", () => {
      if (this.#handshaking.get(key)?.socket === socket) this.#handshakeDone(key, address);
    });
    return undefined;
  }

  /** The connection (or the TLS socket over it) finished its handshake: its handshake slot is free. */
  established(socket: Socket): void {
    const key = `${socket.remoteAddress}|${socket.remotePort}`;
    const pending = this.#handshaking.get(key);
    if (pending !== undefined) this.#handshakeDone(key, pending.address);
  }

  #handshakeDone(key: string, address: string): void {
    this.#handshaking.delete(key);
    const left = (this.#handshakingFrom.get(address) ?? 1) - 1;
    if (left <= 0) this.#handshakingFrom.delete(address);
    else this.#handshakingFrom.set(address, left);
  }
}
