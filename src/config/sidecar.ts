import * as z from "zod";
import { parseTrustDomain } from "../spiffe/id.ts";
import { allowedHostProblem, hostPort, hostPortList, timerDuration } from "./fields.ts";
import { SIDECAR_FIELD_HELP, SIDECAR_LIMIT_HELP } from "./sidecar-fields.ts";
import { validatorEnumName } from "./validator-names.ts";
import { isLoopbackListenHost, parseHostPort } from "../util/address.ts";


const duration = timerDuration;

const appIdName = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9_-]*$/, "an app id (and a namespace) is letters, digits, '_' or '-'")
  .max(253);
/** "orders" (this namespace) or "orders.shop" (app orders in namespace shop). */
const peerName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9][A-Za-z0-9_-]*)?$/, "a peer is an app id or appId.namespace");

/**
 * Open connections per listener, and the inbound's connections to the app: the most that fits
 * the 256 Mi memory limit the injector gives the sidecar container with every listener full and
 * every app connection held (sidecarMemoryBoundKib; docs/sidecar.md, "Connection cap", has the
 * arithmetic).
 */
export const DEFAULT_MAX_CONNECTIONS = 768;
/**
 * Inbound connections open at once from one source address, and app connections held for it: a
 * sixth of the default cap, so one caller pod cannot take every slot. (The CA allows 256: its
 * callers may come through a node's SNAT; the sidecar's callers are pods with addresses of their own.)
 */
export const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS = 128;

/**
 * Request bytes the inbound listener holds for all its callers together (HTTP/2 header blocks of
 * open streams, HTTP/2 and HTTP/1.1 bodies held before the app takes them; HeldBudget): what fits
 * beside the connection caps in the injector's 256 Mi (sidecarMemoryBoundKib).
 */
export const DEFAULT_MAX_HELD_REQUEST_BYTES = 16 * 1024 * 1024;

/**
 * What the sidecar's memory is made of, in KiB, measured on Node 20 with the production bundle:
 * the process at rest; an inbound connection idle after its mTLS handshake (one left with an
 * unfinished ClientHello costs ~56; with limits.maxHandshakeBytes set, off by default, each costs
 * ~13 more for the handshake byte cap's stream, src/tls/handshake-cap.ts: 600 idle connections
 * measured 96.6 KiB each without it, 109.4 with it, not counted here); an outbound (plaintext, loopback) connection
 * (bench/proxy/connection-rss.ts); and a connection to the app held for an HTTP/2 caller that
 * never opens its flow-control window (the app connection's read and the stream's buffer: 2000
 * such streams took a sidecar from 65 to 313 MiB).
 */
export const SIDECAR_MEMORY_KIB = { base: 66 * 1024, inboundConnection: 80, outboundConnection: 12, appConnectionHeld: 124 } as const;

/**
 * The most the caps let the sidecar hold, in KiB: inbound and outbound listeners full, every app
 * connection held, and limits.maxHeldRequestBytes of requests held (HeldBudget counts allocated
 * buffers, not only their bytes).
 */
export function sidecarMemoryBoundKib(maxConnections: number, maxHeldRequestBytes = DEFAULT_MAX_HELD_REQUEST_BYTES): number {
  const m = SIDECAR_MEMORY_KIB;
  return m.base + maxConnections * (m.inboundConnection + m.outboundConnection + m.appConnectionHeld) + Math.ceil(maxHeldRequestBytes / 1024);
}

