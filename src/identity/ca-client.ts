import { X509Certificate, type KeyObject } from "node:crypto";
import { request as httpsRequest } from "node:https";
import type { PeerCertificate, TLSSocket } from "node:tls";
import { MeshwardError } from "../errors.ts";
import { inspectCertificate } from "../pki/inspect.ts";
import { encodePrivateKey } from "../pki/keys.ts";
import { formatWorkloadId } from "../spiffe/id.ts";
import { tlsAfterHandshakeFailure, watchHandshake } from "../tls/after-handshake.ts";
import { SECURE_OPTIONS } from "../tls/policy.ts";
import { formatHostPort, type HostPort } from "../util/address.ts";
import { withCaFailover } from "./ca-endpoints.ts";
import { callUnary, presentedChain, GRPC_DEADLINE_EXCEEDED, GRPC_STATUS_NAMES, GRPC_UNAVAILABLE, GrpcTransportError, type UnaryResult } from "../protocol/grpc-unary.ts";
import { decodeSignResponse, encodeSignRequest, SIGN_CERTIFICATE_PATH, TokenValidator, type SignCertificateRequestMessage } from "../protocol/sentry.ts";

/** The CA presents spiffe://<trust-domain>/ns/meshward-system/meshward-ca. */
export function caSpiffeId(trustDomain: string): string {
  return formatWorkloadId({ trustDomain, namespace: "meshward-system", appId: "meshward-ca" });
}

export type ValidatorChoice = keyof typeof TokenValidator;

export interface CaConnection {
  /** host:port of the CA API; several replicas as a comma-separated list (a DNS name may stand for several addresses). */
  readonly address: string;
  /** PEM roots that the CA's serving certificate must chain to (the bootstrap bundle). */
  readonly bundlePem: string;
  readonly trustDomain: string;
  /** The SPIFFE ID the CA presents, when it serves with `--serving-spiffe-id` (default: caSpiffeId(trustDomain)). */
  readonly caSpiffeId?: string;
  /** Presented on the connection to renew with the current SVID. */
  readonly clientCertificate?: { readonly certChainPem: string; readonly privateKey: KeyObject };
  readonly timeoutMs?: number;
}

export interface CertificateRequest {
  readonly csrPem: string;
  readonly token: string;
  readonly validator: ValidatorChoice;
  readonly namespace: string;
  readonly appId: string;
  /** Ask for JWT-SVIDs with these audiences too (SignCertificateRequest field 7). */
  readonly jwtAudiences?: readonly string[];
}

export interface SignedCertificate {
  /** Leaf then issuer chain, PEM. */
  readonly certChainPem: string;
  /** Trusted roots, PEM concatenated. */
  readonly bundlePem: string;
  readonly validUntil: Date;
  /** The JWT-SVID for every requested audience (and the trust domain), when audiences were asked for. */
  readonly jwtSvid?: string;
  /** One JWT-SVID per requested audience. */
  readonly perAudienceJwtSvids?: Readonly<Record<string, string>>;
  /**
   * The certificates the CA presented on the connection that delivered this answer (DER, leaf
   * first): which of the held roots vouched for the answer (see servingAnchors in ca-source.ts).
   */
  readonly servingChain?: readonly Buffer[];
  /** The replica (HOST:PORT) that answered. */
  readonly endpoint?: string;
}

/** Verifies that the server is the CA of the expected trust domain, by SPIFFE ID, not host name. */
function checkCaIdentity(trustDomain: string, servingId?: string) {
  const expected = servingId ?? caSpiffeId(trustDomain);
  return (_host: string, cert: PeerCertificate): Error | undefined => {
    try {
      const uris = inspectCertificate(new X509Certificate(cert.raw)).uris;
      if (uris.length === 1 && uris[0] === expected) return undefined;
      return new MeshwardError("E_SPIFFE_MISMATCH", `the server is not the meshward CA: it presented ${uris.join(", ") || "no SPIFFE ID"}, expected ${expected}`);
    } catch (error) {
      return error as Error;
    }
  };
}

/** Calls dapr.proto.sentry.v1.CA/SignCertificate (gRPC over HTTP/2, the CA verified by SPIFFE ID). */
export async function requestCertificate(connection: CaConnection, request: CertificateRequest): Promise<SignedCertificate> {
  return withCaFailover(connection.address, (endpoint) => requestFrom(endpoint, connection, request));
}

