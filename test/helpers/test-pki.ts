/**
 * In-process test PKI built with src/pki: one root, one issuer (intermediate) and as many leaf
 * X509-SVIDs as a test wants, returned as the `Svid` / `TrustBundle` / `IdentitySnapshot`
 * objects of src/identity/source.ts. Keys are generated at test time (ECDSA P-256) and never
 * written anywhere unless the test does so.
 *
 *   const pki = await createTestPki({ trustDomain: "example.org" });
 *   const snapshot = pki.snapshot({ spiffeId: "spiffe://example.org/ns/default/api" });
 *   const source = manualIdentitySource(snapshot); // a source the test drives by hand
 *   source.rotate(pki.snapshot({ ttlMs: 60_000 }));
 *
 * Also `manualIdentitySource()`: an `IdentitySource` that emits exactly what the test tells it
 * to, for driving consumers (servers, sinks) without a CA.
 */
import { X509Certificate } from "node:crypto";
import type { KeyObject } from "node:crypto";
import {
  createIssuerCertificate,
  createRootCertificate,
  generateKeyPair,
  issueLeafCertificate,
  toPem,
} from "../../src/pki/index.ts";
import type { KeyAlgorithm, Signer } from "../../src/pki/index.ts";
import type { IdentityEvent, IdentitySnapshot, IdentitySource, Svid, TrustBundle } from "../../src/identity/source.ts";

const MINUTE = 60_000;
const DAY = 24 * 60 * MINUTE;

export interface TestPkiOptions {
  /** Default "example.org". */
  readonly trustDomain?: string;
  /** Key algorithm of root and issuer (default ec-p256). */
  readonly algorithm?: KeyAlgorithm;
  /** Validity of root and issuer; default from one day ago to 365 days ahead. */
  readonly notBefore?: Date;
  readonly notAfter?: Date;
}

export interface SvidOptions {
  /** Default spiffe://<trust-domain>/ns/default/workload. */
  readonly spiffeId?: string;
  /** Default one minute ago (a little backdating, as the CA does). */
  readonly notBefore?: Date;
  /** Default notBefore + 1 minute + ttlMs. */
  readonly notAfter?: Date;
  /** Lifetime from now when notAfter is not given (default 1 hour). */
  readonly ttlMs?: number;
  readonly dnsNames?: readonly string[];
  /** Leaf key algorithm (default ec-p256). */
  readonly algorithm?: KeyAlgorithm;
  /** Sign with this CA instead (e.g. another TestPki's issuer, to build a foreign SVID). */
  readonly signer?: Signer;
}

export interface BundleOptions {
  readonly revokedSerials?: Iterable<string>;
  /** More roots, PEM, appended after this PKI's root (a root rotation overlap). */
  readonly extraRootsPem?: string;
}

export interface TestPki {
  readonly trustDomain: string;
  readonly root: Signer;
  readonly issuer: Signer;
  readonly rootPem: string;
  readonly issuerPem: string;
  /** A fresh leaf SVID (new key every call); chain is leaf + issuer, PEM. */
  issueSvid(options?: SvidOptions): Svid;
  /** This PKI's trust bundle (its root, plus extras). */
  bundle(options?: BundleOptions): TrustBundle;
  /** issueSvid + bundle. */
  snapshot(options?: SvidOptions & BundleOptions): IdentitySnapshot;
}

function signerOf(der: Buffer, privateKey: KeyObject): Signer {
  return { certificate: new X509Certificate(der), der, privateKey };
}

