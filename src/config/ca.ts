import { shownValue } from "../errors.ts";
import * as z from "zod";
import { parseSpiffeId, parseTrustDomain } from "../spiffe/id.ts";
import { hostPort, timerDurationText } from "./fields.ts";
import { validatorFlagName } from "./validator-names.ts";
import { parseDuration } from "../util/duration.ts";

/** = DEFAULT_MAX_HANDSHAKE_BYTES of src/tls/handshake-cap.ts (config does not import tls; test/tls/handshake-cap.test.ts checks they agree). */
export const DEFAULT_MAX_HANDSHAKE_BYTES = 16 * 1024;

/**
 * A duration (`90s`, `24h`, `1y`; a bare number is seconds) in milliseconds. With `min`, a
 * shorter one is refused by name: a unit slip (`0s`, `5` for five seconds) must not start a CA
 * that issues certificates already expired, or spends every join token on them.
 */
const duration = (what: string, min?: { readonly text: string; readonly why: string }) =>
  z.string().transform((value, ctx) => {
    let ms: number;
    try {
      ms = parseDuration(value, what);
    } catch (error) {
      ctx.addIssue({ code: "custom", message: (error as Error).message });
      return z.NEVER;
    }
    if (min !== undefined && ms < parseDuration(min.text)) {
      ctx.addIssue({ code: "custom", message: `${what} ${shownValue(value)} is too short: at least ${min.text} (${min.why})` });
      return z.NEVER;
    }
    return ms;
  });

/** The shortest values the CA accepts (docs/configuration.md, from the descriptions below). */
export const MIN_WORKLOAD_TTL = "5s";
export const MIN_ISSUER_TTL = "1h";
export const MIN_JWT_SVID_TTL = "1m";
export const MIN_EXPIRY_WARNING = "1h";

const spiffeIdWithPath = (what: string) =>
  z.string().transform((value, ctx) => {
    try {
      const id = parseSpiffeId(value);
      if (id.path === "") throw new Error(`${what} ${value} needs a path (an X509-SVID names a workload, not a trust domain)`);
      return id.toString();
    } catch (error) {
      ctx.addIssue({ code: "custom", message: (error as Error).message });
      return z.NEVER;
    }
  });

/** Sentry's legacy audience for service-account tokens (dapr/dapr pkg/sentry/server/validator/kubernetes). */
export const LEGACY_SENTRY_AUDIENCE = "dapr.io/sentry";

const audiences = z
  .union([z.string().min(1).transform((v) => [v]), z.array(z.string().min(1)).min(1)])
  .optional();

/** Dapr Sentry's JWT skew (dapr/dapr pkg/sentry/server/validator/jwks/jwks.go, jwt.WithAcceptableSkew). */
export const DEFAULT_JWT_CLOCK_TOLERANCE = "5m";
const MAX_JWT_CLOCK_TOLERANCE_MS = 3_600_000;

