/**
 * A client that behaves as daprd does towards Sentry, for tests against meshward:
 * - the CSR is built by Go's standard library as dapr/kit crypto/spiffe/spiffe.go fetchIdentity
 *   builds it (x509.CreateCertificateRequest with an empty template), see go/daprcheck.go;
 * - the request is the upstream dapr.proto.sentry.v1 message (test/dapr/sentry.proto, copied from
 *   dapr/dapr with its commit noted there), filled as dapr/dapr pkg/security/sentry.go newRequestFn
 *   fills it: id, token, namespace, token_validator, jwt_audiences, and trust_domain only for
 *   control-plane services;
 * - the token and validator are chosen as pkg/security/token/token.go GetSentryToken does (see
 *   daprdToken): the content of DAPR_SENTRY_TOKEN_FILE goes as JWKS, except in Kubernetes mode on a
 *   daprd with dapr/dapr#8503 (merged 2025-02), which forces KUBERNETES; without that file, Kubernetes
 *   mode sends the projected service-account token as KUBERNETES; nothing at all means UNKNOWN with
 *   an empty token;
 * - the CA is checked as go-spiffe's tlsconfig.AuthorizeID (spiffetls/tlsconfig) with
 *   x509svid.Verify checks it: the chain reaches the trust anchors, the leaf carries exactly one
 *   URI SAN equal to the expected Sentry ID, and the leaf is not a CA; no host name check;
 * - the response is read as fetchIdentity and newRequestFn read it: valid_until must be a valid
 *   timestamp, workload_certificate is the PEM chain whose first certificate carries the SPIFFE
 *   ID, jwt (a StringValue) must have a non-empty audience, each per_audience_jwts entry exactly
 *   its own audience.
 */
import { execFile } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { decodeJwt } from "jose";
import { buildGoCached } from "../helpers/go-build.ts";

const PROTO = fileURLToPath(new URL("./sentry.proto", import.meta.url));
const GO_SOURCE = fileURLToPath(new URL("./go/daprcheck.go", import.meta.url));

export type DaprValidator = "UNKNOWN" | "INSECURE" | "KUBERNETES" | "JWKS";

export interface DaprdRequest {
  readonly address: string;
  readonly trustAnchorsPem: string;
  /** spiffe://<control-plane td>/ns/<control-plane ns>/dapr-sentry */
  readonly sentryId: string;
  readonly appId: string;
  readonly namespace: string;
  readonly token: string;
  readonly validator: DaprValidator;
  readonly csrPem: string;
  readonly jwtAudiences?: readonly string[];
  /** Set only for control-plane services (dapr-operator, dapr-placement, …) in the control-plane namespace. */
  readonly trustDomain?: string;
}

export interface DaprdIdentity {
  readonly spiffeId: string;
  readonly chain: readonly X509Certificate[];
  readonly chainPem: string;
  readonly validUntil: Date;
  readonly trustChainPem: readonly string[];
  readonly jwt?: string;
  readonly perAudienceJwts: Readonly<Record<string, string>>;
}

/**
 * Builds go/daprcheck.go, once for all the test files that run it (the binary is kept in the Go
 * build cache by content: each of five files linked its own, ~0.4 s of CPU each, 4 s on a cold cache).
 */
export function buildGoCheck(): Promise<string> {
  return buildGoCached(GO_SOURCE);
}

export function run(command: string, args: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { env, timeout: 180_000 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`${command} ${args.join(" ")} failed: ${stdout}${stderr}${error.message}`));
      else resolve({ stdout, stderr });
    });
  });
}

