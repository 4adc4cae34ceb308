import * as z from "zod";
import { parseTrustDomain } from "../spiffe/id.ts";
import { allowedHostProblem, hostPort, hostPortList, timerDuration, validatorEnumName } from "./fields.ts";
import { isLoopbackListenHost, parseHostPort } from "../util/address.ts";


const duration = timerDuration;

const appIdName = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9_-]*$/, "an app id (and a namespace) is letters, digits, '_' or '-'")
  .max(253);
/** "orders" (this namespace) or "orders.shop" (app orders in namespace shop). */
const peerName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9][A-Za-z0-9_-]*)?$/, "a peer is an app id or appId.namespace");

/** Open connections per listener: ~80 KiB each idle on the inbound (mTLS), ~12 KiB on the outbound (bench/proxy/connection-rss.ts). */
export const DEFAULT_MAX_CONNECTIONS = 4096;

export const limitsSchema = z
  .object({
    maxHeaderBytes: z.number().int().min(1024).max(1 << 20).default(16 * 1024).describe("Largest request header block accepted on either listener; larger requests get 431."),
    headersTimeout: duration("headers timeout").default(10_000).describe("Time a client has to send complete request headers (slowloris guard); then 408 and close."),
    handshakeTimeout: duration("handshake timeout").default(10_000).describe("Time a client has to finish the TLS handshake (and to send its first byte)."),
    idleTimeout: duration("idle timeout").default(60_000).describe("Close a connection with no traffic for this long: HTTP/1.1 keep-alive, HTTP/2 (GOAWAY, open streams finish) and TCP mode."),
    maxConnectionAge: duration("max connection age").default(3_600_000).describe("Close inbound connections older than this (HTTP/2 GOAWAY, HTTP/1 Connection: close, a TCP tunnel ended) so revocations and root retirement reach them; a connection also ends when its caller's certificate expires."),
    drainTimeout: duration("drain timeout").default(10_000).describe("On SIGTERM, and after an inbound connection is retired (age cap, caller certificate expiry, a root leaving the bundle): how long in-flight requests, WebSockets and HTTP/2 streams may take before the connection is closed."),
    maxConcurrentStreams: z
      .number({ error: "must be a number of streams" })
      .int({ error: "must be a whole number" })
      .min(1, { error: "must be at least 1" })
      .max(10_000, { error: "must be at most 10000 (each stream to an HTTP/1 app takes a connection to it)" })
      .default(100)
      .describe("HTTP/2 streams one connection may have open at once on either listener (SETTINGS_MAX_CONCURRENT_STREAMS); each non-gRPC stream takes a connection to the app."),
    maxConnections: z
      .number({ error: "must be a number of connections" })
      .int({ error: "must be a whole number" })
      .min(1, { error: "must be at least 1 (a listener that takes no connection is no listener)" })
      .max(1_000_000, { error: "must be at most 1000000 (each connection is a file descriptor)" })
      .default(DEFAULT_MAX_CONNECTIONS)
      .describe("Open connections each listener (inbound, outbound, each TCP upstream and egress port) accepts; past it a new connection is closed at once, before any TLS or HTTP, and counted."),
  })
  .strict();

export const egressEntrySchema = z
  .object({
    listen: hostPort("egress listen address").describe("Loopback HOST:PORT the app talks plaintext to (port 0 picks one)."),
    backend: hostPort("egress backend").describe("HOST:PORT of the TLS backend (Redis, PostgreSQL, …)."),
    serverName: z.string().min(1).optional().describe("Host name the backend certificate must carry (default: the backend host)."),
    caFile: z.string().min(1).optional().describe("PEM roots for the backend (default: the mesh trust bundle)."),
    mtls: z.boolean().optional().describe("Present the workload SVID as a client certificate (mutual TLS)."),
    expectSpiffeId: z.string().min(1).optional().describe("Verify the backend by this SPIFFE ID (URI SAN) instead of its host name."),
    protocol: z.enum(["tls", "postgres"]).optional().describe("tls (default: Redis, HTTP, most protocols) or postgres (SSLRequest preamble first)."),
  })
  .strict();