export const jwksValidatorSchema = z
  .object({
    jwksFile: z.string().optional().describe("Path to a JWKS document (JSON) holding the token signers' public keys."),
    jwksUrl: z
      .string()
      .url()
      .refine((url) => URL.canParse(url) && new URL(url).protocol === "https:", {
        message: "must be an https:// URL: the JWKS holds the keys that decide every identity, so it is never fetched in plaintext (for a local document use jwksFile)",
      })
      .optional()
      .describe("https:// URL of a JWKS document; fetched and cached, refreshed on unknown key ids (at most once per 30 s). After a failed fetch none is sent for 30 s (requests meanwhile get E_JWKS_UNAVAILABLE); a token that could never pass (not a JWT, a refused algorithm, no or a past `exp`, another audience) is refused before any fetch."),
    kubernetes: z
      .object({
        apiServer: z.string().url().default("https://kubernetes.default.svc").describe("The API server, as pods reach it."),
        tokenFile: z.string().min(1).default("/var/run/secrets/kubernetes.io/serviceaccount/token").describe("The CA's own service-account token, sent as a bearer token (re-read at each fetch)."),
        caFile: z.string().min(1).default("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt").describe("PEM roots the API server's certificate must chain to."),
        cacheMaxAge: timerDurationText("JWKS cache max age").default(parseDuration("10m")).describe("Refetch the signing keys when they are older than this."),
        cooldown: timerDurationText("JWKS cooldown").default(parseDuration("30s")).describe("After a fetch, a token with an unknown key id triggers no new fetch for this long; after a failed discovery or JWKS fetch, none is sent for this long (requests meanwhile get E_JWKS_UNAVAILABLE)."),
      })
      .strict()
      .optional()
      .describe("Find the cluster's service-account signing keys through the API server's OIDC discovery (/.well-known/openid-configuration, /openid/v1/jwks) with the CA's own token; follows key rotation."),
    issuer: z.string().min(1).optional().describe("Required `iss` claim. Required for the `kubernetes` and claim mappings unless `kubernetes` discovery finds it in the API server's discovery document; the `sentry` mapping checks it only when given (Sentry does not)."),
    audience: audiences.describe(
      "Accepted `aud` values, one or a list; a token must carry at least one. Default for the `kubernetes` mapping: the CA's serving SPIFFE ID (the audience Dapr's injector projects) and `dapr.io/sentry` (the legacy one); for `sentry`: the serving SPIFFE ID. Required for a claim mapping.",
    ),
    mapping: z
      .union([
        z.literal("kubernetes"),
        z.literal("sentry"),
        z.object({
          namespaceClaim: z.string().min(1).describe("Claim (dotted path allowed) that holds the namespace."),
          appIdClaim: z.string().min(1).describe("Claim (dotted path allowed) that holds the app id."),
        }),
      ])
      .default("kubernetes")
      .describe(
        "How claims become an identity: `kubernetes` maps a service-account token's namespace and service account name to ns/<namespace>/<service-account>, and allows the DNS names <service-account>.<namespace>.svc and .svc.cluster.local when the account's name is a DNS-1035 label, the shape of a Service name (none for a dotted name); `sentry` reads the whole SPIFFE ID from `sub`, as Dapr Sentry's JWKS validator does; or name the claims.",
      ),
    // Sentry's JWKS validator parses with jwt.WithAcceptableSkew(5*time.Minute)
    // (dapr/dapr pkg/sentry/server/validator/jwks/jwks.go): the same default here.
    clockTolerance: duration("JWT clock tolerance")
      .refine((ms) => ms <= MAX_JWT_CLOCK_TOLERANCE_MS, { message: "the JWT clock tolerance must be at most 1h (a larger one would accept tokens long expired)" })
      .default(parseDuration(DEFAULT_JWT_CLOCK_TOLERANCE))
      .describe(
        "How far the CA's clock may be from the token issuer's (the API server's) when checking exp, nbf and iat. Default 5m, as Dapr Sentry's JWKS validator; a CA whose clock lags by more refuses fresh tokens as not yet valid (E_TOKEN_NOT_YET_VALID). At most 1h.",
      ),
  })
  .refine((v) => [v.jwksFile, v.jwksUrl, v.kubernetes].filter((x) => x !== undefined).length === 1, { message: "give exactly one of jwksFile, jwksUrl or kubernetes" })
  .refine((v) => v.mapping === "sentry" || v.issuer !== undefined || v.kubernetes !== undefined, { message: "issuer is required unless mapping is sentry or kubernetes discovery finds it", path: ["issuer"] })
  .refine((v) => typeof v.mapping === "string" || v.audience !== undefined, { message: "audience is required with a claim mapping", path: ["audience"] });

