import { createHash, randomBytes } from "node:crypto";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { isMeshwardError, MeshwardError } from "../../src/errors.ts";
import type { IssuanceRecord, JoinTokenRecord, Store } from "../../src/store/store.ts";

/**
 * One behavioural suite for every Store implementation. A backend supplies fresh, empty
 * storage per test; `open()` gives another handle on that same storage (a restarted CA, or a
 * second replica), so reopen and cross-handle races are tested the same way everywhere.
 */
export interface StorageUnderTest {
  open(): Store;
  /** Records `version` in schema_version behind the store's back (a newer meshward's upgrade). */
  forceSchemaVersion(version: number): Promise<void>;
  /** Removes the storage (the stores opened on it are already closed). */
  dispose(): Promise<void>;
  /** Overwrites published_crl.others behind the store's back (damage: a bad restore, a hand edit). */
  damagePublishedCrlOthers(bytes: Buffer): Promise<void>;
}

export interface StoreBackend {
  readonly name: string;
  readonly latestSchemaVersion: number;
  createStorage(): Promise<StorageUnderTest>;
}

const HOUR = 3_600_000;
// In the future: PostgreSQL judges token expiry by the later of the caller's clock and its own
// (several replicas share it), so the fixed "now" the tests pass must be later than the server's.
const T0 = Date.UTC(new Date().getUTCFullYear() + 1, 0, 1, 12, 0, 0);
const ROOT_A = fingerprint("root-a");
const ROOT_B = fingerprint("root-b");

function fingerprint(seed: string): string {
  return createHash("sha256").update(seed).digest("hex").toUpperCase().match(/../g)!.join(":");
}

let serialCounter = 0;
function nextSerial(): string {
  serialCounter += 1;
  return `${randomBytes(8).toString("hex").toUpperCase()}${serialCounter.toString(16).toUpperCase().padStart(4, "0")}`;
}

function issuance(overrides: Partial<IssuanceRecord> = {}): IssuanceRecord {
  const serial = overrides.serial ?? nextSerial();
  return {
    serial,
    spiffeId: "spiffe://example.org/ns/default/sa/web",
    dnsNames: [],
    notBefore: new Date(T0 - 15 * 60_000),
    notAfter: new Date(T0 + 24 * HOUR),
    issuedAt: new Date(T0),
    attestation: "join-token",
    issuerFingerprint: fingerprint("issuer-1"),
    rootFingerprint: ROOT_A,
    certificatePem: `-----BEGIN CERTIFICATE-----\n${Buffer.from(serial).toString("base64")}\n-----END CERTIFICATE-----\n`,
    ...overrides,
  };
}

function token(overrides: Partial<JoinTokenRecord> = {}): { record: JoinTokenRecord; secret: string } {
  const secret = `mwjt_${randomBytes(16).toString("hex")}`;
  const uses = overrides.usesAllowed ?? 1;
  return {
    secret,
    record: {
      id: randomBytes(6).toString("hex"),
      tokenHash: createHash("sha256").update(secret).digest("hex"),
      spiffeId: "spiffe://example.org/ns/data/sa/postgres",
      dnsNames: ["db.internal"],
      createdAt: new Date(T0),
      expiresAt: new Date(T0 + HOUR),
      usesAllowed: uses,
      usesLeft: uses,
      ...overrides,
    },
  };
}

async function expectCode(promise: Promise<unknown>, code: string): Promise<Error> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!isMeshwardError(error)) throw new Error(`expected a MeshwardError ${code}, got ${error === undefined ? "success" : String(error)}`);
  expect(error.code).toBe(code);
  return error;
}

