import { X509Certificate } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CrlPublisher } from "../../src/ca/crl-publisher.ts";
import { createIssuerCertificate, type Signer } from "../../src/pki/certificate.ts";
import { parseCrl } from "../../src/pki/crl.ts";
import { generateKeyPair } from "../../src/pki/keys.ts";
import { openPostgresStore } from "../../src/store/postgres.ts";
import { openSqliteStore } from "../../src/store/sqlite.ts";
import type { Store } from "../../src/store/store.ts";
import { startPostgres, type RunningPostgres } from "../helpers/postgres.ts";
import { createTestPki, type TestPki } from "../helpers/test-pki.ts";

/**
 * The store as CrlPublisher sees it, with the first CRL number held back until release() (a
 * refresh slow to get its number: pool wait, GC, network), and a count of the calls made.
 */
function holdFirstNumber(store: Store) {
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  let requested!: () => void;
  const firstRequested = new Promise<void>((resolve) => (requested = resolve));
  const calls = { nextCrlNumber: 0, listRevocations: 0 };
  const numbers: bigint[] = [];
  let failFirst = false;
  const held = new Proxy(store, {
    get(target, prop, receiver) {
      if (prop === "nextCrlNumber") {
        return async () => {
          if (++calls.nextCrlNumber === 1) {
            requested();
            await gate;
            if (failFirst) throw new Error("the store went away");
          }
          const number = await target.nextCrlNumber();
          numbers.push(number);
          return number;
        };
      }
      if (prop === "listRevocations") {
        return () => {
          calls.listRevocations += 1;
          return target.listRevocations();
        };
      }
      const value: unknown = Reflect.get(target, prop, receiver);
      return typeof value === "function" ? value.bind(target) : value;
    },
  }) as Store;
  return { store: held, firstRequested, release, calls, numbers, failFirstNumber: () => (failFirst = true) };
}

const revoke = (store: Store, serial: string) => store.revoke({ serial, revokedAt: new Date(), reason: "keyCompromise" });

/**
 * Refresh A reads the store and waits for its CRL number; meanwhile a revocation commits and
 * refresh B is called (the NOTIFY or timer). Overlapping refreshes let B sign and publish first
 * and A publish a higher number without B's revocation; serialized ones serve B after A.
 * Returns once both settled.
 */
async function raceTwoRefreshes(store: Store, publisher: (store: Store) => CrlPublisher) {
  await revoke(store, "0A01");
  const held = holdFirstNumber(store);
  const crl = publisher(held.store);
  const a = crl.refresh();
  await held.firstRequested;
  await revoke(store, "0B02"); // `cert revoke` commits
  const readsBefore = held.calls.listRevocations;
  let bSettled = false;
  const b = crl.refresh().finally(() => (bSettled = true));
  // An overlapping refresh reads the store at once: let it run to its end while A still waits
  // (this is the race, made deterministic). A serialized one waits for A.
  if (held.calls.listRevocations > readsBefore) await b;
  else {
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(bSettled).toBe(false); // served by a run after A's, not by A's
  }
  held.release();
  await Promise.all([a, b]);
  return { crl, numbers: held.numbers };
}

