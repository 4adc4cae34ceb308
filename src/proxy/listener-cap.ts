import type { Server } from "node:net";
import type { Counter, Gauge } from "prom-client";
import type { Metrics } from "../telemetry/metrics.ts";

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
