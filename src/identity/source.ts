import type { KeyObject } from "node:crypto";

/**
 * The seam between where identities come from (the CA, files on disk, the SPIFFE Workload
 * API) and what uses them (SDK servers and clients, the sidecar, the file sink).
 */
export interface Svid {
  readonly spiffeId: string;
  /** Leaf first, then intermediates up to (not including) the root. PEM. */
  readonly certChainPem: string;
  readonly privateKey: KeyObject;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** Leaf serial, uppercase hex. */
  readonly serial: string;
}

export interface TrustBundle {
  readonly trustDomain: string;
  /** Every trusted root, PEM concatenated (two during a root rotation). */
  readonly rootsPem: string;
  /** Revoked leaf serials (uppercase hex) from the CA's CRL; empty when none is known. */
  readonly revokedSerials: ReadonlySet<string>;
  /** The verified CRLs (DER) revokedSerials came from, handed on by the Workload API. */
  readonly crls?: readonly Buffer[];
}

export interface IdentitySnapshot {
  readonly svid: Svid;
  readonly bundle: TrustBundle;
}

export type IdentityEvent =
  /** A new SVID and/or bundle is current. */
  | { readonly type: "rotated"; readonly snapshot: IdentitySnapshot }
  | { readonly type: "bundle-updated"; readonly snapshot: IdentitySnapshot }
  | { readonly type: "renewal-failed"; readonly error: Error; readonly retryInMs: number }
  /** The CA delivered a root set that was refused (it leaves out the root that vouched for it); the current one is kept. */
  | { readonly type: "bundle-refused"; readonly reason: string }
  /**
   * A CA endpoint was refused at the handshake for its serving chain (ca-client.ts
   * servingChainRefusal): `reason` is E_CA_ISSUER_RETIRED or E_CA_CERT_REVOKED, `endpoint` HOST:PORT.
   */
  | { readonly type: "ca-refused"; readonly reason: string; readonly endpoint: string }
  /** The SVID expired and could not be renewed: it must no longer be presented. */
  | { readonly type: "expired"; readonly spiffeId: string };

export interface IdentitySource {
  /** Resolves once a first valid identity is available. */
  ready(): Promise<IdentitySnapshot>;
  /** The current identity, or undefined before the first one or after expiry. */
  current(): IdentitySnapshot | undefined;
  /**
   * Why this identity must not count as ready even though current() may still hand out a
   * certificate (the CRL lists its serial; only a new token can get it another), for health
   * checks; undefined when there is none. Optional: sources without such states omit it.
   */
  problem?(): string | undefined;
  /** Returns an unsubscribe function. */
  subscribe(listener: (event: IdentityEvent) => void): () => void;
  close(): Promise<void>;
}

/** Whether two bundles hold the same CRLs, byte for byte: a CRL re-signed with the same revocations (a later nextUpdate) is a change. */
export function sameCrls(a: readonly Buffer[] | undefined, b: readonly Buffer[] | undefined): boolean {
  if (a === b) return true;
  if (a === undefined || b === undefined || a.length !== b.length) return false;
  return a.every((der, i) => der.equals(b[i]!));
}

/** An identity that never changes, for tests and for certificates managed by hand. */
export function staticIdentity(snapshot: IdentitySnapshot): IdentitySource {
  return {
    ready: async () => snapshot,
    current: () => (snapshot.svid.notAfter.getTime() > Date.now() ? snapshot : undefined),
    subscribe: () => () => undefined,
    close: async () => undefined,
  };
}
