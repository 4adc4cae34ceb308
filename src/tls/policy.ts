import { constants } from "node:crypto";
import type { SecureContextOptions, TlsOptions } from "node:tls";
import type { Svid, TrustBundle } from "../identity/source.ts";

/** TLS 1.3 suites first (Node disables TLS 1.3 when the list names none), then TLS 1.2 ECDHE + AEAD only. */
export const TLS13_SUITES = ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"] as const;
export const TLS12_SUITES = [
  "ECDHE-ECDSA-AES128-GCM-SHA256",
  "ECDHE-RSA-AES128-GCM-SHA256",
  "ECDHE-ECDSA-AES256-GCM-SHA384",
  "ECDHE-RSA-AES256-GCM-SHA384",
  "ECDHE-ECDSA-CHACHA20-POLY1305",
  "ECDHE-RSA-CHACHA20-POLY1305",
] as const;
/**
 * `@SECLEVEL=2` (OpenSSL): keys of at least 112-bit strength in every certificate of either side
 * (RSA and DH >= 2048 bits, EC >= 224) and no SHA-1 signatures. Node 20's OpenSSL 3.0 defaults to
 * level 1, where a peer's RSA-1024 chain verifies.
 */
export const CIPHERS = [...TLS13_SUITES, ...TLS12_SUITES, "@SECLEVEL=2"].join(":");
export const CURVES = "X25519:P-256:P-384";
export const MIN_TLS_VERSION = "TLSv1.2" as const;
/**
 * Renegotiation (TLS 1.2) is refused in both directions, as nginx and BoringSSL-based proxies do:
 * a peer's identity is checked once, at the handshake, and a renegotiation could present another
 * certificate that meshward's own checks (SPIFFE ID, CRL) never see; it also costs the server a
 * handshake the peer can trigger at will. TLS 1.3 has no renegotiation.
 */
export const SECURE_OPTIONS = constants.SSL_OP_NO_RENEGOTIATION;
/** Seconds a server-issued session ticket may be used to resume. */
export const DEFAULT_SESSION_TIMEOUT_SECONDS = 300;

export type TlsRole = "server" | "client";

export interface ContextMaterial {
  readonly svid: Svid;
  readonly bundle: TrustBundle;
  /** 48 bytes; servers only. Stable across certificate rotations (see NODE-TLS-FACTS). */
  readonly ticketKeys?: Buffer;
  readonly sessionTimeoutSeconds?: number;
}

export type SecureOptions = SecureContextOptions & Pick<TlsOptions, "requestCert" | "rejectUnauthorized" | "ticketKeys" | "sessionTimeout">;

/**
 * The complete option set for a secure context. `setSecureContext` resets every option left
 * out, so this is the only place that assembles TLS options; callers never add to it.
 */
export function buildSecureContextOptions(material: ContextMaterial, role: TlsRole): SecureOptions {
  const base: SecureOptions = {
    minVersion: MIN_TLS_VERSION,
    maxVersion: "TLSv1.3",
    ciphers: CIPHERS,
    ecdhCurve: CURVES,
    honorCipherOrder: true,
    secureOptions: SECURE_OPTIONS,
    cert: material.svid.certChainPem,
    key: material.svid.privateKey.export({ format: "pem", type: "pkcs8" }) as string,
    ca: material.bundle.rootsPem,
  };
  if (role === "client") return base;
  return {
    ...base,
    requestCert: true,
    rejectUnauthorized: true,
    sessionTimeout: material.sessionTimeoutSeconds ?? DEFAULT_SESSION_TIMEOUT_SECONDS,
    ...(material.ticketKeys === undefined ? {} : { ticketKeys: material.ticketKeys }),
  };
}

/**
 * Node keeps what it is given: a server stores `key` and `ticketKeys` on itself (`this.key`), the
 * http2 server and grpc-js keep the whole option object, so inspecting or logging a server, a
 * request (its socket refers to the server) or the gRPC credentials printed the private key.
 * Node copies both into its native context synchronously, so each load gets private copies that
 * are zeroed once it has returned: what stays on those objects is zeros.
 */
export function disposableSecrets(options: SecureOptions): { readonly options: SecureOptions; dispose(): void } {
  const key = typeof options.key === "string" ? Buffer.from(options.key) : undefined;
  const ticketKeys = options.ticketKeys === undefined ? undefined : Buffer.from(options.ticketKeys);
  return {
    options: { ...options, ...(key === undefined ? {} : { key }), ...(ticketKeys === undefined ? {} : { ticketKeys }) },
    dispose: () => {
      key?.fill(0);
      ticketKeys?.fill(0);
    },
  };
}

/** Runs `load` (a server constructor, `setSecureContext`) with secrets that are zeroed when it returns. */
export function loadOnce<T>(options: SecureOptions, load: (options: SecureOptions) => T): T {
  const secrets = disposableSecrets(options);
  try {
    return load(secrets.options);
  } finally {
    secrets.dispose();
  }
}
