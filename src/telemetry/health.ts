import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import type { Counter } from "prom-client";
import { describeError, MeshwardError } from "../errors.ts";
import type { Metrics } from "./metrics.ts";
import { CONNECTION_REFUSALS, ConnectionGate, sourceAddress } from "../util/connection-gate.ts";
import { formatHostPort } from "../util/address.ts";
import { listenOn } from "../util/listen.ts";
import { checkHostHeader } from "./host-check.ts";
import { LimitedWarnings } from "./log-limiter.ts";

export interface CheckResult {
  readonly ok: boolean;
  readonly detail?: unknown;
}

export type HealthCheck = () => CheckResult | Promise<CheckResult>;

/**
 * liveness: "restart me if this fails" (e.g. the event loop or a fatal state);
 * readiness: "do not send me traffic yet" (e.g. no SVID yet, CA unreachable).
 */
export type CheckKind = "liveness" | "readiness";

export interface HealthReport {
  readonly ok: boolean;
  readonly checks: Record<string, { ok: boolean; detail?: unknown }>;
}

export interface Health {
  /** Registers a named check; `kinds` defaults to readiness only. Returns an unregister function. */
  register(name: string, check: HealthCheck, kinds?: readonly CheckKind[]): () => void;
  run(kind: CheckKind): Promise<HealthReport>;
}

/** A check that does not answer within this time counts as failed. */
const CHECK_TIMEOUT_MS = 2_000;

export function createHealth(): Health {
  const checks = new Map<string, { check: HealthCheck; kinds: ReadonlySet<CheckKind> }>();
  return {
    register(name, check, kinds = ["readiness"]) {
      if (checks.has(name)) throw new MeshwardError("E_HEALTH_CHECK_DUPLICATE", `a health check named ${JSON.stringify(name)} is already registered`);
      const entry = { check, kinds: new Set(kinds) };
      checks.set(name, entry);
      return () => {
        if (checks.get(name) === entry) checks.delete(name);
      };
    },
    async run(kind) {
      const selected = [...checks].filter(([, entry]) => entry.kinds.has(kind));
      const results = await Promise.all(selected.map(([name, entry]) => runOne(entry.check).then((result) => [name, result] as const)));
      const report: Record<string, { ok: boolean; detail?: unknown }> = {};
      for (const [name, result] of results) report[name] = result;
      return { ok: results.every(([, result]) => result.ok), checks: report };
    },
  };
}

async function runOne(check: HealthCheck): Promise<{ ok: boolean; detail?: unknown }> {
  let timer: NodeJS.Timeout | undefined;
  try {
    const timeout = new Promise<CheckResult>((resolve) => {
      timer = setTimeout(() => resolve({ ok: false, detail: `no answer within ${CHECK_TIMEOUT_MS} ms` }), CHECK_TIMEOUT_MS);
      timer.unref();
    });
    const result = await Promise.race([Promise.resolve().then(check), timeout]);
    return result.detail === undefined ? { ok: result.ok === true } : { ok: result.ok === true, detail: result.detail };
  } catch (error) {
    return { ok: false, detail: describeError(error) };
  } finally {
    if (timer) clearTimeout(timer);
  }
}

/**
 * Connections the status port keeps open at once, from everyone: probes and a Prometheus scrape
 * need a handful, and each open connection costs ~20 KB (a partial head) and a file descriptor of
 * the process that also serves mTLS.
 */
export const DEFAULT_STATUS_MAX_CONNECTIONS = 64;
/** Status-port connections open at once from one source address (the kubelet, Prometheus, a browser each have their own). */
export const DEFAULT_STATUS_MAX_CONNECTIONS_PER_ADDRESS = 16;
/**
 * Time a status-port connection has to send a complete request head, from its accept (or from
 * its previous response); past it the connection is answered 408 and closed. Probes and scrapes
 * send theirs at once.
 */
export const STATUS_HEADERS_TIMEOUT_MS = 5_000;
/** Time a status-port connection may make no progress (nothing read, nothing written) before it is closed. */
export const STATUS_IDLE_TIMEOUT_MS = 15_000;
/** Requests one status-port connection is answered (probes and scrapes send one or a few per connection). */
export const STATUS_MAX_REQUESTS_PER_CONNECTION = 16;