/** Builds a root and an issuer for `trustDomain` (async: CA certificates use WebCrypto). */
export async function createTestPki(options: TestPkiOptions = {}): Promise<TestPki> {
  const trustDomain = options.trustDomain ?? "example.org";
  const notBefore = options.notBefore ?? new Date(Date.now() - DAY);
  const notAfter = options.notAfter ?? new Date(Date.now() + 365 * DAY);
  const rootKeys = generateKeyPair(options.algorithm);
  const rootCert = await createRootCertificate({ trustDomain, keyPair: rootKeys, notBefore, notAfter });
  const root = signerOf(rootCert.der, rootKeys.privateKey);
  const issuerKeys = generateKeyPair(options.algorithm);
  const issuerCert = await createIssuerCertificate({ trustDomain, publicKey: issuerKeys.publicKey, signer: root, notBefore, notAfter });
  const issuer = signerOf(issuerCert.der, issuerKeys.privateKey);
  const rootPem = toPem(root.der, "CERTIFICATE");
  const issuerPem = toPem(issuer.der, "CERTIFICATE");

  const issueSvid = (svid: SvidOptions = {}): Svid => {
    const spiffeId = svid.spiffeId ?? `spiffe://${trustDomain}/ns/default/workload`;
    const keys = generateKeyPair(svid.algorithm);
    const leafNotBefore = svid.notBefore ?? new Date(Date.now() - MINUTE);
    const leafNotAfter = svid.notAfter ?? new Date(Date.now() + (svid.ttlMs ?? 60 * MINUTE));
    const signer = svid.signer ?? issuer;
    const leaf = issueLeafCertificate({
      spiffeId,
      publicKey: keys.publicKey,
      signer,
      notBefore: leafNotBefore,
      notAfter: leafNotAfter,
      ...(svid.dnsNames ? { dnsNames: svid.dnsNames } : {}),
    });
    // Chain up to, not including, the root: a signer that is a root contributes nothing.
    const signerIsRoot = signer.certificate.subject === signer.certificate.issuer && signer.certificate.verify(signer.certificate.publicKey);
    const chainPem = toPem(leaf.der, "CERTIFICATE") + (signerIsRoot ? "" : toPem(signer.der, "CERTIFICATE"));
    const parsed = new X509Certificate(leaf.der);
    return {
      spiffeId,
      certChainPem: chainPem,
      privateKey: keys.privateKey,
      notBefore: new Date(parsed.validFrom),
      notAfter: new Date(parsed.validTo),
      serial: leaf.serial,
    };
  };

  const bundle = (bundleOptions: BundleOptions = {}): TrustBundle => ({
    trustDomain,
    rootsPem: rootPem + (bundleOptions.extraRootsPem ?? ""),
    revokedSerials: new Set(bundleOptions.revokedSerials ?? []),
  });

  return {
    trustDomain,
    root,
    issuer,
    rootPem,
    issuerPem,
    issueSvid,
    bundle,
    snapshot: (opts = {}) => ({ svid: issueSvid(opts), bundle: bundle(opts) }),
  };
}

/** An IdentitySource driven by hand; every method emits the matching IdentityEvent. */
export interface ManualIdentitySource extends IdentitySource {
  /** Makes `snapshot` current and emits `rotated` (resolves ready() the first time). */
  rotate(snapshot: IdentitySnapshot): void;
  /** Replaces the bundle of the current snapshot and emits `bundle-updated`. */
  updateBundle(bundle: TrustBundle): void;
  /** Drops the current identity and emits `expired`. */
  expire(): void;
  /** Emits `renewal-failed` without changing the identity. */
  failRenewal(error: Error, retryInMs?: number): void;
  /** Number of live subscribers (to check that consumers unsubscribe). */
  listenerCount(): number;
}

/** A source that holds `initial` (or nothing, until the first rotate()). */
export function manualIdentitySource(initial?: IdentitySnapshot): ManualIdentitySource {
  const listeners = new Set<(event: IdentityEvent) => void>();
  let current = initial;
  let resolveReady!: (snapshot: IdentitySnapshot) => void;
  const ready = new Promise<IdentitySnapshot>((resolve) => (resolveReady = resolve));
  if (initial) resolveReady(initial);
  const emit = (event: IdentityEvent) => {
    for (const listener of [...listeners]) listener(event);
  };
  return {
    ready: () => ready,
    current: () => current,
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    close: async () => listeners.clear(),
    rotate(snapshot) {
      current = snapshot;
      resolveReady(snapshot);
      emit({ type: "rotated", snapshot });
    },
    updateBundle(bundle) {
      if (!current) throw new Error("manualIdentitySource: updateBundle() before the first rotate()");
      current = { svid: current.svid, bundle };
      emit({ type: "bundle-updated", snapshot: current });
    },
    expire() {
      const spiffeId = current?.svid.spiffeId ?? "";
      current = undefined;
      emit({ type: "expired", spiffeId });
    },
    failRenewal(error, retryInMs = 1000) {
      emit({ type: "renewal-failed", error, retryInMs });
    },
    listenerCount: () => listeners.size,
  };
}
