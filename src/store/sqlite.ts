import { existsSync, lstatSync, realpathSync, statSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import Database from "better-sqlite3";
import { MeshwardError, isMeshwardError } from "../errors.ts";
import { throwIfCancelled } from "../util/abort.ts";
import { assertNoOtherRenamer, assertNoOtherWriter } from "../util/dir-safety.ts";
import { assertSchemaNotNewer, latestVersion, migrateSqlite, SQLITE_MIGRATIONS, sqliteSchemaVersion } from "./migrations.ts";
import { normalizeSerial, requireDate, requireLimit, requireSerial } from "./normalize.ts";
import { createPrivate } from "./file-lock.ts";
import { assertLockFileUsable, sqliteLeaderLock } from "./sqlite-leader.ts";
import { SqliteWriter, type WriterMethod } from "./sqlite-writer.ts";
import { renewalOfRevoked } from "./store.ts";
import { splitDers } from "./normalize.ts";
import type { CaFilesSnapshot, IssuanceFilter, IssuanceRecord, JoinTokenRecord, LeaderLock, RevocationRecord, Store, StoredCrl, TokenConsumption } from "./store.ts";

const BUSY_TIMEOUT_MS = 5_000;
const MEMORY = ":memory:";

interface IssuanceRow {
  serial: string;
  spiffe_id: string;
  dns_names: string;
  not_before: number;
  not_after: number;
  issued_at: number;
  attestation: string;
  issuer_fingerprint: string;
  root_fingerprint: string;
  certificate_pem: string;
}

interface TokenRow {
  id: string;
  token_hash: string;
  spiffe_id: string;
  dns_names: string;
  created_at: number;
  expires_at: number;
  uses_allowed: number;
  uses_left: number;
  common_name: string | null;
}

interface RevocationRow {
  serial: string;
  revoked_at: number;
  reason: string;
  spiffe_id: string | null;
}

export interface SqliteStoreOptions {
  /**
   * Make every write (issuances, token spends, revocations, CRL numbers, CA state) on a worker
   * thread with its own connection (sqlite-writer.ts), so that neither the fsync of a commit nor
   * a wait for another process's write lock (up to the 5 s busy timeout) stalls this thread;
   * reads stay here (WAL: they never wait for a writer). Ignored for ":memory:".
   */
  readonly writerThread?: boolean;
  /**
   * The CA directory this store belongs to. A store file directly in it is held to that
   * directory's rule (checkCaDir: owner and mode of the directory; its parents are the
   * operator's, as documented); a store anywhere else must also have parents only this user or
   * root can change (assertNoOtherRenamer). Without it, every store gets the stricter check.
   */
  readonly caDirectory?: string;
}

/**
 * Opens (creating when missing, mode 0600) the SQLite store at `path`; call migrate() before use.
 * A file, directory or side file others could change is refused first (E_STORE_UNSAFE, prepareStoreFile).
 */
export function openSqliteStore(path: string, options: SqliteStoreOptions = {}): SqliteStore {
  return new SqliteStore(path, options);
}

/** Embedded store: one file, WAL, synchronous=FULL so a committed write survives kill -9 and power loss. */
export class SqliteStore implements Store {
  readonly path: string;
  readonly #db: Database.Database;
  #statements: Statements | undefined;
  readonly #pendingIssuances: { row: IssuanceRow; supersedes: string | undefined; resolve: () => void; reject: (error: unknown) => void }[] = [];
  readonly #listStatements = new Map<string, Database.Statement>();
  readonly #useWriterThread: boolean;
  readonly #caDirectory: string | undefined;
  #writer: SqliteWriter | undefined;

  constructor(path: string, options: SqliteStoreOptions = {}) {
    // Opened under its directory's real path from now on (checked there): a link on the way is not followed again.
    this.path = path === MEMORY ? MEMORY : prepareStoreFile(resolve(path), options.caDirectory);
    this.#caDirectory = options.caDirectory;
    this.#useWriterThread = options.writerThread === true && this.path !== MEMORY;
    let db: Database.Database;
    try {
      db = new Database(this.path, { timeout: BUSY_TIMEOUT_MS });
    } catch (error) {
      throw openError(this.path, error);
    }
    try {
      db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
      const mode = db.pragma("journal_mode = WAL", { simple: true });
      if (this.path !== MEMORY && String(mode).toLowerCase() !== "wal") {
        throw new MeshwardError("E_STORE_OPEN", `${this.path}: SQLite refused WAL mode (got ${String(mode)}); is the file on a network filesystem?`);
      }
      db.pragma("synchronous = FULL");
      db.pragma("foreign_keys = ON");
      // Temporary tables, indices and sorts bigger than the cache (a big list, an index built
      // by a migration, VACUUM) in memory, not in SQLITE_TMPDIR/TMPDIR, /var/tmp, /tmp or ".":
      // none of those is writable in the CA's pod (readOnlyRootFilesystem), where such a
      // statement failed with "disk I/O error" (SQLITE_IOERR_GETTEMPPATH).
      db.pragma("temp_store = MEMORY");
      assertSchemaNotNewer(sqliteSchemaVersion(db), latestVersion(SQLITE_MIGRATIONS), this.path);
    } catch (error) {
      db.close();
      throw openError(this.path, error);
    }
    this.#db = db;
  }

  async migrate(): Promise<void> {
    this.#assertOpen();
    try {
      migrateSqlite(this.#db, this.path);
    } catch (error) {
      throw storeError("E_STORE_WRITE", `migrating the schema of ${this.path}`, error);
    }
    if (this.#useWriterThread) {
      // Started here so that the first issuance does not wait for the thread to load.
      const writer = (this.#writer ??= new SqliteWriter(this.path, this.#caDirectory));
      await writer.started.catch((error: unknown) => {
        throw storeError("E_STORE_WRITE", `starting the writer thread of ${this.path}`, error);
      });
    }
  }

  async recordIssuance(record: IssuanceRecord): Promise<void> {
    const row = issuanceRow(record);
    const supersedes = record.supersedes === undefined ? undefined : requireSerial(record.supersedes, "record the superseded certificate");
    this.#assertOpen();
    if (this.#useWriterThread) return this.#onWriter("recordIssuance", record);
    // Group commit: every issuance recorded in the same turn of the event loop shares one
    // transaction, so one fsync (synchronous=FULL) serves many concurrent signings. Each
    // caller's promise still resolves only after its row is committed.
    await new Promise<void>((resolve, reject) => {
      this.#pendingIssuances.push({ row, supersedes, resolve, reject });
      if (this.#pendingIssuances.length === 1) setImmediate(() => this.#flushIssuances());
    });
  }

  #flushIssuances(): void {
    const batch = this.#pendingIssuances.splice(0);
    if (batch.length === 0) return;
    const duplicate = (row: IssuanceRow) => `a certificate with serial ${row.serial} is already in the issuance log`;
    if (!this.#db.open) {
      for (const entry of batch) entry.reject(new MeshwardError("E_STORE_CLOSED", "the store was closed before the issuance was recorded"));
      return;
    }
    const statements = this.#stmts();
    // A renewal of a revoked certificate is not recorded (and its leaf never returned). The write
    // lock is taken up front (IMMEDIATE): a revocation committed by another connection (`cert
    // revoke`) lands either before the check, or after the row, which it then revokes too.
    const refused = new Set<(typeof batch)[number]>();
    const insert = (entry: (typeof batch)[number]) => {
      if (entry.supersedes !== undefined && statements.isRevoked.get(entry.supersedes) !== undefined) {
        refused.add(entry);
        return;
      }
      recordRow(statements, entry.row, entry.supersedes);
    };
    const answer = (entry: (typeof batch)[number]) => (refused.has(entry) ? entry.reject(renewalOfRevoked(entry.supersedes!)) : entry.resolve());
    try {
      this.#write("record the issuance", () => this.#db.transaction(() => batch.forEach(insert)).immediate(), duplicate(batch[0]!.row));
      for (const entry of batch) answer(entry);
    } catch {
      // One bad row (a duplicate serial) fails the whole transaction: write the rows one by
      // one so that each caller gets its own answer.
      refused.clear();
      for (const entry of batch) {
        try {
          this.#write("record the issuance", () => this.#db.transaction(() => insert(entry)).immediate(), duplicate(entry.row));
          answer(entry);
        } catch (error) {
          entry.reject(error);
        }
      }
    }
  }

  async getIssuance(serial: string): Promise<IssuanceRecord | undefined> {
    const row = this.#read("read the issuance log", () => this.#stmts().getIssuance.get(normalizeSerial(serial)) as IssuanceRow | undefined);
    return row === undefined ? undefined : issuanceFromRow(row);
  }

  async listIssuances(filter: IssuanceFilter = {}): Promise<IssuanceRecord[]> {
    const limit = requireLimit(filter);
    const where: string[] = [];
    const params: Record<string, unknown> = { limit: limit ?? -1 };
    if (filter.spiffeId !== undefined) {
      where.push("spiffe_id = @spiffeId");
      params["spiffeId"] = filter.spiffeId;
    }
    if (filter.validAt !== undefined) {
      where.push("not_before <= @validAt AND not_after > @validAt");
      params["validAt"] = requireDate(filter.validAt, "validAt");
    }
    if (filter.rootFingerprint !== undefined) {
      where.push("root_fingerprint = @rootFingerprint");
      params["rootFingerprint"] = filter.rootFingerprint;
    }
    const key = where.join(" AND ");
    const rows = this.#read("list the issuance log", () => {
      let statement = this.#listStatements.get(key);
      if (statement === undefined) {
        statement = this.#db.prepare(
          `SELECT * FROM issuances ${key === "" ? "" : `WHERE ${key}`} ORDER BY issued_at DESC, rowid DESC LIMIT @limit`,
        );
        this.#listStatements.set(key, statement);
      }
      return statement.all(params) as IssuanceRow[];
    });
    return rows.map(issuanceFromRow);
  }

  async countValidByRoot(at: Date): Promise<Map<string, number>> {
    const ms = requireDate(at, "at");
    const rows = this.#read("count valid certificates", () => this.#stmts().countValidByRoot.all({ at: ms }) as { root: string; n: number }[]);
    return new Map(rows.map((r) => [r.root, r.n]));
  }

  async revoke(revocation: { serial: string; revokedAt: Date; reason: string }): Promise<boolean> {
    if (this.#useWriterThread) return this.#onWriter("revoke", revocation);
    const serial = requireSerial(revocation.serial, "revoke");
    const revokedAt = requireDate(revocation.revokedAt, "revokedAt");
    const result = this.#write("record the revocation", () => this.#stmts().revoke.run(serial, revokedAt, revocation.reason));
    return result.changes === 1;
  }

  async revokeLineage(revocation: { serial: string; revokedAt: Date; reason: string }): Promise<string[]> {
    if (this.#useWriterThread) return this.#onWriter("revokeLineage", revocation);
    const serial = requireSerial(revocation.serial, "revoke");
    const revokedAt = requireDate(revocation.revokedAt, "revokedAt");
    const statements = this.#stmts();
    // One IMMEDIATE transaction: no renewal commits between reading the lineage and revoking it.
    const revoke = this.#db.transaction(() => {
      const first = statements.revoke.run(serial, revokedAt, revocation.reason).changes === 1;
      const rest = (statements.revokeRenewals.all(serial, revokedAt, revocation.reason) as { serial: string }[]).map((r) => r.serial).sort();
      return first ? [serial, ...rest] : rest;
    });
    return this.#write("record the revocation", () => revoke.immediate());
  }

  async listRenewals(): Promise<{ serial: string; renews: string }[]> {
    return this.#read("list renewals", () => this.#db.prepare("SELECT serial, renews FROM renewals ORDER BY serial").all() as { serial: string; renews: string }[]);
  }

  async listRevocations(): Promise<RevocationRecord[]> {
    const rows = this.#read("list revocations", () => this.#stmts().listRevocations.all() as RevocationRow[]);
    return rows.map((r) => ({ serial: r.serial, revokedAt: new Date(r.revoked_at), reason: r.reason, spiffeId: r.spiffe_id ?? undefined }));
  }

  async countRevocations(): Promise<number> {
    return this.#read("count revocations", () => (this.#stmts().countRevocations.get() as { n: number }).n);
  }

  async createToken(token: JoinTokenRecord): Promise<void> {
    if (this.#useWriterThread) return this.#onWriter("createToken", token);
    const row: TokenRow = {
      id: token.id,
      token_hash: token.tokenHash,
      spiffe_id: token.spiffeId,
      dns_names: JSON.stringify(token.dnsNames),
      created_at: requireDate(token.createdAt, "createdAt"),
      expires_at: requireDate(token.expiresAt, "expiresAt"),
      uses_allowed: token.usesAllowed,
      uses_left: token.usesLeft,
      common_name: token.commonName ?? null,
    };
    this.#write("store the join token", () => this.#stmts().insertToken.run(row), `a join token with id ${token.id} (or the same secret) already exists`);
  }

  async supersededBy(serials: readonly string[]): Promise<Map<string, string>> {
    const wanted = serials.map((serial) => normalizeSerial(serial));
    if (wanted.length === 0) return new Map();
    const rows = this.#read("read superseded certificates", () => this.#stmts().supersededBy.all(JSON.stringify(wanted)) as { serial: string; superseded_by: string }[]);
    return new Map(rows.map((r) => [r.serial, r.superseded_by]));
  }

  async consumeToken(tokenHash: string, now: Date): Promise<TokenConsumption> {
    if (this.#useWriterThread) return this.#onWriter("consumeToken", tokenHash, now);
    const at = requireDate(now, "now");
    const statements = this.#stmts();
    const consume = this.#db.transaction((): TokenConsumption => {
      const spent = statements.spendToken.get(tokenHash, at) as TokenRow | undefined;
      if (spent !== undefined) return { ok: true, token: tokenFromRow(spent) };
      const existing = statements.getTokenByHash.get(tokenHash) as TokenRow | undefined;
      if (existing === undefined) return { ok: false, reason: "unknown" };
      if (existing.uses_left <= 0) return { ok: false, reason: "used-up" };
      return { ok: false, reason: "expired" };
    });
    return this.#write("spend the join token", () => consume.immediate());
  }

  async checkToken(tokenHash: string, now: Date): Promise<TokenConsumption> {
    const at = requireDate(now, "now");
    const row = this.#read("read the join token", () => this.#stmts().getTokenByHash.get(tokenHash) as TokenRow | undefined);
    return tokenState(row, at);
  }

  async recordIssuanceSpendingToken(record: IssuanceRecord, tokenHash: string, now: Date, options: { readonly signal?: AbortSignal } = {}): Promise<TokenConsumption> {
    // The last moment a cancelled request can keep its token: past it the spend runs as one
    // transaction (on the writer thread, or synchronously here: BEGIN IMMEDIATE, busy wait
    // included, to COMMIT), where no abort can be seen before it has committed.
    throwIfCancelled(options.signal);
    if (this.#useWriterThread) return this.#onWriter("recordIssuanceSpendingToken", record, tokenHash, now);
    const row = issuanceRow(record);
    const supersedes = record.supersedes === undefined ? undefined : requireSerial(record.supersedes, "record the superseded certificate");
    const at = requireDate(now, "now");
    const statements = this.#stmts();
    // Not group-committed: the spend and the row commit together or not at all (join-token
    // issuance is rare next to renewals, which keep the group-commit path).
    const spendAndRecord = this.#db.transaction((): TokenConsumption => {
      const spent = statements.spendToken.get(tokenHash, at) as TokenRow | undefined;
      if (spent === undefined) return tokenState(statements.getTokenByHash.get(tokenHash) as TokenRow | undefined, at);
      recordRow(statements, row, supersedes);
      return { ok: true, token: tokenFromRow(spent) };
    });
    return this.#write(
      "spend the join token and record the issuance",
      () => spendAndRecord.immediate(),
      `a certificate with serial ${row.serial} is already in the issuance log`,
    );
  }

  async listTokens(): Promise<JoinTokenRecord[]> {
    const rows = this.#read("list join tokens", () => this.#stmts().listTokens.all() as TokenRow[]);
    return rows.map(tokenFromRow);
  }

  async nextCrlNumber(): Promise<bigint> {
    if (this.#useWriterThread) return this.#onWriter("nextCrlNumber");
    const statements = this.#stmts();
    const next = this.#db.transaction(() => statements.nextCrlNumber.get() as { value: bigint } | undefined);
    const row = this.#write("advance the CRL number", () => next.immediate());
    if (row === undefined) throw new MeshwardError("E_STORE_WRITE", `${this.path} has no CRL number row; the schema is damaged (run migrate() on a fresh store)`);
    return row.value;
  }

  async listSuperseded(): Promise<{ serial: string; supersededBy: string }[]> {
    const rows = this.#read("list superseded certificates", () => this.#db.prepare("SELECT serial, superseded_by FROM superseded ORDER BY serial").all() as { serial: string; superseded_by: string }[]);
    return rows.map((r) => ({ serial: r.serial, supersededBy: r.superseded_by }));
  }

  async raiseCrlNumber(atLeast: bigint): Promise<void> {
    if (this.#useWriterThread) return this.#onWriter("raiseCrlNumber", atLeast);
    this.#write("raise the CRL number", () => this.#db.prepare("UPDATE crl_number SET value = MAX(value, ?) WHERE id = 1").run(atLeast));
  }

  async probeWrite(): Promise<void> {
    if (this.#useWriterThread) return this.#onWriter("probeWrite");
    this.#write("take the write lock", () => this.#db.transaction(() => undefined).immediate());
  }

  async readCaFiles(): Promise<CaFilesSnapshot> {
    const statements = this.#stmts();
    const read = this.#db.transaction(() => ({
      version: (statements.caStateVersion.get() as { version: number }).version,
      rows: statements.listCaFiles.all() as { name: string; content: string | null }[],
    }));
    const { version, rows } = this.#read("read the CA state", () => read());
    return { version, files: new Map(rows.map((r) => [r.name, r.content])) };
  }

  async caStateVersion(): Promise<number> {
    return this.#read("read the CA state version", () => (this.#stmts().caStateVersion.get() as { version: number }).version);
  }

  async writeCaFiles(expectedVersion: number, changes: ReadonlyMap<string, string | null>): Promise<number | undefined> {
    if (this.#useWriterThread) return this.#onWriter("writeCaFiles", expectedVersion, changes);
    const statements = this.#stmts();
    const write = this.#db.transaction((): number | undefined => {
      const bumped = statements.bumpCaState.get(expectedVersion) as { version: number } | undefined;
      if (bumped === undefined) return undefined;
      for (const [name, content] of changes) statements.putCaFile.run(name, content);
      return bumped.version;
    });
    return this.#write("write the CA state", () => write.immediate());
  }

  async publishCrl(crl: StoredCrl): Promise<boolean> {
    if (this.#useWriterThread) return this.#onWriter("publishCrl", crl);
    const thisUpdate = requireDate(crl.thisUpdate, "thisUpdate");
    const result = this.#write("publish the CRL", () => this.#stmts().publishCrl.run(crl.number, crl.der, thisUpdate, crl.others !== undefined && crl.others.length > 0 ? Buffer.concat(crl.others) : null));
    return result.changes === 1;
  }

  async latestCrl(): Promise<StoredCrl | undefined> {
    const row = this.#read("read the published CRL", () => this.#stmts().latestCrl.get() as { number: bigint; der: Buffer; this_update: bigint; others: Buffer | null } | undefined);
    return row === undefined ? undefined : { number: row.number, der: row.der, thisUpdate: new Date(Number(row.this_update)), ...(row.others !== null ? { others: splitDers(row.others) } : {}) };
  }

  async latestNotAfterByIssuer(issuerFingerprint: string): Promise<Date | undefined> {
    const row = this.#read("read the latest expiry of an issuer's certificates", () => this.#stmts().latestNotAfterByIssuer.get(issuerFingerprint) as { latest: number | null } | undefined);
    return row?.latest === null || row?.latest === undefined ? undefined : new Date(row.latest);
  }

  /**
   * The lock electing the one CA process that rotates and signs CRLs when several serve from
   * this file (sqlite-leader.ts); a ":memory:" store has one process, always the leader.
   */
  leaderLock(): LeaderLock {
    this.#assertOpen();
    if (this.path === MEMORY) return { held: true, tryAcquire: async () => true, release: async () => undefined };
    assertLockFileUsable(this.path);
    return sqliteLeaderLock(this.path);
  }

  async close(): Promise<void> {
    await this.#writer?.close();
    if (this.#db.open) this.#flushIssuances();
    if (this.#db.open) this.#db.close();
  }

  /** The connection's durability settings, for diagnostics (`meshward doctor`, tests). */
  settings(): { journalMode: string; synchronous: "OFF" | "NORMAL" | "FULL" | "EXTRA"; foreignKeys: boolean; busyTimeoutMs: number; tempStore: "DEFAULT" | "FILE" | "MEMORY" } {
    this.#assertOpen();
    const synchronous = (["OFF", "NORMAL", "FULL", "EXTRA"] as const)[Number(this.#db.pragma("synchronous", { simple: true }))] ?? "OFF";
    return {
      journalMode: String(this.#db.pragma("journal_mode", { simple: true })),
      synchronous,
      foreignKeys: Number(this.#db.pragma("foreign_keys", { simple: true })) === 1,
      busyTimeoutMs: Number(this.#db.pragma("busy_timeout", { simple: true })),
      tempStore: (["DEFAULT", "FILE", "MEMORY"] as const)[Number(this.#db.pragma("temp_store", { simple: true }))] ?? "DEFAULT",
    };
  }

  /** A write on the writer thread (writerThread: true), so that waiting for the lock or the disk never blocks this thread. */
  #onWriter<M extends WriterMethod>(method: M, ...args: Parameters<NonNullable<Store[M]>>): ReturnType<NonNullable<Store[M]>> {
    this.#assertOpen();
    // Started by migrate(), or on first use: the writer's connection prepares its statements then.
    this.#writer ??= new SqliteWriter(this.path, this.#caDirectory);
    return this.#writer.call(method, ...args) as ReturnType<NonNullable<Store[M]>>;
  }

  #assertOpen(): void {
    if (!this.#db.open) throw new MeshwardError("E_STORE_CLOSED", `the store ${this.path} was closed; open it again`);
  }

  #stmts(): Statements {
    this.#assertOpen();
    if (this.#statements === undefined) {
      try {
        this.#statements = prepareStatements(this.#db);
      } catch (error) {
        throw storeError("E_STORE_READ", `preparing queries on ${this.path}`, error);
      }
    }
    return this.#statements;
  }

  #read<T>(what: string, fn: () => T): T {
    try {
      return fn();
    } catch (error) {
      throw storeError("E_STORE_READ", `cannot ${what} in ${this.path}`, error);
    }
  }

  #write<T>(what: string, fn: () => T, conflictMessage?: string): T {
    try {
      return fn();
    } catch (error) {
      if (conflictMessage !== undefined && isConstraintConflict(error)) {
        throw new MeshwardError("E_STORE_CONFLICT", conflictMessage, { cause: error });
      }
      throw storeError("E_STORE_WRITE", `cannot ${what} in ${this.path}`, error);
    }
  }
}

/** The issuance row and, for a renewal, its links: the first renewal supersedes (live count), every one is a renewal (lineage). */
function recordRow(statements: Statements, row: IssuanceRow, supersedes: string | undefined): void {
  statements.insertIssuance.run(row);
  if (supersedes === undefined) return;
  statements.insertSuperseded.run(supersedes, row.serial);
  statements.insertRenewal.run(row.serial, supersedes);
}

interface Statements {
  insertIssuance: Database.Statement;
  insertRenewal: Database.Statement;
  isRevoked: Database.Statement;
  revokeRenewals: Database.Statement;
  getIssuance: Database.Statement;
  countValidByRoot: Database.Statement;
  insertSuperseded: Database.Statement;
  supersededBy: Database.Statement;
  revoke: Database.Statement;
  listRevocations: Database.Statement;
  countRevocations: Database.Statement;
  insertToken: Database.Statement;
  spendToken: Database.Statement;
  getTokenByHash: Database.Statement;
  listTokens: Database.Statement;
  nextCrlNumber: Database.Statement;
  caStateVersion: Database.Statement;
  listCaFiles: Database.Statement;
  bumpCaState: Database.Statement;
  putCaFile: Database.Statement;
  publishCrl: Database.Statement;
  latestCrl: Database.Statement;
  latestNotAfterByIssuer: Database.Statement;
}

function prepareStatements(db: Database.Database): Statements {
  return {
    insertIssuance: db.prepare(
      `INSERT INTO issuances (serial, spiffe_id, dns_names, not_before, not_after, issued_at, attestation, issuer_fingerprint, root_fingerprint, certificate_pem)
       VALUES (@serial, @spiffe_id, @dns_names, @not_before, @not_after, @issued_at, @attestation, @issuer_fingerprint, @root_fingerprint, @certificate_pem)`,
    ),
    getIssuance: db.prepare("SELECT * FROM issuances WHERE serial = ?"),
    countValidByRoot: db.prepare(
      `SELECT root_fingerprint AS root, COUNT(*) AS n FROM issuances i
       WHERE i.not_before <= @at AND i.not_after > @at
         AND NOT EXISTS (SELECT 1 FROM revocations r WHERE r.serial = i.serial)
         AND NOT EXISTS (SELECT 1 FROM superseded s WHERE s.serial = i.serial)
       GROUP BY root_fingerprint`,
    ),
    insertSuperseded: db.prepare("INSERT INTO superseded (serial, superseded_by) VALUES (?, ?) ON CONFLICT (serial) DO NOTHING"),
    insertRenewal: db.prepare("INSERT INTO renewals (serial, renews) VALUES (?, ?)"),
    isRevoked: db.prepare("SELECT 1 FROM revocations WHERE serial = ?"),
    // Everything renewed from the serial, at any depth (not the serial itself), revoked with the date and reason given.
    revokeRenewals: db.prepare(
      `WITH RECURSIVE lineage (serial) AS (
         SELECT serial FROM renewals WHERE renews = ?
         UNION SELECT r.serial FROM renewals r JOIN lineage l ON r.renews = l.serial
       )
       INSERT INTO revocations (serial, revoked_at, reason) SELECT serial, ?, ? FROM lineage WHERE true
       ON CONFLICT (serial) DO NOTHING RETURNING serial`,
    ),
    supersededBy: db.prepare("SELECT serial, superseded_by FROM superseded WHERE serial IN (SELECT value FROM json_each(?))"),
    revoke: db.prepare("INSERT INTO revocations (serial, revoked_at, reason) VALUES (?, ?, ?) ON CONFLICT (serial) DO NOTHING"),
    countRevocations: db.prepare("SELECT count(*) AS n FROM revocations"),
    listRevocations: db.prepare(
      `SELECT r.serial, r.revoked_at, r.reason, i.spiffe_id FROM revocations r
       LEFT JOIN issuances i ON i.serial = r.serial ORDER BY r.revoked_at, r.serial`,
    ),
    insertToken: db.prepare(
      `INSERT INTO join_tokens (id, token_hash, spiffe_id, dns_names, created_at, expires_at, uses_allowed, uses_left, common_name)
       VALUES (@id, @token_hash, @spiffe_id, @dns_names, @created_at, @expires_at, @uses_allowed, @uses_left, @common_name)`,
    ),
    spendToken: db.prepare(
      "UPDATE join_tokens SET uses_left = uses_left - 1 WHERE token_hash = ? AND uses_left > 0 AND expires_at > ? RETURNING *",
    ),
    getTokenByHash: db.prepare("SELECT * FROM join_tokens WHERE token_hash = ?"),
    listTokens: db.prepare("SELECT * FROM join_tokens ORDER BY created_at, id"),
    nextCrlNumber: db.prepare("UPDATE crl_number SET value = value + 1 WHERE id = 1 RETURNING value").safeIntegers(true),
    caStateVersion: db.prepare("SELECT version FROM ca_state WHERE id = 1"),
    listCaFiles: db.prepare("SELECT name, content FROM ca_files ORDER BY name"),
    bumpCaState: db.prepare("UPDATE ca_state SET version = version + 1 WHERE id = 1 AND version = ? RETURNING version"),
    putCaFile: db.prepare("INSERT INTO ca_files (name, content) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET content = excluded.content"),
    // The fence between two leaders: only a higher CRL number replaces the published CRL.
    publishCrl: db.prepare(
      `INSERT INTO published_crl (id, number, der, this_update, others) VALUES (1, ?, ?, ?, ?)
       ON CONFLICT (id) DO UPDATE SET number = excluded.number, der = excluded.der, this_update = excluded.this_update, others = excluded.others
       WHERE excluded.number > published_crl.number`,
    ),
    latestCrl: db.prepare("SELECT number, der, this_update, others FROM published_crl WHERE id = 1").safeIntegers(true),
    latestNotAfterByIssuer: db.prepare("SELECT MAX(not_after) AS latest FROM issuances WHERE issuer_fingerprint = ?"),
  };
}

function issuanceRow(record: IssuanceRecord): IssuanceRow {
  return {
    serial: requireSerial(record.serial, "record the issuance"),
    spiffe_id: record.spiffeId,
    dns_names: JSON.stringify(record.dnsNames),
    not_before: requireDate(record.notBefore, "notBefore"),
    not_after: requireDate(record.notAfter, "notAfter"),
    issued_at: requireDate(record.issuedAt, "issuedAt"),
    attestation: record.attestation,
    issuer_fingerprint: record.issuerFingerprint,
    root_fingerprint: record.rootFingerprint,
    certificate_pem: record.certificatePem,
  };
}

/** What spending the token would answer now (without spending it). */
function tokenState(row: TokenRow | undefined, at: number): TokenConsumption {
  if (row === undefined) return { ok: false, reason: "unknown" };
  if (row.uses_left <= 0) return { ok: false, reason: "used-up" };
  if (row.expires_at <= at) return { ok: false, reason: "expired" };
  return { ok: true, token: tokenFromRow(row) };
}

function issuanceFromRow(row: IssuanceRow): IssuanceRecord {
  return {
    serial: row.serial,
    spiffeId: row.spiffe_id,
    dnsNames: JSON.parse(row.dns_names) as string[],
    notBefore: new Date(row.not_before),
    notAfter: new Date(row.not_after),
    issuedAt: new Date(row.issued_at),
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
    dnsNames: JSON.parse(row.dns_names) as string[],
    createdAt: new Date(row.created_at),
    expiresAt: new Date(row.expires_at),
    usesAllowed: row.uses_allowed,
    usesLeft: row.uses_left,
    ...(row.common_name !== null ? { commonName: row.common_name } : {}),
  };
}

/** Creates the database file 0600 before SQLite does (SQLite would use 0644 and the umask). */
/** Files SQLite keeps beside the database and reads as its own (a hot -journal is even replayed into it), and the CA's leader lock. */
const SIDE_FILES = ["-wal", "-shm", "-journal", "-leader", "-leader-journal"] as const;

const STORE_RISK = "replace or edit the store: add a join token for any identity and get that identity's certificate from the CA, or revoke and un-revoke certificates";

/**
 * The store file, checked before it is opened or created (review atrest MEDIUM-4): held to the CA
 * directory's rule wherever it is, since whoever can change it mints join tokens. Its directory
 * must be this user's or root's and writable by no one else (E_STORE_UNSAFE, as E_CA_DIR_UNSAFE),
 * and, outside the CA directory, so must every parent (a parent's owner could swap the directory
 * for a link); the database and its side files (-wal, -shm, -journal, -leader), where they exist,
 * must be regular files of this user or root that group and others cannot write, never symbolic
 * links. Then the database is created 0600 (without following a link). Returns its path under
 * the directory's real path.
 */
function prepareStoreFile(path: string, caDirectory: string | undefined): string {
  const dir = dirname(path);
  let dirIsDirectory: boolean;
  try {
    dirIsDirectory = statSync(dir).isDirectory();
  } catch (error) {
    throw new MeshwardError("E_STORE_OPEN", `cannot open the store ${path}: the directory ${dir} does not exist; create it first (meshward ca init does)`, { cause: error });
  }
  if (!dirIsDirectory) throw new MeshwardError("E_STORE_OPEN", `cannot open the store ${path}: ${dir} is not a directory`);
  const what = `the store ${path}`;
  assertNoOtherWriter(dir, what, "E_STORE_UNSAFE", STORE_RISK, "owned by the user the CA runs as, mode 0700, as the CA directory", undefined, false, { name: "meshward-ca", mode: "700" });
  const realDir = realpathSync(dir);
  const inCaDirectory = caDirectory !== undefined && existsSync(caDirectory) && realpathSync(caDirectory) === realDir;
  if (!inCaDirectory) assertNoOtherRenamer(realDir, what, "E_STORE_UNSAFE", STORE_RISK);
  const file = join(realDir, basename(path));
  for (const suffix of ["", ...SIDE_FILES]) assertOwnStoreFile(file + suffix, path + suffix, suffix === "");
  try {
    // Also tightens a file an older tool left readable by others; SQLite gives -wal/-shm the same mode.
    createPrivate(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ELOOP") throw symlinkRefusal(path, true); // made a link since the check
    throw new MeshwardError("E_STORE_OPEN", `cannot open the store ${path}: ${(error as Error).message}; check the file's owner and permissions`, { cause: error });
  }
  return file;
}

/** One of the store's files, if it exists: a regular file of this user or root, not writable by group or others, not a link. */
function assertOwnStoreFile(file: string, shown: string, database: boolean): void {
  let stats;
  try {
    stats = lstatSync(file);
  } catch {
    return; // absent: created 0600 by this process (or by SQLite with the database's mode)
  }
  if (stats.isSymbolicLink()) throw symlinkRefusal(shown, database);
  if (!stats.isFile()) return; // a directory or the like: opening it says so (E_STORE_OPEN)
  const uid = process.getuid?.();
  const remove = database ? "" : `, or remove it if no meshward runs on this store: rm ${shown}`;
  if (uid !== undefined && stats.uid !== uid && stats.uid !== 0) {
    throw new MeshwardError(
      "E_STORE_UNSAFE",
      `${shown} is owned by uid ${stats.uid}, not by this user (uid ${uid}) or root: its owner could ${STORE_RISK}. ` +
        (database
          ? `Do not use a store another user made: give a path in a directory of your own (mode 0700), where 'meshward ca serve' creates it, or, only if its content is known to be yours, take it over: chown ${uid} ${shown}`
          : `Take it over if it is the store's own: chown ${uid} ${shown}${remove}`),
      { details: { path: shown, uid: stats.uid } },
    );
  }
  const mode = stats.mode & 0o7777;
  if ((mode & 0o022) !== 0) {
    throw new MeshwardError(
      "E_STORE_UNSAFE",
      `${shown} is writable by group or others (mode ${mode.toString(8).padStart(4, "0")}): they could ${STORE_RISK}. ` +
        `Fix it with: chmod 600 ${shown} (and check that its content is yours)${remove}`,
      { details: { path: shown, mode } },
    );
  }
}

function symlinkRefusal(shown: string, database: boolean): MeshwardError {
  let target = "";
  try {
    target = ` (to ${realpathSync(shown)})`;
  } catch {
    // a dangling link
  }
  return new MeshwardError(
    "E_STORE_UNSAFE",
    `${shown} is a symbolic link${target}: the store's files are opened only as regular files, never through a link (its owner could repoint it, and the file it points to would be changed). ` +
      (database ? `Give the file's real path: --store sqlite:PATH` : `Remove the link: rm ${shown}`),
    { details: { path: shown } },
  );
}

function openError(path: string, error: unknown): MeshwardError {
  if (isMeshwardError(error)) return error;
  const code = sqliteCode(error);
  if (code === "SQLITE_NOTADB" || code === "SQLITE_CORRUPT") {
    return new MeshwardError("E_STORE_OPEN", `${path} is not a usable SQLite database (${code}); point the store at another file or restore it from a backup`, { cause: error });
  }
  return new MeshwardError("E_STORE_OPEN", `cannot open the store ${path}: ${(error as Error).message ?? String(error)}`, { cause: error });
}

function storeError(code: "E_STORE_READ" | "E_STORE_WRITE", what: string, error: unknown): MeshwardError {
  if (isMeshwardError(error)) return error;
  const message = error instanceof Error ? error.message : String(error);
  const sqlite = sqliteCode(error);
  let hint = "";
  if (/no such table/i.test(message)) hint = "; the store has no schema yet: call migrate() first (the CA does this on start)";
  else if (sqlite === "SQLITE_BUSY") hint = `; another process held the database lock for over ${BUSY_TIMEOUT_MS / 1000}s`;
  else if (sqlite === "SQLITE_READONLY") hint = "; the file or its directory is read-only for this user";
  else if (sqlite === "SQLITE_FULL") hint = "; the disk is full";
  else if (/database connection is not open/i.test(message)) return new MeshwardError("E_STORE_CLOSED", `${what}: the store was closed`, { cause: error });
  return new MeshwardError(code, `${what}: ${message}${hint}`, { cause: error });
}

function sqliteCode(error: unknown): string | undefined {
  return error instanceof Database.SqliteError ? error.code : undefined;
}

function isConstraintConflict(error: unknown): boolean {
  const code = sqliteCode(error);
  return code === "SQLITE_CONSTRAINT_PRIMARYKEY" || code === "SQLITE_CONSTRAINT_UNIQUE";
}
