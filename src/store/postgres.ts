import pg from "pg";
import { MeshwardError, isMeshwardError } from "../errors.ts";
import { throwIfCancelled } from "../util/abort.ts";
import { tlsAfterHandshakeFailure } from "../tls/after-handshake.ts";
import { assertSchemaNotNewer, latestVersion, migratePostgres, POSTGRES_MIGRATIONS, postgresSchemaVersion } from "./migrations.ts";
import { normalizeSerial, requireDate, requireLimit, requireSerial, splitDers } from "./normalize.ts";
import { redactConnectionString } from "./redact.ts";
import { RenegotiationRefusingClient } from "./postgres-client.ts";
import { advisoryLeaderLock, CHANNELS, listenForChanges } from "./postgres-shared.ts";
import { renewalOfRevoked } from "./store.ts";
import type { CaFilesSnapshot, IssuanceFilter, IssuanceRecord, JoinTokenRecord, LeaderLock, LeaderLockOptions, RevocationRecord, Store, StoredCrl, TokenConsumption } from "./store.ts";

export type PostgresStoreOptions = { connectionString: string } | pg.PoolConfig;

interface IssuanceRow {
  serial: string;
  spiffe_id: string;
  dns_names: string[];
  not_before: Date;
  not_after: Date;
  issued_at: Date;
  attestation: string;
  issuer_fingerprint: string;
  root_fingerprint: string;
  certificate_pem: string;
}

interface TokenRow {
  id: string;
  token_hash: string;
  spiffe_id: string;
  dns_names: string[];
  created_at: Date;
  expires_at: Date;
  uses_allowed: number;
  uses_left: number;
  common_name: string | null;
}

const ISSUANCE_COLUMNS = "serial, spiffe_id, dns_names, not_before, not_after, issued_at, attestation, issuer_fingerprint, root_fingerprint, certificate_pem";
const TOKEN_COLUMNS = "id, token_hash, spiffe_id, dns_names, created_at, expires_at, uses_allowed, uses_left, common_name";