/** A CSR and key made as dapr/kit makes them (Go's x509.CreateCertificateRequest, empty template). */
export async function daprCsr(goCheck: string, kind: "ed25519" | "p256"): Promise<{ csrPem: string; keyPem: string }> {
  const dir = mkdtempSync(join(tmpdir(), "meshward-daprcsr-"));
  try {
    await run(goCheck, ["csr", kind, dir]);
    return { csrPem: readFileSync(join(dir, "csr.pem"), "utf8"), keyPem: readFileSync(join(dir, "key.pem"), "utf8") };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The token and validator daprd sends (dapr/dapr pkg/security/token/token.go GetSentryToken(allowKubernetes),
 * allowKubernetes being Kubernetes mode). With DAPR_SENTRY_TOKEN_FILE set, its content goes as JWKS
 * in every mode up to dapr/dapr#8503 ("force to use kubernetes validator when DAPR_SENTRY_TOKEN_FILE
 * is provided", merged 2025-02; token.go@57f324a returns JWKS before looking at allowKubernetes),
 * and as KUBERNETES in Kubernetes mode from then on (token.go@23586fa, its token_test.go "token file
 * env var set forces kubernetes validator when allowed"). `daprd: "before-8503"` models the older
 * daprd; the default is the current one. The token file of daprd's SentryTokenFile option
 * (GetSentryTokenFromFile) always goes as JWKS: `tokenFileOption`.
 */
export function daprdToken(options: {
  tokenFileContent?: string;
  tokenFileOption?: string;
  kubernetesMode?: boolean;
  kubernetesToken?: string;
  daprd?: "current" | "before-8503";
}): { token: string; validator: DaprValidator } {
  if (options.tokenFileOption !== undefined) return { token: options.tokenFileOption, validator: "JWKS" };
  if (options.tokenFileContent !== undefined) {
    const forcesKubernetes = options.kubernetesMode === true && options.daprd !== "before-8503";
    return { token: options.tokenFileContent, validator: forcesKubernetes ? "KUBERNETES" : "JWKS" };
  }
  if (options.kubernetesMode && options.kubernetesToken) return { token: options.kubernetesToken, validator: "KUBERNETES" };
  return { token: "", validator: "UNKNOWN" };
}

const definition = protoLoader.loadSync(PROTO, { keepCase: false, longs: Number, enums: String, defaults: false, oneofs: true });
const CaClient = (grpc.loadPackageDefinition(definition) as unknown as { dapr: { proto: { sentry: { v1: { CA: grpc.ServiceClientConstructor } } } } }).dapr.proto.sentry.v1.CA;

/** go-spiffe's checks on the CA's certificate (the chain itself is verified by TLS against the anchors). */
function authorizeId(expected: string) {
  return (_host: string, cert: { raw: Buffer }): Error | undefined => {
    const leaf = new X509Certificate(cert.raw);
    if (leaf.ca) return new Error("x509svid: leaf certificate must not have CA flag set to true");
    const uris = (leaf.subjectAltName ?? "").split(/,\s*/).filter((n) => n.startsWith("URI:")).map((n) => n.slice(4));
    if (uris.length !== 1) return new Error(`x509svid: certificate must contain exactly one URI SAN, found ${uris.length}`);
    if (uris[0] !== expected) return new Error(`unexpected ID "${uris[0]}"`);
    return undefined;
  };
}

interface RawResponse {
  workloadCertificate?: Buffer;
  trustChainCertificates?: Buffer[];
  validUntil?: { seconds?: number; nanos?: number };
  jwt?: { value?: string };
  perAudienceJwts?: Record<string, { value?: string }>;
}

export class SentryCallError extends Error {
  constructor(readonly grpcCode: number, readonly details: string) {
    super(`error from sentry SignCertificate: ${grpc.status[grpcCode] ?? grpcCode}: ${details}`);
  }
}

export async function signCertificate(request: DaprdRequest): Promise<DaprdIdentity> {
  const credentials = grpc.credentials.createSsl(Buffer.from(request.trustAnchorsPem), null, null, { checkServerIdentity: authorizeId(request.sentryId) });
  // daprd dials Sentry by its Service's DNS name, so its TLS server name is never an IP address.
  // grpc-js would send the target's IP as the server name, which Node 26 refuses outright
  // (ERR_INVALID_ARG_VALUE; DEP0123 before); the name here is daprd's, and authorizeId, not the
  // name, decides whether the CA is trusted.
  const client = new CaClient(request.address, credentials, { "grpc.ssl_target_name_override": "dapr-sentry.dapr-system.svc.cluster.local" }) as unknown as grpc.Client & { SignCertificate: (request: object, options: grpc.CallOptions, callback: (error: grpc.ServiceError | null, value: RawResponse) => void) => void };
  try {
    const response = await new Promise<RawResponse>((resolve, reject) => {
      client.SignCertificate(
        {
          certificateSigningRequest: Buffer.from(request.csrPem),
          id: request.appId,
          token: request.token,
          namespace: request.namespace,
          tokenValidator: request.validator,
          jwtAudiences: [...(request.jwtAudiences ?? [])],
          ...(request.trustDomain !== undefined ? { trustDomain: request.trustDomain } : {}),
        },
        { deadline: Date.now() + 15_000 },
        (error: grpc.ServiceError | null, value: RawResponse) => (error ? reject(new SentryCallError(error.code, error.details)) : resolve(value)),
      );
    });
    return readResponse(response);
  } finally {
    client.close();
  }
}

function readResponse(response: RawResponse): DaprdIdentity {
  const seconds = response.validUntil?.seconds;
  const nanos = response.validUntil?.nanos ?? 0;
  // timestamppb CheckValid: present, within 0001-01-01 .. 9999-12-31, nanos in range.
  if (seconds === undefined || seconds < -62135596800 || seconds > 253402300799 || nanos < 0 || nanos > 999_999_999) throw new Error("error parsing ValidUntil");
  const chainPem = Buffer.from(response.workloadCertificate ?? []).toString("utf8");
  const blocks = chainPem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw new Error("no certificates received from sentry");
  const chain = blocks.map((b) => new X509Certificate(b));
  const uris = (chain[0]!.subjectAltName ?? "").split(/,\s*/).filter((n) => n.startsWith("URI:")).map((n) => n.slice(4));
  if (uris.length !== 1 || !uris[0]!.startsWith("spiffe://")) throw new Error("error parsing spiffe id from newly signed certificate");
  let jwt: string | undefined;
  if (response.jwt?.value) {
    const aud = decodeJwt(response.jwt.value).aud;
    if (aud === undefined || (Array.isArray(aud) && aud.length === 0)) throw new Error("JWT audience is empty");
    jwt = response.jwt.value;
  }
  const perAudienceJwts: Record<string, string> = {};
  for (const [audience, value] of Object.entries(response.perAudienceJwts ?? {})) {
    const aud = decodeJwt(value.value ?? "").aud;
    const list = aud === undefined ? [] : Array.isArray(aud) ? aud : [aud];
    if (list.length !== 1 || list[0] !== audience) throw new Error("JWT audience mismatch");
    perAudienceJwts[audience] = value.value as string;
  }
  return {
    spiffeId: uris[0]!,
    chain,
    chainPem,
    validUntil: new Date(seconds * 1000 + Math.floor(nanos / 1e6)),
    trustChainPem: (response.trustChainCertificates ?? []).map((b) => Buffer.from(b).toString("utf8")),
    ...(jwt !== undefined ? { jwt } : {}),
    perAudienceJwts,
  };
}
