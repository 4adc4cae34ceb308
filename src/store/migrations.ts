import type Database from "better-sqlite3";
import type pg from "pg";
import { MeshwardError } from "../errors.ts";

/**
 * Versioned schema per backend. Each step runs in one transaction together with the row
 * that records it in `schema_version`, so a crash leaves the schema at a whole version.
 * Append new steps; never edit a step that has shipped.
 */
export interface Migration {
  readonly version: number;
  readonly description: string;
  readonly sql: string;
}

export const SQLITE_MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    description: "issuance log, revocations, join tokens, CRL number",
    sql: `
      CREATE TABLE issuances (
        serial TEXT PRIMARY KEY NOT NULL,
        spiffe_id TEXT NOT NULL,
        dns_names TEXT NOT NULL,
        not_before INTEGER NOT NULL,
        not_after INTEGER NOT NULL,
        issued_at INTEGER NOT NULL,
        attestation TEXT NOT NULL,
        issuer_fingerprint TEXT NOT NULL,
        root_fingerprint TEXT NOT NULL,
        certificate_pem TEXT NOT NULL
      );
      CREATE INDEX issuances_by_spiffe_id ON issuances (spiffe_id, issued_at);
      CREATE INDEX issuances_by_root ON issuances (root_fingerprint, not_after);
      CREATE INDEX issuances_by_issued_at ON issuances (issued_at);
      CREATE INDEX issuances_by_not_after ON issuances (not_after);
      CREATE TABLE revocations (
        serial TEXT PRIMARY KEY NOT NULL,
        revoked_at INTEGER NOT NULL,
        reason TEXT NOT NULL
      );
      CREATE TABLE join_tokens (
        id TEXT PRIMARY KEY NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        spiffe_id TEXT NOT NULL,
        dns_names TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        uses_allowed INTEGER NOT NULL CHECK (uses_allowed >= 0),
        uses_left INTEGER NOT NULL CHECK (uses_left >= 0)
      );
      CREATE TABLE crl_number (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        value INTEGER NOT NULL
      );
      INSERT INTO crl_number (id, value) VALUES (1, 0);
    `,
  },
  {
    version: 2,
    description: "certificates superseded by a renewal",
    sql: `
      CREATE TABLE superseded (
        serial TEXT PRIMARY KEY NOT NULL,
        superseded_by TEXT NOT NULL
      );
    `,
  },  {
    // 4, not 3: main's version 3 (join tokens with a common name) was written at the same time.
    version: 4,
    description: "CA state shared by replicas: changed anchor files, their version, the published CRL",
    sql: `
      CREATE TABLE ca_files (
        name TEXT PRIMARY KEY NOT NULL,
        content TEXT
      );
      CREATE TABLE ca_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        version INTEGER NOT NULL
      );
      INSERT INTO ca_state (id, version) VALUES (1, 0);
      CREATE TABLE published_crl (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        number INTEGER NOT NULL,
        der BLOB NOT NULL,
        this_update INTEGER NOT NULL
      );
    `,
  },
  {
    version: 3,
    description: "join tokens that let the certificate carry CN = <app id>",
    sql: `
      ALTER TABLE join_tokens ADD COLUMN common_name TEXT;
    `,
  },
  {
    version: 5,
    description: "every renewal's parent, forks included (superseded keeps only the first renewal of a certificate): revocation follows them",
    sql: `
      CREATE TABLE renewals (
        serial TEXT PRIMARY KEY NOT NULL,
        renews TEXT NOT NULL
      );
      CREATE INDEX renewals_by_renews ON renewals (renews);
      INSERT INTO renewals (serial, renews) SELECT superseded_by, serial FROM superseded WHERE true ON CONFLICT (serial) DO NOTHING;
    `,
  },
  {
    version: 6,
    description: "a CRL per issuer whose certificates may still be valid (a retired issuer's beside the current one's), and the latest expiry per issuer",
    sql: `
      ALTER TABLE published_crl ADD COLUMN others BLOB;
      CREATE INDEX issuances_by_issuer ON issuances (issuer_fingerprint, not_after);
    `,
  },
];

