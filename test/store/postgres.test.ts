import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import pg from "pg";
import { isMeshwardError, MeshwardError } from "../../src/errors.ts";
import { encodePrivateKey, generateKeyPair } from "../../src/pki/keys.ts";
import { copyStore } from "../../src/store/migrate-store.ts";
import { latestVersion, POSTGRES_MIGRATIONS } from "../../src/store/migrations.ts";
import { openPostgresStore } from "../../src/store/postgres.ts";
import { openSqliteStore } from "../../src/store/sqlite.ts";
import { startPostgres, type RunningPostgres } from "../helpers/postgres.ts";
import { defineStoreContract } from "./store-contract.ts";
import { partitionableProxy } from "../helpers/partitionable-proxy.ts";

// One real PostgreSQL 15 for this file; every test gets a fresh database.
let server: RunningPostgres;
beforeAll(async () => {
  server = await startPostgres();
});
afterAll(async () => {
  await server?.stop();
});

defineStoreContract({
  name: "postgres",
  latestSchemaVersion: latestVersion(POSTGRES_MIGRATIONS),
  async createStorage() {
    const name = `t_${Math.random().toString(36).slice(2, 12)}`;
    const connectionString = await server.createDatabase(name);
    return {
      // Several pool clients per handle, so parallel calls really race inside PostgreSQL.
      open: () => openPostgresStore({ connectionString, max: 5 }),
      async forceSchemaVersion(version) {
        await server.adminQuery(
          `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now());
           INSERT INTO schema_version (version) VALUES (${Number(version)}) ON CONFLICT DO NOTHING`,
          name,
        );
      },
      async dispose() {
        await server.adminQuery(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      },
      async damagePublishedCrlOthers(bytes) {
        await server.adminQuery(`UPDATE published_crl SET others = '\\x${bytes.toString("hex")}'::bytea WHERE id = 1`, name);
      },
    };
  },
});

function closedPort(): Promise<number> {
  return new Promise((resolve) => {
    const probe = createServer().listen(0, "127.0.0.1", () => {
      const address = probe.address();
      probe.close(() => resolve(typeof address === "object" && address !== null ? address.port : 1));
    });
  });
}

describe("postgres store specifics", () => {
  it("reports an unreachable server as E_STORE_OPEN without the password", async () => {
    const port = await closedPort();
    const store = openPostgresStore({ connectionString: `postgres://meshward:s3cret-pw@127.0.0.1:${port}/ca`, connectionTimeoutMillis: 2_000 });
    try {
      const error = await store.migrate().then(() => undefined, (e: unknown) => e);
      expect(isMeshwardError(error, "E_STORE_OPEN")).toBe(true);
      const message = (error as Error).message;
      expect(message).toContain(`127.0.0.1:${port}`);
      expect(message).not.toContain("s3cret-pw");
      expect(store.target).not.toContain("s3cret-pw");
    } finally {
      await store.close();
    }
  });

  it("reports a missing database as E_STORE_OPEN", async () => {
    const store = openPostgresStore({ connectionString: server.connectionString.replace(/\/postgres$/, "/no_such_db") });
    try {
      const error = await store.listTokens().then(() => undefined, (e: unknown) => e);
      expect(isMeshwardError(error, "E_STORE_OPEN")).toBe(true);
      expect((error as Error).message).toMatch(/no_such_db/);
    } finally {
      await store.close();
    }
  });

  it("accepts a pg.PoolConfig (host/port/user/database) as well as a URL", async () => {
    const database = (await server.createDatabase()).split("/").pop()!;
    const store = openPostgresStore({ host: server.socketDir, port: server.port, user: server.superuser, database });
    try {
      await store.migrate();
      expect(await store.nextCrlNumber()).toBe(1n);
      expect(store.target).toContain(database);
    } finally {
      await store.close();
    }
  });

  it("keeps CRL numbers and tokens in PostgreSQL tables a DBA can inspect", async () => {
    const connectionString = await server.createDatabase();
    const store = openPostgresStore({ connectionString });
    try {
      await store.migrate();
      const tables = await server.adminQuery(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name",
        connectionString.split("/").pop(),
      );
      expect(tables.rows.map((r) => r.table_name)).toEqual(["ca_files", "ca_state", "issuances", "join_tokens", "published_crl", "renewals", "revocations", "schema_version", "superseded"]);
    } finally {
      await store.close();
    }
  });
});

// A SignCertificate call its client gave up on must not spend a join token's use (daprd retries
// with the same token: dapr/dapr pkg/security/sentry.go). PostgreSQL can hold the spend for long
// (a lock, a slow server); the store checks the request's signal again before COMMIT.
describe("postgres: a spend whose request was given up on while the statement ran", () => {
  it("is rolled back: the use stays and nothing is logged", async () => {
    const connectionString = await server.createDatabase();
    const store = openPostgresStore({ connectionString });
    const locker = new pg.Client({ connectionString });
    const now = new Date();
    const tokenHash = "ab".repeat(32);
    const spiffeId = "spiffe://example.org/ns/default/orders";
    try {
      await store.migrate();
      await store.createToken({ id: "t1", tokenHash, spiffeId, dnsNames: [], createdAt: now, expiresAt: new Date(now.getTime() + 3_600_000), usesAllowed: 1, usesLeft: 1 });
      await locker.connect();
      await locker.query("BEGIN");
      await locker.query("SELECT 1 FROM join_tokens WHERE token_hash = $1 FOR UPDATE", [tokenHash]);
      const call = new AbortController();
      const record = {
        serial: "0A1B2C",
        spiffeId,
        dnsNames: [],
        notBefore: now,
        notAfter: new Date(now.getTime() + 3_600_000),
        issuedAt: now,
        attestation: "join-token",
        issuerFingerprint: "AA",
        rootFingerprint: "BB",
        certificatePem: "not checked by the store",
      };
      const spending = store.recordIssuanceSpendingToken(record, tokenHash, now, { signal: call.signal }).then(
        (result) => (result.ok ? "spent" : result.reason),
        (error: unknown) => (isMeshwardError(error) ? error.code : String(error)),
      );
      // Until the spend waits for the token row's lock inside PostgreSQL.
      const database = connectionString.split("/").pop();
      for (let i = 0; i < 500; i += 1) {
        const waiting = await server.adminQuery(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = '${database}' AND wait_event_type = 'Lock'`);
        if (waiting.rows[0].n > 0) break;
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      call.abort(new MeshwardError("E_REQUEST_CANCELLED", "the client reset the stream"));
      await locker.query("COMMIT");
      expect(await spending).toBe("E_REQUEST_CANCELLED");
      expect((await store.listTokens())[0]?.usesLeft).toBe(1);
      expect(await store.listIssuances()).toHaveLength(0);
    } finally {
      await locker.end().catch(() => undefined);
      await store.close();
    }
  });
});

// Issue 17: what several CA replicas share beyond tables, on the real server.
describe("postgres: change notifications and the leader lock", () => {
  it("notifies listeners of a CA state change and of a published CRL (LISTEN/NOTIFY), after commit", async () => {
    const connectionString = await server.createDatabase();
    const writer = openPostgresStore({ connectionString });
    const listener = openPostgresStore({ connectionString });
    await writer.migrate();
    const seen: string[] = [];
    const unlisten = await listener.listen((channel) => seen.push(channel));
    try {
      expect(await writer.writeCaFiles(0, new Map([["issuer.pem", "x"]]))).toBe(1);
      expect(await writer.writeCaFiles(0, new Map([["issuer.pem", "lost the race"]]))).toBeUndefined();
      expect(await writer.publishCrl({ number: 3n, der: Buffer.from("crl"), thisUpdate: new Date() })).toBe(true);
      expect(await writer.publishCrl({ number: 2n, der: Buffer.from("old"), thisUpdate: new Date() })).toBe(false);
      for (let i = 0; i < 100 && seen.length < 2; i += 1) await new Promise((r) => setTimeout(r, 20));
      await new Promise((r) => setTimeout(r, 200));
      // One notification per committed change; none for the refused write or the fenced CRL.
      expect(seen).toEqual(["ca_state", "crl"]);
    } finally {
      await unlisten();
      await listener.close();
      await writer.close();
    }
  });

  it("gives the leader lock to one holder; when its connection dies another takes it", async () => {
    const connectionString = await server.createDatabase();
    const store = openPostgresStore({ connectionString });
    const a = store.leaderLock();
    const b = store.leaderLock();
    try {
      expect(await a.tryAcquire()).toBe(true);
      expect(await b.tryAcquire()).toBe(false);
      expect(await a.tryAcquire()).toBe(true);
      // As when the leader's process is killed: its session ends on the server.
      await server.adminQuery("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'meshward-ca-leader' AND pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted)");
      let taken = false;
      for (let i = 0; i < 50 && !taken; i += 1) {
        taken = await b.tryAcquire();
        if (!taken) await new Promise((r) => setTimeout(r, 100));
      }
      expect(taken).toBe(true);
      expect(await a.tryAcquire()).toBe(false);
      expect(a.held).toBe(false);
    } finally {
      await a.release();
      await b.release();
      await store.close();
    }
  });
});

// Several replicas share one store; a token's life is the store's, not the slowest replica's
// clock (review HA LOW-1): a replica whose clock runs behind does not spend an expired token.
describe("postgres: join-token expiry by the later of the replica's and the database's clock", () => {
  it("refuses, and does not spend, a token the database deems expired when the replica's clock is 10 minutes behind", async () => {
    const store = openPostgresStore({ connectionString: await server.createDatabase() });
    await store.migrate();
    try {
      const secret = "mwjt_skewed_replica_token";
      const tokenHash = createHash("sha256").update(secret).digest("hex");
      const real = Date.now();
      // Expired 5 minutes ago by the real (database) clock, valid for 5 more by the replica's.
      await store.createToken({ id: "skew", tokenHash, spiffeId: "spiffe://example.org/ns/a/b", dnsNames: [], createdAt: new Date(real - 65 * 60_000), expiresAt: new Date(real - 5 * 60_000), usesAllowed: 2, usesLeft: 2 });
      const behind = new Date(real - 10 * 60_000);
      const record = {
        serial: "5CE3D0000000000000000000000000A1",
        spiffeId: "spiffe://example.org/ns/a/b",
        dnsNames: [],
        notBefore: behind,
        notAfter: new Date(behind.getTime() + 3_600_000),
        issuedAt: behind,
        attestation: "join-token",
        issuerFingerprint: "AA",
        rootFingerprint: "BB",
        certificatePem: "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
      };
      expect(await store.checkToken(tokenHash, behind)).toEqual({ ok: false, reason: "expired" });
      expect(await store.recordIssuanceSpendingToken(record, tokenHash, behind)).toEqual({ ok: false, reason: "expired" });
      expect(await store.consumeToken(tokenHash, behind)).toEqual({ ok: false, reason: "expired" });
      expect(await store.getIssuance(record.serial)).toBeUndefined();
      expect((await store.listTokens())[0]?.usesLeft).toBe(2);
      // A replica clock ahead of the database is obeyed too: the later clock wins either way.
      const fresh = createHash("sha256").update("mwjt_fresh").digest("hex");
      await store.createToken({ id: "fresh", tokenHash: fresh, spiffeId: "spiffe://example.org/ns/a/b", dnsNames: [], createdAt: new Date(real), expiresAt: new Date(real + 5 * 60_000), usesAllowed: 1, usesLeft: 1 });
      expect(await store.consumeToken(fresh, new Date(real + 10 * 60_000))).toEqual({ ok: false, reason: "expired" });
      expect((await store.consumeToken(fresh, new Date(real))).ok).toBe(true);
    } finally {
      await store.close();
    }
  });
});

// A leader that is alive but silent keeps a session lock for as long as PostgreSQL keeps its
// session: hours (a partition: TCP keepalive after 2 h) or for ever (a frozen process, whose
// kernel still answers keepalives). The lock's session now has a server-side timeout: the
// server ends a silent holder's session and another replica takes the lock. Bounds below are
// generous waits for the outcome, not timing assertions.
describe("postgres: a silent leader loses the lock", () => {
  const takeWithin = async (lock: { tryAcquire(): Promise<boolean> }, ms: number) => {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      if (await lock.tryAcquire()) return true;
      await new Promise((r) => setTimeout(r, 200));
    }
    return false;
  };

  it("a holder that stops talking (frozen) loses the lock to another holder after its session timeout", async () => {
    const connectionString = await server.createDatabase();
    const store = openPostgresStore({ connectionString });
    const frozen = store.leaderLock({ sessionTimeoutMs: 2_000 });
    const other = store.leaderLock({ sessionTimeoutMs: 2_000 });
    try {
      expect(await frozen.tryAcquire()).toBe(true);
      expect(await other.tryAcquire()).toBe(false);
      // `frozen` sends nothing from here on, as a SIGSTOPped process; its TCP connection stays open.
      expect(await takeWithin(other, 30_000)).toBe(true);
      // The frozen holder, thawed, learns it lost the lock at its next check.
      expect(await frozen.tryAcquire()).toBe(false);
      expect(frozen.held).toBe(false);
    } finally {
      await frozen.release();
      await other.release();
      await store.close();
    }
  }, 60_000);

  it("a holder partitioned from the server (connection silent, not closed) stops leading and another takes the lock", async () => {
    const connectionString = await server.createDatabase();
    const url = new URL(connectionString);
    const proxy = await partitionableProxy(Number(url.port));
    url.port = String(proxy.port);
    const cutOff = openPostgresStore({ connectionString: url.toString() });
    const direct = openPostgresStore({ connectionString });
    const a = cutOff.leaderLock({ sessionTimeoutMs: 2_000 });
    const b = direct.leaderLock({ sessionTimeoutMs: 2_000 });
    try {
      expect(await a.tryAcquire()).toBe(true);
      expect(await b.tryAcquire()).toBe(false);
      proxy.partition();
      // The cut-off holder's own check times out: it stops leading.
      expect(await a.tryAcquire()).toBe(false);
      expect(a.held).toBe(false);
      // And the server ended its session: the lock is free for another replica.
      expect(await takeWithin(b, 30_000)).toBe(true);
    } finally {
      proxy.heal();
      await a.release();
      await b.release();
      await cutOff.close();
      await direct.close();
      await proxy.close();
    }
  }, 60_000);
});

// ca migrate-store from the replicas' PostgreSQL to another one: the CA state they share (what
// rotations changed after init) and the published CRL move too, not only the records.
describe("postgres: ca migrate-store carries the shared CA state and the published CRL", () => {
  const open = async (connectionString: string) => {
    const store = openPostgresStore({ connectionString });
    await store.migrate();
    return store;
  };

  it("copies the CA state (removals and version included) and the published CRL; the next CRL number is above it", async () => {
    const from = await open(await server.createDatabase());
    const to = await open(await server.createDatabase());
    try {
      // Two rotations' worth of changes: the second removed a file the first wrote.
      expect(await from.writeCaFiles(0, new Map([["issuer.pem", "ISSUER 1"], ["issuer.key", encodePrivateKey(generateKeyPair().privateKey, "test passphrase")], ["next-root.pem", "NEXT"]]))).toBe(1);
      expect(await from.writeCaFiles(1, new Map<string, string | null>([["issuer.pem", "ISSUER 2"], ["next-root.pem", null], ["ca.json", "{}"]]))).toBe(2);
      const crlNumber = await from.nextCrlNumber();
      expect(await from.publishCrl({ number: crlNumber, der: Buffer.from("signed crl"), thisUpdate: new Date(Date.UTC(2026, 0, 1)) })).toBe(true);

      const report = await copyStore(from, to);
      const [source, target] = [await from.readCaFiles(), await to.readCaFiles()];
      expect(target.version).toBe(source.version);
      expect(target.files).toEqual(source.files);
      expect(target.files.get("next-root.pem")).toBeNull();
      expect(await to.latestCrl()).toEqual(await from.latestCrl());
      expect(report).toMatchObject({ caStateFiles: 4, publishedCrl: crlNumber });
      expect(await to.nextCrlNumber()).toBeGreaterThan(crlNumber);
    } finally {
      await from.close();
      await to.close();
    }
  });

  it("copies the CRL set (the previous issuer's CRL in `others`) SQLite → PostgreSQL and back, byte for byte", async () => {
    const sqliteDir = mkdtempSync(join(tmpdir(), "meshward-migrate-set-"));
    const sqlite = openSqliteStore(join(sqliteDir, "ca.db"));
    const back = openSqliteStore(join(sqliteDir, "back.db"));
    await sqlite.migrate();
    await back.migrate();
    const pgStore = await open(await server.createDatabase());
    // DER SEQUENCEs standing for the current issuer's CRL and the previous issuer's (long length form).
    const sequence = (fill: number, size: number) => Buffer.concat([Buffer.from([0x30, 0x82, size >> 8, size & 0xff]), Buffer.alloc(size, fill)]);
    try {
      const number = await sqlite.nextCrlNumber();
      const set = { number, der: sequence(1, 400), thisUpdate: new Date(Date.UTC(2026, 0, 1)), others: [sequence(2, 300)] };
      expect(await sqlite.publishCrl(set)).toBe(true);
      const forth = await copyStore(sqlite, pgStore);
      expect(forth.publishedCrl).toBe(number);
      const onPostgres = (await pgStore.latestCrl())!;
      expect(onPostgres.der.equals(set.der)).toBe(true);
      expect(onPostgres.others?.map((b) => b.toString("hex"))).toEqual(set.others.map((b) => b.toString("hex")));
      const returned = await copyStore(pgStore, back);
      expect(returned.publishedCrl).toBe(number);
      const onSqlite = (await back.latestCrl())!;
      expect(onSqlite.number).toBe(number);
      expect(onSqlite.der.equals(set.der)).toBe(true);
      expect(onSqlite.others?.map((b) => b.toString("hex"))).toEqual(set.others.map((b) => b.toString("hex")));
      expect(await back.nextCrlNumber()).toBeGreaterThan(number);
    } finally {
      await sqlite.close();
      await back.close();
      await pgStore.close();
      rmSync(sqliteDir, { recursive: true, force: true });
    }
  });

  it("refuses a target that holds CA state or a published CRL, and a SQLite target for replicated state", async () => {
    const from = await open(await server.createDatabase());
    const withState = await open(await server.createDatabase());
    const withCrl = await open(await server.createDatabase());
    const sqliteDir = mkdtempSync(join(tmpdir(), "meshward-migrate-pg-"));
    const sqlite = openSqliteStore(join(sqliteDir, "ca.db"));
    await sqlite.migrate();
    try {
      await from.writeCaFiles(0, new Map([["issuer.pem", "ISSUER 2"]]));
      await withState.writeCaFiles(0, new Map([["issuer.pem", "OTHER"]]));
      await withCrl.publishCrl({ number: 1n, der: Buffer.from("other crl"), thisUpdate: new Date() });
      await expect(copyStore(from, withState)).rejects.toMatchObject({ code: "E_MIGRATE_TARGET_NOT_EMPTY" });
      await expect(copyStore(from, withCrl)).rejects.toMatchObject({ code: "E_MIGRATE_TARGET_NOT_EMPTY" });
      expect((await withState.readCaFiles()).files.get("issuer.pem")).toBe("OTHER");
      await expect(copyStore(from, sqlite)).rejects.toMatchObject({ code: "E_MIGRATE_TARGET_NOT_SHARED" });
      expect((await sqlite.readCaFiles()).version).toBe(0);
    } finally {
      await from.close();
      await withState.close();
      await withCrl.close();
      await sqlite.close();
      rmSync(sqliteDir, { recursive: true, force: true });
    }
  });
});
