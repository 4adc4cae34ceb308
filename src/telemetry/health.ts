import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { describeError, MeshwardError } from "../errors.ts";
import type { Metrics } from "./metrics.ts";
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

  const server = createServer({ requestTimeout: 10_000, headersTimeout: 5_000 }, (req, res) => {
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
      });
    },
  };
}
