import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import type { SqliteStore } from "../../src/store/sqlite.ts";
import { issueJoinToken } from "../../src/ca/tokens.ts";
import { requestCertificate } from "../../src/identity/ca-client.ts";
import { createCsr } from "../../src/pki/csr.ts";
import { generateKeyPair } from "../../src/pki/keys.ts";
import pg from "pg";
import { startPostgres, type RunningPostgres } from "../helpers/postgres.ts";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { startTestCa, type TestCa } from "../helpers/ca-server.ts";
import { until } from "../helpers/wait.ts";

// Reads keep working while another process holds SQLite's write lock (WAL), so the CRL refresh
// (reads only) kept /readyz at 200 while every sign request failed with E_STORE_WRITE. A failed
// issuance write now makes the CA unready until a write succeeds (the probe each refresh makes),
// and counts as the CA's failure (result="error"), not the caller's refusal.
const TD = "store-write-readiness.test";

/** A second process holding the database's write lock (BEGIN IMMEDIATE) until its stdin closes. */
async function holdWriteLock(db: string): Promise<ChildProcess> {
  const script = `const D=require("better-sqlite3");const d=new D(${JSON.stringify(db)});d.exec("BEGIN IMMEDIATE");process.stdout.write("locked\\n");process.stdin.resume();process.stdin.on("end",()=>{d.exec("COMMIT");d.close();process.exit(0)})`;
  const child = spawn(process.execPath, ["-e", script], { cwd: process.cwd(), stdio: ["pipe", "pipe", "inherit"] });
  await once(child.stdout!, "data");
  return child;
}

describe("CA readiness follows the store's write path", () => {
  let ca: TestCa | undefined;
  let holder: ChildProcess | undefined;
  let session: pg.Client | undefined;
  let postgres: RunningPostgres | undefined;

  afterAll(async () => {
    await postgres?.stop();
  });

  afterEach(async () => {
    if (holder !== undefined && holder.exitCode === null) {
      holder.kill();
      await once(holder, "exit");
    }
    holder = undefined;
    await session?.end().catch(() => undefined);
    session = undefined;
    await ca?.close();
    ca = undefined;
  });

  /** Signs once, has `lock` block the store's writes, and checks /readyz through the failure and after `unlock`. */
  async function readinessThroughWriteLock(config: Record<string, unknown>, lock: () => Promise<() => Promise<void>>): Promise<void> {
    ca = await startTestCa(TD, { status: "127.0.0.1:0", crlRefresh: "200ms", signRateLimit: false, ...config });
    const readyz = async () => {
      const response = await fetch(`${ca!.server.status!.url}/readyz`);
      return { status: response.status, body: await response.text() };
    };
    await ca.sign();
    expect((await readyz()).status).toBe(200);

    // The tokens are made first: making one is a write too. `spent` is used up before the lock.
    const { token } = await issueJoinToken(ca.server.store, { spiffeId: `spiffe://${TD}/ns/orders/blocked`, ttlMs: 600_000 });
    const { token: spent } = await issueJoinToken(ca.server.store, { spiffeId: `spiffe://${TD}/ns/orders/spent`, ttlMs: 600_000 });
    const csrPem = await createCsr({ keyPair: generateKeyPair() });
    const askWith = (t: string, timeoutMs?: number) =>
      requestCertificate({ address: ca!.server.address, bundlePem: ca!.bundlePem, trustDomain: TD, ...(timeoutMs !== undefined ? { timeoutMs } : {}) }, { csrPem, token: t, validator: "JOIN_TOKEN", namespace: "", appId: "" });
    await askWith(spent);
    const unlock = await lock();
    await expect(requestCertificate({ address: ca.server.address, bundlePem: ca.bundlePem, trustDomain: TD, timeoutMs: 30_000 }, { csrPem, token, validator: "JOIN_TOKEN", namespace: "", appId: "" })).rejects.toMatchObject({
      code: expect.stringMatching(/^E_STORE_/),
    });
    // The CA's own failure: counted result="error" (MeshwardCaSigningErrors), logged at error.
    const scraped = await (await fetch(`${ca.server.status!.url}/metrics`)).text();
    expect(scraped).toMatch(/^meshward_ca_sign_requests_total\{result="error",reason="E_STORE_[A-Z]+"\} 1$/m);
    expect(scraped).not.toMatch(/result="refused",reason="E_STORE_/);
    expect(ca.logged.filter((l) => l.includes('"sign-failed"')).map((l) => JSON.parse(l) as { level: number; reason: string })).toEqual([expect.objectContaining({ level: 50, reason: expect.stringMatching(/^E_STORE_/) })]);
    const blocked = await readyz();
    expect(blocked.status).toBe(503);
    expect(blocked.body).toMatch(/the last write failed \(E_STORE_/);
    // A token found used up (PostgreSQL answers that with an UPDATE matching no row, no write)
    // says nothing about writes: still unready (review, stop 41: it cleared the failure).
    await expect(askWith(spent, 30_000)).rejects.toMatchObject({ code: expect.stringMatching(/^E_TOKEN_USED$|^E_STORE_/) });
    expect((await readyz()).status).toBe(503);
    // Several CRL refreshes later (reads, which work): still unready.
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect((await readyz()).status).toBe(503);

    await unlock();
    // No sign traffic: the write probe finds the store writable again.
    await until("/readyz to answer 200", 30_000, async () => ((await readyz()).status === 200 ? true : undefined));
    expect(ca.logged.some((l) => l.includes('"store-writable"'))).toBe(true);
    expect((await ca.sign("orders", "after")).certChainPem).toMatch(/BEGIN CERTIFICATE/);
    // The caller's fault stays a refusal.
    await expect(requestCertificate({ address: ca.server.address, bundlePem: ca.bundlePem, trustDomain: TD }, { csrPem, token: "not-a-token", validator: "JOIN_TOKEN", namespace: "", appId: "" })).rejects.toThrow();
    const after = await (await fetch(`${ca.server.status!.url}/metrics`)).text();
    expect(after).toMatch(/^meshward_ca_sign_requests_total\{result="refused",reason="E_TOKEN_[A-Z_]+"\} 1$/m);
    expect(after).toMatch(/^meshward_ca_sign_requests_total\{result="error",reason="E_STORE_[A-Z]+"\} 1$/m);
  }

  it("SQLite: answers 503 on /readyz while another process holds the write lock and signs fail, 200 once it lets go", async () => {
    await readinessThroughWriteLock({}, async () => {
      const child = await holdWriteLock((ca!.server.store as SqliteStore).path);
      holder = child;
      return async () => {
        child.stdin!.end();
        await once(child, "exit");
      };
    });
  }, 90_000);

  it("PostgreSQL: answers 503 on /readyz while another session locks the issuance log and signs fail, 200 once it lets go", async () => {
    postgres ??= await startPostgres();
    const url = await postgres.createDatabase();
    await readinessThroughWriteLock({ store: url }, async () => {
      const client = new pg.Client({ connectionString: url });
      session = client;
      await client.connect();
      await client.query("BEGIN");
      await client.query("LOCK TABLE issuances IN SHARE MODE");
      return async () => {
        await client.query("COMMIT");
        await client.end();
        session = undefined;
      };
    });
  }, 120_000);
});