export function defineStoreContract(backend: StoreBackend): void {
  describe(`Store contract: ${backend.name}`, () => {
    let storage: StorageUnderTest;
    let opened: Store[];
    let store: Store;

    /** A handle that is closed after the test; `migrated` runs migrate() first. */
    async function open(migrated = true): Promise<Store> {
      const handle = storage.open();
      opened.push(handle);
      if (migrated) await handle.migrate();
      return handle;
    }

    beforeEach(async () => {
      storage = await backend.createStorage();
      opened = [];
      store = await open();
    });

    afterEach(async () => {
      for (const handle of opened) await handle.close();
      await storage.dispose();
    });

    describe("schema", () => {
      it("migrate() is idempotent and keeps the data", async () => {
        const record = issuance();
        await store.recordIssuance(record);
        await store.migrate();
        await store.migrate();
        const other = await open();
        await other.migrate();
        expect((await other.getIssuance(record.serial))?.serial).toBe(record.serial);
      });

      it("migrates from several handles at once (replicas starting together)", async () => {
        await store.close();
        await storage.dispose();
        storage = await backend.createStorage();
        const handles = await Promise.all([open(false), open(false), open(false)]);
        await Promise.all(handles.map((h) => h.migrate()));
        const first = handles[0]!;
        await first.recordIssuance(issuance());
        expect(await first.listIssuances()).toHaveLength(1);
      });

      it("refuses a schema newer than it knows, with E_STORE_SCHEMA_NEWER", async () => {
        await storage.forceSchemaVersion(backend.latestSchemaVersion + 1);
        const error = await expectCode(
          (async () => {
            const handle = await open(false);
            await handle.migrate();
          })(),
          "E_STORE_SCHEMA_NEWER",
        );
        expect(error.message).toMatch(/newer meshward/);
        // Also without migrate(): the first operation refuses.
        await expectCode(
          (async () => {
            const handle = await open(false);
            return handle.getIssuance("AB");
          })(),
          "E_STORE_SCHEMA_NEWER",
        );
      });

      it("accepts its own latest version (the refusal is about newer only)", async () => {
        await storage.forceSchemaVersion(backend.latestSchemaVersion);
        const again = await open();
        expect(await again.listIssuances()).toEqual([]);
      });

      it("tells the caller to migrate when used on an empty database", async () => {
        await store.close();
        await storage.dispose();
        storage = await backend.createStorage();
        const fresh = await open(false);
        const error = await expectCode(fresh.getIssuance("AB"), "E_STORE_READ");
        expect(error.message).toMatch(/migrate\(\)/);
      });

      it("refuses use after close with E_STORE_CLOSED", async () => {
        await store.close();
        await expectCode(store.listIssuances(), "E_STORE_CLOSED");
        await store.close(); // idempotent
      });
    });

    describe("issuance log", () => {
      it("records and returns every field", async () => {
        const record = issuance({ dnsNames: ["web.internal", "web"], attestation: "jwks" });
        await store.recordIssuance(record);
        const got = await store.getIssuance(record.serial);
        expect(got).toEqual(record);
        expect(got?.notBefore).toBeInstanceOf(Date);
      });

      it("finds a serial given in lower case and returns undefined for an unknown one", async () => {
        const record = issuance();
        await store.recordIssuance(record);
        expect((await store.getIssuance(record.serial.toLowerCase()))?.serial).toBe(record.serial);
        expect(await store.getIssuance("DEADBEEF")).toBeUndefined();
      });

      it("refuses a duplicate serial with E_STORE_CONFLICT and keeps the first record", async () => {
        const first = issuance();
        await store.recordIssuance(first);
        const error = await expectCode(store.recordIssuance({ ...first, spiffeId: "spiffe://example.org/other" }), "E_STORE_CONFLICT");
        expect(error.message).toContain(first.serial);
        await expectCode(store.recordIssuance({ ...first, serial: first.serial.toLowerCase() }), "E_STORE_CONFLICT");
        expect((await store.getIssuance(first.serial))?.spiffeId).toBe(first.spiffeId);
      });

      it("refuses a serial that is not hexadecimal", async () => {
        await expectCode(store.recordIssuance(issuance({ serial: "not-hex" })), "E_STORE_WRITE");
      });

      it("lists newest first with spiffeId, validAt, rootFingerprint filters and a limit", async () => {
        const web = "spiffe://example.org/ns/default/sa/web";
        const api = "spiffe://example.org/ns/default/sa/api";
        const old = issuance({ spiffeId: web, issuedAt: new Date(T0 - 48 * HOUR), notBefore: new Date(T0 - 48 * HOUR), notAfter: new Date(T0 - 24 * HOUR) });
        const current = issuance({ spiffeId: web, issuedAt: new Date(T0), notBefore: new Date(T0), notAfter: new Date(T0 + 24 * HOUR) });
        const apiB = issuance({ spiffeId: api, issuedAt: new Date(T0 + 1_000), rootFingerprint: ROOT_B });
        const future = issuance({ spiffeId: api, issuedAt: new Date(T0 + 2_000), notBefore: new Date(T0 + HOUR), notAfter: new Date(T0 + 2 * HOUR) });
        // Inserted out of order: the order comes from issuedAt, not insertion.
        for (const r of [current, future, old, apiB]) await store.recordIssuance(r);

        const serials = (list: IssuanceRecord[]): string[] => list.map((r) => r.serial);
        expect(serials(await store.listIssuances())).toEqual([future.serial, apiB.serial, current.serial, old.serial]);
        expect(serials(await store.listIssuances({ spiffeId: web }))).toEqual([current.serial, old.serial]);
        expect(serials(await store.listIssuances({ validAt: new Date(T0) }))).toEqual([apiB.serial, current.serial]);
        expect(serials(await store.listIssuances({ rootFingerprint: ROOT_B }))).toEqual([apiB.serial]);
        expect(serials(await store.listIssuances({ spiffeId: api, validAt: new Date(T0 + HOUR) }))).toEqual([future.serial, apiB.serial]);
        expect(serials(await store.listIssuances({ limit: 2 }))).toEqual([future.serial, apiB.serial]);
        expect(serials(await store.listIssuances({ spiffeId: web, limit: 1 }))).toEqual([current.serial]);
        expect(await store.listIssuances({ limit: 0 })).toEqual([]);
        expect(await store.listIssuances({ spiffeId: "spiffe://example.org/nobody" })).toEqual([]);
        await expectCode(store.listIssuances({ limit: -1 }), "E_STORE_READ");
      });

      it("treats validity as notBefore <= at < notAfter", async () => {
        const r = issuance({ notBefore: new Date(T0), notAfter: new Date(T0 + HOUR) });
        await store.recordIssuance(r);
        expect(await store.listIssuances({ validAt: new Date(T0 - 1) })).toHaveLength(0);
        expect(await store.listIssuances({ validAt: new Date(T0) })).toHaveLength(1);
        expect(await store.listIssuances({ validAt: new Date(T0 + HOUR - 1) })).toHaveLength(1);
        expect(await store.listIssuances({ validAt: new Date(T0 + HOUR) })).toHaveLength(0);
      });

      it("keeps insertion order among records issued in the same millisecond", async () => {
        const same = [issuance(), issuance(), issuance()];
        for (const r of same) await store.recordIssuance(r);
        expect((await store.listIssuances()).map((r) => r.serial)).toEqual(same.map((r) => r.serial).reverse());
      });
    });

    describe("revocations", () => {
      it("revokes once: true the first time, false after, and keeps the first revocation", async () => {
        const r = issuance();
        await store.recordIssuance(r);
        expect(await store.revoke({ serial: r.serial.toLowerCase(), revokedAt: new Date(T0 + 1_000), reason: "keyCompromise" })).toBe(true);
        expect(await store.revoke({ serial: r.serial, revokedAt: new Date(T0 + 9_000), reason: "superseded" })).toBe(false);
        expect(await store.listRevocations()).toEqual([{ serial: r.serial, revokedAt: new Date(T0 + 1_000), reason: "keyCompromise", spiffeId: r.spiffeId }]);
      });

      it("records a serial missing from the issuance log, without a spiffeId", async () => {
        const known = issuance({ spiffeId: "spiffe://example.org/ns/a/sa/known" });
        await store.recordIssuance(known);
        expect(await store.revoke({ serial: "0ABC", revokedAt: new Date(T0 + 2_000), reason: "unspecified" })).toBe(true);
        expect(await store.revoke({ serial: known.serial, revokedAt: new Date(T0 + 1_000), reason: "superseded" })).toBe(true);
        expect(await store.revoke({ serial: "0abc", revokedAt: new Date(T0 + 3_000), reason: "unspecified" })).toBe(false);
        expect(await store.listRevocations()).toEqual([
          { serial: known.serial, revokedAt: new Date(T0 + 1_000), reason: "superseded", spiffeId: known.spiffeId },
          { serial: "0ABC", revokedAt: new Date(T0 + 2_000), reason: "unspecified", spiffeId: undefined },
        ]);
      });

      it("refuses to revoke a serial that is not hexadecimal", async () => {
        await expectCode(store.revoke({ serial: "zz; DROP TABLE", revokedAt: new Date(T0), reason: "unspecified" }), "E_STORE_WRITE");
        expect(await store.listRevocations()).toEqual([]);
      });
    });

    describe("revoking a certificate with everything renewed from it (a thief renews what it stole)", () => {
      const renewal = (of: IssuanceRecord, overrides: Partial<IssuanceRecord> = {}) => issuance({ supersedes: of.serial, spiffeId: of.spiffeId, ...overrides });

      it("revokes the renewals at any depth and the forks, not another lineage of the same identity", async () => {
        const stolen = issuance();
        const otherPod = issuance();
        await store.recordIssuance(stolen);
        await store.recordIssuance(otherPod);
        const legit = renewal(stolen); // the workload renews
        const thief = renewal(stolen); // and so does whoever holds a copy: a fork of the same certificate
        await store.recordIssuance(legit);
        await store.recordIssuance(thief);
        const thiefAgain = renewal(thief);
        await store.recordIssuance(thiefAgain);
        const otherRenewed = renewal(otherPod);
        await store.recordIssuance(otherRenewed);
        expect((await store.listRenewals()).map((r) => `${r.serial}<${r.renews}`).sort()).toEqual(
          [legit, thief, thiefAgain, otherRenewed].map((r) => `${r.serial}<${r.supersedes}`).sort(),
        );

        const revoked = await store.revokeLineage({ serial: stolen.serial.toLowerCase(), revokedAt: new Date(T0 + 1_000), reason: "keyCompromise" });
        expect(revoked[0]).toBe(stolen.serial);
        expect([...revoked].sort()).toEqual([stolen.serial, legit.serial, thief.serial, thiefAgain.serial].sort());
        const listed = await store.listRevocations();
        expect(listed.map((r) => r.serial).sort()).toEqual([...revoked].sort());
        expect(listed.every((r) => r.reason === "keyCompromise" && r.revokedAt.getTime() === T0 + 1_000)).toBe(true);
        // Again: nothing new. From the middle of a revoked lineage: nothing new either.
        expect(await store.revokeLineage({ serial: stolen.serial, revokedAt: new Date(T0 + 2_000), reason: "superseded" })).toEqual([]);
        expect(await store.revokeLineage({ serial: thief.serial, revokedAt: new Date(T0 + 2_000), reason: "superseded" })).toEqual([]);
        expect((await store.countValidByRoot(new Date(T0))).get(ROOT_A)).toBe(1); // otherRenewed alone
      });

      it("counts the revocations (what the CA's CRL refresh compares each second): one more for each serial revoked, none for a repeat", async () => {
        expect(await store.countRevocations()).toBe(0);
        const first = issuance();
        await store.recordIssuance(first);
        const renewed = renewal(first);
        await store.recordIssuance(renewed);
        await store.revoke({ serial: "0ABC", revokedAt: new Date(T0), reason: "unspecified" });
        expect(await store.countRevocations()).toBe(1);
        await store.revoke({ serial: "0abc", revokedAt: new Date(T0 + 1_000), reason: "keyCompromise" }); // already revoked
        expect(await store.countRevocations()).toBe(1);
        await store.revokeLineage({ serial: first.serial, revokedAt: new Date(T0), reason: "keyCompromise" });
        expect(await store.countRevocations()).toBe(3);
        expect(await store.countRevocations()).toBe((await store.listRevocations()).length);
      });

      it("refuses to record a renewal of a revoked certificate (E_CERT_REVOKED), on every handle", async () => {
        const stolen = issuance();
        await store.recordIssuance(stolen);
        const thief = renewal(stolen);
        await store.recordIssuance(thief);
        await store.revokeLineage({ serial: stolen.serial, revokedAt: new Date(T0 + 1_000), reason: "keyCompromise" });
        const other = await open();
        for (const handle of [store, other]) {
          const late = renewal(thief);
          const error = await expectCode(handle.recordIssuance(late), "E_CERT_REVOKED");
          expect(error.message).toContain(thief.serial);
          expect(await handle.getIssuance(late.serial)).toBeUndefined();
        }
        // A renewal of a certificate revoked on its own (revoke, not revokeLineage) is refused too.
        const single = issuance();
        await store.recordIssuance(single);
        await store.revoke({ serial: single.serial, revokedAt: new Date(T0), reason: "unspecified" });
        await expectCode(store.recordIssuance(renewal(single)), "E_CERT_REVOKED");
        // Renewals of live certificates recorded in the same turn are not held back by the refused one.
        const live = issuance();
        await store.recordIssuance(live);
        const together = [renewal(live), renewal(thief), renewal(live)];
        const results = await Promise.allSettled(together.map((r) => store.recordIssuance(r)));
        expect(results.map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
        expect(await store.getIssuance(together[0]!.serial)).toBeDefined();
        expect(await store.getIssuance(together[1]!.serial)).toBeUndefined();
      });

      it("races renewals against the revocation from two handles: every renewal recorded is revoked", async () => {
        const stolen = issuance();
        await store.recordIssuance(stolen);
        const other = await open();
        let tip = stolen;
        // A thief renewing as fast as it can (each renewal of the newest), while the revocation runs on another handle.
        const thief = (async () => {
          const recorded: string[] = [];
          for (let i = 0; i < 40; i++) {
            const next = renewal(tip);
            try {
              await store.recordIssuance(next);
            } catch (error) {
              if (isMeshwardError(error) && error.code === "E_CERT_REVOKED") return recorded;
              throw error;
            }
            recorded.push(next.serial);
            tip = next;
          }
          return recorded;
        })();
        await new Promise((resolve) => setTimeout(resolve, 5));
        const revoked = await other.revokeLineage({ serial: stolen.serial, revokedAt: new Date(T0 + 1_000), reason: "keyCompromise" });
        const recorded = await thief;
        const all = new Set((await store.listRevocations()).map((r) => r.serial));
        for (const serial of recorded) expect(all.has(serial)).toBe(true);
        expect(revoked.length).toBeGreaterThanOrEqual(1);
        await expectCode(store.recordIssuance(renewal(tip)), "E_CERT_REVOKED");
      });
    });

    describe("countValidByRoot", () => {
      it("counts certificates valid at the instant per root, leaving out revoked ones", async () => {
        const validA1 = issuance({ rootFingerprint: ROOT_A });
        const validA2 = issuance({ rootFingerprint: ROOT_A });
        const revokedA = issuance({ rootFingerprint: ROOT_A });
        const validB = issuance({ rootFingerprint: ROOT_B });
        const expiredB = issuance({ rootFingerprint: ROOT_B, notBefore: new Date(T0 - 2 * HOUR), notAfter: new Date(T0) });
        const futureB = issuance({ rootFingerprint: ROOT_B, notBefore: new Date(T0 + 1), notAfter: new Date(T0 + HOUR) });
        const onlyRevokedC = issuance({ rootFingerprint: fingerprint("root-c") });
        for (const r of [validA1, validA2, revokedA, validB, expiredB, futureB, onlyRevokedC]) await store.recordIssuance(r);
        await store.revoke({ serial: revokedA.serial, revokedAt: new Date(T0), reason: "keyCompromise" });
        await store.revoke({ serial: onlyRevokedC.serial, revokedAt: new Date(T0), reason: "keyCompromise" });

        expect(await store.countValidByRoot(new Date(T0))).toEqual(
          new Map([
            [ROOT_A, 2],
            [ROOT_B, 1],
          ]),
        );
        expect(await store.countValidByRoot(new Date(T0 + 30 * 60_000))).toEqual(
          new Map([
            [ROOT_A, 2],
            [ROOT_B, 2],
          ]),
        );
        expect(await store.countValidByRoot(new Date(T0 + 48 * HOUR))).toEqual(new Map());
      });

      it("leaves out a certificate superseded by a renewal proven with it", async () => {
        const old = issuance({ rootFingerprint: ROOT_A });
        await store.recordIssuance(old);
        expect(await store.countValidByRoot(new Date(T0))).toEqual(new Map([[ROOT_A, 1]]));
        const renewed = { ...issuance({ rootFingerprint: ROOT_B }), supersedes: old.serial.toLowerCase() };
        await store.recordIssuance(renewed);
        expect(await store.countValidByRoot(new Date(T0))).toEqual(new Map([[ROOT_B, 1]]));
        // The log keeps both.
        expect((await store.listIssuances()).map((r) => r.serial).sort()).toEqual([old.serial, renewed.serial].sort());
      });
    });

    describe("supersededBy", () => {
      it("names the renewal that replaced each superseded certificate, and nothing for the others (serials in either case)", async () => {
        const old = issuance();
        const other = issuance();
        await store.recordIssuance(old);
        await store.recordIssuance(other);
        const renewed = { ...issuance(), supersedes: old.serial };
        await store.recordIssuance(renewed);
        const spelled = old.serial.toLowerCase();
        expect(await store.supersededBy([spelled, other.serial, renewed.serial, "0A0B"])).toEqual(new Map([[old.serial, renewed.serial]]));
        expect(await store.supersededBy([])).toEqual(new Map());
        // another handle (a CLI next to the running CA) reads the same
        expect(await (await open()).supersededBy([old.serial])).toEqual(new Map([[old.serial, renewed.serial]]));
      });

      it("treats a malformed serial as one that was never superseded (a parameter, never SQL)", async () => {
        expect(await store.supersededBy(["zz'); DROP TABLE superseded; --"])).toEqual(new Map());
        await store.recordIssuance({ ...issuance(), supersedes: issuance().serial });
        expect(await store.countValidByRoot(new Date(T0))).toEqual(new Map([[ROOT_A, 1]]));
      });
    });

    describe("join tokens", () => {
      it("stores tokens and lists them", async () => {
        const a = token({ createdAt: new Date(T0) });
        const b = token({ createdAt: new Date(T0 + 1_000), dnsNames: [], usesAllowed: 3 });
        await store.createToken(b.record);
        await store.createToken(a.record);
        expect(await store.listTokens()).toEqual([a.record, b.record]);
      });

      it("keeps a token's common name (and none when it has none)", async () => {
        const named = token({ createdAt: new Date(T0), commonName: "orders" });
        const plain = token({ createdAt: new Date(T0 + 1) });
        await store.createToken(named.record);
        await store.createToken(plain.record);
        expect(await store.listTokens()).toEqual([named.record, plain.record]);
        expect((await store.listTokens())[1]).not.toHaveProperty("commonName");
        const spent = await store.consumeToken(named.record.tokenHash, new Date(T0 + 1_000));
        expect(spent.ok && spent.token.commonName).toBe("orders");
      });

      it("refuses a duplicate token id or secret with E_STORE_CONFLICT", async () => {
        const a = token();
        await store.createToken(a.record);
        await expectCode(store.createToken({ ...a.record, tokenHash: "0".repeat(64) }), "E_STORE_CONFLICT");
        await expectCode(store.createToken({ ...a.record, id: "another-id" }), "E_STORE_CONFLICT");
        expect(await store.listTokens()).toHaveLength(1);
      });

      it("spends uses one at a time until used up", async () => {
        const t = token({ usesAllowed: 3 });
        await store.createToken(t.record);
        const now = new Date(T0 + 60_000);
        const lefts: number[] = [];
        for (let i = 0; i < 3; i += 1) {
          const result = await store.consumeToken(t.record.tokenHash, now);
          if (!result.ok) throw new Error(`use ${i + 1} was refused: ${result.reason}`);
          expect(result.token.spiffeId).toBe(t.record.spiffeId);
          expect(result.token.dnsNames).toEqual(["db.internal"]);
          lefts.push(result.token.usesLeft);
        }
        expect(lefts).toEqual([2, 1, 0]);
        expect(await store.consumeToken(t.record.tokenHash, now)).toEqual({ ok: false, reason: "used-up" });
        expect((await store.listTokens())[0]?.usesLeft).toBe(0);
      });

      it("refuses an expired token (expiresAt itself is expired) without spending it", async () => {
        const t = token({ expiresAt: new Date(T0 + HOUR) });
        await store.createToken(t.record);
        expect(await store.consumeToken(t.record.tokenHash, new Date(T0 + HOUR))).toEqual({ ok: false, reason: "expired" });
        expect(await store.consumeToken(t.record.tokenHash, new Date(T0 + 2 * HOUR))).toEqual({ ok: false, reason: "expired" });
        expect((await store.listTokens())[0]?.usesLeft).toBe(1);
        expect((await store.consumeToken(t.record.tokenHash, new Date(T0 + HOUR - 1))).ok).toBe(true);
      });

      it("reports an unknown token", async () => {
        const t = token();
        await store.createToken(t.record);
        expect(await store.consumeToken(createHash("sha256").update("guess").digest("hex"), new Date(T0))).toEqual({ ok: false, reason: "unknown" });
      });

      it("lets exactly one of many parallel calls spend a single-use token, across handles", async () => {
        const t = token({ usesAllowed: 1 });
        await store.createToken(t.record);
        const handles = [store, await open(), await open()];
        const now = new Date(T0 + 1_000);
        const results = await Promise.all(Array.from({ length: 30 }, (_, i) => handles[i % handles.length]!.consumeToken(t.record.tokenHash, now)));
        expect(results.filter((r) => r.ok)).toHaveLength(1);
        expect(results.filter((r) => !r.ok && r.reason === "used-up")).toHaveLength(29);
        expect((await store.listTokens())[0]?.usesLeft).toBe(0);
      });

      it("spends a multi-use token exactly usesAllowed times under parallel calls", async () => {
        const t = token({ usesAllowed: 5 });
        await store.createToken(t.record);
        const handles = [store, await open()];
        const results = await Promise.all(Array.from({ length: 20 }, (_, i) => handles[i % 2]!.consumeToken(t.record.tokenHash, new Date(T0))));
        const lefts = results.flatMap((r) => (r.ok ? [r.token.usesLeft] : [])).sort();
        expect(lefts).toEqual([0, 1, 2, 3, 4]);
      });
    });

    describe("join tokens spent with the issuance (issue 14: only a certificate actually issued spends a use)", () => {
      it("checkToken answers as a spend would, without spending", async () => {
        const t = token({ usesAllowed: 1, expiresAt: new Date(T0 + HOUR) });
        await store.createToken(t.record);
        const now = new Date(T0 + 1_000);
        for (let i = 0; i < 3; i += 1) {
          const check = await store.checkToken(t.record.tokenHash, now);
          expect(check.ok && check.token.spiffeId).toBe(t.record.spiffeId);
        }
        expect((await store.listTokens())[0]?.usesLeft).toBe(1);
        expect(await store.checkToken(t.record.tokenHash, new Date(T0 + HOUR))).toEqual({ ok: false, reason: "expired" });
        expect(await store.checkToken(createHash("sha256").update("guess").digest("hex"), now)).toEqual({ ok: false, reason: "unknown" });
        expect((await store.consumeToken(t.record.tokenHash, now)).ok).toBe(true);
        expect(await store.checkToken(t.record.tokenHash, now)).toEqual({ ok: false, reason: "used-up" });
      });

      it("spends one use and records the issuance together", async () => {
        const t = token({ usesAllowed: 2 });
        await store.createToken(t.record);
        const record = issuance({ spiffeId: t.record.spiffeId });
        const result = await store.recordIssuanceSpendingToken(record, t.record.tokenHash, new Date(T0 + 1_000));
        expect(result.ok && result.token.usesLeft).toBe(1);
        expect((await store.getIssuance(record.serial))?.spiffeId).toBe(t.record.spiffeId);
        expect((await store.listTokens())[0]?.usesLeft).toBe(1);
      });

      it("records nothing when the token cannot be spent (used up, expired, unknown)", async () => {
        const t = token({ usesAllowed: 1 });
        await store.createToken(t.record);
        const now = new Date(T0 + 1_000);
        expect((await store.consumeToken(t.record.tokenHash, now)).ok).toBe(true);
        const late = issuance();
        expect(await store.recordIssuanceSpendingToken(late, t.record.tokenHash, now)).toEqual({ ok: false, reason: "used-up" });
        const expired = token({ expiresAt: new Date(T0 + HOUR) });
        await store.createToken(expired.record);
        expect(await store.recordIssuanceSpendingToken(issuance(), expired.record.tokenHash, new Date(T0 + HOUR))).toEqual({ ok: false, reason: "expired" });
        expect(await store.recordIssuanceSpendingToken(issuance(), "0".repeat(64), now)).toEqual({ ok: false, reason: "unknown" });
        expect(await store.listIssuances()).toHaveLength(0);
        expect((await store.listTokens()).find((r) => r.id === expired.record.id)?.usesLeft).toBe(1);
      });

      it("spends and records nothing for a request its client gave up on (aborted signal), throwing the abort's reason", async () => {
        const t = token({ usesAllowed: 1 });
        await store.createToken(t.record);
        const now = new Date(T0 + 1_000);
        const cancelled = new AbortController();
        cancelled.abort(new MeshwardError("E_REQUEST_TIMEOUT", "the client's deadline passed"));
        await expectCode(store.recordIssuanceSpendingToken(issuance(), t.record.tokenHash, now, { signal: cancelled.signal }), "E_REQUEST_TIMEOUT");
        const reasonless = new AbortController();
        reasonless.abort();
        await expectCode(store.recordIssuanceSpendingToken(issuance(), t.record.tokenHash, now, { signal: reasonless.signal }), "E_REQUEST_CANCELLED");
        expect((await store.listTokens())[0]?.usesLeft).toBe(1);
        expect(await store.listIssuances()).toHaveLength(0);
        // A signal not aborted changes nothing.
        expect((await store.recordIssuanceSpendingToken(issuance(), t.record.tokenHash, now, { signal: new AbortController().signal })).ok).toBe(true);
        expect((await store.listTokens())[0]?.usesLeft).toBe(0);
      });

      it("leaves the use unspent when the issuance cannot be recorded (duplicate serial)", async () => {
        const existing = issuance();
        await store.recordIssuance(existing);
        const t = token({ usesAllowed: 1 });
        await store.createToken(t.record);
        await expectCode(store.recordIssuanceSpendingToken(issuance({ serial: existing.serial }), t.record.tokenHash, new Date(T0 + 1_000)), "E_STORE_CONFLICT");
        expect((await store.listTokens())[0]?.usesLeft).toBe(1);
      });

      it("records a superseded certificate with the issuance", async () => {
        const old = issuance();
        await store.recordIssuance(old);
        const t = token();
        await store.createToken(t.record);
        const renewed = issuance({ supersedes: old.serial });
        expect((await store.recordIssuanceSpendingToken(renewed, t.record.tokenHash, new Date(T0 + 1_000))).ok).toBe(true);
        expect(await store.countValidByRoot(new Date(T0 + 1_000))).toEqual(new Map([[ROOT_A, 1]]));
      });

      it("gives exactly one issuance for a single-use token raced across handles", async () => {
        const t = token({ usesAllowed: 1 });
        await store.createToken(t.record);
        const handles = [store, await open(), await open()];
        const now = new Date(T0 + 1_000);
        const records = Array.from({ length: 30 }, () => issuance({ spiffeId: t.record.spiffeId }));
        const results = await Promise.all(records.map((record, i) => handles[i % handles.length]!.recordIssuanceSpendingToken(record, t.record.tokenHash, now)));
        const winners = records.filter((_, i) => results[i]!.ok);
        expect(winners).toHaveLength(1);
        expect(results.filter((r) => !r.ok && r.reason === "used-up")).toHaveLength(29);
        const logged = await store.listIssuances();
        expect(logged.map((r) => r.serial)).toEqual([winners[0]!.serial]);
        expect((await store.listTokens())[0]?.usesLeft).toBe(0);
      });
    });

    describe("CA state shared by replicas (issue 17)", () => {
      it("starts empty at version 0, and applies changes only at the expected version", async () => {
        expect(await store.readCaFiles()).toEqual({ version: 0, files: new Map() });
        expect(await store.caStateVersion()).toBe(0);
        const v1 = await store.writeCaFiles(0, new Map([["issuer.pem", "PEM 1"], ["ca.json", "{}"]]));
        expect(v1).toBe(1);
        expect(await store.writeCaFiles(0, new Map([["issuer.pem", "stale writer"]]))).toBeUndefined();
        expect(await store.writeCaFiles(1, new Map<string, string | null>([["issuer.pem", "PEM 2"], ["issuer.next.pem", null]]))).toBe(2);
        const other = await open();
        const snapshot = await other.readCaFiles();
        expect(snapshot.version).toBe(2);
        expect(snapshot.files).toEqual(new Map<string, string | null>([["ca.json", "{}"], ["issuer.next.pem", null], ["issuer.pem", "PEM 2"]]));
        expect(await other.caStateVersion()).toBe(2);
      });

      it("lets exactly one of several writers racing from the same version win", async () => {
        const handles = [store, await open(), await open()];
        const results = await Promise.all(Array.from({ length: 12 }, (_, i) => handles[i % 3]!.writeCaFiles(0, new Map([["issuer.pem", `writer ${i}`]]))));
        const winners = results.flatMap((r, i) => (r === undefined ? [] : [i]));
        expect(winners).toHaveLength(1);
        expect((await store.readCaFiles()).files.get("issuer.pem")).toBe(`writer ${winners[0]}`);
      });

      it("raises the CRL number (never lowers it) and lists renewal links (ca migrate-store)", async () => {
        await store.raiseCrlNumber(41n);
        expect(await store.nextCrlNumber()).toBe(42n);
        await store.raiseCrlNumber(5n);
        expect(await store.nextCrlNumber()).toBe(43n);
        const old = issuance();
        await store.recordIssuance(old);
        const renewed = issuance({ supersedes: old.serial });
        await store.recordIssuance(renewed);
        expect(await store.listSuperseded()).toEqual([{ serial: old.serial, supersededBy: renewed.serial }]);
      });

      it("publishes a CRL only over a lower number (the fence between two leaders)", async () => {
        expect(await store.latestCrl()).toBeUndefined();
        const crl = (n: bigint) => ({ number: n, der: Buffer.from(`crl ${n}`), thisUpdate: new Date(T0 + Number(n)) });
        expect(await store.publishCrl(crl(5n))).toBe(true);
        expect(await store.publishCrl(crl(4n))).toBe(false);
        expect(await store.publishCrl(crl(5n))).toBe(false);
        const other = await open();
        expect(await other.publishCrl(crl(7n))).toBe(true);
        const latest = await store.latestCrl();
        expect(latest?.number).toBe(7n);
        expect(latest?.der.toString()).toBe("crl 7");
        expect(latest?.thisUpdate.getTime()).toBe(T0 + 7);
      });
    });

    describe("latestNotAfterByIssuer (how long a retired issuer keeps signing its CRL)", () => {
      const ISSUER_1 = fingerprint("issuer-1");
      const ISSUER_2 = fingerprint("issuer-2");

      it("is undefined when the issuer signed nothing, also with other issuers' certificates recorded", async () => {
        expect(await store.latestNotAfterByIssuer(ISSUER_1)).toBeUndefined();
        await store.recordIssuance(issuance({ issuerFingerprint: ISSUER_2 }));
        expect(await store.latestNotAfterByIssuer(ISSUER_1)).toBeUndefined();
      });

      it("is the latest notAfter of several, revoked and superseded ones included, not counting another issuer's", async () => {
        const early = issuance({ issuerFingerprint: ISSUER_1, notAfter: new Date(T0 + 2 * HOUR) });
        const late = issuance({ issuerFingerprint: ISSUER_1, notAfter: new Date(T0 + 30 * HOUR) });
        await store.recordIssuance(early);
        await store.recordIssuance(late);
        // A renewal supersedes `late`, and `late` is revoked: a stolen copy verifies until its notAfter all the same.
        await store.recordIssuance(issuance({ issuerFingerprint: ISSUER_1, notAfter: new Date(T0 + 10 * HOUR), supersedes: late.serial }));
        await store.revoke({ serial: late.serial, revokedAt: new Date(T0), reason: "keyCompromise" });
        // Another issuer's later certificate does not count.
        await store.recordIssuance(issuance({ issuerFingerprint: ISSUER_2, notAfter: new Date(T0 + 99 * HOUR) }));
        expect((await store.latestNotAfterByIssuer(ISSUER_1))?.getTime()).toBe(T0 + 30 * HOUR);
        expect((await store.latestNotAfterByIssuer(ISSUER_2))?.getTime()).toBe(T0 + 99 * HOUR);
        // From another handle (a replica) too.
        expect((await (await open()).latestNotAfterByIssuer(ISSUER_1))?.getTime()).toBe(T0 + 30 * HOUR);
      });

      it("takes the fingerprint in the form the issuance log records it (node's colon form, as the CRL publisher passes it)", async () => {
        const record = issuance({ issuerFingerprint: ISSUER_1, notAfter: new Date(T0 + 5 * HOUR) });
        await store.recordIssuance(record);
        const recorded = (await store.getIssuance(record.serial))!.issuerFingerprint;
        expect(recorded).toBe(ISSUER_1);
        expect(recorded).toMatch(/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
        expect((await store.latestNotAfterByIssuer(recorded))?.getTime()).toBe(T0 + 5 * HOUR);
      });
    });

    describe("the published CRL set (a CRL per live issuer, published_crl.others)", () => {
      // Small DER SEQUENCEs standing for CRLs: short and long (0x82 two-byte) length forms.
      const der = (tag: string, size = 8) => {
        const body = Buffer.alloc(size, tag.charCodeAt(0));
        const header = size < 0x80 ? Buffer.from([0x30, size]) : Buffer.from([0x30, 0x82, size >> 8, size & 0xff]);
        return Buffer.concat([header, body]);
      };
      const crl = (n: bigint, others?: Buffer[]) => ({ number: n, der: der("c"), thisUpdate: new Date(T0 + Number(n)), ...(others !== undefined ? { others } : {}) });

      it("round-trips no others (absent, or an empty list) as absent", async () => {
        expect(await store.publishCrl(crl(1n))).toBe(true);
        expect((await store.latestCrl())?.others).toBeUndefined();
        expect(await store.publishCrl(crl(2n, []))).toBe(true);
        const latest = await store.latestCrl();
        expect(latest?.number).toBe(2n);
        expect(latest?.others).toBeUndefined();
      });

      it("round-trips one other CRL byte for byte, read from another handle", async () => {
        const previous = der("p", 300);
        expect(await store.publishCrl(crl(3n, [previous]))).toBe(true);
        const latest = await (await open()).latestCrl();
        expect(latest?.der.equals(der("c"))).toBe(true);
        expect(latest?.others?.map((b) => b.toString("hex"))).toEqual([previous.toString("hex")]);
      });

      it("splits several others (stored concatenated) back into each DER, short and long lengths", async () => {
        const others = [der("a", 5), der("b", 200), der("d", 0x1234), der("e", 0x7f)];
        expect(await store.publishCrl(crl(4n, others))).toBe(true);
        const latest = await store.latestCrl();
        expect(latest?.others?.map((b) => b.toString("hex"))).toEqual(others.map((b) => b.toString("hex")));
      });

      it("fences the set as one: a lower number leaves the others in place, a higher one replaces (or clears) them", async () => {
        expect(await store.publishCrl(crl(5n, [der("x")]))).toBe(true);
        const other = await open();
        expect(await other.publishCrl(crl(4n, [der("y"), der("z")]))).toBe(false);
        expect(await other.publishCrl(crl(5n))).toBe(false);
        expect((await store.latestCrl())?.others?.map((b) => b.toString("hex"))).toEqual([der("x").toString("hex")]);
        expect(await other.publishCrl(crl(6n, [der("y"), der("z")]))).toBe(true);
        expect((await store.latestCrl())?.others?.map((b) => b.toString("hex"))).toEqual([der("y"), der("z")].map((b) => b.toString("hex")));
        // A set without others (the previous issuer retired) clears them.
        expect(await store.publishCrl(crl(7n))).toBe(true);
        const latest = await store.latestCrl();
        expect(latest?.number).toBe(7n);
        expect(latest?.others).toBeUndefined();
      });

      it("refuses damaged others with a clear E_STORE_READ, never a wrong split", async () => {
        expect(await store.publishCrl(crl(8n, [der("p")]))).toBe(true);
        const damaged: [string, Buffer][] = [
          ["not a SEQUENCE", Buffer.from([0x04, 0x02, 1, 2])],
          ["cut short", der("p", 40).subarray(0, 20)],
          ["a trailing byte", Buffer.concat([der("p"), Buffer.from([0x30])])],
          ["a length of more than 4 bytes", Buffer.from([0x30, 0x85, 1, 1, 1, 1, 1])],
        ];
        for (const [, bytes] of damaged) {
          await storage.damagePublishedCrlOthers(bytes);
          const error = await expectCode(store.latestCrl(), "E_STORE_READ");
          expect(error.message).toMatch(/published CRLs in the store are damaged/);
        }
      });
    });

    describe("CRL number", () => {
      it("is strictly increasing, also after a restart", async () => {
        const a = await store.nextCrlNumber();
        const b = await store.nextCrlNumber();
        expect(typeof a).toBe("bigint");
        expect(a).toBeGreaterThanOrEqual(1n);
        expect(b).toBeGreaterThan(a);
        await store.close();
        const reopened = await open();
        const c = await reopened.nextCrlNumber();
        expect(c).toBeGreaterThan(b);
      });

      it("never hands out the same number to two handles racing", async () => {
        const handles = [store, await open(), await open()];
        const numbers = await Promise.all(Array.from({ length: 45 }, (_, i) => handles[i % 3]!.nextCrlNumber()));
        expect(new Set(numbers).size).toBe(45);
        const after = await store.nextCrlNumber();
        for (const n of numbers) expect(after).toBeGreaterThan(n);
      });
    });
  });
}
