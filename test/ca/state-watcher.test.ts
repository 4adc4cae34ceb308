import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { watchStoreState, type ReplicatedStore } from "../../src/ca/state-watcher.ts";
import type { LoadedAnchors } from "../../src/ca/anchors.ts";
import { openSqliteStore, type SqliteStore } from "../../src/store/sqlite.ts";

// The polling fallback of a replica's state watcher: with notifications unavailable (the
// listener connection refused), a change in the store is still picked up by the version poll.
// The store is a real SQLite store; only `listen` (PostgreSQL's LISTEN, which SQLite lacks) is
// replaced, by one that fails as a broken listener connection would. ca-ha.test.ts covers the
// real LISTEN/NOTIFY path on PostgreSQL.
describe("watchStoreState", () => {
  let dir: string;
  let store: SqliteStore;
  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), "meshward-state-watcher-"));
    store = openSqliteStore(join(dir, "ca.db"));
    await store.migrate();
  });
  afterEach(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  // The watcher reads only caStateVersion() and listen().
  const replicated = (): ReplicatedStore =>
    ({
      caStateVersion: () => store.caStateVersion(),
      listen: async () => {
        throw new Error("connection refused");
      },
    }) as unknown as ReplicatedStore;

  it("picks up a change by polling when notifications are unavailable, and reports a state that does not load", async () => {
    let version = 0;
    const adopted: number[] = [];
    const refused: unknown[] = [];
    let failNext = false;
    const watcher = await watchStoreState({
      store: replicated(),
      intervalMs: 50,
      version: () => version,
      load: async () => {
        if (failNext) throw new Error("wrong passphrase");
        return { stateVersion: await store.caStateVersion() } as unknown as LoadedAnchors;
      },
      onChange: (anchors) => {
        version = anchors.stateVersion!;
        adopted.push(version);
      },
      onCrlChange: () => undefined,
      onRefused: (error) => refused.push(error),
    });
    try {
      expect(await store.writeCaFiles(0, new Map([["issuer.pem", "one"]]))).toBe(1);
      for (let i = 0; i < 100 && adopted.length === 0; i += 1) await new Promise((r) => setTimeout(r, 20));
      expect(adopted).toEqual([1]);
      failNext = true;
      expect(await store.writeCaFiles(1, new Map([["issuer.pem", "two"]]))).toBe(2);
      for (let i = 0; i < 100 && refused.length === 0; i += 1) await new Promise((r) => setTimeout(r, 20));
      expect(refused).toHaveLength(1);
      // A refused version is reported once, not on every poll, and the old anchors stay.
      await new Promise((r) => setTimeout(r, 300));
      expect(refused).toHaveLength(1);
      expect(version).toBe(1);
    } finally {
      watcher.close();
    }
  });
});
