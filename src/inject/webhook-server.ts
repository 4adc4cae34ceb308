import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import type { Logger } from "pino";
import { describeError, MeshwardError } from "../errors.ts";
import type { IdentitySnapshot, IdentitySource } from "../identity/source.ts";
import type { Metrics } from "../telemetry/metrics.ts";
import { createInjectorMetrics } from "./metrics.ts";
import { CIPHERS, CURVES, MIN_TLS_VERSION, SECURE_OPTIONS } from "../tls/policy.ts";
import { formatHostPort, type HostPort } from "../util/address.ts";
import { ConnectionGate, gatedListener } from "../util/connection-gate.ts";
import { enforceRequestDeadlines } from "../util/request-deadlines.ts";
import { requestBudget } from "../util/request-budget.ts";
import { findExcessiveNesting } from "../util/yaml-depth.ts";
import { reviewAdmission } from "./admission.ts";
import { DEFAULT_WEBHOOK_MAX_CONNECTIONS, DEFAULT_WEBHOOK_MAX_CONNECTIONS_PER_ADDRESS } from "./webhook-limits.ts";
import type { InjectOptions } from "./settings.ts";

/** AdmissionReview bodies are capped by the API server's request limit (3 MiB of object). */
export const MAX_REVIEW_BYTES = 4 * 1024 * 1024;
/**
 * AdmissionReview bytes held by all unfinished requests together: 8 of the largest. The API
 * server sends a few small ones at a time; 40 callers that each send 4 MiB less one byte took the
 * injector from 110 to 279 MB RSS, past its 256 Mi limit, and a pod OOM-killed fails every pod
 * creation in its namespaces (failurePolicy: Fail). Answers not yet handed to their connections
 * count too. Past it, 503 and the API server retries.
 */
export const DEFAULT_WEBHOOK_MAX_BUFFERED_BYTES = 8 * MAX_REVIEW_BYTES;
export const MUTATE_PATH = "/mutate";
/** Time a caller has to finish the TLS handshake (Node's own default is 120 s). */
export const DEFAULT_WEBHOOK_HANDSHAKE_TIMEOUT_MS = 10_000;
/** A request's head within 5 s of the handshake or of the previous response; its body within 10 s of the head. */
export const DEFAULT_WEBHOOK_HEADERS_TIMEOUT_MS = 5_000;
export const DEFAULT_WEBHOOK_BODY_TIMEOUT_MS = 10_000;
/**
 * An answer must be wholly handed to the connection within 5 s of its review arriving, or the
 * connection is closed. The API server reads at once (its own timeoutSeconds is 10 by default,
 * 30 at most); a caller that never reads otherwise kept its answer (up to 8 MiB) in the
 * injector's memory for as long as it stayed connected (40 of them held 758 MB).
 */
export const DEFAULT_WEBHOOK_RESPONSE_TIMEOUT_MS = 5_000;

export interface WebhookServerOptions {
  readonly listen: HostPort;
  /** The injector's serving certificate (with its Service's DNS name) and the CA's current bundle. */
  readonly identity: IdentitySource;
  /** Everything but the trust anchors, which are the identity's current bundle at each request. */
  readonly inject: Omit<InjectOptions, "trustAnchors">;
  readonly ownNamespace: string;
  readonly logger: Logger;
  /** Milliseconds a caller has to finish the TLS handshake (default 10 s). */
  readonly handshakeTimeoutMs?: number;
  /** See DEFAULT_WEBHOOK_HEADERS_TIMEOUT_MS and DEFAULT_WEBHOOK_BODY_TIMEOUT_MS (tests shorten them). */
  readonly headersTimeoutMs?: number;
  readonly bodyTimeoutMs?: number;
  /** See DEFAULT_WEBHOOK_RESPONSE_TIMEOUT_MS (tests lengthen or shorten it). */
  readonly responseTimeoutMs?: number;
  /** Connections open at once (default 1024); more are reset on accept, before any TLS work. */
  readonly maxConnections?: number;
  /** Connections open at once from one source address (default 256). */
  readonly maxConnectionsPerAddress?: number;
  /** Bytes held by all unfinished requests and all answers not yet handed to their connections together (default 32 MiB). */
  readonly maxBufferedBytes?: number;
  /** Bytes of JSON Patch one review may get (default MAX_PATCH_BYTES, 6 MiB); a larger patch is denied, not sent. */
  readonly maxPatchBytes?: number;
  /** Served at GET /metrics on the webhook port (like the CA's API port), with the webhook's own counters added. */
  readonly metrics?: Metrics;
}