export const POSTGRES_MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    description: "issuance log, revocations, join tokens, CRL number",
    sql: `
      CREATE TABLE issuances (
        seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
        serial TEXT PRIMARY KEY,
        spiffe_id TEXT NOT NULL,
        dns_names TEXT[] NOT NULL,
        not_before TIMESTAMPTZ NOT NULL,
        not_after TIMESTAMPTZ NOT NULL,
        issued_at TIMESTAMPTZ NOT NULL,
        attestation TEXT NOT NULL,
        issuer_fingerprint TEXT NOT NULL,
        root_fingerprint TEXT NOT NULL,
        certificate_pem TEXT NOT NULL
      );
      CREATE INDEX issuances_by_spiffe_id ON issuances (spiffe_id, issued_at);
      CREATE INDEX issuances_by_root ON issuances (root_fingerprint, not_after);
      CREATE INDEX issuances_by_issued_at ON issuances (issued_at);
      CREATE INDEX issuances_by_not_after ON issuances (not_after);
      CREATE TABLE revocations (
        serial TEXT PRIMARY KEY,
        revoked_at TIMESTAMPTZ NOT NULL,
        reason TEXT NOT NULL
      );
      CREATE TABLE join_tokens (
        id TEXT PRIMARY KEY,
        token_hash TEXT NOT NULL UNIQUE,
        spiffe_id TEXT NOT NULL,
        dns_names TEXT[] NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL,
        uses_allowed INTEGER NOT NULL CHECK (uses_allowed >= 0),
        uses_left INTEGER NOT NULL CHECK (uses_left >= 0)
      );
      -- A sequence is atomic across replicas; after a crash it may skip numbers, never repeat.
      CREATE SEQUENCE crl_number_seq AS BIGINT START WITH 1 MINVALUE 1 NO CYCLE;
    `,
  },
  {
    version: 2,
    description: "certificates superseded by a renewal",
    sql: `
      CREATE TABLE superseded (
        serial TEXT PRIMARY KEY,
        superseded_by TEXT NOT NULL
      );
    `,
  },  {
    // 4, not 3: main's version 3 (join tokens with a common name) was written at the same time.
    version: 4,
    description: "CA state shared by replicas: changed anchor files, their version, the published CRL",
    sql: `
      CREATE TABLE ca_files (
        name TEXT PRIMARY KEY,
        content TEXT
      );
      CREATE TABLE ca_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        version BIGINT NOT NULL
      );
      INSERT INTO ca_state (id, version) VALUES (1, 0);
      CREATE TABLE published_crl (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        number BIGINT NOT NULL,
        der BYTEA NOT NULL,
        this_update TIMESTAMPTZ NOT NULL
      );
    `,
  },
  {
    version: 3,
    description: "join tokens that let the certificate carry CN = <app id>",
    sql: `
      ALTER TABLE join_tokens ADD COLUMN common_name TEXT;
    `,
  },
  {
    version: 5,
    description: "every renewal's parent, forks included (superseded keeps only the first renewal of a certificate): revocation follows them",
    sql: `
      CREATE TABLE renewals (
        serial TEXT PRIMARY KEY NOT NULL,
        renews TEXT NOT NULL
      );
      CREATE INDEX renewals_by_renews ON renewals (renews);
      INSERT INTO renewals (serial, renews) SELECT superseded_by, serial FROM superseded ON CONFLICT (serial) DO NOTHING;
    `,
  },
  {
    version: 6,
    description: "a CRL per issuer whose certificates may still be valid (a retired issuer's beside the current one's), and the latest expiry per issuer",
    sql: `
      ALTER TABLE published_crl ADD COLUMN others BYTEA;
      CREATE INDEX issuances_by_issuer ON issuances (issuer_fingerprint, not_after);
    `,
  },
];