// Named queries: pg prepares each once per pooled connection and reuses it.
const Q = {
  insertIssuance: {
    name: "meshward_insert_issuance",
    text: `INSERT INTO issuances (${ISSUANCE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
  },
  /**
   * A renewal: the issuance with its links (the first renewal of $11 supersedes it, every one is a
   * renewal of it), unless $11 is revoked; then nothing, and no row comes back. Run under the
   * identity's lineage lock (lockLineage).
   */
  insertRenewal: {
    name: "meshward_insert_renewal",
    text: `WITH inserted AS (
             INSERT INTO issuances (${ISSUANCE_COLUMNS})
             SELECT $1::text, $2::text, $3::text[], $4::timestamptz, $5::timestamptz, $6::timestamptz, $7::text, $8::text, $9::text, $10::text
             WHERE NOT EXISTS (SELECT 1 FROM revocations WHERE serial = $11::text)
             RETURNING serial
           ), superseding AS (
             INSERT INTO superseded (serial, superseded_by) SELECT $11::text, serial FROM inserted ON CONFLICT (serial) DO NOTHING
           ), renewal AS (
             INSERT INTO renewals (serial, renews) SELECT serial, $11::text FROM inserted
           )
           SELECT serial FROM inserted`,
  },
  /**
   * Renewals and revocations of one SPIFFE ID take turns (a renewal keeps the ID): a revocation
   * then sees every renewal committed before it, and a renewal after it sees the revocation.
   * Two-key advisory locks do not share the key space of the one-key leader and migration locks.
   */
  lockLineage: { name: "meshward_lock_lineage", text: "SELECT pg_advisory_xact_lock(1836544622, hashtext($1::text))" },
  spiffeIdOf: { name: "meshward_spiffe_id_of", text: "SELECT spiffe_id FROM issuances WHERE serial = $1" },
  revokeRenewals: {
    name: "meshward_revoke_renewals",
    text: `WITH RECURSIVE lineage (serial) AS (
             SELECT serial FROM renewals WHERE renews = $1
             UNION SELECT r.serial FROM renewals r JOIN lineage l ON r.renews = l.serial
           )
           INSERT INTO revocations (serial, revoked_at, reason) SELECT serial, $2, $3 FROM lineage
           ON CONFLICT (serial) DO NOTHING RETURNING serial`,
  },
  getIssuance: { name: "meshward_get_issuance", text: `SELECT ${ISSUANCE_COLUMNS} FROM issuances WHERE serial = $1` },
  listIssuances: {
    name: "meshward_list_issuances",
    text: `SELECT ${ISSUANCE_COLUMNS} FROM issuances
           WHERE ($1::text IS NULL OR spiffe_id = $1)
             AND ($2::timestamptz IS NULL OR (not_before <= $2 AND not_after > $2))
             AND ($3::text IS NULL OR root_fingerprint = $3)
           ORDER BY issued_at DESC, seq DESC
           LIMIT $4`,
  },
  countValidByRoot: {
    name: "meshward_count_valid_by_root",
    text: `SELECT root_fingerprint AS root, COUNT(*)::integer AS n FROM issuances i
           WHERE i.not_before <= $1 AND i.not_after > $1
             AND NOT EXISTS (SELECT 1 FROM revocations r WHERE r.serial = i.serial)
             AND NOT EXISTS (SELECT 1 FROM superseded s WHERE s.serial = i.serial)
           GROUP BY root_fingerprint`,
  },
  supersededBy: {
    name: "meshward_superseded_by",
    text: "SELECT serial, superseded_by FROM superseded WHERE serial = ANY($1::text[])",
  },
  revoke: {
    name: "meshward_revoke",
    text: "INSERT INTO revocations (serial, revoked_at, reason) VALUES ($1, $2, $3) ON CONFLICT (serial) DO NOTHING",
  },
  listRevocations: {
    name: "meshward_list_revocations",
    text: `SELECT r.serial, r.revoked_at, r.reason, i.spiffe_id FROM revocations r
           LEFT JOIN issuances i ON i.serial = r.serial ORDER BY r.revoked_at, r.serial`,
  },
  countRevocations: { name: "meshward_count_revocations", text: "SELECT count(*)::int AS n FROM revocations" },
  insertToken: {
    name: "meshward_insert_token",
    text: `INSERT INTO join_tokens (${TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
  },
  // Row-level locking makes this atomic: a concurrent spender re-checks uses_left after the
  // first commits, so a single-use token is spent exactly once however many replicas race.
  // Expiry is judged by the later of the replica's clock and the database's: several replicas
  // share one store, and a replica whose clock runs behind must not spend a token the database
  // (and so every other replica) deems expired. Here and in spendTokenAndRecord and checkToken.
  spendToken: {
    name: "meshward_spend_token",
    text: `UPDATE join_tokens SET uses_left = uses_left - 1
           WHERE token_hash = $1 AND uses_left > 0 AND expires_at > GREATEST($2::timestamptz, now()) RETURNING ${TOKEN_COLUMNS}`,
  },
  /**
   * Spend and record in one statement (so one transaction): the issuance row is inserted only
   * from the spent token row, so a request that loses the race for the last use records nothing,
   * and a failed insert (duplicate serial) rolls the spend back.
   */
  spendTokenAndRecord: {
    name: "meshward_spend_token_and_record",
    text: `WITH spent AS (
             UPDATE join_tokens SET uses_left = uses_left - 1
             WHERE token_hash = $11 AND uses_left > 0 AND expires_at > GREATEST($12::timestamptz, now()) RETURNING ${TOKEN_COLUMNS}
           ), inserted AS (
             INSERT INTO issuances (${ISSUANCE_COLUMNS})
             SELECT $1::text, $2::text, $3::text[], $4::timestamptz, $5::timestamptz, $6::timestamptz, $7::text, $8::text, $9::text, $10::text FROM spent
             RETURNING serial
           ), superseding AS (
             INSERT INTO superseded (serial, superseded_by) SELECT $13::text, serial FROM inserted WHERE $13::text IS NOT NULL
             ON CONFLICT (serial) DO NOTHING
           ), renewal AS (
             INSERT INTO renewals (serial, renews) SELECT serial, $13::text FROM inserted WHERE $13::text IS NOT NULL
           )
           SELECT ${TOKEN_COLUMNS} FROM spent`,
  },
  getTokenByHash: { name: "meshward_get_token_by_hash", text: `SELECT ${TOKEN_COLUMNS} FROM join_tokens WHERE token_hash = $1` },
  checkToken: {
    name: "meshward_check_token",
    text: `SELECT ${TOKEN_COLUMNS}, expires_at <= GREATEST($2::timestamptz, now()) AS expired FROM join_tokens WHERE token_hash = $1`,
  },
  listTokens: { name: "meshward_list_tokens", text: `SELECT ${TOKEN_COLUMNS} FROM join_tokens ORDER BY created_at, id` },
  nextCrlNumber: { name: "meshward_next_crl_number", text: "SELECT nextval('crl_number_seq')::text AS value" },
  caStateVersion: { name: "meshward_ca_state_version", text: "SELECT version::text AS version FROM ca_state WHERE id = 1" },
  listCaFiles: { name: "meshward_list_ca_files", text: "SELECT name, content FROM ca_files ORDER BY name" },
  // The fence between two leaders: only a higher CRL number replaces the published CRL.
  publishCrl: {
    name: "meshward_publish_crl",
    text: `WITH published AS (
             INSERT INTO published_crl (id, number, der, this_update, others) VALUES (1, $1, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE SET number = EXCLUDED.number, der = EXCLUDED.der, this_update = EXCLUDED.this_update, others = EXCLUDED.others
             WHERE EXCLUDED.number > published_crl.number
             RETURNING number
           )
           SELECT pg_notify('${CHANNELS.crl}', number::text) FROM published`,
  },
  latestCrl: { name: "meshward_latest_crl", text: "SELECT number::text AS number, der, this_update, others FROM published_crl WHERE id = 1" },
  latestNotAfterByIssuer: { name: "meshward_latest_not_after_by_issuer", text: "SELECT MAX(not_after) AS latest FROM issuances WHERE issuer_fingerprint = $1" },
} as const;

/** How long one query may go unanswered before it fails (E_STORE_OPEN) and its connection is dropped. */
export const QUERY_TIMEOUT_MS = 5_000;
/** How long the write probe waits for a lock another session holds before it reports writes blocked. */
const PROBE_LOCK_TIMEOUT_MS = 2_000;
/** Idle time before TCP keepalive probes start on a connection to PostgreSQL. */
const KEEPALIVE_DELAY_MS = 10_000;

/** Opens a pool to PostgreSQL (nothing connects until the first call); call migrate() before use. */
export function openPostgresStore(options: PostgresStoreOptions): PostgresStore {
  return new PostgresStore(options);
}

/** Shared store for several CA replicas. */
export class PostgresStore implements Store {
  /** Where the store points, password hidden: safe for messages and logs. */
  readonly target: string;
  readonly #pool: pg.Pool;
  readonly #config: pg.PoolConfig;
  #closed = false;
  #schemaChecked: Promise<void> | undefined;

  constructor(options: PostgresStoreOptions) {
    // A server that stops answering without closing the connection (host down, a partition, a
    // firewall dropping packets) would otherwise hold a query, and the CA request behind it,
    // until the kernel gives up on the connection (many minutes): each query gets QUERY_TIMEOUT_MS
    // (pg then fails it and the pool drops its connection), idle connections keepalive probes.
    const config: pg.PoolConfig = {
      connectionTimeoutMillis: 10_000,
      query_timeout: QUERY_TIMEOUT_MS,
      keepAlive: true,
      keepAliveInitialDelayMillis: KEEPALIVE_DELAY_MS,
      application_name: "meshward-ca",
      ...options,
    };
    this.target = describeTarget(config);
    assertParsable(config.connectionString, this.target);
    this.#config = config;
    this.#pool = new pg.Pool({ ...config, Client: RenegotiationRefusingClient });
    // An idle pooled connection that breaks (server restart, network) is dropped and replaced
    // on next use; without a listener the 'error' event would crash the CA process.
    this.#pool.on("error", () => undefined);
  }

  async migrate(): Promise<void> {
    this.#assertOpen();
    const client = await this.#connect("migrate the schema");
    let broken: Error | undefined;
    try {
      await migratePostgres(client, this.target);
      this.#schemaChecked = Promise.resolve();
    } catch (error) {
      if (!isMeshwardError(error) && !(error instanceof pg.DatabaseError)) broken = error instanceof Error ? error : new Error(String(error));
      throw this.#error("E_STORE_WRITE", "migrate the schema", error);
    } finally {
      client.release(broken);
    }
  }

  async recordIssuance(record: IssuanceRecord): Promise<void> {
    const serial = requireSerial(record.serial, "record the issuance");
    const values = issuanceValues(record, serial);
    const duplicate = `a certificate with serial ${serial} is already in the issuance log`;
    if (record.supersedes === undefined) {
      await this.#query("E_STORE_WRITE", "record the issuance", Q.insertIssuance, values, duplicate);
      return;
    }
    const supersedes = requireSerial(record.supersedes, "record the superseded certificate");
    await this.#transaction("record the issuance", "E_STORE_WRITE", async (client) => {
      await client.query({ ...Q.lockLineage, values: [record.spiffeId] });
      let inserted: pg.QueryResult;
      try {
        inserted = await client.query({ ...Q.insertRenewal, values: [...values, supersedes] });
      } catch (error) {
        if (pgCode(error) === "23505") throw new MeshwardError("E_STORE_CONFLICT", duplicate, { cause: error });
        throw error;
      }
      if (inserted.rowCount === 0) throw renewalOfRevoked(supersedes);
    });
  }

  async recordIssuanceSpendingToken(record: IssuanceRecord, tokenHash: string, now: Date, options: { readonly signal?: AbortSignal } = {}): Promise<TokenConsumption> {
    const serial = requireSerial(record.serial, "record the issuance");
    const supersedes = record.supersedes === undefined ? null : requireSerial(record.supersedes, "record the superseded certificate");
    const at = new Date(requireDate(now, "now"));
    const duplicate = `a certificate with serial ${serial} is already in the issuance log`;
    throwIfCancelled(options.signal);
    // In a transaction, so that a request cancelled while the statement ran (waiting for a
    // connection, for the token row's lock, or for a slow server) is rolled back: the signal is
    // checked again just before COMMIT. What remains is the COMMIT round trip itself: a client
    // giving up during it leaves the use spent and the certificate logged, unreturned.
    const row = await this.#transaction("spend the join token and record the issuance", "E_STORE_WRITE", async (client) => {
      let result: pg.QueryResult<TokenRow>;
      try {
        result = await client.query<TokenRow>({ ...Q.spendTokenAndRecord, values: [...issuanceValues(record, serial), tokenHash, at, supersedes] });
      } catch (error) {
        if (pgCode(error) === "23505") throw new MeshwardError("E_STORE_CONFLICT", duplicate, { cause: error });
        throw error;
      }
      throwIfCancelled(options.signal);
      return result.rows[0];
    });
    if (row !== undefined) return { ok: true, token: tokenFromRow(row) };
    return this.checkToken(tokenHash, now);
  }

  async checkToken(tokenHash: string, now: Date): Promise<TokenConsumption> {
    const at = new Date(requireDate(now, "now"));
    const existing = await this.#query<TokenRow & { expired: boolean }>("E_STORE_READ", "read the join token", Q.checkToken, [tokenHash, at]);
    const token = existing.rows[0];
    if (token === undefined) return { ok: false, reason: "unknown" };
    if (token.uses_left <= 0) return { ok: false, reason: "used-up" };
    if (token.expired) return { ok: false, reason: "expired" };
    return { ok: true, token: tokenFromRow(token) };
  }

  async getIssuance(serial: string): Promise<IssuanceRecord | undefined> {
    const result = await this.#query<IssuanceRow>("E_STORE_READ", "read the issuance log", Q.getIssuance, [normalizeSerial(serial)]);
    const row = result.rows[0];
    return row === undefined ? undefined : issuanceFromRow(row);
  }

  async listIssuances(filter: IssuanceFilter = {}): Promise<IssuanceRecord[]> {
    const limit = requireLimit(filter);
    const validAt = filter.validAt === undefined ? null : new Date(requireDate(filter.validAt, "validAt"));
    const result = await this.#query<IssuanceRow>("E_STORE_READ", "list the issuance log", Q.listIssuances, [
      filter.spiffeId ?? null,
      validAt,
      filter.rootFingerprint ?? null,
      limit ?? null,
    ]);
    return result.rows.map(issuanceFromRow);
  }

  async countValidByRoot(at: Date): Promise<Map<string, number>> {
    const when = new Date(requireDate(at, "at"));
    const result = await this.#query<{ root: string; n: number }>("E_STORE_READ", "count valid certificates", Q.countValidByRoot, [when]);
    return new Map(result.rows.map((r) => [r.root, r.n]));
  }

  async supersededBy(serials: readonly string[]): Promise<Map<string, string>> {
    const wanted = serials.map((serial) => normalizeSerial(serial));
    if (wanted.length === 0) return new Map();
    const result = await this.#query<{ serial: string; superseded_by: string }>("E_STORE_READ", "read superseded certificates", Q.supersededBy, [wanted]);
    return new Map(result.rows.map((r) => [r.serial, r.superseded_by]));
  }

  async revoke(revocation: { serial: string; revokedAt: Date; reason: string }): Promise<boolean> {
    const serial = requireSerial(revocation.serial, "revoke");
    const revokedAt = new Date(requireDate(revocation.revokedAt, "revokedAt"));
    const result = await this.#query("E_STORE_WRITE", "record the revocation", Q.revoke, [serial, revokedAt, revocation.reason]);
    return result.rowCount === 1;
  }

  async revokeLineage(revocation: { serial: string; revokedAt: Date; reason: string }): Promise<string[]> {
    const serial = requireSerial(revocation.serial, "revoke");
    const revokedAt = new Date(requireDate(revocation.revokedAt, "revokedAt"));
    return this.#transaction("record the revocation", "E_STORE_WRITE", async (client) => {
      const owner = await client.query<{ spiffe_id: string }>({ ...Q.spiffeIdOf, values: [serial] });
      const spiffeId = owner.rows[0]?.spiffe_id;
      if (spiffeId !== undefined) await client.query({ ...Q.lockLineage, values: [spiffeId] });
      const first = await client.query({ ...Q.revoke, values: [serial, revokedAt, revocation.reason] });
      const rest = await client.query<{ serial: string }>({ ...Q.revokeRenewals, values: [serial, revokedAt, revocation.reason] });
      const renewed = rest.rows.map((r) => r.serial).sort();
      return first.rowCount === 1 ? [serial, ...renewed] : renewed;
    });
  }

  async listRenewals(): Promise<{ serial: string; renews: string }[]> {
    const result = await this.#query<{ serial: string; renews: string }>("E_STORE_READ", "list renewals", { name: "meshward_list_renewals", text: "SELECT serial, renews FROM renewals ORDER BY serial" }, []);
    return result.rows;
  }

  async listRevocations(): Promise<RevocationRecord[]> {
    const result = await this.#query<{ serial: string; revoked_at: Date; reason: string; spiffe_id: string | null }>(
      "E_STORE_READ",
      "list revocations",
      Q.listRevocations,
      [],
    );
    return result.rows.map((r) => ({ serial: r.serial, revokedAt: r.revoked_at, reason: r.reason, spiffeId: r.spiffe_id ?? undefined }));
  }

  async countRevocations(): Promise<number> {
    const result = await this.#query<{ n: number }>("E_STORE_READ", "count revocations", Q.countRevocations, []);
    return result.rows[0]!.n;
  }

  async createToken(token: JoinTokenRecord): Promise<void> {
    const values = [
      token.id,
      token.tokenHash,
      token.spiffeId,
      [...token.dnsNames],
      new Date(requireDate(token.createdAt, "createdAt")),
      new Date(requireDate(token.expiresAt, "expiresAt")),
      token.usesAllowed,
      token.usesLeft,
      token.commonName ?? null,
    ];
    await this.#query("E_STORE_WRITE", "store the join token", Q.insertToken, values, `a join token with id ${token.id} (or the same secret) already exists`);
  }

  async consumeToken(tokenHash: string, now: Date): Promise<TokenConsumption> {
    const at = new Date(requireDate(now, "now"));
    const spent = await this.#query<TokenRow>("E_STORE_WRITE", "spend the join token", Q.spendToken, [tokenHash, at]);
    const row = spent.rows[0];
    if (row !== undefined) return { ok: true, token: tokenFromRow(row) };
    // Nothing was spent; the reason is read afterwards and is only used to explain the refusal.
    const existing = await this.#query<TokenRow>("E_STORE_READ", "read the join token", Q.getTokenByHash, [tokenHash]);
    const token = existing.rows[0];
    if (token === undefined) return { ok: false, reason: "unknown" };
    if (token.uses_left <= 0) return { ok: false, reason: "used-up" };
    return { ok: false, reason: "expired" };
  }

  async listTokens(): Promise<JoinTokenRecord[]> {
    const result = await this.#query<TokenRow>("E_STORE_READ", "list join tokens", Q.listTokens, []);
    return result.rows.map(tokenFromRow);
  }

  async nextCrlNumber(): Promise<bigint> {
    const result = await this.#query<{ value: string }>("E_STORE_WRITE", "advance the CRL number", Q.nextCrlNumber, []);
    const value = result.rows[0]?.value;
    if (value === undefined) throw new MeshwardError("E_STORE_WRITE", `${this.target}: the CRL number sequence returned nothing`);
    return BigInt(value);
  }

  async listSuperseded(): Promise<{ serial: string; supersededBy: string }[]> {
    const result = await this.#query<{ serial: string; superseded_by: string }>("E_STORE_READ", "list superseded certificates", { name: "meshward_list_superseded", text: "SELECT serial, superseded_by FROM superseded ORDER BY serial" }, []);
    return result.rows.map((r) => ({ serial: r.serial, supersededBy: r.superseded_by }));
  }

  async raiseCrlNumber(atLeast: bigint): Promise<void> {
    // setval(…, n, true): the next nextval() returns n + 1.
    await this.#query("E_STORE_WRITE", "raise the CRL number", {
      name: "meshward_raise_crl_number",
      text: "SELECT setval('crl_number_seq', GREATEST($1::bigint, (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM crl_number_seq)), true)",
    }, [atLeast.toString()]);
  }

  async probeWrite(): Promise<void> {
    // The lock an INSERT into issuances takes, given up at the COMMIT: waits while another
    // session holds a conflicting one (LOCK TABLE, a long migration), fails on a read-only server.
    await this.#transaction("take a write lock on the issuance log", "E_STORE_WRITE", async (client) => {
      await client.query(`SET LOCAL lock_timeout = ${PROBE_LOCK_TIMEOUT_MS}`);
      await client.query("LOCK TABLE issuances IN ROW EXCLUSIVE MODE");
    });
  }

  async readCaFiles(): Promise<CaFilesSnapshot> {
    // One snapshot: REPEATABLE READ makes the version and the files agree.
    return this.#transaction("read the CA state", "E_STORE_READ", async (client) => {
      await client.query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ");
      const version = await client.query<{ version: string }>(Q.caStateVersion);
      const files = await client.query<{ name: string; content: string | null }>(Q.listCaFiles);
      return { version: Number(version.rows[0]?.version ?? 0), files: new Map(files.rows.map((r) => [r.name, r.content])) };
    });
  }

  async caStateVersion(): Promise<number> {
    const result = await this.#query<{ version: string }>("E_STORE_READ", "read the CA state version", Q.caStateVersion, []);
    return Number(result.rows[0]?.version ?? 0);
  }

  async writeCaFiles(expectedVersion: number, changes: ReadonlyMap<string, string | null>): Promise<number | undefined> {
    return this.#transaction("write the CA state", "E_STORE_WRITE", async (client) => {
      const bumped = await client.query<{ version: string }>("UPDATE ca_state SET version = version + 1 WHERE id = 1 AND version = $1 RETURNING version::text AS version", [expectedVersion]);
      const version = bumped.rows[0]?.version;
      if (version === undefined) return undefined;
      for (const [name, content] of changes) {
        await client.query("INSERT INTO ca_files (name, content) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET content = EXCLUDED.content", [name, content]);
      }
      await client.query("SELECT pg_notify($1, $2)", [CHANNELS.ca_state, version]);
      return Number(version);
    });
  }

  async publishCrl(crl: StoredCrl): Promise<boolean> {
    const thisUpdate = new Date(requireDate(crl.thisUpdate, "thisUpdate"));
    const result = await this.#query("E_STORE_WRITE", "publish the CRL", Q.publishCrl, [crl.number.toString(), crl.der, thisUpdate, crl.others !== undefined && crl.others.length > 0 ? Buffer.concat(crl.others) : null]);
    return result.rowCount === 1;
  }

  async latestCrl(): Promise<StoredCrl | undefined> {
    const result = await this.#query<{ number: string; der: Buffer; this_update: Date; others: Buffer | null }>("E_STORE_READ", "read the published CRL", Q.latestCrl, []);
    const row = result.rows[0];
    return row === undefined ? undefined : { number: BigInt(row.number), der: row.der, thisUpdate: row.this_update, ...(row.others !== null ? { others: splitDers(row.others) } : {}) };
  }

  async latestNotAfterByIssuer(issuerFingerprint: string): Promise<Date | undefined> {
    const result = await this.#query<{ latest: Date | null }>("E_STORE_READ", "read the latest expiry of an issuer's certificates", Q.latestNotAfterByIssuer, [issuerFingerprint]);
    return result.rows[0]?.latest ?? undefined;
  }

  listen(onChange: (channel: "ca_state" | "crl") => void): Promise<() => Promise<void>> {
    this.#assertOpen();
    return listenForChanges(this.#config, onChange);
  }

  leaderLock(options: LeaderLockOptions = {}): LeaderLock {
    this.#assertOpen();
    return advisoryLeaderLock(this.#config, undefined, options);
  }

  async #transaction<T>(what: string, code: "E_STORE_READ" | "E_STORE_WRITE", fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    this.#assertOpen();
    await this.#ensureSchemaKnown().catch((error: unknown) => {
      throw this.#error(code, what, error);
    });
    const client = await this.#connect(what);
    let broken: unknown;
    try {
      await client.query("BEGIN");
      const result = await fn(client);
      await client.query("COMMIT");
      return result;
    } catch (error) {
      // An error from the server leaves the connection usable: roll back and keep it. Any other
      // (a timeout, a broken connection) leaves it unusable, maybe still busy with the query:
      // the pool drops it, and PostgreSQL rolls back when the session ends.
      if (error instanceof pg.DatabaseError) await client.query("ROLLBACK").catch((rollback: unknown) => (broken = rollback));
      else broken = error;
      throw this.#error(code, what, error);
    } finally {
      client.release(broken === undefined ? undefined : broken instanceof Error ? broken : new Error(String(broken)));
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#pool.end();
  }

  #assertOpen(): void {
    if (this.#closed) throw new MeshwardError("E_STORE_CLOSED", `the store ${this.target} was closed; open it again`);
  }

  async #connect(what: string): Promise<pg.PoolClient> {
    try {
      return await this.#pool.connect();
    } catch (error) {
      throw this.#error("E_STORE_OPEN", what, error);
    }
  }

  /** Refuses a schema newer than this code once per store, even when migrate() was not called. */
  #ensureSchemaKnown(): Promise<void> {
    if (this.#schemaChecked === undefined) {
      const check = (async () => {
        const client = await this.#connect("check the schema version");
        let broken: Error | undefined;
        try {
          assertSchemaNotNewer(await postgresSchemaVersion(client), latestVersion(POSTGRES_MIGRATIONS), this.target);
        } catch (error) {
          if (!isMeshwardError(error) && !(error instanceof pg.DatabaseError)) broken = error instanceof Error ? error : new Error(String(error));
          throw error;
        } finally {
          client.release(broken);
        }
      })();
      this.#schemaChecked = check;
      check.catch(() => {
        if (this.#schemaChecked === check) this.#schemaChecked = undefined;
      });
    }
    return this.#schemaChecked;
  }

  async #query<R extends pg.QueryResultRow = pg.QueryResultRow>(
    code: "E_STORE_READ" | "E_STORE_WRITE",
    what: string,
    query: { name: string; text: string },
    values: unknown[],
    conflictMessage?: string,
  ): Promise<pg.QueryResult<R>> {
    this.#assertOpen();
    try {
      await this.#ensureSchemaKnown();
      return await this.#pool.query<R>({ ...query, values });
    } catch (error) {
      if (conflictMessage !== undefined && pgCode(error) === "23505") {
        throw new MeshwardError("E_STORE_CONFLICT", conflictMessage, { cause: error });
      }
      throw this.#error(code, what, error);
    }
  }

  #error(code: "E_STORE_OPEN" | "E_STORE_READ" | "E_STORE_WRITE", what: string, error: unknown): MeshwardError {
    if (isMeshwardError(error)) return error;
    if (this.#closed) return new MeshwardError("E_STORE_CLOSED", `cannot ${what}: the store ${this.target} was closed`, { cause: error });
    const message = error instanceof Error ? error.message : String(error);
    if (error instanceof Error && error.message === "Query read timeout") {
      return new MeshwardError("E_STORE_OPEN", `cannot ${what}: PostgreSQL at ${this.target} did not answer within ${(this.#config.query_timeout ?? QUERY_TIMEOUT_MS) / 1000} s (server down or unreachable without the connection being closed: a partition, a firewall dropping packets)`, { cause: error });
    }
    const afterHandshake = tlsAfterHandshakeFailure(error);
    if (afterHandshake !== undefined) return new MeshwardError("E_STORE_OPEN", `cannot reach PostgreSQL at ${this.target} to ${what}: ${afterHandshake}`, { cause: error });
    const sqlState = pgCode(error);
    if (!(error instanceof pg.DatabaseError) || sqlState?.startsWith("28") || sqlState === "3D000" || sqlState?.startsWith("08") || sqlState === "57P03") {
      return new MeshwardError("E_STORE_OPEN", `cannot reach PostgreSQL at ${this.target} to ${what}: ${message}; check the store URL, the server and its pg_hba.conf`, {
        cause: error,
      });
    }
    let hint = "";
    if (sqlState === "42P01" || sqlState === "42P02") hint = "; the database has no meshward schema yet: call migrate() first (the CA does this on start)";
    else if (sqlState === "42501") hint = "; the database user lacks the privilege (it needs to own the meshward tables)";
    else if (sqlState === "53100") hint = "; the database server's disk is full";
    return new MeshwardError(code, `cannot ${what} in ${this.target}: ${message}${hint}`, { cause: error, details: { sqlState } });
  }
}