export const limitsSchema = z
  .object({
    maxHeaderBytes: z.number().int().min(1024).max(1 << 20).default(16 * 1024).describe(SIDECAR_LIMIT_HELP.maxHeaderBytes),
    headersTimeout: duration("headers timeout").default(10_000).describe(SIDECAR_LIMIT_HELP.headersTimeout),
    handshakeTimeout: duration("handshake timeout").default(10_000).describe(SIDECAR_LIMIT_HELP.handshakeTimeout),
    idleTimeout: duration("idle timeout").default(60_000).describe(SIDECAR_LIMIT_HELP.idleTimeout),
    upgradeIdleTimeout: duration("upgrade idle timeout").default(300_000).describe(SIDECAR_LIMIT_HELP.upgradeIdleTimeout),
    maxConnectionAge: duration("max connection age").default(3_600_000).describe(SIDECAR_LIMIT_HELP.maxConnectionAge),
    drainTimeout: duration("drain timeout").default(10_000).describe(SIDECAR_LIMIT_HELP.drainTimeout),
    maxConcurrentStreams: z
      .number({ error: "must be a number of streams" })
      .int({ error: "must be a whole number" })
      .min(1, { error: "must be at least 1" })
      .max(10_000, { error: "must be at most 10000 (each stream to an HTTP/1 app takes a connection to it)" })
      .default(100)
      .describe(SIDECAR_LIMIT_HELP.maxConcurrentStreams),
    maxConnections: z
      .number({ error: "must be a number of connections" })
      .int({ error: "must be a whole number" })
      .min(1, { error: "must be at least 1 (a listener that takes no connection is no listener)" })
      .max(1_000_000, { error: "must be at most 1000000 (each connection is a file descriptor)" })
      .default(DEFAULT_MAX_CONNECTIONS)
      .describe(SIDECAR_LIMIT_HELP.maxConnections),
    maxConnectionsPerAddress: z
      .number({ error: "must be a number of connections" })
      .int({ error: "must be a whole number" })
      .min(1, { error: "must be at least 1" })
      .max(1_000_000, { error: "must be at most 1000000 (each connection is a file descriptor)" })
      .default(DEFAULT_MAX_CONNECTIONS_PER_ADDRESS)
      .describe(SIDECAR_LIMIT_HELP.maxConnectionsPerAddress),
    // Off unless set (0 is off too): see SIDECAR_LIMIT_HELP.maxHandshakeBytes.
    maxHandshakeBytes: z
      .number({ error: "must be a number of bytes" })
      .int({ error: "must be a whole number" })
      .min(0, { error: "must be 0 (off) or at least 4096" })
      .max(1 << 20, { error: "must be at most 1048576 (1 MiB)" })
      .refine((value) => value === 0 || value >= 4096, { error: "must be 0 (off) or at least 4096 (a client's first flight with its certificate chain must fit)" })
      .optional()
      .describe(SIDECAR_LIMIT_HELP.maxHandshakeBytes),
    // The defaults are telemetry/health.ts's DEFAULT_STATUS_MAX_CONNECTIONS(_PER_ADDRESS) (config imports no telemetry).
    statusMaxConnections: z
      .number({ error: "must be a number of connections" })
      .int({ error: "must be a whole number" })
      .min(1, { error: "must be at least 1" })
      .max(100_000, { error: "must be at most 100000 (each connection is a file descriptor of the process that serves mTLS)" })
      .default(64)
      .describe(SIDECAR_LIMIT_HELP.statusMaxConnections),
    statusMaxConnectionsPerAddress: z
      .number({ error: "must be a number of connections" })
      .int({ error: "must be a whole number" })
      .min(1, { error: "must be at least 1" })
      .max(100_000, { error: "must be at most 100000 (each connection is a file descriptor of the process that serves mTLS)" })
      .default(16)
      .describe(SIDECAR_LIMIT_HELP.statusMaxConnectionsPerAddress),
    maxHeldRequestBytes: z
      .number({ error: "must be a number of bytes" })
      .int({ error: "must be a whole number" })
      .min(1 << 20, { error: "must be at least 1048576 (1 MiB: an HTTP/1.1 request may hold that much before it has a connection to the app)" })
      .max(2 ** 40, { error: "must be at most 1099511627776 (1 TiB)" })
      .default(DEFAULT_MAX_HELD_REQUEST_BYTES)
      .describe(SIDECAR_LIMIT_HELP.maxHeldRequestBytes),
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
    appId: appIdName.describe(SIDECAR_FIELD_HELP.appId),
    namespace: appIdName.default("default").describe(SIDECAR_FIELD_HELP.namespace),
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
      .describe(SIDECAR_FIELD_HELP.trustDomain),
    ca: hostPortList("CA address").describe(SIDECAR_FIELD_HELP.ca),
    bundle: z
      .string()
      .min(1)
      .optional()
      .describe(SIDECAR_FIELD_HELP.bundle),
    token: z.string().min(1).optional().describe(SIDECAR_FIELD_HELP.token),
    tokenFile: z.string().min(1).optional().describe(SIDECAR_FIELD_HELP.tokenFile),
    out: z
      .string()
      .min(1)
      .optional()
      .describe(SIDECAR_FIELD_HELP.out),
    dnsNames: z.array(z.string().min(1)).default([]).describe(SIDECAR_FIELD_HELP.dnsNames),
    validator: z
      .preprocess((v) => (typeof v === "string" ? validatorEnumName(v) : v), z.enum(["JOIN_TOKEN", "JWKS", "KUBERNETES", "INSECURE"]))
      .default("JOIN_TOKEN")
      .describe(SIDECAR_FIELD_HELP.validator),
    inbound: hostPort("inbound address")
      .optional()
      .describe(SIDECAR_FIELD_HELP.inbound),
    app: hostPort("app address")
      .optional()
      .describe(SIDECAR_FIELD_HELP.app),
    outbound: hostPort("outbound address").optional().describe(SIDECAR_FIELD_HELP.outbound),
    outboundAllowedHosts: z
      .array(
        z.string().superRefine((entry, ctx) => {
          const problem = allowedHostProblem(entry.trim());
          if (problem !== undefined) ctx.addIssue({ code: "custom", message: problem });
        }),
      )
      .default([])
      .describe(SIDECAR_FIELD_HELP.outboundAllowedHosts),
    peers: z.record(peerName, hostPort("peer address")).default({}).describe(SIDECAR_FIELD_HELP.peers),
    peerTemplate: z
      .string()
      .regex(/\{appId\}/, "the template must contain {appId}")
      .optional()
      .describe(SIDECAR_FIELD_HELP.peerTemplate),
    peerPort: z.number().int().min(1).max(65535).default(3501).describe(SIDECAR_FIELD_HELP.peerPort),
    tcpUpstreams: z.record(peerName, hostPort("TCP upstream listen address")).default({}).describe(SIDECAR_FIELD_HELP.tcpUpstreams),
    policy: z.string().min(1).optional().describe(SIDECAR_FIELD_HELP.policy),
    mode: z
      .preprocess((v) => (typeof v === "string" ? v.toLowerCase() : v), z.enum(["strict", "permissive"]))
      .default("strict").describe(SIDECAR_FIELD_HELP.mode),
    protocol: z.enum(["http", "tcp"]).default("http").describe(SIDECAR_FIELD_HELP.protocol),
    escapedSlashes: z
      .enum(["reject", "unescape", "keep"])
      .default("reject")
      .describe(SIDECAR_FIELD_HELP.escapedSlashes),
    headersWithUnderscores: z
      .enum(["reject", "drop", "allow"])
      .default("reject")
      .describe(SIDECAR_FIELD_HELP.headersWithUnderscores),
    status: hostPort("status address").optional().describe(SIDECAR_FIELD_HELP.status),
    statusTokenFile: z.string().min(1).optional().describe(SIDECAR_FIELD_HELP.statusTokenFile),
    statusPage: z
      .boolean()
      .default(true)
      .describe(SIDECAR_FIELD_HELP.statusPage),
    limits: limitsSchema.default(limitsSchema.parse({})).describe(SIDECAR_FIELD_HELP.limits),
    egress: z.array(egressEntrySchema).default([]).describe(SIDECAR_FIELD_HELP.egress),
    policyReloadInterval: duration("policy reload interval", 100).default(1000).describe(SIDECAR_FIELD_HELP.policyReloadInterval),
    bundleRefreshInterval: duration("bundle refresh interval")
      .default(60_000)
      .refine((ms) => ms >= 1000, { message: "bundle refresh interval: at least 1s" })
      .describe(SIDECAR_FIELD_HELP.bundleRefreshInterval),
    logLevel: z.enum(["trace", "debug", "info", "warn", "error"]).default("info").describe(SIDECAR_FIELD_HELP.logLevel),
    logFormat: z.enum(["json", "pretty"]).default("json").describe(SIDECAR_FIELD_HELP.logFormat),
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
