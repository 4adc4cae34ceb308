import { createSecureContext, checkServerIdentity as checkHostName } from "node:tls";
import type { PeerCertificate, SecureContext } from "node:tls";
import { isIP } from "node:net";
import { MeshwardError } from "../errors.ts";
import { certificatesFromPem } from "../pki/pem.ts";
import type { IdentitySnapshot, IdentitySource } from "../identity/source.ts";
import { compileMatcher } from "../spiffe/match.ts";
import { CIPHERS, CURVES, MIN_TLS_VERSION, SECURE_OPTIONS, buildSecureContextOptions } from "../tls/policy.ts";
import type { SecureOptions } from "../tls/policy.ts";
import { isRevoked, normalizeSerial, revocationOf, verifyPeerCertificate } from "../tls/verify.ts";
import type { PeerPolicy } from "../tls/verify.ts";

export interface EgressTlsSettings {
  /** Roots from `caFile`; undefined means the mesh trust bundle. */
  readonly fileRootsPem: string | undefined;
  readonly mtls: boolean;
  /** Host name the backend certificate must carry (ignored when expectSpiffeId is set). */
  readonly serverName: string;
  readonly expectSpiffeId: string | undefined;
}

/** What one new backend connection uses: a context built once per identity/bundle change. */
export interface EgressTlsMaterial {
  readonly secureContext: SecureContext;
  readonly checkServerIdentity: (host: string, cert: PeerCertificate) => Error | undefined;
  /** SNI; only host names are sent. */
  readonly servername: string | undefined;
  /** The mesh roots (DER, base64) a backend is verified with; undefined with `caFile` (its roots never change). */
  readonly meshRoots: ReadonlySet<string> | undefined;
  /** When the workload certificate presented to the backend expires (`mtls` only). */
  readonly ownNotAfter: Date | undefined;
  /**
   * With the mesh's roots: the revocations a backend's certificate and its issuer are judged by
   * (empty with `caFile`). checkServerIdentity judges the leaf; the issuer OpenSSL verified it with
   * is judged once the handshake is done (backendRevocation), from the whole chain the backend sent.
   */
  readonly revokedSerials: ReadonlySet<string>;
  /** How the backend is named in messages: the SPIFFE ID expected, or the host name. */
  readonly backendName: string;
}

/**
 * Why a backend verified with the mesh's roots is refused under `revokedSerials`: its certificate
 * (`serial`) or one of the others it sent with it (`issuerSerials`: its issuer, when retired with
 * `rotate-issuer --now` after a key leak, is on the root's CRL) is revoked; undefined otherwise.
 */
export function backendRevocation(revokedSerials: ReadonlySet<string>, backendName: string, serial: string, issuerSerials: readonly string[] | undefined): MeshwardError | undefined {
  if (revokedSerials.size === 0) return undefined;
  const policy = { revokedSerials: () => revokedSerials, peerRole: "server" } as PeerPolicy;
  return revocationOf(policy, { spiffeId: backendName, trustDomain: "", namespace: undefined, appId: undefined, serial, ...(issuerSerials !== undefined ? { issuerSerials } : {}) }, "the backend");
}

/** The roots of a PEM bundle, each as its DER in base64: what `meshRoots` holds. */
export function rootSet(rootsPem: string): Set<string> {
  return new Set(certificatesFromPem(rootsPem).map((der) => der.toString("base64")));
}

/**
 * Builds TLS client material for egress connections from the current identity, rebuilding
 * only when the identity source hands out a new snapshot (rotation, bundle update), so new
 * connections get the new certificate while open ones keep theirs.
 */
export class EgressTlsMaterials {
  readonly #settings: EgressTlsSettings;
  readonly #identity: IdentitySource | undefined;
  readonly #accepts: ((id: string) => boolean) | undefined;
  #cachedFor: IdentitySnapshot | null | undefined;
  #cached: EgressTlsMaterial | undefined;

  constructor(settings: EgressTlsSettings, identity: IdentitySource | undefined) {
    this.#settings = settings;
    this.#identity = identity;
    this.#accepts = settings.expectSpiffeId === undefined ? undefined : compileMatcher(settings.expectSpiffeId);
  }

