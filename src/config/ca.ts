import * as z from "zod";
import { parseTrustDomain } from "../spiffe/id.ts";
import { hostPort, validatorFlagName } from "./fields.ts";
import { parseDuration } from "../util/duration.ts";

const duration = (what: string) =>
  z.string().transform((value, ctx) => {
    try {
      return parseDuration(value, what);
    } catch (error) {
      ctx.addIssue({ code: "custom", message: (error as Error).message });
      return z.NEVER;
    }
  });

export const jwksValidatorSchema = z
  .object({
    jwksFile: z.string().optional().describe("Path to a JWKS document (JSON) holding the token signers' public keys."),
    jwksUrl: z.string().url().optional().describe("URL of a JWKS document; fetched and cached, refreshed on unknown key ids."),
    issuer: z.string().min(1).describe("Required `iss` claim."),
    audience: z.string().min(1).describe("Required `aud` claim (Dapr uses `dapr.io/sentry`)."),
    mapping: z
      .union([
        z.literal("kubernetes"),
        z.object({
          namespaceClaim: z.string().min(1).describe("Claim (dotted path allowed) that holds the namespace."),
          appIdClaim: z.string().min(1).describe("Claim (dotted path allowed) that holds the app id."),
        }),
      ])
      .default("kubernetes")
      .describe(
        "How claims become an identity: `kubernetes` maps a service-account token's namespace and service account name to ns/<namespace>/<service-account>; or name the claims.",
      ),
  })
  .refine((v) => (v.jwksFile === undefined) !== (v.jwksUrl === undefined), { message: "give exactly one of jwksFile or jwksUrl" });

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
    statusTokenFile: z.string().min(1).optional().describe("File holding the status page token (at least 16 characters); required when status is not on loopback (or MESHWARD_STATUS_TOKEN)."),
    store: z.string().optional().describe("Store URL: sqlite:/path/ca.db (default: <dir>/ca.db) or postgres://…"),
    workloadTtl: duration("workload TTL").default(parseDuration("24h")).describe("Lifetime of workload certificates (capped by the issuer's remaining life)."),
    clockSkew: duration("clock skew").default(parseDuration("15m")).describe("How far NotBefore is backdated to tolerate clock skew."),
    dnsNames: z.array(z.string().min(1)).default(["localhost"]).describe("DNS names in the CA's own serving certificate."),
    defaultValidator: z
      .preprocess((v) => (typeof v === "string" ? validatorFlagName(v) : v), z.enum(["join-token", "jwks", "insecure"]))
      .default("join-token").describe("Validator used when a request names none (Dapr's UNKNOWN)."),
    jwks: jwksValidatorSchema.optional().describe("JWT/JWKS validator (also serves Dapr's KUBERNETES validator)."),
    allowInsecureDev: z.boolean().default(false).describe("Allow the `insecure` validator (no proof of identity). Development only; logged loudly."),
    signingWorkers: z
      .number()
      .int()
      .min(0)
      .max(256)
      .optional()
      .describe("Worker threads that verify CSRs and sign certificates; 0 signs on the main thread. Default: one per CPU less one for the event loop (os.availableParallelism() - 1)."),
    maxRequestBytes: z.number().int().min(1024).max(1 << 20).default(64 * 1024).describe("Largest accepted API request body."),
    crlRefresh: duration("CRL refresh interval").default(parseDuration("1s")).describe("How often the store is checked for new revocations."),
    anchorPoll: duration("anchor poll interval").default(parseDuration("1s")).describe("How often the CA directory is checked for rotated or replaced trust anchors."),
    rotationCheck: duration("rotation check interval").default(parseDuration("1m")).describe("How often rotation thresholds are checked."),
    autoRotateIssuer: z.boolean().default(true).describe("Self-managed CAs: prepare a new issuer at min(½ life, 30d) left and switch to it at min(⅙ life, 7d) left."),
    issuerTtl: duration("issuer TTL").default(parseDuration("1y")).describe("Lifetime of issuers made by rotation."),
    expiryWarning: duration("expiry warning").default(parseDuration("30d")).describe("Warn (hourly log, /readyz detail) when the root or an external issuer expires within this."),
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
