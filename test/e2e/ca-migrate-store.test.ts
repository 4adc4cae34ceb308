import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { X509Certificate } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fetchFromCa, requestCertificate } from "../../src/identity/ca-client.ts";
import { parseCrl } from "../../src/pki/crl.ts";
import { createCsr } from "../../src/pki/csr.ts";
import { inspectCertificate } from "../../src/pki/inspect.ts";
import { generateKeyPair } from "../../src/pki/keys.ts";
import { certificatesFromPem } from "../../src/pki/pem.ts";
import { openPostgresStore } from "../../src/store/postgres.ts";
import { runCli, startCli, type LongRunning } from "../helpers/cli.ts";
import { startPostgres, type RunningPostgres } from "../helpers/postgres.ts";

// Issue 17: `meshward ca migrate-store` moves a single-replica SQLite CA to PostgreSQL, and
// replicas from one PostgreSQL to another, run as a user would: real processes, a real
// PostgreSQL started in a temp dir.
describe("meshward ca migrate-store", () => {
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

  const serve = async (store?: string, dir = caDir) => {
    // One CA at a time: a previous one (another test's) is stopped, never left behind.
    await running?.stop();
    running = undefined;
    const started = await startCli(["ca", "serve", "--dir", dir, "--listen", "127.0.0.1:0", "--passphrase-file", passphraseFile, ...(store ? ["--store", store] : [])], /listening on (\S+) as/);
    running = started;
    return started.match[1] as string;
  };
  const connection = (address: string, dir = caDir) => ({ address, bundlePem: readFileSync(join(dir, "bundle.pem"), "utf8"), trustDomain: TD });
  const issueChain = async (address: string, token: string, dir = caDir) => {
    const keyPair = generateKeyPair();
    const signed = await requestCertificate(connection(address, dir), { csrPem: await createCsr({ keyPair }), token, validator: "JOIN_TOKEN", namespace: "", appId: "" });
    return certificatesFromPem(signed.certChainPem);
  };
  const issue = async (address: string, token: string) => inspectCertificate((await issueChain(address, token))[0]!);
  const token = async (appId: string, uses: number, store?: string, dir = caDir) => {
    const r = await runCli(["token", "create", "--dir", dir, "--namespace", "m", "--app-id", appId, "--uses", String(uses), ...(store ? ["--store", store] : [])]);
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

  it("PostgreSQL → PostgreSQL keeps the shared CA state (the rotated issuer) and the published CRL", async () => {
    const dir = join(work, "ca-replicas");
    const init = await runCli(["ca", "init", "--trust-domain", TD, "--dir", dir, "--passphrase-file", passphraseFile]);
    expect(init.code, init.stderr).toBe(0);
    const oldStore = await pgServer.createDatabase("replicas_old");
    // Rotated in the replicas' store: the new issuer and its encrypted key live only there.
    const rotated = await runCli(["ca", "rotate-issuer", "--dir", dir, "--store", oldStore, "--now", "--passphrase-file", passphraseFile]);
    expect(rotated.code, rotated.stderr).toBe(0);
    const rotatedIssuer = /new issuer (\S+),/.exec(rotated.stdout)?.[1];
    expect(rotatedIssuer).toBeDefined();
    const status = async (store: string) => {
      const r = await runCli(["ca", "status", "--dir", dir, "--store", store, "--passphrase-file", passphraseFile, "--json"]);
      expect(r.code, r.stderr).toBe(0);
      return (JSON.parse(r.stdout) as { anchors: { kind: string; fingerprint256: string }[] }).anchors.find((a) => a.kind === "issuer")?.fingerprint256;
    };
    expect(await status(oldStore)).toBe(rotatedIssuer);

    // A replica on the old store signs with it and publishes a CRL holding a revocation.
    let address = await serve(oldStore, dir);
    const [leafDer, issuerDer] = await issueChain(address, await token("replica", 1, oldStore, dir), dir);
    const [leaf, issuerCert] = [new X509Certificate(leafDer!), new X509Certificate(issuerDer!)];
    expect(issuerCert.fingerprint256).toBe(rotatedIssuer);
    const revoke = await runCli(["cert", "revoke", "--dir", dir, "--store", oldStore, "--serial", leaf.serialNumber]);
    expect(revoke.code, revoke.stderr).toBe(0);
    let published: Buffer | undefined;
    for (let i = 0; i < 50 && published === undefined; i += 1) {
      const crl = await fetchFromCa(connection(address, dir), "/v1/crl");
      if (parseCrl(crl).revokedSerials.has(leaf.serialNumber)) published = Buffer.from(crl);
      else await new Promise((r) => setTimeout(r, 200));
    }
    expect(published).toBeDefined();
    await running!.stop();
    running = undefined;

    const newStore = await pgServer.createDatabase("replicas_new");
    const moved = await runCli(["ca", "migrate-store", "--dir", dir, "--from", oldStore, "--to", newStore]);
    expect(moved.code, moved.stderr).toBe(0);
    expect(moved.stdout).toMatch(/, \d+ shared CA state files? and CRL #\d+ to /);
    expect(await status(newStore)).toBe(rotatedIssuer);
    // The new store's CA state is the old one's: same files, same version (the SPIFFE bundle's sequence).
    const [oldHandle, newHandle] = [openPostgresStore({ connectionString: oldStore }), openPostgresStore({ connectionString: newStore })];
    try {
      const [oldState, newState] = [await oldHandle.readCaFiles(), await newHandle.readCaFiles()];
      expect(newState.version).toBe(oldState.version);
      expect(newState.files).toEqual(oldState.files);
      const [oldCrl, newCrl] = [await oldHandle.latestCrl(), await newHandle.latestCrl()];
      expect(newCrl?.number).toBe(oldCrl?.number);
      expect(newCrl?.der.equals(oldCrl!.der)).toBe(true);
    } finally {
      await oldHandle.close();
      await newHandle.close();
    }
    const again = await runCli(["ca", "migrate-store", "--dir", dir, "--from", oldStore, "--to", newStore]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/E_MIGRATE_TARGET_NOT_EMPTY/);

    // A replica on the new store signs with the rotated issuer and serves the CRL, revocation included.
    address = await serve(newStore, dir);
    const crl = parseCrl(await fetchFromCa(connection(address, dir), "/v1/crl"), issuerCert);
    expect(crl.revokedSerials.has(leaf.serialNumber)).toBe(true);
    const [, newIssuer] = await issueChain(address, await token("after", 1, newStore, dir), dir);
    expect(new X509Certificate(newIssuer!).fingerprint256).toBe(rotatedIssuer);
    await running!.stop();
    running = undefined;
  }, 120_000);
});
