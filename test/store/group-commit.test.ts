import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { openSqliteStore, type SqliteStore } from "../../src/store/sqlite.ts";
import type { IssuanceRecord } from "../../src/store/store.ts";

const record = (i: number): IssuanceRecord => ({
  serial: i.toString(16).toUpperCase().padStart(32, "0"),
  spiffeId: `spiffe://gc.test/ns/a/app${i % 7}`,
  dnsNames: [],
  notBefore: new Date(0),
  notAfter: new Date(Date.now() + 3_600_000),
  issuedAt: new Date(),
  attestation: "svid",
  issuerFingerprint: "I",
  rootFingerprint: "R",
  certificatePem: "pem",
});

const turn = () => new Promise((resolve) => setImmediate(resolve));

// On the calling thread, and through the writer thread (`meshward ca serve`), which holds one
// batch out at a time and queues what comes meanwhile.
describe.each([false, true])("SQLite group commit of the issuance log (writer thread: %s)", (writerThread) => {
  let dir: string;
  let store: SqliteStore;
  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), "meshward-gc-"));
    store = openSqliteStore(join(dir, "ca.db"), { writerThread });
    await store.migrate();
  });
  afterEach(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("commits many concurrent issuances, each caller resolved only once its row is stored", async () => {
    await Promise.all(Array.from({ length: 500 }, (_, i) => store.recordIssuance(record(i))));
    expect(await store.listIssuances({ limit: 1000 })).toHaveLength(500);
  });

  it("gives a duplicate serial its own refusal without failing the rest of the batch", async () => {
    await store.recordIssuance(record(1));
    const results = await Promise.allSettled([store.recordIssuance(record(2)), store.recordIssuance(record(1)), store.recordIssuance(record(3))]);
    expect(results.map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
    expect((results[1] as PromiseRejectedResult).reason).toMatchObject({ code: "E_STORE_CONFLICT" });
    expect((await store.listIssuances()).map((r) => r.serial).sort()).toEqual([record(1).serial, record(2).serial, record(3).serial]);
  });

  it("commits issuances recorded over many turns while earlier batches are being committed, a duplicate refused alone", async () => {
    await store.recordIssuance(record(1000));
    const all: Promise<void>[] = [];
    for (let t = 0; t < 40; t++) {
      for (let i = 0; i < 5; i++) all.push(store.recordIssuance(record(t * 5 + i)));
      if (t === 20) {
        const duplicate = store.recordIssuance(record(1000));
        duplicate.catch(() => undefined); // read by allSettled below, after later turns
        all.push(duplicate);
      }
      await turn();
    }
    const results = await Promise.allSettled(all);
    expect(results.filter((r) => r.status === "rejected")).toHaveLength(1);
    expect((results[105] as PromiseRejectedResult).reason).toMatchObject({ code: "E_STORE_CONFLICT" });
    expect(await store.listIssuances({ limit: 1000 })).toHaveLength(201);
  });

  it("writes issuances queued behind a batch in flight before closing", async () => {
    const first = store.recordIssuance(record(7));
    await turn();
    const queued = store.recordIssuance(record(8));
    await store.close();
    await Promise.all([first, queued]);
    const reopened = openSqliteStore(join(dir, "ca.db"));
    expect(await reopened.getIssuance(record(7).serial)).toBeDefined();
    expect(await reopened.getIssuance(record(8).serial)).toBeDefined();
    await reopened.close();
  });

  it("writes pending issuances before closing", async () => {
    const pending = store.recordIssuance(record(9));
    await store.close();
    await pending;
    const reopened = openSqliteStore(join(dir, "ca.db"));
    expect(await reopened.getIssuance(record(9).serial)).toBeDefined();
    await reopened.close();
  });
});