export interface WebhookServer {
  readonly address: string;
  close(): Promise<void>;
}

function tlsOptions(snapshot: IdentitySnapshot) {
  // The API server calls webhooks without a client certificate unless told to: none is asked.
  return {
    cert: snapshot.svid.certChainPem,
    key: snapshot.svid.privateKey.export({ format: "pem", type: "pkcs8" }) as string,
    minVersion: MIN_TLS_VERSION,
    ciphers: CIPHERS,
    ecdhCurve: CURVES,
    honorCipherOrder: true,
    secureOptions: SECURE_OPTIONS,
  } as const;
}

/**
 * `meshward injector`: the mutating admission webhook. POST /mutate takes an AdmissionReview
 * v1 and answers with a JSONPatch; GET /healthz and /readyz for the kubelet. The serving
 * certificate is swapped on rotation for new connections (NODE-TLS-FACTS: setSecureContext).
 */
export async function startWebhookServer(options: WebhookServerOptions): Promise<WebhookServer> {
  const { identity, logger } = options;
  const first = await identity.ready();
  // Node's default handshake timeout is 120 s: a caller that connects and never sends a
  // ClientHello would hold a socket that long. Same guard as the CA API (src/ca/server.ts).
  const handshakeTimeout = options.handshakeTimeoutMs ?? DEFAULT_WEBHOOK_HANDSHAKE_TIMEOUT_MS;
  const counters = options.metrics === undefined ? undefined : createInjectorMetrics(options.metrics);
  const budget = requestBudget(options.maxBufferedBytes ?? DEFAULT_WEBHOOK_MAX_BUFFERED_BYTES);
  const server: Server = createServer({ ...tlsOptions(first), handshakeTimeout }, (req, res) => {
    const path = (req.url ?? "/").split("?", 1)[0];
    const send = (status: number, body: unknown) => {
      res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store" });
      res.end(JSON.stringify(body));
    };
    if (path === "/healthz" || path === "/readyz") {
      const current = identity.current();
      send(current === undefined && path === "/readyz" ? 503 : 200, { status: current === undefined && path === "/readyz" ? "no valid certificate" : "ok" });
      return;
    }
    if (path === "/metrics" && options.metrics !== undefined) {
      const metrics = options.metrics;
      void metrics.text().then((body) => {
        res.writeHead(200, { "content-type": metrics.contentType, "cache-control": "no-store" });
        res.end(body);
      });
      return;
    }
    if (path !== MUTATE_PATH) return send(404, { error: "not found" });
    if (req.method !== "POST") {
      res.setHeader("allow", "POST");
      return send(405, { error: "method not allowed" });
    }
    if (!/^application\/json\b/i.test(req.headers["content-type"] ?? "")) return send(415, { error: "the body must be application/json" });
    const tooLarge = () => send(413, { error: `the AdmissionReview is larger than ${MAX_REVIEW_BYTES} bytes` });
    if (Number(req.headers["content-length"] ?? 0) > MAX_REVIEW_BYTES) {
      tooLarge();
      req.destroy();
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let refused = false;
    let held = 0;
    const release = () => {
      budget.give(held);
      held = 0;
    };
    req.once("close", release);
    const refuse = (answer: () => void) => {
      refused = true;
      chunks.length = 0;
      release();
      answer();
      req.destroy();
    };
    req.on("data", (chunk: Buffer) => {
      if (refused) return;
      size += chunk.length;
      if (size > MAX_REVIEW_BYTES) return refuse(tooLarge);
      if (!budget.take(chunk.length)) {
        counters?.review("busy");
        return refuse(() => {
          res.setHeader("retry-after", "1");
          send(503, { error: "the injector holds too many unfinished AdmissionReviews; retry", code: "E_INJECTOR_BUSY" });
        });
      }
      held += chunk.length;
      chunks.push(chunk);
    });
    req.on("end", () => {
      if (refused) return;
      let review: unknown;
      const body = Buffer.concat(chunks).toString("utf8");
      chunks.length = 0;
      release();
      // Deep nesting would exhaust the stack of the code that walks the object: refused first.
      if (findExcessiveNesting(body) !== undefined) {
        counters?.review("invalid");
        return send(400, { error: "the body nests too deeply", code: "E_ADMISSION_INVALID" });
      }
      try {
        review = JSON.parse(body);
      } catch {
        counters?.review("invalid");
        return send(400, { error: "the body is not JSON" });
      }
      const current = identity.current();
      if (current === undefined) {
        counters?.review("unavailable");
        return send(503, { error: "no current trust bundle" });
      }
      try {
        const answer = reviewAdmission(review, { options: { ...options.inject, trustAnchors: current.bundle.rootsPem }, ownNamespace: options.ownNamespace, maxPatchBytes: options.maxPatchBytes });
        logger.info(
          { event: "admission", uid: answer.response.uid, allowed: answer.response.allowed, patched: answer.response.patch !== undefined, ...(answer.response.status ? { reason: answer.response.status.message } : {}) },
          "admission review",
        );
        // The answer counts against the same budget as request bytes until it is wholly handed to
        // the connection: a caller that does not read holds it in this process's memory.
        const text = JSON.stringify(answer);
        const bytes = Buffer.byteLength(text);
        if (!budget.take(bytes)) {
          counters?.review("busy");
          res.setHeader("retry-after", "1");
          return send(503, { error: "the injector holds too many unfinished AdmissionReviews and unsent answers; retry", code: "E_INJECTOR_BUSY" });
        }
        let given = false;
        const giveBack = () => {
          if (given) return;
          given = true;
          budget.give(bytes);
        };
        res.once("finish", giveBack);
        res.once("close", giveBack);
        counters?.review(!answer.response.allowed ? "denied" : answer.response.patch !== undefined ? "injected" : "unchanged");
        res.writeHead(200, { "content-type": "application/json", "cache-control": "no-store" });
        res.end(text);
      } catch (error) {
        counters?.review("invalid");
        const code = error instanceof MeshwardError ? error.code : "E_INTERNAL";
        logger.warn({ event: "admission-refused", err: describeError(error) }, "bad admission request");
        send(400, { error: describeError(error), code });
      }
    });
  });
  // Connections come through the gated listener below, so Node's own headersTimeout and
  // requestTimeout would never fire (src/util/request-deadlines.ts).
  enforceRequestDeadlines(server, {
    headersMs: options.headersTimeoutMs ?? DEFAULT_WEBHOOK_HEADERS_TIMEOUT_MS,
    bodyMs: options.bodyTimeoutMs ?? DEFAULT_WEBHOOK_BODY_TIMEOUT_MS,
    responseMs: options.responseTimeoutMs ?? DEFAULT_WEBHOOK_RESPONSE_TIMEOUT_MS,
  });
  const unsubscribe = identity.subscribe((event) => {
    if (event.type === "rotated") {
      server.setSecureContext(tlsOptions(event.snapshot));
      logger.info({ event: "certificate-rotated", notAfter: event.snapshot.svid.notAfter.toISOString() }, "serving certificate rotated");
    }
  });
  // Connections are counted before any TLS work (like the CA API): over a cap, reset on accept.
  const maxConnections = options.maxConnections ?? DEFAULT_WEBHOOK_MAX_CONNECTIONS;
  const maxConnectionsPerAddress = options.maxConnectionsPerAddress ?? DEFAULT_WEBHOOK_MAX_CONNECTIONS_PER_ADDRESS;
  const gate = new ConnectionGate({ maxConnections, maxConnectionsPerAddress });
  let lastRefusalLog = 0;
  const listener = gatedListener(gate, server, (refused) => {
    counters?.connectionRefused(refused);
    // Callers can cause this at will: at most one log line a second.
    const now = Date.now();
    if (now - lastRefusalLog >= 1_000) {
      lastRefusalLog = now;
      logger.warn({ event: "connection-refused", reason: refused, open: gate.open, limit: refused === "max_connections" ? maxConnections : maxConnectionsPerAddress }, "refused a connection: the webhook has too many connections open");
    }
  });
  await new Promise<void>((resolve, reject) => {
    listener.once("error", (error: NodeJS.ErrnoException) =>
      reject(new MeshwardError("E_LISTEN", `cannot listen on ${formatHostPort(options.listen)}: ${error.code ?? error.message}`)),
    );
    listener.listen(options.listen.port, options.listen.host, () => resolve());
  });
  listener.on("error", (error: NodeJS.ErrnoException) => logger.error({ event: "listener-error", err: error.code ?? error.message }, "webhook listener error"));
  const bound = listener.address() as AddressInfo;
  return {
    address: formatHostPort({ host: bound.address, port: bound.port }),
    async close() {
      unsubscribe();
      const closed = new Promise<void>((resolve) => listener.close(() => resolve()));
      server.closeAllConnections();
      // Sockets still in their TLS handshake are not HTTP connections yet: the gate holds them.
      gate.destroyAll();
      await closed;
    },
  };
}