export const sidecarConfigSchema = z
  .object({
    appId: appIdName.describe("This app's id; the SVID is spiffe://<trustDomain>/ns/<namespace>/<appId>."),
    namespace: appIdName.default("default").describe("This app's namespace."),
    trustDomain: z
      .string()
      .transform((v, ctx) => {
        try {
          return parseTrustDomain(v);
        } catch (error) {
          ctx.addIssue({ code: "custom", message: (error as Error).message });
          return z.NEVER;
        }
      })
      .optional()
      .describe("Trust domain; read from the bundle's root when omitted."),
    ca: hostPortList("CA address").describe("Address of the meshward CA (HOST:PORT), or of its replicas (HOST:PORT,HOST:PORT…; a DNS name may resolve to several)."),
    bundle: z
      .string()
      .min(1)
      .optional()
      .describe("Bootstrap trust bundle file (PEM) the CA's certificate must chain to; when omitted, the PEM in MESHWARD_TRUST_ANCHORS (what the Kubernetes injector sets)."),
    token: z.string().min(1).optional().describe("Join token or JWT for the first certificate (prefer tokenFile or MESHWARD_TOKEN; a token here is a secret in a file). Given as the --token flag instead, it is readable by every local user in the process list, and the sidecar logs a warning."),
    tokenFile: z.string().min(1).optional().describe("File holding the token, re-read at each use (Kubernetes projected tokens rotate)."),
    out: z
      .string()
      .min(1)
      .optional()
      .describe("Directory where the sidecar keeps its identity (cert.pem, key.pem 0600, bundle.pem; created 0700, rewritten on every rotation). After a restart a valid certificate found there renews the identity, so a spent single-use token is not needed again."),
    dnsNames: z.array(z.string().min(1)).default([]).describe("DNS names to ask for in the SVID (the token must allow them), so non-SPIFFE callers such as curl can verify the inbound port by host name."),
    validator: z
      .preprocess((v) => (typeof v === "string" ? validatorEnumName(v) : v), z.enum(["JOIN_TOKEN", "JWKS", "KUBERNETES", "INSECURE"]))
      .default("JOIN_TOKEN")
      .describe("How the CA checks the token: JOIN_TOKEN, JWKS, KUBERNETES or INSECURE (join-token, jwks, kubernetes, insecure are accepted too)."),
    inbound: hostPort("inbound address")
      .optional()
      .describe("Where the sidecar accepts mTLS from other sidecars (HOST:PORT, port 0 picks one). Default 0.0.0.0:3501 when app is set; without app there is no inbound listener."),
    app: hostPort("app address")
      .optional()
      .describe("The app's own port on loopback (HOST:PORT) that inbound traffic is forwarded to. Leave it out for an app that only calls others (a job, a CLI): no inbound listener, as Dapr runs a sidecar without an app port."),
    outbound: hostPort("outbound address").optional().describe("Loopback HOST:PORT where the app sends HTTP/gRPC for other apps (routed by dapr-app-id header or Host)."),
    outboundAllowedHosts: z
      .array(
        z.string().superRefine((entry, ctx) => {
          const problem = allowedHostProblem(entry.trim());
          if (problem !== undefined) ctx.addIssue({ code: "custom", message: problem });
        }),
      )
      .default([])
      .describe(
        "Host names the outbound port answers besides 127.0.0.1, ::1, localhost and the app id the request is routed to: exact names, *.example.com, or * for any. Other Host values get 421 E_OUTBOUND_HOST, so a web page that rebinds its DNS name to 127.0.0.1 cannot call other apps as this workload; add names here only for callers that keep a forwarded Host (a gateway).",
      ),
    peers: z.record(peerName, hostPort("peer address")).default({}).describe("Static peer table: app id (or appId.namespace) → HOST:PORT of that app's sidecar inbound port."),
    peerTemplate: z
      .string()
      .regex(/\{appId\}/, "the template must contain {appId}")
      .optional()
      .describe("DNS template for peers not in the table, e.g. {appId}.{namespace}.svc.cluster.local:{port}."),
    peerPort: z.number().int().min(1).max(65535).default(3501).describe("The {port} value in peerTemplate."),
    tcpUpstreams: z.record(peerName, hostPort("TCP upstream listen address")).default({}).describe("TCP outbound: app id → local HOST:PORT; bytes sent there are carried over mTLS to that app's sidecar."),
    policy: z.string().min(1).optional().describe("Access policy file: a Dapr `kind: Configuration` YAML with spec.accessControl; watched and reloaded."),
    mode: z
      .preprocess((v) => (typeof v === "string" ? v.toLowerCase() : v), z.enum(["strict", "permissive"]))
      .default("strict").describe("strict: only mTLS on the inbound port; permissive: plaintext too (counted and logged), for migrations."),
    protocol: z.enum(["http", "tcp"]).default("http").describe("http: HTTP/1.1, HTTP/2 and gRPC with per-request policy and XFCC; tcp: bytes piped, policy decided on connect."),
    escapedSlashes: z
      .enum(["reject", "unescape", "keep"])
      .default("reject")
      .describe("Paths with %2F or %5C: reject (400, default), unescape (decode to '/' before the policy judges and the app receives the path), or keep (judged and forwarded as they are; only for apps that never decode them). Like Envoy's path_with_escaped_slashes_action."),
    status: hostPort("status address").optional().describe("Serve /metrics, /healthz, /readyz and the status page (/) on this HOST:PORT."),
    statusTokenFile: z.string().min(1).optional().describe("File holding the status page token (at least 16 characters; the file readable by its owner only, mode 0600, else E_KEY_PERMISSIONS); required when status is not on loopback (or MESHWARD_STATUS_TOKEN)."),
    statusPage: z
      .boolean()
      .default(true)
      .describe("Serve the status page (/ and /status.json) on the status port. When false only /healthz, /readyz and /metrics are served, and no status token is needed off loopback (Kubernetes probes)."),
    limits: limitsSchema.default(limitsSchema.parse({})).describe("Connection and request limits."),
    egress: z.array(egressEntrySchema).default([]).describe("TLS origination: plaintext loopback ports turned into (m)TLS to a backend."),
    policyReloadInterval: duration("policy reload interval", 100).default(1000).describe("How often the policy file is checked for changes."),
    bundleRefreshInterval: duration("bundle refresh interval")
      .default(60_000)
      .refine((ms) => ms >= 1000, { message: "bundle refresh interval: at least 1s" })
      .describe("How often the trust bundle and CRL are fetched from the CA (new roots and revocations reach open servers and clients within this)."),
    logLevel: z.enum(["trace", "debug", "info", "warn", "error"]).default("info").describe("Log level."),
    logFormat: z.enum(["json", "pretty"]).default("json").describe("Log format."),
  })
  .strict()
  .superRefine((value, ctx) => {
    if (value.token !== undefined && value.tokenFile !== undefined) {
      ctx.addIssue({ code: "custom", path: ["tokenFile"], message: "give token or tokenFile, not both" });
    }
    // The outbound and TCP upstream ports take plaintext and send it on with this workload's
    // identity: off loopback, anyone who reaches them calls other apps as this workload.
    const loopbackOnly = (address: string | undefined, path: (string | number)[], what: string) => {
      if (address === undefined) return;
      let host: string;
      try {
        host = parseHostPort(address, what).host;
      } catch {
        return; // refused by the field's own check
      }
      if (!isLoopbackListenHost(host)) {
        ctx.addIssue({ code: "custom", path, message: `${what} ${address} is not loopback: whoever reaches it calls other apps as this workload, with its identity; listen on 127.0.0.1, ::1 or localhost` });
      }
    };
    loopbackOnly(value.outbound, ["outbound"], "outbound address");
    for (const [appId, address] of Object.entries(value.tcpUpstreams)) loopbackOnly(address, ["tcpUpstreams", appId], "TCP upstream listen address");
    if (value.app === undefined) {
      // Outbound only: no inbound listener, so nothing that configures one may be given.
      if (value.inbound !== undefined) ctx.addIssue({ code: "custom", path: ["inbound"], message: "an inbound listener forwards to the app: give app too (or leave inbound out for an outbound-only sidecar)" });
      if (value.mode === "permissive") ctx.addIssue({ code: "custom", path: ["mode"], message: "permissive mode applies to the inbound listener, which an outbound-only sidecar (no app) does not have" });
      if (value.outbound === undefined && Object.keys(value.tcpUpstreams).length === 0 && value.egress.length === 0) {
        ctx.addIssue({ code: "custom", path: ["app"], message: "required unless the sidecar is outbound only: give app, or outbound, tcpUpstreams or egress" });
      }
    }
  });

export type SidecarConfig = z.infer<typeof sidecarConfigSchema>;

/** The inbound listener's address when the config has an app (outbound-only sidecars have none). */
export const DEFAULT_INBOUND = "0.0.0.0:3501";
export type SidecarLimits = z.infer<typeof limitsSchema>;
export type EgressEntry = z.infer<typeof egressEntrySchema>;
