import { chmodSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterAll, describe, expect, it } from "vitest";
import { isMeshwardError } from "../../src/errors.ts";
import { latestVersion, migrateSqlite, SQLITE_MIGRATIONS } from "../../src/store/migrations.ts";
import { copyStore } from "../../src/store/migrate-store.ts";
import { openSqliteStore } from "../../src/store/sqlite.ts";
import { defineStoreContract } from "./store-contract.ts";

const root = mkdtempSync(join(tmpdir(), "meshward-sqlite-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let counter = 0;

// Both ways the CA opens SQLite: on the calling thread, and with the issuance log written by a
// worker thread (group commit), which is what `meshward ca serve` uses.
for (const writerThread of [false, true]) {
  defineStoreContract({
    name: writerThread ? "sqlite (writer thread)" : "sqlite",
    latestSchemaVersion: latestVersion(SQLITE_MIGRATIONS),
    async createStorage() {
      counter += 1;
      const dir = join(root, `case-${counter}`);
      mkdirSync(dir);
      const path = join(dir, "ca.db");
      return {
        open: () => openSqliteStore(path, { writerThread }),
        async forceSchemaVersion(version) {
          const db = new Database(path);
          try {
            db.prepare("INSERT OR REPLACE INTO schema_version (version, applied_at) VALUES (?, ?)").run(version, Date.now());
          } finally {
            db.close();
          }
        },
        async dispose() {
          rmSync(dir, { recursive: true, force: true });
        },
        async damagePublishedCrlOthers(bytes) {
          const db = new Database(path);
          try {
            db.prepare("UPDATE published_crl SET others = ? WHERE id = 1").run(bytes);
          } finally {
            db.close();
          }
        },
      };
    },
  });
}

function caught(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  throw new Error("expected a throw");
}

describe("sqlite store specifics", () => {
  it("creates the database and its WAL files 0600", async () => {
    const previous = process.umask(0o022);
    try {
      const path = join(root, "mode.db");
      const store = openSqliteStore(path);
      await store.migrate();
      await store.nextCrlNumber();
      for (const file of [path, `${path}-wal`, `${path}-shm`]) expect(statSync(file).mode & 0o777, file).toBe(0o600);
      await store.close();
    } finally {
      process.umask(previous);
    }
  });

  it("tightens an existing database file left readable by others", async () => {
    const path = join(root, "loose.db");
    writeFileSync(path, "");
    chmodSync(path, 0o644);
    const store = openSqliteStore(path);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    await store.close();
  });

  it("runs in WAL mode with synchronous=FULL, foreign keys, a busy timeout and temp_store=MEMORY", async () => {
    const store = openSqliteStore(join(root, "settings.db"));
    expect(store.settings()).toEqual({ journalMode: "wal", synchronous: "FULL", foreignKeys: true, busyTimeoutMs: 5000, tempStore: "MEMORY" });
    await store.close();
  });

  it("keeps temporary tables and sorts in memory: a big sort works where every temp directory is read-only (readOnlyRootFilesystem)", () => {
    // A mount namespace (unshare -rm) where /tmp, /var/tmp and the directory named by
    // SQLITE_TMPDIR and TMPDIR (also the child's working directory) are read-only, and only the
    // store's own directory is writable: what the CA's pod has. Without temp_store=MEMORY SQLite
    // fails such a sort with SQLITE_IOERR_GETTEMPPATH.
    const base = mkdtempSync(join(root, "tempstore-"));
    const storeDir = join(base, "store");
    const readOnly = join(base, "read-only");
    mkdirSync(storeDir);
    mkdirSync(readOnly);
    const script = [
      "set -e",
      'for d in /tmp /var/tmp "$RO"; do mount --bind "$d" "$d"; mount -o remount,bind,ro "$d"; done',
      'mount --bind "$STORE" "$STORE"; mount -o remount,bind,rw "$STORE"',
      'if touch "$RO/probe" 2>/dev/null || touch /tmp/meshward-probe 2>/dev/null; then echo "temp directories still writable" >&2; exit 2; fi',
      'exec "$NODE" --import tsx "$CHILD" "$STORE" "$RO"',
    ].join("\n");
    const child = join(import.meta.dirname, "fixtures/temp-store-child.ts");
    const result = spawnSync("unshare", ["-rm", "sh", "-c", script], {
      encoding: "utf8",
      timeout: 120_000,
      // tsx caches in TMPDIR, read-only here: it compiles in memory instead.
      env: { ...process.env, TSX_DISABLE_CACHE: "1", SQLITE_TMPDIR: readOnly, TMPDIR: readOnly, RO: readOnly, STORE: storeDir, NODE: process.execPath, CHILD: child },
    });
    expect(result.status, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout.trim().split("\n").at(-1) ?? "{}"), result.stderr).toEqual({ listed: 1200, tempStore: "MEMORY" });
  });

  it("refuses a missing parent directory with E_STORE_OPEN naming it", () => {
    const missing = join(root, "no-such-dir");
    const error = caught(() => openSqliteStore(join(missing, "ca.db")));
    expect(isMeshwardError(error, "E_STORE_OPEN")).toBe(true);
    expect((error as Error).message).toContain(`${missing} does not exist`);
  });

  it("refuses a file that is not a SQLite database with E_STORE_OPEN", () => {
    const path = join(root, "garbage.db");
    writeFileSync(path, "this is not a database, it is a text file that is long enough to have a header".repeat(20), { mode: 0o600 });
    const error = caught(() => openSqliteStore(path));
    expect(isMeshwardError(error, "E_STORE_OPEN")).toBe(true);
    expect((error as Error).message).toMatch(/not a usable SQLite database/);
  });

  it("refuses a newer schema already when opening", async () => {
    const path = join(root, "newer.db");
    const store = openSqliteStore(path);
    await store.migrate();
    await store.close();
    const db = new Database(path);
    db.prepare("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)").run(latestVersion(SQLITE_MIGRATIONS) + 1, Date.now());
    db.close();
    const error = caught(() => openSqliteStore(path));
    expect(isMeshwardError(error, "E_STORE_SCHEMA_NEWER")).toBe(true);
  });

  it("back-fills the renewal links of a store written before schema version 5, and revocation follows them", async () => {
    const path = join(root, "v4.db");
    const db = new Database(path);
    migrateSqlite(db, path, SQLITE_MIGRATIONS.filter((m) => m.version <= 4));
    db.prepare("INSERT INTO superseded (serial, superseded_by) VALUES (?, ?)").run("0A", "0B");
    db.close();
    const store = openSqliteStore(path);
    await store.migrate();
    expect(await store.listRenewals()).toEqual([{ serial: "0B", renews: "0A" }]);
    expect(await store.revokeLineage({ serial: "0a", revokedAt: new Date(), reason: "keyCompromise" })).toEqual(["0A", "0B"]);
    await store.close();
  });

  it("ca migrate-store copies every renewal, forks included, so revocation still follows them in the new store", async () => {
    const from = openSqliteStore(join(root, "copy-from.db"));
    const to = openSqliteStore(join(root, "copy-to.db"));
    await from.migrate();
    await to.migrate();
    const record = (serial: string, supersedes?: string, at = 0) => ({
      serial,
      spiffeId: "spiffe://example.org/ns/default/web",
      dnsNames: [],
      notBefore: new Date(Date.UTC(2026, 0, 1)),
      notAfter: new Date(Date.UTC(2026, 0, 2)),
      issuedAt: new Date(Date.UTC(2026, 0, 1, 0, 0, at)),
      attestation: supersedes === undefined ? "join-token" : "svid",
      issuerFingerprint: "AA",
      rootFingerprint: "BB",
      certificatePem: "PEM",
      ...(supersedes !== undefined ? { supersedes } : {}),
    });
    await from.recordIssuance(record("0A", undefined, 0));
    await from.recordIssuance(record("0B", "0A", 1));
    await from.recordIssuance(record("0C", "0A", 2)); // a second renewal of 0A: a fork
    await from.recordIssuance(record("0D", "0C", 3));
    await copyStore(from, to);
    expect(await to.listRenewals()).toEqual(await from.listRenewals());
    expect(await to.listRenewals()).toHaveLength(3);
    expect(await to.revokeLineage({ serial: "0A", revokedAt: new Date(), reason: "keyCompromise" })).toEqual(["0A", "0B", "0C", "0D"]);
    await from.close();
    await to.close();
  });

  it("elects one leader among the stores of one file (ca.db-leader, 0600), handed over when it releases, given up when the file is replaced", async () => {
    const dir = join(root, "leader");
    mkdirSync(dir);
    const stores = [openSqliteStore(join(dir, "ca.db")), openSqliteStore(join(dir, "ca.db"))];
    const [a, b] = stores.map((store) => store.leaderLock());
    try {
      expect(await a!.tryAcquire()).toBe(true);
      expect(await b!.tryAcquire()).toBe(false);
      expect(await a!.tryAcquire()).toBe(true);
      expect(statSync(join(dir, "ca.db-leader")).mode & 0o777).toBe(0o600);
      await a!.release();
      expect(await b!.tryAcquire()).toBe(true);
      expect(b!.held).toBe(true);
      // Someone removed the lock file: another process could lock a new one, so the holder gives up.
      rmSync(join(dir, "ca.db-leader"));
      expect(await b!.tryAcquire()).toBe(false);
      expect(b!.held).toBe(false);
      expect(await b!.tryAcquire()).toBe(true);
    } finally {
      await a!.release();
      await b!.release();
      for (const store of stores) await store.close();
    }
  });

  it("with the writer thread, every write waits for another process's write lock without blocking this thread, and completes once it goes", async () => {
    const dir = join(root, "locked");
    mkdirSync(dir);
    const path = join(dir, "ca.db");
    const store = openSqliteStore(path, { writerThread: true });
    await store.migrate();
    const at = new Date();
    const hash = (n: number) => `${n}`.padStart(64, "0");
    const tokenRecord = (n: number) => ({ id: `t${n}`, tokenHash: hash(n), spiffeId: "spiffe://lock.test/ns/a/b", dnsNames: [], createdAt: at, expiresAt: new Date(at.getTime() + 3_600_000), usesAllowed: 2, usesLeft: 2 });
    const leaf = (serial: string) => ({ serial, spiffeId: "spiffe://lock.test/ns/a/b", dnsNames: [], notBefore: at, notAfter: new Date(at.getTime() + 3_600_000), issuedAt: at, attestation: "join-token", issuerFingerprint: "AA", rootFingerprint: "BB", certificatePem: "pem" });
    await store.createToken(tokenRecord(1));
    await store.recordIssuance(leaf("0A"));
    // Another process (an admin command, another CA process) holds the write lock.
    const holder = new Database(path);
    holder.exec("BEGIN IMMEDIATE");
    let writes: Promise<unknown>[] = [];
    try {
      let settled = 0;
      writes = [
        store.recordIssuanceSpendingToken(leaf("0B"), hash(1), at),
        store.consumeToken(hash(1), at),
        store.createToken(tokenRecord(2)),
        store.revoke({ serial: "0A", revokedAt: at, reason: "superseded" }),
        store.revokeLineage({ serial: "0B", revokedAt: at, reason: "keyCompromise" }),
        store.nextCrlNumber(),
        store.raiseCrlNumber(10n),
        store.publishCrl({ number: 11n, der: Buffer.from([1, 2, 3]), thisUpdate: at }),
        store.writeCaFiles(0, new Map([["bundle.pem", "x"]])),
      ].map((write) => write.finally(() => (settled += 1)));
      for (const write of writes) write.catch(() => undefined);
      // The thread stays free: timers fire, reads answer, and no write has been made or refused.
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect((await store.getIssuance("0A"))?.serial).toBe("0A");
      expect(settled).toBe(0);
    } finally {
      holder.exec("COMMIT");
      holder.close();
    }
    const [spent, consumed, , revoked, lineage, crlNumber, , published, version] = await Promise.all(writes);
    expect(spent).toMatchObject({ ok: true });
    expect(consumed).toMatchObject({ ok: true });
    expect(revoked).toBe(true);
    expect(lineage).toEqual(["0B"]);
    expect(crlNumber).toBe(1n);
    expect(published).toBe(true);
    expect(version).toBe(1);
    expect((await store.latestCrl())?.der).toEqual(Buffer.from([1, 2, 3]));
    expect(await store.listTokens()).toHaveLength(2);
    await store.close();
  }, 60_000);

  it("works in memory (sqlite::memory:) for throwaway CAs", async () => {
    const store = openSqliteStore(":memory:");
    await store.migrate();
    expect(await store.nextCrlNumber()).toBe(1n);
    await store.close();
  });
});