export function latestVersion(migrations: readonly Migration[]): number {
  return migrations.reduce((max, m) => Math.max(max, m.version), 0);
}

export function assertSchemaNotNewer(current: number, known: number, where: string): void {
  if (current > known) {
    throw new MeshwardError(
      "E_STORE_SCHEMA_NEWER",
      `the store at ${where} has schema version ${current}, but this meshward only knows up to version ${known}; ` +
        "a newer meshward has upgraded it, so run that version (or restore a backup taken before the upgrade)",
      { details: { current, known } },
    );
  }
}

const SQLITE_VERSION_TABLE = `CREATE TABLE IF NOT EXISTS schema_version (
  version INTEGER PRIMARY KEY NOT NULL,
  applied_at INTEGER NOT NULL
)`;

/** Current schema version of a SQLite database; 0 when it has none yet. */
export function sqliteSchemaVersion(db: Database.Database): number {
  const table = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'").get();
  if (table === undefined) return 0;
  const row = db.prepare("SELECT MAX(version) AS version FROM schema_version").get() as { version: number | null };
  return row.version ?? 0;
}

export function migrateSqlite(db: Database.Database, where: string, migrations: readonly Migration[] = SQLITE_MIGRATIONS): void {
  const known = latestVersion(migrations);
  const apply = db.transaction(() => {
    db.exec(SQLITE_VERSION_TABLE);
    const current = sqliteSchemaVersion(db);
    assertSchemaNotNewer(current, known, where);
    const record = db.prepare("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)");
    for (const step of migrations) {
      if (step.version <= current) continue;
      db.exec(step.sql);
      record.run(step.version, Date.now());
    }
  });
  // IMMEDIATE takes the write lock up front, so two processes migrating at once serialise.
  apply.immediate();
}

const POSTGRES_VERSION_TABLE = `CREATE TABLE IF NOT EXISTS schema_version (
  version INTEGER PRIMARY KEY,
  applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)`;

/** Arbitrary constant: the advisory lock that serialises migrate() across CA replicas. */
const MIGRATION_LOCK_KEY = 0x6d657368;
/** How long a migration waits for the lock, or runs one step, before it fails. */
const MIGRATION_STEP_TIMEOUT_MS = 10 * 60_000;

export async function postgresSchemaVersion(client: pg.ClientBase): Promise<number> {
  const exists = await client.query<{ present: boolean }>("SELECT to_regclass('schema_version') IS NOT NULL AS present");
  if (exists.rows[0]?.present !== true) return 0;
  const row = await client.query<{ version: number | null }>("SELECT MAX(version) AS version FROM schema_version");
  return row.rows[0]?.version ?? 0;
}

export async function migratePostgres(client: pg.ClientBase, where: string, migrations: readonly Migration[] = POSTGRES_MIGRATIONS): Promise<void> {
  const known = latestVersion(migrations);
  await client.query("BEGIN");
  try {
    // These two may take long (another replica migrating holds the lock; a step may rewrite a
    // large table): they get MIGRATION_STEP_TIMEOUT_MS, not the store's short query timeout.
    await client.query({ text: "SELECT pg_advisory_xact_lock($1)", values: [MIGRATION_LOCK_KEY], query_timeout: MIGRATION_STEP_TIMEOUT_MS } as pg.QueryConfig);
    await client.query(POSTGRES_VERSION_TABLE);
    const current = await postgresSchemaVersion(client);
    assertSchemaNotNewer(current, known, where);
    for (const step of migrations) {
      if (step.version <= current) continue;
      await client.query({ text: step.sql, query_timeout: MIGRATION_STEP_TIMEOUT_MS } as pg.QueryConfig);
      await client.query("INSERT INTO schema_version (version) VALUES ($1)", [step.version]);
    }
    await client.query("COMMIT");
  } catch (error) {
    await client.query("ROLLBACK").catch(() => undefined);
    throw error;
  }
}