async function requestFrom(endpoint: HostPort, connection: CaConnection, request: CertificateRequest): Promise<SignedCertificate> {
  const { host, port } = endpoint;
  const address = formatHostPort(endpoint);
  const message: SignCertificateRequestMessage = {
    id: request.appId,
    token: request.token,
    trustDomain: connection.trustDomain,
    namespace: request.namespace,
    certificateSigningRequest: Buffer.from(request.csrPem),
    tokenValidator: TokenValidator[request.validator],
    jwtAudiences: [...(request.jwtAudiences ?? [])],
  };
  let result;
  try {
    result = await callUnary({
      url: `https://${host.includes(":") ? `[${host}]` : host}:${port}`,
      tls: {
        ca: connection.bundlePem,
        ...(connection.clientCertificate ? { cert: connection.clientCertificate.certChainPem, key: encodePrivateKey(connection.clientCertificate.privateKey) } : {}),
        servername: "localhost",
        checkServerIdentity: checkCaIdentity(connection.trustDomain, connection.caSpiffeId),
        // The CA's identity is checked once, at the handshake: a renegotiation is refused.
        secureOptions: SECURE_OPTIONS,
      },
      path: SIGN_CERTIFICATE_PATH,
      authority: "localhost",
      message: encodeSignRequest(message),
      timeoutMs: connection.timeoutMs ?? 10_000,
    });
  } catch (error) {
    throw transportError(error, address);
  }
  if (result.status !== 0) throw statusError(result, address);
  let decoded;
  try {
    decoded = decodeSignResponse(result.message as Buffer);
  } catch (error) {
    throw new MeshwardError("E_CA_ERROR", `the CA at ${address} answered with a malformed SignCertificateResponse: ${(error as Error).message}`, { cause: error });
  }
  return {
    certChainPem: Buffer.from(decoded.workloadCertificate).toString("utf8"),
    bundlePem: decoded.trustChainCertificates.map((b) => Buffer.from(b).toString("utf8")).join(""),
    validUntil: new Date(decoded.validUntil.seconds * 1000),
    ...(decoded.jwt !== undefined && decoded.jwt !== "" ? { jwtSvid: decoded.jwt } : {}),
    ...(decoded.perAudienceJwts !== undefined ? { perAudienceJwtSvids: decoded.perAudienceJwts } : {}),
    ...(result.peerChain !== undefined ? { servingChain: result.peerChain } : {}),
    endpoint: address,
  };
}

/** OpenSSL's verdicts meaning "this certificate does not chain to the roots you gave". */
const UNTRUSTED_CODES = new Set([
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "CERT_SIGNATURE_FAILURE",
]);
/** What a TLS client reads when the server answers a ClientHello in plain text (HTTP, Redis, …). */
const NOT_TLS_CODES = new Set(["ERR_SSL_WRONG_VERSION_NUMBER", "ERR_SSL_PACKET_LENGTH_TOO_LONG", "ERR_SSL_UNKNOWN_PROTOCOL", "ERR_SSL_HTTP_REQUEST"]);

/**
 * Names a failed TLS handshake with the CA for what it is, from the error or any of its causes
 * (an HTTP/2 stream error carries the session's TLS error as its cause): a bundle that does not
 * trust the CA and a port that does not speak TLS are not "unreachable" (issue 15, item 9).
 */
export function handshakeError(error: unknown, address: string): MeshwardError | undefined {
  for (let e: unknown = error, depth = 0; e !== undefined && e !== null && depth < 8; e = (e as { cause?: unknown }).cause, depth++) {
    if (e instanceof MeshwardError) return new MeshwardError(e.code, `the CA at ${address}: ${e.message}`, { cause: e });
    const code = (e as { code?: unknown }).code;
    if (typeof code !== "string") continue;
    if (UNTRUSTED_CODES.has(code)) {
      return new MeshwardError(
        "E_CA_UNTRUSTED",
        `the CA at ${address} presented a certificate that does not chain to the trust bundle (${(e as Error).message}): give the bundle.pem of this CA (the CA directory's bundle.pem, or what 'meshward cert issue' wrote)`,
        { cause: e },
      );
    }
    if (code === "CERT_HAS_EXPIRED" || code === "CERT_NOT_YET_VALID") {
      return new MeshwardError("E_CA_UNTRUSTED", `the CA at ${address} presented a certificate that ${code === "CERT_HAS_EXPIRED" ? "has expired" : "is not valid yet"}: check this host's clock and the CA's`, { cause: e });
    }
    // node:https reports the same OpenSSL verdict as EPROTO with the reason in the message.
    if (NOT_TLS_CODES.has(code) || (code === "EPROTO" && /wrong version number|packet length too long|unknown protocol|http request/.test((e as Error).message))) {
      return new MeshwardError("E_CA_NOT_TLS", `${address} is not a TLS server (it answered the TLS handshake in plain text): is this the CA's API port, and not its --status port or another service?`, { cause: e });
    }
  }
  return undefined;
}

function transportError(error: unknown, address: string): MeshwardError {
  // The CA failed the SPIFFE ID check, the bundle does not trust it, or the port is not TLS: say so, do not call it "unreachable".
  const handshake = handshakeError(error, address);
  if (handshake !== undefined) return handshake;
  if (error instanceof GrpcTransportError && error.status !== GRPC_UNAVAILABLE && error.status !== GRPC_DEADLINE_EXCEEDED) {
    return new MeshwardError("E_CA_ERROR", `the CA at ${address} answered ${GRPC_STATUS_NAMES[error.status] ?? error.status}: ${error.message}`, { cause: error });
  }
  return unreachable(error, address);
}