/** pg would only fail at first use, with Node's URL error carrying the raw string (password included). */
function assertParsable(connectionString: string | undefined, target: string): void {
  if (connectionString === undefined || !/^postgres(ql)?:\/\//i.test(connectionString)) return;
  try {
    new URL(connectionString);
  } catch {
    throw new MeshwardError(
      "E_STORE_URL_INVALID",
      `invalid PostgreSQL URL ${JSON.stringify(target)}: percent-encode special characters in the user or password (e.g. @ as %40) and check the port`,
    );
  }
}

function describeTarget(config: pg.PoolConfig): string {
  if (config.connectionString !== undefined) return redactConnectionString(config.connectionString);
  const user = config.user ?? process.env["PGUSER"] ?? "";
  const host = config.host ?? process.env["PGHOST"] ?? "localhost";
  const port = config.port ?? process.env["PGPORT"] ?? 5432;
  const database = config.database ?? process.env["PGDATABASE"] ?? user;
  return `postgres://${user === "" ? "" : `${user}@`}${host.startsWith("/") ? encodeURIComponent(host) : host}:${port}/${database}`;
}

function pgCode(error: unknown): string | undefined {
  if (typeof error !== "object" || error === null) return undefined;
  const code = (error as { code?: unknown }).code;
  return typeof code === "string" ? code : undefined;
}

function issuanceValues(record: IssuanceRecord, serial: string): unknown[] {
  return [
    serial,
    record.spiffeId,
    [...record.dnsNames],
    new Date(requireDate(record.notBefore, "notBefore")),
    new Date(requireDate(record.notAfter, "notAfter")),
    new Date(requireDate(record.issuedAt, "issuedAt")),
    record.attestation,
    record.issuerFingerprint,
    record.rootFingerprint,
    record.certificatePem,
  ];
}

function issuanceFromRow(row: IssuanceRow): IssuanceRecord {
  return {
    serial: row.serial,
    spiffeId: row.spiffe_id,
    dnsNames: row.dns_names,
    notBefore: row.not_before,
    notAfter: row.not_after,
    issuedAt: row.issued_at,
    attestation: row.attestation,
    issuerFingerprint: row.issuer_fingerprint,
    rootFingerprint: row.root_fingerprint,
    certificatePem: row.certificate_pem,
  };
}

function tokenFromRow(row: TokenRow): JoinTokenRecord {
  return {
    id: row.id,
    tokenHash: row.token_hash,
    spiffeId: row.spiffe_id,
    dnsNames: row.dns_names,
    createdAt: row.created_at,
    expiresAt: row.expires_at,
    usesAllowed: row.uses_allowed,
    usesLeft: row.uses_left,
    ...(row.common_name !== null ? { commonName: row.common_name } : {}),
  };
}
