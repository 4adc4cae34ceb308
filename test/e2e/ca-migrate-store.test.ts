import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fetchFromCa, requestCertificate } from "../../src/identity/ca-client.ts";
import { parseCrl } from "../../src/pki/crl.ts";
import { createCsr } from "../../src/pki/csr.ts";
import { inspectCertificate } from "../../src/pki/inspect.ts";
import { generateKeyPair } from "../../src/pki/keys.ts";
import { certificatesFromPem } from "../../src/pki/pem.ts";
import { runCli, startCli, type LongRunning } from "../helpers/cli.ts";
import { startPostgres, type RunningPostgres } from "../helpers/postgres.ts";

// Issue 17: `meshward ca migrate-store` moves a single-replica SQLite CA to PostgreSQL, run as
// a user would: real processes, a real PostgreSQL started in a temp dir.
describe("meshward ca migrate-store (SQLite → PostgreSQL)", () => {
  let pgServer: RunningPostgres;
  let work: string;
  let caDir: string;
  let passphraseFile: string;
  let running: LongRunning | undefined;
  const TD = "migrate.test";

  beforeAll(async () => {
    pgServer = await startPostgres();
    work = mkdtempSync(join(tmpdir(), "meshward-migrate-"));
    caDir = join(work, "ca");
    passphraseFile = join(work, "passphrase");
    writeFileSync(passphraseFile, "migrate me\n", { mode: 0o600 });
    const init = await runCli(["ca", "init", "--trust-domain", TD, "--dir", caDir, "--passphrase-file", passphraseFile]);
    expect(init.code, init.stderr).toBe(0);
  }, 60_000);

  afterAll(async () => {
    await running?.stop();
    rmSync(work, { recursive: true, force: true });
    await pgServer?.stop();
  });

  const serve = async (store?: string) => {
    const started = await startCli(["ca", "serve", "--dir", caDir, "--listen", "127.0.0.1:0", "--passphrase-file", passphraseFile, ...(store ? ["--store", store] : [])], /listening on (\S+) as/);
    running = started;
    return started.match[1] as string;
  };
  const connection = (address: string) => ({ address, bundlePem: readFileSync(join(caDir, "bundle.pem"), "utf8"), trustDomain: TD });
  const issue = async (address: string, token: string) => {
    const keyPair = generateKeyPair();
    const signed = await requestCertificate(connection(address), { csrPem: await createCsr({ keyPair }), token, validator: "JOIN_TOKEN", namespace: "", appId: "" });
    return inspectCertificate(certificatesFromPem(signed.certChainPem)[0]!);
  };
  const token = async (appId: string, uses: number, store?: string) => {
    const r = await runCli(["token", "create", "--dir", caDir, "--namespace", "m", "--app-id", appId, "--uses", String(uses), ...(store ? ["--store", store] : [])]);
    expect(r.code, r.stderr).toBe(0);
    return r.stdout.trim().split("\n").at(-1)!;
  };

  it("moves certificates, revocations, tokens with their uses left and the CRL number; refuses a non-empty target", async () => {
    let address = await serve();
    const kept = await issue(address, await token("kept", 1));
    const multi = await token("multi", 3);
    const revoked = await issue(address, multi);
    const revoke = await runCli(["cert", "revoke", "--dir", caDir, "--serial", revoked.serial]);
    expect(revoke.code, revoke.stderr).toBe(0);
    let lastNumber = 0n;
    for (let i = 0; i < 50 && lastNumber === 0n; i += 1) {
      const crl = parseCrl(await fetchFromCa(connection(address), "/v1/crl"));
      if (crl.revokedSerials.has(revoked.serial)) lastNumber = crl.crlNumber ?? 0n;
      else await new Promise((r) => setTimeout(r, 200));
    }
    expect(lastNumber).toBeGreaterThan(0n);
    await running!.stop();
    running = undefined;

    const store = await pgServer.createDatabase("migrated");
    const moved = await runCli(["ca", "migrate-store", "--dir", caDir, "--to", store]);
    expect(moved.code, moved.stderr).toBe(0);
    expect(moved.stdout).toMatch(/moved 2 certificates, 1 revocation and 2 join tokens/);
    const again = await runCli(["ca", "migrate-store", "--dir", caDir, "--to", store]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/E_MIGRATE_TARGET_NOT_EMPTY/);

    address = await serve(store);
    const list = await runCli(["cert", "list", "--dir", caDir, "--store", store, "--json"]);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toContain(kept.serial);
    expect(list.stdout).toContain(revoked.serial);
    let crl: ReturnType<typeof parseCrl> | undefined;
    for (let i = 0; i < 50 && crl === undefined; i += 1) {
      try {
        crl = parseCrl(await fetchFromCa(connection(address), "/v1/crl"));
      } catch {
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    expect(crl?.revokedSerials.has(revoked.serial)).toBe(true);
    expect(crl!.crlNumber!).toBeGreaterThan(lastNumber);
    // The 3-use token had 2 uses left: exactly 2 more certificates.
    await issue(address, multi);
    await issue(address, multi);
    await expect(issue(address, multi)).rejects.toMatchObject({ code: "E_TOKEN_USED" });
  }, 120_000);
});
