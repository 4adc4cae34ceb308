/**
 * What the CA keeps: the issuance log, revocations, join tokens and the CRL number.
 * Two implementations share this interface and one test suite: `sqlite` (embedded default,
 * WAL, survives kill -9) and `postgres` (several CA replicas). All times are Dates (UTC),
 * serials are uppercase hex (as node:crypto prints them).
 */
import { MeshwardError } from "../errors.ts";

export interface IssuanceRecord {
  readonly serial: string;
  readonly spiffeId: string;
  readonly dnsNames: readonly string[];
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly issuedAt: Date;
  /** Attestation method that vouched for the workload: "join-token", "jwks", "insecure", "self" … */
  readonly attestation: string;
  /** SHA-256 fingerprint (node's colon form) of the issuer certificate that signed it. */
  readonly issuerFingerprint: string;
  /** SHA-256 fingerprint of the root the issuer chains to (root-retirement counts use it). */
  readonly rootFingerprint: string;
  /** The certificate itself, PEM. */
  readonly certificatePem: string;
  /**
   * Serial of the certificate this one replaces, when the workload renewed by proving it held
   * that certificate: the old one no longer counts as live (root retirement waits for live ones).
   * recordIssuance refuses it (renewalOfRevoked) when that certificate is revoked by then.
   */
  readonly supersedes?: string;
}

/** recordIssuance's refusal of a renewal whose certificate is revoked (code E_CERT_REVOKED). */
export function renewalOfRevoked(serial: string): MeshwardError {
  return new MeshwardError("E_CERT_REVOKED", `the certificate presented for renewal (serial ${serial}) is revoked; a new certificate needs a new attestation (a join token or the workload's JWT)`, {
    details: { serial },
  });
}

export interface RevocationRecord {
  readonly serial: string;
  readonly revokedAt: Date;
  readonly reason: string;
  /** From the issuance log when known. */
  readonly spiffeId: string | undefined;
}

export interface JoinTokenRecord {
  readonly id: string;
  /** SHA-256 hex of the secret token; the token itself is never stored. */
  readonly tokenHash: string;
  readonly spiffeId: string;
  /** DNS SANs the holder may ask for (server certificates of backends); usually empty. */
  readonly dnsNames: readonly string[];
  readonly createdAt: Date;
  readonly expiresAt: Date;
  readonly usesAllowed: number;
  readonly usesLeft: number;
  /**
   * When set, certificates obtained with this token carry this subject common name (the
   * workload's app id; `meshward token create --common-name`), for servers that map a
   * certificate's CN to a user, such as PostgreSQL's `cert` authentication. Absent: no CN.
   */
  readonly commonName?: string;
}

export type TokenConsumption =
  | { readonly ok: true; readonly token: JoinTokenRecord }
  | { readonly ok: false; readonly reason: "unknown" | "expired" | "used-up" };

export interface IssuanceFilter {
  readonly spiffeId?: string;
  /** Only certificates still valid at this instant. */
  readonly validAt?: Date;
  readonly rootFingerprint?: string;
  readonly limit?: number;
}

/** The files of the CA directory changed after init, as the store holds them (null: deleted). */
export interface CaFilesSnapshot {
  /** Grows by one with every change; 0 before the first. */
  readonly version: number;
  /** File name inside the CA directory → content, or null when the change removed it. */
  readonly files: ReadonlyMap<string, string | null>;
}

export interface StoredCrl {
  readonly number: bigint;
  /** The CRL the current issuer signed (what `/v1/crl` serves). */
  readonly der: Buffer;
  readonly thisUpdate: Date;
  /**
   * The CRLs of earlier issuers whose certificates may still be valid (a retired issuer until the
   * last certificate it signed expires), each signed by its own issuer with the same number and
   * revocations; published with `der` in one write, so every replica serves the same set.
   */
  readonly others?: readonly Buffer[];
}

/**
 * One leader among the CA processes sharing a store: a PostgreSQL session advisory lock on its
 * own connection, or for SQLite an exclusive lock on a file beside the database. Both are held
 * for as long as the holder lives (no lease to renew) and released when it dies.
 */
export interface LeaderLockOptions {
  /**
   * PostgreSQL: how long the holder's session may stay silent (a frozen or partitioned leader)
   * before the server ends it and another process can take the lock. Ignored by SQLite, whose
   * lock lives as long as the holding process.
   */
  readonly sessionTimeoutMs?: number;
}

export interface LeaderLock {
  /** Tries to take the lock (true when held, also when already held); false when another holds it. */
  tryAcquire(): Promise<boolean>;
  /** Whether the lock is held now (false once its connection broke). */
  readonly held: boolean;
  release(): Promise<void>;
}