describe("CrlPublisher: one refresh at a time, the number before the revocations", () => {
  let pki: TestPki;
  let pg: RunningPostgres | undefined;
  beforeAll(async () => {
    pki = await createTestPki({ trustDomain: "crl.test" });
  });
  afterAll(async () => {
    await pg?.stop();
  });

  it("several replicas (PostgreSQL, leader): the published CRL with the highest number holds every revocation", async () => {
    pg = await startPostgres();
    const store = openPostgresStore({ connectionString: await pg.createDatabase("crl_race") });
    try {
      await store.migrate();
      const { numbers } = await raceTwoRefreshes(store, (s) => new CrlPublisher(s, () => pki.issuer, () => new Date(), { isLeader: () => true }));
      const published = (await store.latestCrl())!;
      expect(published.number).toBe(numbers.reduce((max, n) => (n > max ? n : max), 0n));
      const parsed = parseCrl(published.der, pki.issuer.certificate);
      expect(parsed.crlNumber).toBe(published.number);
      expect([...parsed.revokedSerials].sort()).toEqual(["0A01", "0B02"]);
    } finally {
      await store.close();
    }
  }, 60_000);

  it("one replica (SQLite): the CRL it serves, the highest numbered, holds every revocation", async () => {
    const store = openSqliteStore(":memory:");
    try {
      await store.migrate();
      const { crl, numbers } = await raceTwoRefreshes(store, (s) => new CrlPublisher(s, () => pki.issuer, () => new Date()));
      const parsed = parseCrl(crl.current!.der, pki.issuer.certificate);
      expect(parsed.crlNumber).toBe(numbers.reduce((max, n) => (n > max ? n : max), 0n));
      expect([...parsed.revokedSerials].sort()).toEqual(["0A01", "0B02"]);
      expect([...crl.current!.revokedSerials].sort()).toEqual(["0A01", "0B02"]);
    } finally {
      await store.close();
    }
  });

  it("calls made during a refresh share one more run; a failed run does not swallow a later call", async () => {
    const store = openSqliteStore(":memory:");
    try {
      await store.migrate();
      await revoke(store, "0A01");
      const held = holdFirstNumber(store);
      held.failFirstNumber();
      const crl = new CrlPublisher(held.store, () => pki.issuer, () => new Date());
      const first = crl.refresh();
      await held.firstRequested;
      await revoke(store, "0B02");
      const later = [crl.refresh(), crl.refresh(), crl.refresh()];
      held.release();
      // The first run failed; the calls that came meanwhile got one run of their own, which signed.
      expect(await Promise.all([first, ...later])).toEqual([true, true, true, true]);
      expect(held.calls.nextCrlNumber).toBe(2);
      expect([...crl.current!.revokedSerials].sort()).toEqual(["0A01", "0B02"]);
      // Alone, a failure is the caller's.
      const failing = holdFirstNumber(store);
      failing.failFirstNumber();
      failing.release();
      const alone = new CrlPublisher(failing.store, () => pki.issuer, () => new Date());
      await expect(alone.refresh()).rejects.toThrow(/the store went away/);
      expect(await alone.refresh()).toBe(true);
    } finally {
      await store.close();
    }
  });
});