export const kubernetesValidatorSchema = z
  .object({
    appId: z
      .enum(["service-account", "annotation"])
      .default("service-account")
      .describe(
        "Where the app id comes from: the service account's name (default, no pod read), or the pod's `dapr.io/app-id` annotation as Dapr Sentry does (needs `get` on pods; falls back to the pod name).",
      ),
    apiServer: z.string().url().optional().describe("Kubernetes API server URL (default: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT)."),
    tokenFile: z.string().min(1).default("/var/run/secrets/kubernetes.io/serviceaccount/token").describe("The CA's own service-account token, read on every call (it rotates)."),
    caFile: z.string().min(1).default("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt").describe("CA bundle of the API server."),
    audience: audiences.describe("Audiences asked of the TokenReview; default: the CA's serving SPIFFE ID and `dapr.io/sentry`."),
  })
  .strict();

/** A Kubernetes namespace name: an RFC 1123 label (as src/ca/dapr-trust-bundle.ts checks it). */
const KUBERNETES_NAMESPACE = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

export const daprTrustBundleSchema = z
  .object({
    namespace: z
      .string()
      .regex(KUBERNETES_NAMESPACE, { message: "must be a Kubernetes namespace name (lower-case letters, digits and '-', at most 63, starting and ending with a letter or digit)" })
      .describe("Dapr's control-plane namespace, where the `dapr-trust-bundle` ConfigMap lives (Dapr's default: dapr-system)."),
    apiServer: z.string().url().optional().describe("Kubernetes API server URL (default: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT)."),
    tokenFile: z.string().min(1).default("/var/run/secrets/kubernetes.io/serviceaccount/token").describe("The CA's own service-account token, read on every call (it rotates)."),
    caFile: z.string().min(1).default("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt").describe("CA bundle of the API server."),
    resync: timerDurationText("dapr-trust-bundle resync interval", 10_000)
      .default(parseDuration("5m"))
      .describe("How often the ConfigMap is checked even when the trust bundle has not changed (it may have been edited, or recreated by a Dapr upgrade). At least 10s."),
  })
  .strict();