/** E_CA_UNAVAILABLE (another replica may answer), naming a TLS failure after the handshake for what it likely is. */
function unreachable(error: unknown, address: string): MeshwardError {
  const afterHandshake = tlsAfterHandshakeFailure(error);
  if (afterHandshake !== undefined) return new MeshwardError("E_CA_UNAVAILABLE", `the CA at ${address}: ${afterHandshake}`, { cause: error });
  const network = networkReason(error, address);
  return new MeshwardError("E_CA_UNAVAILABLE", `the CA at ${address} is unreachable: ${network ?? (error as Error).message}`, { cause: error });
}

/**
 * What a refused or failed connection means for the person reading it, from the system error at
 * the bottom of the cause chain; undefined when there is none. Node's HTTP/2 client reports a
 * refused connection as "The pending stream has been canceled (caused by: connect ECONNREFUSED
 * …)", which said nothing useful to a new user (review newuser L4).
 */
function networkReason(error: unknown, address: string): string | undefined {
  for (let e: unknown = error, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ECONNREFUSED") return `connection refused (ECONNREFUSED: nothing listens at ${address}): is 'meshward ca serve' running, with --listen ${address}?`;
    if (code === "ENOTFOUND" || code === "EAI_AGAIN") return `the host name in ${address} does not resolve (${code}): check the --ca address`;
    if (code === "ETIMEDOUT" || code === "EHOSTUNREACH" || code === "ENETUNREACH") return `no route or no answer (${code}): check the --ca address, and any firewall between here and the CA`;
    if (code === "ECONNRESET") return `the connection was reset (ECONNRESET): is ${address} the CA's API port (meshward ca serve --listen)?`;
  }
  return undefined;
}

function statusError(result: UnaryResult, address: string): MeshwardError {
  const code = result.metadata["meshward-error-code"];
  if (typeof code === "string" && code.startsWith("E_")) {
    return new MeshwardError(code as `E_${string}`, result.details.replace(/^E_[A-Z_]+: /, ""));
  }
  if (result.status === GRPC_UNAVAILABLE || result.status === GRPC_DEADLINE_EXCEEDED) {
    return new MeshwardError("E_CA_UNAVAILABLE", `the CA at ${address} is unreachable: ${result.details}`);
  }
  return new MeshwardError("E_CA_ERROR", `the CA at ${address} answered ${GRPC_STATUS_NAMES[result.status] ?? result.status}: ${result.details}`);
}

/** GET a path of the CA's HTTPS API, verifying the CA by SPIFFE ID. */
export async function fetchFromCa(connection: CaConnection, path: string, maxBytes = 4 << 20): Promise<Buffer> {
  return (await fetchFromCaWithChain(connection, path, maxBytes)).body;
}

/**
 * fetchFromCa, with the certificates the CA presented on the connection that delivered the
 * answer (DER, leaf first): a new trust bundle is judged by the root that vouched for it.
 */
export async function fetchFromCaWithChain(connection: CaConnection, path: string, maxBytes = 4 << 20): Promise<{ body: Buffer; servingChain: readonly Buffer[] }> {
  return withCaFailover(connection.address, (endpoint) => fetchFrom(endpoint, connection, path, maxBytes));
}

async function fetchFrom(endpoint: HostPort, connection: CaConnection, path: string, maxBytes: number): Promise<{ body: Buffer; servingChain: readonly Buffer[] }> {
  const { host, port } = endpoint;
  const address = formatHostPort(endpoint);
  return await new Promise<{ body: Buffer; servingChain: readonly Buffer[] }>((resolve, reject) => {
    const req = httpsRequest(
      {
        host,
        port,
        path,
        method: "GET",
        ca: connection.bundlePem,
        servername: "localhost",
        checkServerIdentity: checkCaIdentity(connection.trustDomain, connection.caSpiffeId),
        minVersion: "TLSv1.2",
        secureOptions: SECURE_OPTIONS,
        timeout: connection.timeoutMs ?? 10_000,
        agent: false,
      },
      (res) => {
        const servingChain = presentedChain(res.socket as TLSSocket);
        const chunks: Buffer[] = [];
        let size = 0;
        res.on("data", (chunk: Buffer) => {
          size += chunk.length;
          if (size > maxBytes) req.destroy(new MeshwardError("E_CA_ERROR", `the CA's answer to ${path} is larger than ${maxBytes} bytes`));
          else chunks.push(chunk);
        });
        res.on("end", () => {
          // 503: this replica cannot serve it yet (no CRL built, shutting down): another may.
          if (res.statusCode === 503) reject(new MeshwardError("E_CA_UNAVAILABLE", `the CA at ${address} answered 503 to GET ${path}`));
          else if (res.statusCode !== 200) reject(new MeshwardError("E_CA_ERROR", `the CA answered ${res.statusCode} to GET ${path}`));
          else resolve({ body: Buffer.concat(chunks), servingChain });
        });
        res.on("error", reject);
      },
    );
    req.on("socket", watchHandshake);
    req.on("timeout", () => req.destroy(new MeshwardError("E_CA_UNAVAILABLE", `the CA at ${address} did not answer in time`)));
    req.on("error", (error) =>
      reject(
        error instanceof MeshwardError
          ? error
          : (handshakeError(error, address) ?? unreachable(error, address)),
      ),
    );
    req.end();
  });
}
