import { X509Certificate, type KeyObject } from "node:crypto";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import { connect as tlsConnect, type ConnectionOptions, type PeerCertificate, type TLSSocket } from "node:tls";
import { MeshwardError } from "../errors.ts";
import { inspectCertificate } from "../pki/inspect.ts";
import { encodePrivateKey } from "../pki/keys.ts";
import { formatWorkloadId } from "../spiffe/id.ts";
import { tlsAfterHandshakeFailure, watchHandshake } from "../tls/after-handshake.ts";
import { SECURE_OPTIONS } from "../tls/policy.ts";
import { normalizeSerial, peerCertificateOf, serverIssuerSerialsOf } from "../tls/verify.ts";
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
  /**
   * The revocations in force at this workload (serials, any case or leading zeros): the union of
   * the CRLs it holds, the root CRLs among them, which list the issuers retired with
   * `rotate-issuer --now` / `import-issuer --now` (a leaked issuer key). The CA's serving
   * certificate, and every certificate it sends with it (its issuer), are checked against them at
   * the handshake (servingChainRefusal): whoever holds a retired issuer's key can mint a
   * certificate with the CA's SPIFFE ID, and is refused before any byte of a request (a token, a
   * CSR) is sent. Absent or empty: nothing to check (a first start from the bootstrap bundle).
   * A function is read at each handshake (e.g. `() => identity.current()?.bundle.revokedSerials`
   * for a JWT-SVID validator beside an identity source).
   */
  readonly revokedSerials?: ReadonlySet<string> | (() => ReadonlySet<string> | undefined);
  /** Told of each CA endpoint refused for its serving chain (E_CA_ISSUER_RETIRED, E_CA_CERT_REVOKED), to log it. */
  readonly onRefused?: (refusal: MeshwardError, endpoint: string) => void;
}

/** The refusals of a CA endpoint for its serving chain: another replica may serve (isFailoverError). */
export const CA_REFUSAL_CODES: ReadonlySet<string> = new Set(["E_CA_ISSUER_RETIRED", "E_CA_CERT_REVOKED"]);

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

/**
 * Failures about who answered at the CA's address, raised before a verified connection to the CA
 * (see raisedBeforeVerifiedCa): marked where they are made, never by code.
 */
const WHO_ANSWERED = new WeakSet<Error>();

function aboutWhoAnswered<E extends Error>(error: E): E {
  WHO_ANSWERED.add(error);
  return error;
}

/**
 * Whether `error` (or an error it was built from) says who answered at the CA's address rather
 * than what the CA answered: a plain-text answer (E_CA_NOT_TLS), a certificate the bundle does not
 * trust or one that has expired (E_CA_UNTRUSTED), a trusted certificate with another SPIFFE ID than
 * the CA's (E_SPIFFE_MISMATCH from the handshake: any mesh workload's own SVID), a revoked serving
 * chain. Anything that answers at the address can cause them with no key (a Service briefly routed
 * to the wrong port, DNS or ARP spoofing), so they never prove a token or a configuration wrong for
 * good, unlike the CA's own refusals over a verified connection (a gRPC status with
 * meshward-error-code: E_TOKEN_USED, E_CSR_*, …).
 */
export function raisedBeforeVerifiedCa(error: unknown): boolean {
  for (let e: unknown = error, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    if (WHO_ANSWERED.has(e)) return true;
  }
  return false;
}

/**
 * Verifies that the server is the CA of the expected trust domain, by SPIFFE ID, not host name, and
 * that neither its serving certificate nor a certificate it sent with it is revoked
 * (servingChainRefusal, from the socket: `socket()` gives it once created). Judged here, a refusal
 * fails the handshake: no request byte (token, CSR) goes out.
 */