export interface Store {
  /** Creates or upgrades the schema; idempotent. */
  migrate(): Promise<void>;
  recordIssuance(record: IssuanceRecord): Promise<void>;
  getIssuance(serial: string): Promise<IssuanceRecord | undefined>;
  /** Newest first. */
  listIssuances(filter?: IssuanceFilter): Promise<IssuanceRecord[]>;
  /** The latest notAfter of every certificate the issuer with this SHA-256 fingerprint (node's colon form) signed, revoked or not; undefined when none. */
  latestNotAfterByIssuer(issuerFingerprint: string): Promise<Date | undefined>;
  /** Counts live certificates at `at` (valid, not revoked, not superseded by a renewal), grouped by root fingerprint. */
  countValidByRoot(at: Date): Promise<Map<string, number>>;
  /**
   * For each of `serials` that a renewal superseded (see IssuanceRecord.supersedes), the serial
   * of the certificate that replaced it; serials never superseded are absent from the map.
   */
  supersededBy(serials: readonly string[]): Promise<Map<string, string>>;
  /**
   * Revokes this one serial, nothing else (ca migrate-store copies revocations with it). Returns
   * false when the serial was already revoked (the first revocation is kept).
   */
  revoke(revocation: { serial: string; revokedAt: Date; reason: string }): Promise<boolean>;
  /**
   * Revokes the certificate and every certificate renewed from it, transitively and forks
   * included: whoever stole a certificate and its key renews it, and revoking the stolen one must
   * take those renewals too. Ordered with renewals of the same identity: a renewal recorded at
   * the same time is either among those revoked here or refused (recordIssuance refuses to renew
   * a revoked certificate). Returns the serials this call revoked, the given one first when it
   * was not already revoked.
   */
  revokeLineage(revocation: { serial: string; revokedAt: Date; reason: string }): Promise<string[]>;
  /** Every renewal (the new serial → the serial it renewed), forks included: for ca migrate-store. */
  listRenewals(): Promise<{ serial: string; renews: string }[]>;
  listRevocations(): Promise<RevocationRecord[]>;
  /**
   * How many serials are revoked: a count, no rows read out. Revocations are only ever added (no
   * call removes one or changes it: the first is kept), so the count changes exactly when the set
   * does, whatever order concurrent writers commit in; the CA's CRL refresh compares it with the
   * CRL in force each second and reads the rows (listRevocations) only when they differ.
   */
  countRevocations(): Promise<number>;
  createToken(token: JoinTokenRecord): Promise<void>;
  /** Atomically checks and spends one use of the token with this hash. */
  consumeToken(tokenHash: string, now: Date): Promise<TokenConsumption>;
  /** Whether the token with this hash could be spent at `now`, without spending it (the answer may be stale at once). */
  checkToken(tokenHash: string, now: Date): Promise<TokenConsumption>;
  /**
   * Spends one use of the token and records the issuance in one transaction: a use is spent
   * only by a certificate that is recorded, and nothing is recorded when the token can no
   * longer be spent (another request spent its last use first). The CA returns the
   * certificate only when this answers ok.
   *
   * `signal`: the request this issuance answers; once it is aborted (the client cancelled, or
   * its deadline passed) nothing is spent or recorded and the abort's reason is thrown
   * (E_REQUEST_CANCELLED / E_REQUEST_TIMEOUT). It is checked as late as each store allows (see
   * the implementations); an abort after that point is too late, and the certificate stays logged.
   */
  recordIssuanceSpendingToken(record: IssuanceRecord, tokenHash: string, now: Date, options?: { readonly signal?: AbortSignal }): Promise<TokenConsumption>;
  listTokens(): Promise<JoinTokenRecord[]>;
  /** Monotonic CRL number, persisted; each call returns the next one. */
  nextCrlNumber(): Promise<bigint>;
  /** Every renewal link (old serial → the serial that replaced it), for moving a store (ca migrate-store). */
  listSuperseded(): Promise<{ serial: string; supersededBy: string }[]>;
  /** Makes the next CRL number greater than `atLeast` (a store taking over another's CRLs); never lowers it. */
  raiseCrlNumber(atLeast: bigint): Promise<void>;
  /** CA state that changed after init (issue 17): what rotations wrote, shared by every replica. */
  readCaFiles(): Promise<CaFilesSnapshot>;
  /** The version of that state alone (cheap; replicas poll it). */
  caStateVersion(): Promise<number>;
  /**
   * Applies the changes in one transaction when the state is still at `expectedVersion`
   * (compare-and-swap) and returns the new version; undefined when another writer came first.
   */
  writeCaFiles(expectedVersion: number, changes: ReadonlyMap<string, string | null>): Promise<number | undefined>;
  /**
   * Publishes a signed CRL unless one with a number as high or higher is already published
   * (the fence between two leaders): true when this one is now the published CRL.
   */
  publishCrl(crl: StoredCrl): Promise<boolean>;
  latestCrl(): Promise<StoredCrl | undefined>;
  /** Shared stores (PostgreSQL): called on each change notification (LISTEN/NOTIFY); returns the unsubscribe. */
  listen?(onChange: (channel: "ca_state" | "crl") => void): Promise<() => Promise<void>>;
  /** The lock that elects the one process rotating and signing CRLs among those sharing the store. */
  leaderLock?(options?: LeaderLockOptions): LeaderLock;
  /**
   * Takes the write lock the way an issuance does and lets it go without changing anything: how
   * the CA learns that writes work again after one failed (another process held the lock).
   */
  probeWrite?(): Promise<void>;
  close(): Promise<void>;
}