export const caConfigSchema = z
  .object({
    trustDomain: z.string().transform((v, ctx) => {
      try {
        return parseTrustDomain(v);
      } catch (error) {
        ctx.addIssue({ code: "custom", message: (error as Error).message });
        return z.NEVER;
      }
    }).optional().describe("Trust domain; read from the CA directory when omitted."),
    listen: z.string().default("127.0.0.1:8443").describe("Address the CA API (gRPC + HTTPS, one TLS port) listens on."),
    status: hostPort("status address")
      .optional()
      .describe("Serve the status page (/), /metrics, /healthz and /readyz over plain HTTP on this HOST:PORT (off by default)."),
    statusTokenFile: z.string().min(1).optional().describe("File holding the status page token (at least 16 characters; the file readable by its owner only, mode 0600, else E_KEY_PERMISSIONS); required when status is not on loopback (or MESHWARD_STATUS_TOKEN)."),
    // The defaults are telemetry/health.ts's DEFAULT_STATUS_MAX_CONNECTIONS(_PER_ADDRESS) (config imports no telemetry).
    statusMaxConnections: z
      .number()
      .int()
      .min(1)
      .max(100_000)
      .default(64)
      .describe("Connections the status port keeps open at once, from everyone; more are reset on accept and counted in meshward_status_connections_refused_total. Probes and a Prometheus scrape need a handful. A connection has 5 s to send a complete request head, then it is closed."),
    statusMaxConnectionsPerAddress: z
      .number()
      .int()
      .min(1)
      .max(100_000)
      .default(16)
      .describe("Status-port connections open at once from one source IP address; more are reset on accept."),
    store: z.string().optional().describe("Store URL: sqlite:/path/ca.db (default: <dir>/ca.db) or postgres://…"),
    workloadTtl: duration("workload TTL", { text: MIN_WORKLOAD_TTL, why: "workloads renew at half of it; under a minute is for testing rotation only, production uses hours" })
      .default(parseDuration("24h"))
      .describe(`Lifetime of workload certificates (capped by the issuer's remaining life). At least ${MIN_WORKLOAD_TTL} (less, 0s included, is refused: the certificates would expire on arrival); under a minute is for testing rotation only.`),
    clockSkew: duration("clock skew").default(parseDuration("15m")).describe("How far NotBefore is backdated to tolerate clock skew."),
    dnsNames: z.array(z.string().min(1)).default(["localhost"]).describe("DNS names in the CA's own serving certificate."),
    servingSpiffeId: spiffeIdWithPath("serving SPIFFE ID")
      .optional()
      .describe(
        "SPIFFE ID in the CA's own serving certificate (default spiffe://<trust-domain>/ns/meshward-system/meshward-ca). Dapr sidecars expect spiffe://<control-plane trust domain>/ns/<control-plane namespace>/dapr-sentry.",
      ),
    defaultValidator: z
      .preprocess((v) => (typeof v === "string" ? validatorFlagName(v) : v), z.enum(["join-token", "jwks", "insecure"]))
      .default("join-token").describe("Validator used when a request names none (Dapr's UNKNOWN)."),
    jwks: jwksValidatorSchema.optional().describe("JWT/JWKS validator; also serves Dapr's KUBERNETES validator when its keys are a cluster's (the `kubernetes` mapping, or `jwks.kubernetes` discovery) and no `kubernetes` block is set."),
    kubernetes: kubernetesValidatorSchema
      .optional()
      .describe("Dapr's KUBERNETES validator through the Kubernetes API (TokenReview, and a pod read with `appId: annotation`), as Dapr Sentry does; see docs/migrating-from-dapr-sentry.md for the RBAC."),
    jwtSvid: z
      .object({
        enabled: z.boolean().default(true).describe("Sign a JWT-SVID with every certificate (aud: the trust domain, then the request's jwt_audiences, Dapr's SignCertificateRequest field 7, each also signed alone), as Dapr Sentry does with JWTs enabled; meshward's own clients (JOIN_TOKEN, SVID validators) get one only when they list audiences; false issues none."),
        algorithm: z.enum(["ES256", "EdDSA"]).default("ES256").describe("JWT-SVID signature algorithm; the key is derived from the X.509 issuer's and rotates with it."),
        ttl: duration("JWT-SVID TTL", { text: MIN_JWT_SVID_TTL, why: "a token must outlive its trip to the audience" }).default(parseDuration("1h")).describe(`JWT-SVID lifetime (capped by the X509-SVID's). At least ${MIN_JWT_SVID_TTL}.`),
        issuer: z.string().url().optional().describe("The `iss` claim and OIDC issuer URL (serve /.well-known/openid-configuration there); default https://<first dnsName>:<port>."),
      })
      .strict()
      .default({ enabled: true, algorithm: "ES256", ttl: parseDuration("1h") })
      .describe("JWT-SVIDs, their JWKS (/.well-known/jwks.json) and OIDC discovery (/.well-known/openid-configuration)."),
    allowInsecureDev: z.boolean().default(false).describe("Allow the `insecure` validator (no proof of identity). Development only; logged loudly."),
    signingWorkers: z
      .number()
      .int()
      .min(0)
      .max(256)
      .optional()
      .describe("Worker threads that verify CSRs and sign certificates; 0 signs on the main thread. Default: one per CPU less one for the event loop (os.availableParallelism() - 1). The workers hold at most 128 requests each, waiting or running; past that a request is refused RESOURCE_EXHAUSTED (E_CA_BUSY) and the client retries with backoff. A request whose caller has gone (stream reset, deadline passed) is dropped from the queue unsigned."),
    maxRequestBytes: z.number().int().min(1024).max(1 << 20).default(64 * 1024).describe("Largest accepted API request body. The CA holds at most 256 of these at once across all unfinished calls (more get E_CA_BUSY), of which one source IP address at most its share, 256 × maxRequestBytes × maxConnectionsPerAddress / maxConnections (1 MiB at the defaults, at least one request; more from that address get E_CA_BUSY), and allows 16 concurrent streams per connection (more get REFUSED_STREAM)."),
    requestTimeout: timerDurationText("request timeout").default(parseDuration("30s")).describe("Longest a SignCertificate call may take to send its whole request; a slower one gets DEADLINE_EXCEEDED (E_REQUEST_TIMEOUT) and its stream is reset, so a peer sending a byte at a time cannot hold it open. An HTTP/1.1 caller of the HTTP API (bundle, CRL, health) has as long to send each request head, from the handshake or the previous response; past it the connection is closed."),
    handshakeTimeout: timerDurationText("handshake timeout")
      .default(parseDuration("10s"))
      .describe("Time a caller has to complete the TLS handshake on the API port, from the moment its connection is accepted; a connection that has not finished by then (nothing sent, half a ClientHello) is closed and counted in meshward_ca_connections_refused_total{reason=\"handshake_timeout\"}."),
    maxHandshakeBytes: z
      .number()
      .int()
      .min(4096)
      .max(1 << 20)
      .default(DEFAULT_MAX_HANDSHAKE_BYTES)
      .describe(
        "Bytes a caller may send on the API port before its TLS handshake completes (ClientHello, client certificate chain, Finished); a connection over it is reset before OpenSSL has the whole chain, so nothing in it is verified, and counted in meshward_ca_connections_refused_total{reason=\"handshake_too_large\"}. Node cannot bound the client chain OpenSSL verifies on the event loop (no max_cert_list, no verify depth): a made-up chain of RSA links with huge exponents costs ~20 ms per link. A meshward or Dapr caller sends ~1.5 KB, an RSA-4096 leaf with two intermediates ~5 KB; see docs/threat-model.md (Resource exhaustion).",
      ),
    maxConnections: z
      .number()
      .int()
      .min(1)
      .max(1_000_000)
      .default(4096)
      .describe("API connections open at once, from all callers (each is a file descriptor and a TLS session); more are closed on accept, before any TLS work. Keep it below the process's open-file limit (the CA warns at start when it is not)."),
    maxConnectionsPerAddress: z
      .number()
      .int()
      .min(1)
      .max(1_000_000)
      .default(256)
      .describe("API connections open at once from one source IP address; more are closed on accept. Callers behind one NAT (a node's SNAT, a load balancer that does not keep the client address) share one address: allow two per workload behind it (default: a node's 110 pods). Above maxConnections it has no effect."),
    signRateLimit: z
      .object({
        burst: z.number().int().min(1).max(1_000_000).default(100).describe("Certificates one address may be issued at once."),
        perSecond: z.number().positive().max(1_000_000).default(2).describe("Certificates per second the address's allowance refills at."),
      })
      .strict()
      .or(z.literal(false))
      .default({ burst: 100, perSecond: 2 })
      .describe(
        "Certificates issued to one source IP address (attestations and renewals alike, counted per CA replica): `burst` at once, then `perSecond`. Issued certificates count, and so do refusals that cost the CA a verification: a token the Kubernetes TokenReview did not authenticate, a JWT whose signature does not verify (after a JWKS fetch), an unknown or used-up join token, an untrusted renewal certificate, and anything refused after attestation; so forged tokens of the right shape cannot make the CA verify them without bound. A refusal that cost nothing (a malformed CSR, another trust domain, an empty or malformed token, a JWT whose `exp` or audience rules it out before any fetch or TokenReview) gives its share back, so callers without a credential behind the same address cannot use it up with garbage, and so does a failure of the CA's own (`E_INTERNAL`, `E_STORE_*`, `E_JWKS_UNAVAILABLE`, `E_KUBERNETES_UNAVAILABLE`, `E_CA_BUSY`, \u2026), so a workload retrying after one is not penalised. Past it the request is refused RESOURCE_EXHAUSTED (E_RATE_LIMITED) before attestation, so no join token is spent, and clients retry with backoff. Each certificate is a row in the store: one valid token or certificate would otherwise mint them without bound. `false` turns it off (a proxy in front of the CA that hides client addresses makes every caller one address).",
      ),
    crlRefresh: timerDurationText("CRL refresh interval", 100).default(parseDuration("1s")).describe("How often the store is checked for new revocations."),
    leaderTimeout: timerDurationText("leader timeout", 2_000)
      .default(parseDuration("15s"))
      .describe(
        "Replicas on PostgreSQL: how long the leader's lock session may stay silent before PostgreSQL ends it and another replica becomes the leader (a leader partitioned from the database or frozen: SIGSTOP, a paused VM). Set on the lock's connection as idle_session_timeout (PostgreSQL 14+), tcp_user_timeout (12+) and TCP keepalives; the leader checks its lock at least three times within it. Also sets when /readyz reports revocations no replica has signed into a CRL (docs/operations.md). Minimum 2s.",
      ),
    anchorPoll: timerDurationText("anchor poll interval", 100).default(parseDuration("1s")).describe("How often the CA directory is checked for rotated or replaced trust anchors."),
    rotationCheck: duration("rotation check interval").default(parseDuration("1m")).describe("How often rotation thresholds are checked."),
    autoRotateIssuer: z.boolean().default(true).describe("Self-managed CAs: prepare a new issuer at min(½ life, 30d) left and switch to it at min(⅙ life, 7d) left."),
    issuerTtl: duration("issuer TTL", { text: MIN_ISSUER_TTL, why: "as for ca init --issuer-ttl; issuers usually live a year" }).default(parseDuration("1y")).describe(`Lifetime of issuers made by rotation. At least ${MIN_ISSUER_TTL}, as for \`ca init --issuer-ttl\`.`),
    expiryWarning: duration("expiry warning", { text: MIN_EXPIRY_WARNING, why: "the warning is logged hourly, so a shorter one could never be seen before the expiry" })
      .default(parseDuration("30d"))
      .describe(`Warn (hourly log, /readyz detail) when the root or an external issuer expires within this. At least ${MIN_EXPIRY_WARNING}.`),
    daprTrustBundle: daprTrustBundleSchema
      .optional()
      .describe(
        "Off by default. Keep Dapr's `dapr-trust-bundle` ConfigMap (`ca.crt`: every root of the CA's trust bundle, label `app: dapr-sentry`) in step through the Kubernetes API, as Dapr Sentry does: at start, at every trust-bundle change the CA sees (root prepare, activate, retire) and every `resync`. Only the ConfigMap is written (never the Secret, never key material); a write happens only when it differs, with the resourceVersion read (a 409 from another replica is re-read and retried, at most 5 times); a failure is logged (`dapr-trust-bundle-sync-failed`, with the API server's status and reason), counted in meshward_ca_dapr_trust_bundle_syncs_total{result=\"error\"} and retried with backoff (1 s doubling to 5 min) without stopping the CA. Needs `get`, `update` on that ConfigMap and `create` on configmaps in the namespace (deploy/kubernetes/components/dapr-trust-bundle). Out of a cluster, use `meshward ca dapr-trust-bundle | kubectl apply -f -` instead.",
      ),
    autoRotateRoot: z
      .object({
        enabled: z.boolean().default(false).describe("Rotate the root automatically (self-managed CAs)."),
        prepareBefore: duration("root prepare threshold").default(parseDuration("1y")).describe("Prepare a new root when the active root has less than this left."),
        activateAfter: duration("root activation delay").default(parseDuration("7d")).describe("Activate a prepared root after this long (time for every workload to fetch the two-root bundle)."),
      })
      .strict()
      .default({ enabled: false, prepareBefore: parseDuration("1y"), activateAfter: parseDuration("7d") })
      .describe("Automatic root rotation: prepare, activate after a delay, retire once no certificate chains to the old root."),
  })
  .strict();

export type CaConfig = z.infer<typeof caConfigSchema>;
export type JwksValidatorConfig = z.infer<typeof jwksValidatorSchema>;
export type KubernetesValidatorConfig = z.infer<typeof kubernetesValidatorSchema>;
export type DaprTrustBundleConfig = z.infer<typeof daprTrustBundleSchema>;