function checkCaIdentity(connection: CaConnection, address: string, socket: () => TLSSocket | undefined) {
  const expected = connection.caSpiffeId ?? caSpiffeId(connection.trustDomain);
  return (_host: string, cert: PeerCertificate): Error | undefined => {
    try {
      const uris = inspectCertificate(new X509Certificate(cert.raw)).uris;
      if (uris.length !== 1 || uris[0] !== expected) {
        return aboutWhoAnswered(new MeshwardError("E_SPIFFE_MISMATCH", `the server is not the meshward CA: it presented ${uris.join(", ") || "no SPIFFE ID"}, expected ${expected}`));
      }
      const revoked = typeof connection.revokedSerials === "function" ? connection.revokedSerials() : connection.revokedSerials;
      const refusal = servingChainRefusal(socket(), revoked);
      if (refusal !== undefined && CA_REFUSAL_CODES.has(refusal.code)) connection.onRefused?.(refusal, address);
      return refusal === undefined ? undefined : aboutWhoAnswered(refusal);
    } catch (error) {
      return aboutWhoAnswered(error instanceof Error ? error : new Error(String(error)));
    }
  };
}

/**
 * Why the CA on `socket` is refused under `revokedSerials` (see CaConnection.revokedSerials), or
 * undefined: E_CA_ISSUER_RETIRED when a certificate it sent after its leaf (its issuer) is revoked
 * (a root CRL lists it: retired with --now), E_CA_CERT_REVOKED when its serving certificate is.
 * The serials are read from every certificate the server sent (serverIssuerSerialsOf, as for
 * peers: the detailed chain may show a look-alike of the issuer rather than the one OpenSSL
 * verified with). Matched by serial alone, as peers are (verify.ts revocationOf). A resumed session
 * shows no chain: refused (E_CA_UNTRUSTED). The CA clients offer no session (a fresh connection
 * per request, no session cache), so every connection to the CA is a full handshake; this is
 * the guard should one ever be offered.
 */
