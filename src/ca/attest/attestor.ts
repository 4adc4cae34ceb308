import type { PeerCertificate } from "./peer.ts";

/** What a workload claims and the proof it brings (one SignCertificate request). */
export interface AttestationRequest {
  readonly token: string;
  /** App id, namespace and trust domain the workload asked for (may be empty). */
  readonly requestedAppId: string;
  readonly requestedNamespace: string;
  readonly requestedTrustDomain: string;
  /** The certificate the caller presented on the TLS connection, when any; given only to a validator with `readsPeer`. */
  readonly peer: PeerCertificate | undefined;
  readonly now: Date;
}

/** The identity the CA will sign, decided by a validator, never by the CSR. */
export interface AttestedIdentity {
  readonly spiffeId: string;
  /** DNS names the workload may put in its certificate (server certificates of backends). */
  readonly allowedDnsNames: readonly string[];
  /**
   * DNS names the CA puts in the certificate whatever the CSR asks (and the CSR may ask for):
   * the names Dapr Sentry gives its control-plane services (see dapr-control-plane.ts). Set by
   * the authority from the attested SPIFFE ID, never by a validator from what a caller sends.
   */
  readonly dnsNames?: readonly string[];
  /** Validator name, recorded in the issuance log. */
  readonly method: string;
  /**
   * Subject CN the certificate carries, when the attestation grants one: a join token created
   * with `--common-name` (CN = its app id), or a renewal of a certificate that already carried
   * CN = its own app id. Never taken from the CSR.
   */
  readonly commonName?: string;
  /**
   * SHA-256 of a join token that vouched for this identity and is not spent yet: the CA spends
   * one use in the same store transaction that records the certificate, after every check.
   */
  readonly spendsToken?: string;
}

/**
 * One file per validator behind this interface (step-ca's provisioner pattern). A
 * validator throws MeshwardError with a specific E_TOKEN_* / E_ATTESTATION_* code.
 */
export interface Attestor {
  readonly name: string;
  /**
   * True when issuing uses something up (a single-use join token): the CA then parses the
   * CSR before attesting, and spends the use only with the issuance (see spendsToken). Validators
   * that only verify (JWT, SVID, insecure) let the CA check and sign the CSR in one step.
   */
  readonly spends?: boolean;
  /**
   * True when the validator reads the caller's TLS client certificate (svid renewal). The CA
   * parses that certificate only for such a validator: anyone may present any certificate on
   * the API port, and the others never look at it (they are given `peer: undefined`).
   */
  readonly readsPeer?: boolean;
  attest(request: AttestationRequest): Promise<AttestedIdentity>;
}

const freeRefusals = new WeakSet<object>();

/**
 * Marks a refusal an attestor gives from its own local checks, before it has spent anything on
 * the request (no TokenReview, no discovery or JWKS fetch, no store read, no signature checked):
 * an empty or malformed token, a JWT whose exp, nbf or audience rule it out (jwt-precheck.ts), a
 * renewal without a certificate. Such a refusal gives the caller's signRateLimit share back;
 * every other refusal from attestation counts against its address (see CertificateAuthority),
 * so forged tokens that pass these checks cannot make the CA verify them without bound.
 */
export function refusedBeforeAnyCost<E extends object>(error: E): E {
  freeRefusals.add(error);
  return error;
}

/** Whether `error` was marked by refusedBeforeAnyCost. */
export function isRefusedBeforeAnyCost(error: unknown): boolean {
  return typeof error === "object" && error !== null && freeRefusals.has(error);
}
