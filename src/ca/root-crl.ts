import { X509Certificate } from "node:crypto";
import { isMeshwardError, MeshwardError } from "../errors.ts";
import type { Signer } from "../pki/certificate.ts";
import { keysMatch } from "../pki/keys.ts";
import { certificatesFromPem, toPem } from "../pki/pem.ts";
import type { AnchorFiles } from "./anchor-files.ts";
import type { CaLayout } from "./anchors.ts";

/**
 * Root-signed CRLs (self-managed roots). OpenSSL's whole-chain CRL check
 * (X509_V_FLAG_CRL_CHECK_ALL), which nginx `ssl_crl` and HAProxy `crl-file` turn on, wants a CRL
 * for every certificate of a peer's chain, the issuer (intermediate) included, and that one must be
 * signed by the root. So a CA that holds a root's key publishes a CRL signed by that root beside the
 * issuers' CRLs (crl-publisher.ts). It lists the issuers retired with `rotate-issuer --now` or
 * `import-issuer --now` (the answer to a leaked issuer key) that the root signed, until they
 * expire; normally it is empty.
 */

/** Validity of a root CRL; re-signed once older than ROOT_CRL_RESIGN_AFTER_MS, or at once when what it must list changes. */
export const ROOT_CRL_VALIDITY_MS = 30 * 86_400_000;
export const ROOT_CRL_RESIGN_AFTER_MS = 7 * 86_400_000;

/** A root of the bundle whose key the CA holds (root.pem/root.key, root.next.*, root.prev.*). */
export interface RootKey {
  readonly certificate: X509Certificate;
  /** Reads and decrypts the key when a root CRL is to be signed (it is not kept in memory). */
  readonly signer: () => Signer;
}

/** An issuer retired with --now, listed as revoked in the CRL of the root that signed it. */
export interface RetiredIssuer {
  readonly serial: string;
  readonly revokedAt: Date;
  readonly reason: "cACompromise";
  readonly certificate: X509Certificate;
}

/** The roots of `roots` whose key is in the CA files: each root certificate file beside its key file. */
export function rootKeys(files: AnchorFiles, layout: CaLayout, roots: readonly X509Certificate[], passphrase: string | undefined, readKey: (files: AnchorFiles, path: string, passphrase: string | undefined) => import("node:crypto").KeyObject): RootKey[] {
  const pairs = [
    [layout.rootCert, layout.rootKey],
    [layout.nextRootCert, layout.nextRootKey],
    [layout.previousRootCert, layout.previousRootKey],
  ] as const;
  const found: RootKey[] = [];
  for (const [certFile, keyFile] of pairs) {
    if (!files.exists(certFile) || !files.exists(keyFile)) continue;
    let certificate: X509Certificate | undefined;
    try {
      const der = certificatesFromPem(files.read(certFile))[0];
      certificate = der === undefined ? undefined : new X509Certificate(der);
    } catch {
      certificate = undefined;
    }
    if (certificate === undefined) continue;
    const inBundle = roots.find((root) => root.fingerprint256 === certificate.fingerprint256);
    if (inBundle === undefined || found.some((r) => r.certificate.fingerprint256 === inBundle.fingerprint256)) continue;
    found.push({
      certificate: inBundle,
      signer: () => {
        const privateKey = readKey(files, keyFile, passphrase);
        if (!keysMatch(privateKey, inBundle.publicKey)) throw new MeshwardError("E_CA_CORRUPT", `${keyFile} does not belong to ${certFile}`);
        return { certificate: inBundle, der: inBundle.raw, privateKey };
      },
    });
  }
  return found;
}

/** The issuers retired with --now (layout.retiredIssuers); a damaged file is E_CA_CORRUPT naming it. */
export function readRetiredIssuers(files: AnchorFiles, layout: CaLayout): RetiredIssuer[] {
  if (!files.exists(layout.retiredIssuers)) return [];
  const text = files.read(layout.retiredIssuers);
  try {
    const document = JSON.parse(text) as { issuers?: unknown };
    if (!Array.isArray(document.issuers)) throw new Error("no issuers list");
    return document.issuers.map((entry: unknown) => {
      const { revokedAt, certificate } = (entry ?? {}) as { revokedAt?: unknown; certificate?: unknown };
      if (typeof revokedAt !== "string" || Number.isNaN(Date.parse(revokedAt)) || typeof certificate !== "string") throw new Error("an entry lacks revokedAt or certificate");
      const der = certificatesFromPem(certificate)[0];
      if (der === undefined) throw new Error("an entry holds no certificate");
      const parsed = new X509Certificate(der);
      return { serial: parsed.serialNumber.toUpperCase(), revokedAt: new Date(revokedAt), reason: "cACompromise" as const, certificate: parsed };
    });
  } catch (error) {
    throw new MeshwardError("E_CA_CORRUPT", `${layout.retiredIssuers} is damaged (${isMeshwardError(error) ? error.message : (error as Error).message}): restore it from your backup of the CA directory`, {
      details: { path: layout.retiredIssuers },
    });
  }
}

/**
 * Records `issuer` as retired at `now` (`rotate-issuer --now`, `import-issuer --now`): the CRL of
 * the root that signed it lists it from the CA's next CRL refresh until it expires. Expired entries
 * are dropped here.
 */
export function recordRetiredIssuer(files: AnchorFiles, layout: CaLayout, issuer: X509Certificate, now: Date): void {
  files.write(layout.retiredIssuers, retiredIssuersWith(files, layout, [issuer], now), { secret: false });
}

/** The text of layout.retiredIssuers once `issuers` are recorded (rotation.ts writes it with the new issuer pair). */
export function retiredIssuersWith(files: AnchorFiles, layout: CaLayout, issuers: readonly X509Certificate[], now: Date): string {
  const added = issuers.filter((issuer, index) => issuers.findIndex((other) => other.fingerprint256 === issuer.fingerprint256) === index);
  const kept = readRetiredIssuers(files, layout).filter((r) => new Date(r.certificate.validTo).getTime() > now.getTime() && !added.some((issuer) => issuer.fingerprint256 === r.certificate.fingerprint256));
  const entries = [...kept.map((r) => ({ revokedAt: r.revokedAt.toISOString(), certificate: toPem(r.certificate.raw, "CERTIFICATE") })), ...added.map((issuer) => ({ revokedAt: now.toISOString(), certificate: toPem(issuer.raw, "CERTIFICATE") }))];
  return `${JSON.stringify({ issuers: entries }, null, 2)}\n`;
}

/** Whether `certificate` was signed by `root`. */
export function issuedBy(certificate: X509Certificate, root: X509Certificate): boolean {
  try {
    return certificate.checkIssued(root) && certificate.verify(root.publicKey);
  } catch {
    return false;
  }
}