// Found by review (rev2, MEDIUM-1): a store restored from a backup counts CRL numbers from where
// the backup left off; workloads keep the highest-numbered CRL set they have seen and ignore every
// lower one, so after the next issuer rotation they refused every renewal until the counter caught
// up (hours to days). The number is now never below the signing time in milliseconds.
describe("CrlPublisher: CRL numbers keep rising across a store restored from a backup", () => {
  it("a CRL signed after the counter went back is still numbered above every one signed before", async () => {
    const pki = await createTestPki({ trustDomain: "crl.test" });
    const dir = mkdtempSync(join(tmpdir(), "meshward-crl-number-"));
    const path = join(dir, "ca.db");
    const store = openSqliteStore(path);
    try {
      await store.migrate();
      let now = new Date("2026-12-07T12:00:00Z");
      const crl = new CrlPublisher(store, () => pki.issuer, () => now);
      await crl.refresh();
      const before = parseCrl(crl.current!.der, pki.issuer.certificate).crlNumber!;
      expect(before).toBeGreaterThanOrEqual(BigInt(now.getTime()));
      // The restore: the counter is back where an old backup had it.
      const restore = new Database(path);
      restore.prepare("UPDATE crl_number SET value = 1 WHERE id = 1").run();
      restore.close();
      now = new Date(now.getTime() + 60_000);
      await revoke(store, "0C03"); // a revocation: the CRL is signed again
      await crl.refresh();
      const after = parseCrl(crl.current!.der, pki.issuer.certificate).crlNumber!;
      expect(after).toBeGreaterThan(before);
    } finally {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// Every live issuer is in the set: the previous issuer (issuer.prev.*) gets its CRL even before it
// has signed anything. After a rotation the CA holds the outgoing issuer (server.ts) and it signs
// the requests that arrive meanwhile; a set without its CRL made workloads refuse those
// certificates (renewal-issuer-retired) until the next CRL refresh.
describe("CrlPublisher: the previous issuer's CRL", () => {
  it("is in the set while the CA holds the previous issuer, though it signed nothing yet; not once it expired", async () => {
    const pki = await createTestPki({ trustDomain: "crl-prev.test" });
    const keys = generateKeyPair();
    const now = Date.now();
    const issued = await createIssuerCertificate({ trustDomain: "crl-prev.test", publicKey: keys.publicKey, signer: pki.root, notBefore: new Date(now - 60_000), notAfter: new Date(now + 3_600_000) });
    const previous: Signer = { certificate: new X509Certificate(issued.der), der: issued.der, privateKey: keys.privateKey };
    const store = openSqliteStore(":memory:");
    try {
      await store.migrate();
      await revoke(store, "0C03");
      let at = new Date(now);
      const crl = new CrlPublisher(store, () => pki.issuer, () => at, undefined, () => previous);
      await crl.refresh();
      expect(await store.latestNotAfterByIssuer(previous.certificate.fingerprint256)).toBeUndefined();
      expect(parseCrl(crl.current!.der, pki.issuer.certificate).revokedSerials.has("0C03")).toBe(true);
      const others = crl.current!.others.map((der) => parseCrl(der, previous.certificate));
      expect(others).toHaveLength(1);
      expect([...others[0]!.revokedSerials]).toEqual(["0C03"]); // every CRL of the set lists every revocation
      expect(others[0]!.crlNumber).toBe(parseCrl(crl.current!.der).crlNumber);
      expect(crl.publishes(previous.certificate)).toBe(true);
      at = new Date(now + 2 * 3_600_000); // the previous issuer has expired
      await crl.refresh();
      expect(crl.current!.others).toHaveLength(0);
    } finally {
      await store.close();
    }
  });
});

// The CA refreshes its CRL every crlRefresh (1 s by default): with nothing new, that was a read of
// every revocation (joined with the issuance log) each second, on SQLite and on PostgreSQL. The
// revocations only grow, so a count tells whether the CRL in force still lists them all.
describe("CrlPublisher: the revocations are read only when they changed", () => {
  for (const mode of ["one replica", "the leader of several"] as const) {
    it(`${mode}: a refresh with nothing new reads no revocation; the next one after a revocation signs it`, async () => {
      const pki = await createTestPki({ trustDomain: "crl-reads.test" });
      const store = openSqliteStore(":memory:");
      try {
        await store.migrate();
        await revoke(store, "0A01");
        let reads = 0;
        const counted = new Proxy(store, {
          get(target, prop, receiver) {
            if (prop === "listRevocations") return () => ((reads += 1), target.listRevocations());
            const value: unknown = Reflect.get(target, prop, receiver);
            return typeof value === "function" ? value.bind(target) : value;
          },
        }) as Store;
        const crl = new CrlPublisher(counted, () => pki.issuer, () => new Date(), mode === "one replica" ? undefined : { isLeader: () => true });
        expect(await crl.refresh()).toBe(true);
        const signedWith = reads;
        for (let i = 0; i < 5; i++) expect(await crl.refresh()).toBe(false);
        expect(reads).toBe(signedWith);

        await revoke(store, "0B02");
        expect(await crl.refresh()).toBe(true);
        expect([...crl.current!.revokedSerials].sort()).toEqual(["0A01", "0B02"]);
        expect([...parseCrl(crl.current!.der, pki.issuer.certificate).revokedSerials].sort()).toEqual(["0A01", "0B02"]);
        expect(reads).toBeGreaterThan(signedWith);
        const after = reads;
        expect(await crl.refresh()).toBe(false);
        expect(reads).toBe(after);
      } finally {
        await store.close();
      }
    });
  }
});
