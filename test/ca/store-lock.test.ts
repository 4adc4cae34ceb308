import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initAnchors } from "../../src/ca/anchors.ts";
import { startCaServer, type CaServer } from "../../src/ca/server.ts";
import { issueJoinToken } from "../../src/ca/tokens.ts";
import { caConfigSchema } from "../../src/config/ca.ts";
import { fetchFromCa, requestCertificate } from "../../src/identity/ca-client.ts";
import { createCsr } from "../../src/pki/csr.ts";
import { generateKeyPair } from "../../src/pki/keys.ts";
import { openSqliteStore, type SqliteStore } from "../../src/store/sqlite.ts";

// Another process holding the SQLite write lock (an admin command, a second CA process on the
// same file) used to freeze the whole CA: a join-token issuance spent the token on the main
// connection, which waited for the lock (busy timeout 5 s) with the event loop blocked, so no
// bundle, CRL, health or renewal request was answered meanwhile. Now the wait happens on the
// store's writer thread: the CA keeps answering, and the issuance completes once the lock goes.
const TD = "store-lock.test";

describe("the CA while another process holds the SQLite write lock", () => {
  let work: string;
  let server: CaServer | undefined;
  let store: SqliteStore;
  let bundlePem: string;
  /** Resolved when a sign request reaches the store's token spend (the write that waits). */
  let reachedSpend: () => void = () => undefined;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "meshward-store-lock-"));
    await initAnchors({ dir: join(work, "ca"), trustDomain: TD, now: new Date() });
    bundlePem = readFileSync(join(work, "ca", "bundle.pem"), "utf8");
    // The store `ca serve` opens (writer thread on), seen through a wrapper that says when the
    // token spend begins; the real store does the work.
    store = openSqliteStore(join(work, "ca", "ca.db"), { writerThread: true });
    const observed = new Proxy(store, {
      get(target, property) {
        const value = Reflect.get(target, property, target) as unknown;
        if (typeof value !== "function") return value;
        if (property === "recordIssuanceSpendingToken") {
          return (...args: Parameters<SqliteStore["recordIssuanceSpendingToken"]>) => {
            reachedSpend();
            return target.recordIssuanceSpendingToken(...args);
          };
        }
        return (value as (...a: unknown[]) => unknown).bind(target);
      },
    });
    const config = caConfigSchema.parse({ listen: "127.0.0.1:0", signingWorkers: 0, status: "127.0.0.1:0", signRateLimit: false });
    server = await startCaServer({ dir: join(work, "ca"), config, logger: pino({ level: "silent" }), store: observed });
  }, 60_000);

  afterAll(async () => {
    await server?.close();
    await store?.close();
    rmSync(work, { recursive: true, force: true });
  });

  it("answers health and bundle requests while a join-token issuance waits for the lock; the issuance completes once the lock goes", async () => {
    const { token } = await issueJoinToken(server!.store, { spiffeId: `spiffe://${TD}/ns/shop/api`, ttlMs: 600_000 });
    const csrPem = await createCsr({ keyPair: generateKeyPair() });
    const holder = new Database(join(work, "ca", "ca.db"));
    holder.exec("BEGIN IMMEDIATE");
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      holder.exec("COMMIT");
      holder.close();
    };
    try {
      const reached = new Promise<void>((resolve) => (reachedSpend = resolve));
      let settled = false;
      const sign = requestCertificate({ address: server!.address, bundlePem, trustDomain: TD, timeoutMs: 30_000 }, { csrPem, token, validator: "JOIN_TOKEN", namespace: "", appId: "" }).then(
        (signed) => ({ issued: signed.certChainPem }),
        (error: unknown) => ({ refused: String(error) }),
      );
      void sign.finally(() => (settled = true));
      await reached;

      // The lock is still held: the CA answers all the same.
      const health = await fetch(`http://${server!.status!.host}:${server!.status!.port}/healthz`);
      expect(health.status).toBe(200);
      const bundle = await fetchFromCa({ address: server!.address, bundlePem, trustDomain: TD }, "/v1/bundle");
      expect(bundle.toString("utf8")).toContain("CERTIFICATE");
      expect(settled).toBe(false);

      release();
      const outcome = await sign;
      expect(outcome).toMatchObject({ issued: expect.stringContaining("CERTIFICATE") });
    } finally {
      release();
    }
  }, 60_000);
});