const statusMetricsByRegistry = new WeakMap<Metrics["registry"], Counter<"reason">>();

/** meshward_status_connections_refused_total{reason}: status-port connections reset at accept by a cap (created once per registry). */
export function statusPortMetrics(metrics: Metrics): Counter<"reason"> {
  const known = statusMetricsByRegistry.get(metrics.registry);
  if (known !== undefined) return known;
  const refused = metrics.counter({
    name: "meshward_status_connections_refused_total",
    help: "Connections the status port (/metrics, /healthz, /readyz, the status page) reset at accept because a cap was reached: max_connections (all callers) or max_connections_per_address (one source address).",
    labelNames: ["reason"],
  });
  for (const reason of CONNECTION_REFUSALS) refused.inc({ reason }, 0);
  statusMetricsByRegistry.set(metrics.registry, refused);
  return refused;
}

export type RouteHandler = (req: IncomingMessage, res: ServerResponse) => void | Promise<void>;

export interface OpsServerConfig {
  /** Default 127.0.0.1: the ops port is not for public interfaces. */
  readonly host?: string;
  /** 0 picks a free port. */
  readonly port: number;
  readonly metrics?: Metrics;
  readonly health?: Health;
  /** Extra exact-path routes (e.g. "/" for a status page, "/status.json"). */
  readonly extraRoutes?: Readonly<Record<string, RouteHandler>>;
  /**
   * Where refused requests are reported (warn, rate limited per reason: a browser page can
   * cause them at will). Without one they are only refused.
   */
  readonly logger?: { warn(fields: Record<string, unknown>, message: string): void };
  /** Connections open at once, from everyone; more are reset at accept (default DEFAULT_STATUS_MAX_CONNECTIONS). */
  readonly maxConnections?: number;
  /** Connections open at once from one source address (default DEFAULT_STATUS_MAX_CONNECTIONS_PER_ADDRESS). */
  readonly maxConnectionsPerAddress?: number;
  /** Time to send a complete request head (default STATUS_HEADERS_TIMEOUT_MS). */
  readonly headersTimeoutMs?: number;
  /** Time a connection may make no progress, nothing read or written (default STATUS_IDLE_TIMEOUT_MS). */
  readonly idleTimeoutMs?: number;
}

export interface BoundAddress {
  readonly host: string;
  readonly port: number;
  /** http://host:port (IPv6 hosts bracketed). */
  readonly url: string;
}

export interface OpsServer {
  start(): Promise<BoundAddress>;
  close(): Promise<void>;
  readonly server: Server;
}