export function servingChainRefusal(socket: TLSSocket | undefined, revokedSerials: ReadonlySet<string> | undefined): MeshwardError | undefined {
  if (socket?.isSessionReused() === true) {
    return new MeshwardError("E_CA_UNTRUSTED", "the connection to the CA resumed a TLS session, whose certificate chain cannot be checked against the revocations in force: a connection to the CA must make a full handshake");
  }
  if (revokedSerials === undefined || revokedSerials.size === 0) return undefined;
  if (socket === undefined) return new MeshwardError("E_CA_UNTRUSTED", "the CA's certificate chain could not be read to check it against the revocations in force");
  const issuerSerials = serverIssuerSerialsOf(socket);
  const leaf = peerCertificateOf(socket);
  if (issuerSerials === undefined || leaf === undefined) return new MeshwardError("E_CA_UNTRUSTED", "the CA's certificate chain could not be read to check it against the revocations in force");
  const revoked = new Set([...revokedSerials].map(normalizeSerial));
  const leafSerial = normalizeSerial(leaf.serialNumber);
  // Shown in whole bytes, as `meshward cert revoke`, the CA's CRLs and openssl print serials.
  const shown = (normalized: string) => (normalized.length % 2 === 1 ? `0${normalized}` : normalized);
  const serial = shown(leafSerial);
  for (const normalized of issuerSerials) {
    const issuerSerial = shown(normalized);
    if (revoked.has(normalized)) {
      return new MeshwardError(
        "E_CA_ISSUER_RETIRED",
        `the server presents the CA's identity with a certificate (serial ${serial}) signed by issuer serial ${issuerSerial}, which the root CRL in force lists as revoked (retired with --now: its key may have leaked); not the CA, or a CA replica that has not seen the rotation: refused (the next CA endpoint, if any, is tried)`,
        { details: { serial, issuerSerial } },
      );
    }
  }
  if (revoked.has(leafSerial)) {
    return new MeshwardError("E_CA_CERT_REVOKED", `the server presents the CA's identity with a certificate (serial ${serial}) that the CA's CRL lists as revoked: refused (the next CA endpoint, if any, is tried)`, { details: { serial } });
  }
  return undefined;
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
  // The TLS socket, made here (as node:http2 would: ALPN h2) so that checkCaIdentity reads the
  // chain from it. No session is offered: every connection is a full handshake.
  let socket: TLSSocket | undefined;
  try {
    result = await callUnary({
      url: `https://${host.includes(":") ? `[${host}]` : host}:${port}`,
      tls: {
        ca: connection.bundlePem,
        ...(connection.clientCertificate ? { cert: connection.clientCertificate.certChainPem, key: encodePrivateKey(connection.clientCertificate.privateKey) } : {}),
        servername: "localhost",
        checkServerIdentity: checkCaIdentity(connection, address, () => socket),
        // The CA's identity is checked once, at the handshake: a renegotiation is refused.
        secureOptions: SECURE_OPTIONS,
        createConnection: (_authority, options) => (socket = tlsConnect({ ...options, host, port, servername: "localhost", ALPNProtocols: ["h2"] } as ConnectionOptions)),
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
/**
 * OpenSSL's verdicts on a certificate that may not serve TLS here although it may chain: a root or
 * issuer certificate presented as a server's (INVALID_PURPOSE: "unsuitable certificate purpose"),
 * a client-only certificate, a CA that may not sign, a path too long. Not "unreachable": who
 * answered is not the CA's API.
 */
const UNSUITABLE_CODES = new Set(["INVALID_PURPOSE", "INVALID_CA", "CERT_UNTRUSTED", "CERT_REJECTED", "PATH_LENGTH_EXCEEDED"]);
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
      return aboutWhoAnswered(new MeshwardError(
        "E_CA_UNTRUSTED",
        `the CA at ${address} presented a certificate that does not chain to the trust bundle (${(e as Error).message}): give the bundle.pem of this CA (the CA directory's bundle.pem, or what 'meshward cert issue' wrote)`,
        { cause: e },
      ));
    }
    if (UNSUITABLE_CODES.has(code)) {
      return aboutWhoAnswered(new MeshwardError(
        "E_CA_UNTRUSTED",
        `the CA at ${address} presented a certificate it may not use as a TLS server (${(e as Error).message}): is this the CA's API port? The CA serves its own serving certificate, never its root or issuer certificate`,
        { cause: e },
      ));
    }
    if (code === "CERT_HAS_EXPIRED" || code === "CERT_NOT_YET_VALID") {
      return aboutWhoAnswered(new MeshwardError("E_CA_UNTRUSTED", `the CA at ${address} presented a certificate that ${code === "CERT_HAS_EXPIRED" ? "has expired" : "is not valid yet"}: check this host's clock and the CA's`, { cause: e }));
    }
    // node:https reports the same OpenSSL verdict as EPROTO with the reason in the message.
    if (NOT_TLS_CODES.has(code) || (code === "EPROTO" && /wrong version number|packet length too long|unknown protocol|http request/.test((e as Error).message))) {
      return aboutWhoAnswered(new MeshwardError("E_CA_NOT_TLS", `${address} is not a TLS server (it answered the TLS handshake in plain text): is this the CA's API port, and not its --status port or another service?`, { cause: e }));
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
    // The request's socket ('socket' comes before its handshake completes): checkCaIdentity reads the chain from it.
    let socket: TLSSocket | undefined;
    const req = httpsRequest(
      {
        host,
        port,
        path,
        method: "GET",
        ca: connection.bundlePem,
        servername: "localhost",
        checkServerIdentity: checkCaIdentity(connection, address, () => socket),
        minVersion: "TLSv1.2",
        secureOptions: SECURE_OPTIONS,
        timeout: connection.timeoutMs ?? 10_000,
        // A fresh agent per request, with no session cache: every connection is a full handshake,
        // so checkCaIdentity always sees the chain (Node skips checkServerIdentity on resumption).
        agent: new HttpsAgent({ maxCachedSessions: 0 }),
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
    req.on("socket", (s) => {
      socket = s as TLSSocket;
      watchHandshake(s);
    });
    req.on("timeout", () => req.destroy(new MeshwardError("E_CA_UNAVAILABLE", `the CA at ${address} did not answer in time`)));
    req.on("error", (error) =>
      reject(
        error instanceof MeshwardError && !CA_REFUSAL_CODES.has(error.code) && error.code !== "E_CA_UNTRUSTED"
          ? error
          : (handshakeError(error, address) ?? unreachable(error, address)),
      ),
    );
    req.end();
  });
}
