import { X509Certificate, type KeyObject } from "node:crypto";
import { request as httpsRequest } from "node:https";
import type { PeerCertificate } from "node:tls";
import { MeshwardError } from "../errors.ts";
import { inspectCertificate } from "../pki/inspect.ts";
import { encodePrivateKey } from "../pki/keys.ts";
import { formatWorkloadId } from "../spiffe/id.ts";
import { formatHostPort, type HostPort } from "../util/address.ts";
import { withCaFailover } from "./ca-endpoints.ts";
import { callUnary, GRPC_DEADLINE_EXCEEDED, GRPC_STATUS_NAMES, GRPC_UNAVAILABLE, GrpcTransportError, type UnaryResult } from "../protocol/grpc-unary.ts";
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
}

export interface SignedCertificate {
  /** Leaf then issuer chain, PEM. */
  readonly certChainPem: string;
  /** Trusted roots, PEM concatenated. */
  readonly bundlePem: string;
  readonly validUntil: Date;
}

/** Verifies that the server is the CA of the expected trust domain, by SPIFFE ID, not host name. */
function checkCaIdentity(trustDomain: string) {
  const expected = caSpiffeId(trustDomain);
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
  };
  let result;
  try {
    result = await callUnary({
      url: `https://${host.includes(":") ? `[${host}]` : host}:${port}`,
      tls: {
        ca: connection.bundlePem,
        ...(connection.clientCertificate ? { cert: connection.clientCertificate.certChainPem, key: encodePrivateKey(connection.clientCertificate.privateKey) } : {}),
        servername: "localhost",
        checkServerIdentity: checkCaIdentity(connection.trustDomain),
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
  };
}

function transportError(error: unknown, address: string): MeshwardError {
  const cause = (error as { cause?: unknown }).cause;
  // The CA failed the SPIFFE ID check: say so, do not call it "unreachable".
  if (cause instanceof MeshwardError) return new MeshwardError(cause.code, `the CA at ${address}: ${cause.message}`, { cause });
  if (error instanceof GrpcTransportError && error.status !== GRPC_UNAVAILABLE && error.status !== GRPC_DEADLINE_EXCEEDED) {
    return new MeshwardError("E_CA_ERROR", `the CA at ${address} answered ${GRPC_STATUS_NAMES[error.status] ?? error.status}: ${error.message}`, { cause: error });
  }
  return new MeshwardError("E_CA_UNAVAILABLE", `the CA at ${address} is unreachable: ${(error as Error).message}`, { cause: error });
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
  return withCaFailover(connection.address, (endpoint) => fetchFrom(endpoint, connection, path, maxBytes));
}

async function fetchFrom(endpoint: HostPort, connection: CaConnection, path: string, maxBytes: number): Promise<Buffer> {
  const { host, port } = endpoint;
  const address = formatHostPort(endpoint);
  return await new Promise<Buffer>((resolve, reject) => {
    const req = httpsRequest(
      {
        host,
        port,
        path,
        method: "GET",
        ca: connection.bundlePem,
        servername: "localhost",
        checkServerIdentity: checkCaIdentity(connection.trustDomain),
        minVersion: "TLSv1.2",
        timeout: connection.timeoutMs ?? 10_000,
        agent: false,
      },
      (res) => {
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
          else resolve(Buffer.concat(chunks));
        });
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(new MeshwardError("E_CA_UNAVAILABLE", `the CA at ${address} did not answer in time`)));
    req.on("error", (error) =>
      reject(error instanceof MeshwardError ? error : new MeshwardError("E_CA_UNAVAILABLE", `the CA at ${address} is unreachable: ${error.message}`, { cause: error })),
    );
    req.end();
  });
}