/** Serves /metrics (Prometheus text), /healthz (liveness) and /readyz (readiness) as JSON. */
export function createOpsServer(config: OpsServerConfig): OpsServer {
  const routes = new Map<string, RouteHandler>();
  if (config.metrics) {
    const metrics = config.metrics;
    routes.set("/metrics", async (_req, res) => {
      const body = await metrics.text();
      res.writeHead(200, { "content-type": metrics.contentType, "cache-control": "no-store" });
      res.end(body);
    });
  }
  const health = config.health;
  const healthRoute = (kind: CheckKind): RouteHandler => async (_req, res) => {
    const report = health ? await health.run(kind) : { ok: true, checks: {} };
    res.writeHead(report.ok ? 200 : 503, { "content-type": "application/json", "cache-control": "no-store" });
    res.end(JSON.stringify({ status: report.ok ? "ok" : "failing", checks: report.checks }));
  };
  routes.set("/healthz", healthRoute("liveness"));
  routes.set("/readyz", healthRoute("readiness"));
  for (const [path, handler] of Object.entries(config.extraRoutes ?? {})) routes.set(path, handler);

  // DNS rebinding guard (host-check.ts): set once listening, from the configured and bound hosts.
  let boundHosts: readonly string[] = [config.host ?? "127.0.0.1"];
  const warnings = config.logger ? new LimitedWarnings(config.logger) : undefined;

  // Node checks the head timeout of every connection each connectionsCheckingInterval (30 s by
  // default): at most a second here, so a connection that sends nothing or half a head is gone
  // within headersTimeout + 1 s.
  const headersTimeout = config.headersTimeoutMs ?? STATUS_HEADERS_TIMEOUT_MS;
  const server = createServer(
    {
      requestTimeout: Math.max(10_000, headersTimeout),
      headersTimeout,
      connectionsCheckingInterval: Math.min(1_000, headersTimeout),
      // A caller that pipelines requests and never reads the answers sits between requests with an
      // answer it does not take, where neither timeout above applies: it held its slot of the caps
      // below for ever (review today4). A connection making no progress either way for this long is
      // closed, and one connection answers at most this many requests (each /metrics answer costs a
      // registry serialisation): server.timeout and server.maxRequestsPerSocket below.
    },
    (req, res) => {
    const decision = checkHostHeader(req.headers.host, boundHosts);
    if (!decision.ok) {
      warnings?.warn(
        `ops-${decision.reason}`,
        { event: "ops-request-refused", reason: decision.reason, host: String(req.headers.host).slice(0, 100), path: (req.url ?? "/").split("?", 1)[0]!.slice(0, 100) },
        "refused a request to the loopback-bound status port whose Host header is not a loopback name (DNS rebinding protection)",
      );
      res.writeHead(421, { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store", connection: "close" });
      res.end("misdirected request: this port is bound to loopback and answers only to Host localhost, 127.0.0.1 or [::1] (DNS rebinding protection)\n");
      return;
    }
    const path = (req.url ?? "/").split("?", 1)[0] ?? "/";
    const handler = routes.get(path);
    if (!handler) {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
      return;
    }
    const builtIn = path === "/metrics" || path === "/healthz" || path === "/readyz";
    if (builtIn && req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD", "content-type": "text/plain" }).end("method not allowed\n");
      return;
    }
    Promise.resolve()
      .then(() => handler(req, res))
      .catch((error: unknown) => {
        if (!res.headersSent) res.writeHead(500, { "content-type": "text/plain" });
        res.end(`internal error: ${describeError(error)}\n`);
      });
  });

  server.timeout = config.idleTimeoutMs ?? STATUS_IDLE_TIMEOUT_MS;
  server.maxRequestsPerSocket = STATUS_MAX_REQUESTS_PER_CONNECTION;

  // Admission, as the CA API and the injector's webhook count theirs (ConnectionGate): over a cap
  // a connection is reset as it is accepted, before Node's HTTP parser reads a byte of it. The
  // server listens itself (not through gatedListener) so that Node's head timeout runs.
  const maxConnections = config.maxConnections ?? DEFAULT_STATUS_MAX_CONNECTIONS;
  const maxConnectionsPerAddress = config.maxConnectionsPerAddress ?? DEFAULT_STATUS_MAX_CONNECTIONS_PER_ADDRESS;
  const gate = new ConnectionGate({ maxConnections, maxConnectionsPerAddress });
  const refusedCounter = config.metrics ? statusPortMetrics(config.metrics) : undefined;
  server.prependListener("connection", (socket: Socket) => {
    const refused = gate.admit(socket);
    if (refused === undefined) return;
    socket.on("error", () => undefined);
    socket.resetAndDestroy();
    refusedCounter?.inc({ reason: refused });
    const address = sourceAddress(socket.remoteAddress);
    warnings?.warn(
      `ops-connection-refused|${refused}|${refused === "max_connections" ? "" : address}`,
      { event: "ops-connection-refused", reason: refused, peer: address, open: gate.open, limit: refused === "max_connections" ? maxConnections : maxConnectionsPerAddress },
      refused === "max_connections"
        ? `refused a connection: the status port has ${maxConnections} connections open`
        : `refused a connection: this address has ${maxConnectionsPerAddress} connections open to the status port`,
    );
  });

  return {
    server,
    async start() {
      const at = await listenOn(server, { host: config.host ?? "127.0.0.1", port: config.port }, "the status port");
      boundHosts = [config.host ?? "127.0.0.1", at.host];
      return { host: at.host, port: at.port, url: `http://${formatHostPort(at)}` };
    },
    close() {
      warnings?.close();
      return new Promise<void>((resolve) => {
        if (!server.listening) {
          resolve();
          return;
        }
        server.close(() => resolve());
        server.closeAllConnections();
        // Refused sockets are already gone; admitted ones that never made a request are not HTTP connections yet.
        gate.destroyAll();
      });
    },
  };
}