  /** Throws E_IDENTITY_UNAVAILABLE while the identity needed (mTLS or the mesh bundle) is missing or expired. */
  current(): EgressTlsMaterial {
    const snapshot = this.#identity?.current();
    const needsIdentity = this.#settings.mtls || this.#settings.fileRootsPem === undefined;
    if (needsIdentity && snapshot === undefined) {
      throw new MeshwardError(
        "E_IDENTITY_UNAVAILABLE",
        this.#settings.mtls
          ? "no valid workload certificate to present to the backend (not issued yet, or expired and not renewed); new egress connections are refused"
          : "no mesh trust bundle to verify the backend with yet; new egress connections are refused",
      );
    }
    const key = needsIdentity ? snapshot! : null;
    if (this.#cached !== undefined && this.#cachedFor === key) return this.#cached;
    this.#cached = this.#build(key ?? undefined);
    this.#cachedFor = key;
    return this.#cached;
  }

  #build(snapshot: IdentitySnapshot | undefined): EgressTlsMaterial {
    const settings = this.#settings;
    const roots = settings.fileRootsPem ?? snapshot!.bundle.rootsPem;
    let options: SecureOptions;
    if (settings.mtls) {
      options = buildSecureContextOptions({ svid: snapshot!.svid, bundle: { ...snapshot!.bundle, rootsPem: roots } }, "client");
    } else {
      // A backend that renegotiates (asks for a client certificate mid-connection) is refused, as in the mTLS branch.
      options = { minVersion: MIN_TLS_VERSION, maxVersion: "TLSv1.3", ciphers: CIPHERS, ecdhCurve: CURVES, secureOptions: SECURE_OPTIONS, ca: roots };
    }
    const secureContext = createSecureContext(options);
    const revoked = settings.fileRootsPem === undefined && snapshot !== undefined ? snapshot.bundle.revokedSerials : new Set<string>();
    let checkServerIdentity: EgressTlsMaterial["checkServerIdentity"];
    if (this.#accepts !== undefined) {
      const policy: PeerPolicy = {
        accepts: this.#accepts,
        expected: settings.expectSpiffeId!,
        revokedSerials: () => revoked,
        peerRole: "server",
      };
      checkServerIdentity = (_host, cert) => {
        if (!cert?.raw) return new MeshwardError("E_PEER_NO_SPIFFE_ID", "the backend sent no certificate");
        try {
          verifyPeerCertificate(cert.raw, policy);
          return undefined;
        } catch (error) {
          return error as Error;
        }
      };
    } else {
      // Node's own RFC 6125 check (DNS/IP SANs only) against the name we were configured with,
      // not whatever name the connection happened to use; with the mesh's roots, the mesh's
      // revocations too (a backend's certificate from the mesh CA is on its CRL when revoked).
      const revocations = { revokedSerials: () => revoked } as PeerPolicy;
      checkServerIdentity = (_host, cert) => {
        // Without its subject: Node falls back to the CN when a certificate has no DNS or IP SAN,
        // and a mesh SVID (a URI SAN only) may carry CN=<app id> (tokens with --common-name), so any
        // workload whose app id equals serverName would pass as this backend.
        const wrongName = checkHostName(settings.serverName, cert === undefined ? cert : { ...cert, subject: {} as typeof cert.subject });
        if (wrongName !== undefined || revoked.size === 0 || !cert?.serialNumber) return wrongName;
        const serial = normalizeSerial(cert.serialNumber);
        return isRevoked(revocations, serial) ? new MeshwardError("E_CERT_REVOKED", `the backend's certificate (serial ${serial}) is revoked`) : undefined;
      };
    }
    const servername = isIP(settings.serverName) === 0 && settings.serverName.length > 0 ? settings.serverName : undefined;
    const meshRoots = settings.fileRootsPem === undefined ? rootSet(roots) : undefined;
    return { secureContext, checkServerIdentity, servername, meshRoots, ownNotAfter: settings.mtls ? snapshot!.svid.notAfter : undefined, revokedSerials: revoked, backendName: settings.expectSpiffeId ?? settings.serverName };
  }
}
