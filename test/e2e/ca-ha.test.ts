import { createHash, X509Certificate } from "node:crypto";
import { chmodSync, cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fetchFromCa, requestCertificate, type CaConnection } from "../../src/identity/ca-client.ts";
import { parseCrl } from "../../src/pki/crl.ts";
import { createCsr } from "../../src/pki/csr.ts";
import { inspectCertificate } from "../../src/pki/inspect.ts";
import { createIssuerCertificate } from "../../src/pki/certificate.ts";
import { decodePrivateKey, encodePrivateKey, generateKeyPair } from "../../src/pki/keys.ts";
import { certificatesFromPem, toPem } from "../../src/pki/pem.ts";
import { openPostgresStore } from "../../src/store/postgres.ts";
import { runCli, startCli, type LongRunning } from "../helpers/cli.ts";
import { startPostgres, type RunningPostgres } from "../helpers/postgres.ts";
import { until } from "../helpers/wait.ts";

// Issue 17's proof: three `meshward ca serve` processes on one real PostgreSQL (Debian's,
// started here in a temp dir), each with its own read-only copy of the CA directory, act as one
// CA. Polling loops wait for an observable state, bounded by the issue's limits (10 s, 15 s);
// nothing asserts how fast it happened.
const TD = "ha.test";
const PASSPHRASE = "correct horse battery staple";

type Replica = LongRunning & { address: string; dir: string };

describe("the CA as three replicas on PostgreSQL (read-only CA directories)", () => {
  let pgServer: RunningPostgres;
  let work: string;
  let store: string;
  let passphraseFile: string;
  let replicas: Replica[] = [];
  let dirHashes: Map<string, string>;
  let killedAddress: string | undefined;
  let bundlePem: string;

  const hashDir = (dir: string) => {
    const h = createHash("sha256");
    for (const name of readdirSync(dir).sort()) h.update(name).update(readFileSync(join(dir, name)));
    return h.digest("hex");
  };
  const connection = (address: string): CaConnection => ({ address, bundlePem, trustDomain: TD, timeoutMs: 10_000 });
  const startReplica = async (dir: string): Promise<Replica> => {
    const started = await startCli(
      ["ca", "serve", "--dir", dir, "--config", join(work, "ca.yaml"), "--store", store, "--listen", "127.0.0.1:0", "--passphrase-file", passphraseFile, "--workload-ttl", "1h"],
      /listening on (\S+) as (\S+)/,
      { timeoutMs: 30_000 },
    );
    return { ...started, address: started.match[1] as string, dir };
  };
  const admin = async (args: string[]) => {
    const r = await runCli([...args, "--dir", replicas[0]!.dir, "--store", store]);
    expect(r.code, r.stderr).toBe(0);
    return r.stdout;
  };
  const token = async (appId: string, uses = 1) => (await admin(["token", "create", "--namespace", "ha", "--app-id", appId, "--uses", String(uses)])).trim().split("\n").at(-1) as string;
  const issue = async (address: string, joinToken: string) => {
    const keyPair = generateKeyPair();
    const signed = await requestCertificate(connection(address), { csrPem: await createCsr({ keyPair }), token: joinToken, validator: "JOIN_TOKEN", namespace: "", appId: "" });
    return certificatesFromPem(signed.certChainPem).map((der) => inspectCertificate(der));
  };
  const crlOf = async (address: string) => fetchFromCa(connection(address), "/v1/crl");
  const leaderOf = () => replicas.find((r) => /"leader":true/.test(r.stderr()) && !/"event":"leader-lost"/.test(r.stderr()));

  beforeAll(async () => {
    pgServer = await startPostgres();
    store = await pgServer.createDatabase("ca_ha");
    work = mkdtempSync(join(tmpdir(), "meshward-ca-ha-"));
    passphraseFile = join(work, "passphrase");
    writeFileSync(passphraseFile, `${PASSPHRASE}\n`, { mode: 0o600 });
    // The load below comes from 64 clients on one address (loopback), where a cluster would have
    // 64: the per-address sign limit (test/ca/sign-rate-limit.test.ts) is off for it.
    writeFileSync(join(work, "ca.yaml"), "signRateLimit: false\n");
    const original = join(work, "ca");
    const init = await runCli(["ca", "init", "--trust-domain", TD, "--dir", original, "--passphrase-file", passphraseFile]);
    expect(init.code, init.stderr).toBe(0);
    bundlePem = readFileSync(join(original, "bundle.pem"), "utf8");
    dirHashes = new Map();
    // Three copies, as three pods each mounting the same Secret: read-only files and directories.
    // (Tests may run as root, whom modes do not stop: the hashes checked in afterAll prove nothing was written.)
    for (let i = 0; i < 3; i += 1) {
      const dir = join(work, `replica-${i}`);
      cpSync(original, dir, { recursive: true });
      rmSync(join(dir, "ca.db"), { force: true });
      for (const name of readdirSync(dir)) chmodSync(join(dir, name), name.endsWith(".key") ? 0o400 : 0o444);
      chmodSync(dir, 0o555);
      dirHashes.set(dir, hashDir(dir));
    }
    for (let i = 0; i < 3; i += 1) replicas.push(await startReplica(join(work, `replica-${i}`)));
  }, 120_000);

  afterAll(async () => {
    for (const replica of replicas) await replica.stop("SIGKILL");
    try {
      for (const [dir, hash] of dirHashes ?? []) expect(hashDir(dir), `${dir} was written to`).toBe(hash);
    } finally {
      for (const dir of dirHashes?.keys() ?? []) chmodSync(dir, 0o755);
      if (work) rmSync(work, { recursive: true, force: true });
      await pgServer?.stop();
    }
  });

  it("elects exactly one leader", async () => {
    expect(replicas.filter((r) => /"leader":true/.test(r.stderr()))).toHaveLength(1);
    expect(replicas.filter((r) => /"leader":false/.test(r.stderr()))).toHaveLength(2);
  });

  it("issues a single-use token raced against all three replicas exactly once", async () => {
    const joinToken = await token("raced");
    const outcomes = await Promise.allSettled(Array.from({ length: 24 }, (_, i) => issue(replicas[i % 3]!.address, joinToken)));
    const issued = outcomes.flatMap((o) => (o.status === "fulfilled" ? [o.value] : []));
    expect(issued).toHaveLength(1);
    for (const o of outcomes) if (o.status === "rejected") expect((o.reason as { code?: string }).code).toBe("E_TOKEN_USED");
    const db = openPostgresStore({ connectionString: store });
    try {
      const logged = await db.listIssuances({ spiffeId: `spiffe://${TD}/ns/ha/raced` });
      expect(logged.map((r) => r.serial)).toEqual([issued[0]![0]!.serial]);
    } finally {
      await db.close();
    }
  }, 60_000);

  it("puts a revocation in every replica's CRL within 10 s, all three byte-identical", async () => {
    const [leaf] = await issue(replicas[1]!.address, await token("revoked"));
    await admin(["cert", "revoke", "--serial", leaf!.serial]);
    const crls = await until("the revocation in all three CRLs", 10_000, async () => {
      const all = await Promise.all(replicas.map((r) => crlOf(r.address)));
      return all.every((der) => parseCrl(der).revokedSerials.has(leaf!.serial)) ? all : undefined;
    });
    expect(crls[1]!.equals(crls[0]!)).toBe(true);
    expect(crls[2]!.equals(crls[0]!)).toBe(true);
  }, 30_000);

  it("ca rotate-issuer --store makes all three sign with the new issuer within 15 s", async () => {
    const before = (await issue(replicas[0]!.address, await token("before-rotation")))[1]!.fingerprint256;
    const out = await admin(["ca", "rotate-issuer", "--now", "--passphrase-file", passphraseFile]);
    const fingerprint = /new issuer (\S+),/.exec(out)?.[1];
    expect(fingerprint).toBeDefined();
    expect(fingerprint).not.toBe(before);
    const multi = await token("after-rotation", 200);
    await until("all three replicas signing with the new issuer", 15_000, async () => {
      const issuers = await Promise.all(replicas.map(async (r) => (await issue(r.address, multi))[1]!.fingerprint256));
      return issuers.every((f) => f === fingerprint) ? true : undefined;
    });
    // ca status --store reads the shared state (the directory still holds the first issuer).
    const status = JSON.parse(await admin(["ca", "status", "--json", "--passphrase-file", passphraseFile])) as { anchors: { kind: string; fingerprint256: string }[] };
    expect(status.anchors.find((a) => a.kind === "issuer")?.fingerprint256).toBe(fingerprint);
    // The new issuer key is in the store, encrypted with the CA passphrase; no key in the clear.
    const db = openPostgresStore({ connectionString: store });
    try {
      const files = (await db.readCaFiles()).files;
      expect(files.get("issuer.key")).toMatch(/BEGIN ENCRYPTED PRIVATE[ ]KEY/);
      for (const content of files.values()) expect(content ?? "").not.toMatch(/BEGIN (EC )?PRIVATE[ ]KEY/);
    } finally {
      await db.close();
    }
    // And the CRL follows the new issuer on every replica, still identical.
    await until("every replica serving a CRL signed by the new issuer", 15_000, async () => {
      const all = await Promise.all(replicas.map((r) => crlOf(r.address)));
      const issuerPem = await fetchIssuerPem(fingerprint!);
      return issuerPem !== undefined && all.every((der) => der.equals(all[0]!) && verifies(der, issuerPem)) ? true : undefined;
    });
  }, 60_000);

  it("after ca import-issuer --store (the previous issuer kept), every replica serves the same CRL set: the new issuer's CRL and the previous issuer's", async () => {
    // The issuer of the rotation above signed certificates that are still valid, so it keeps signing its CRL.
    const previous = (await issue(replicas[0]!.address, await token("before-import")))[1]!.fingerprint256;
    const dir = replicas[0]!.dir;
    const root = new X509Certificate(readFileSync(join(dir, "root.pem")));
    const rootKey = decodePrivateKey(readFileSync(join(dir, "root.key"), "utf8"), PASSPHRASE);
    const keys = generateKeyPair();
    const issued = await createIssuerCertificate({ trustDomain: TD, publicKey: keys.publicKey, signer: { certificate: root, der: root.raw, privateKey: rootKey }, notBefore: new Date(Date.now() - 60_000), notAfter: new Date(Date.now() + 30 * 86_400_000) });
    writeFileSync(join(work, "imported-issuer.pem"), toPem(issued.der, "CERTIFICATE"));
    writeFileSync(join(work, "imported-issuer.key"), encodePrivateKey(keys.privateKey, PASSPHRASE), { mode: 0o600 });
    await admin(["ca", "import-issuer", "--issuer-cert", join(work, "imported-issuer.pem"), "--issuer-key", join(work, "imported-issuer.key"), "--passphrase-file", passphraseFile]);
    const current = new X509Certificate(issued.der).fingerprint256;
    const sha = (fingerprint: string) => fingerprint.replace(/:/g, "").toLowerCase();
    type CrlSet = { crls: { issuer_sha256: string; current: boolean; crl: string; issuer_chain: string[]; root?: boolean }[] };
    const rootSha = sha(root.fingerprint256);
    const sets = await until("every replica serving the same set of both issuers' CRLs", 20_000, async () => {
      const bodies = await Promise.all(replicas.map((r) => fetchFromCa(connection(r.address), "/v1/crl?format=set")));
      if (!bodies.every((b) => b.equals(bodies[0]!))) return undefined;
      const set = JSON.parse(bodies[0]!.toString("utf8")) as CrlSet;
      // Both issuers' CRLs, then the root's (root-crl.ts), which the leader signs and every replica serves.
      return set.crls.map((c) => c.issuer_sha256).join(",") === `${sha(current)},${sha(previous)},${rootSha}` ? bodies : undefined;
    });
    // Same bytes everywhere, and each CRL verifies with the issuer the set names for it.
    const set = JSON.parse(sets[0]!.toString("utf8")) as CrlSet;
    expect(set.crls.map((c) => c.current)).toEqual([true, false, false]);
    expect(set.crls.map((c) => c.root === true)).toEqual([false, false, true]);
    expect(() => parseCrl(Buffer.from(set.crls[2]!.crl, "base64"), root)).not.toThrow();
    for (const entry of set.crls.slice(0, 2)) {
      const issuer = new X509Certificate(Buffer.from(entry.issuer_chain[0]!, "base64"));
      expect(sha(issuer.fingerprint256)).toBe(entry.issuer_sha256);
      expect(() => parseCrl(Buffer.from(entry.crl, "base64"), issuer)).not.toThrow();
    }
    // One number for the set, as published in the store's one row.
    const numbers = set.crls.map((c) => parseCrl(Buffer.from(c.crl, "base64")).crlNumber);
    expect(numbers[1]).toBe(numbers[0]);
    const db = openPostgresStore({ connectionString: store });
    try {
      const published = (await db.latestCrl())!;
      expect(published.number).toBe(numbers[0]);
      expect(published.others?.map((b) => b.toString("base64"))).toEqual([set.crls[1]!.crl, set.crls[2]!.crl]);
    } finally {
      await db.close();
    }
    // ?issuer= answers the previous issuer's CRL on every replica.
    for (const r of replicas) expect((await fetchFromCa(connection(r.address), `/v1/crl?issuer=${sha(previous)}`)).toString("base64")).toBe(set.crls[1]!.crl);
  }, 60_000);

  // Helpers for the CRL check above: the new issuer's certificate from any leaf it signed.
  let lastIssuerPem: string | undefined;
  async function fetchIssuerPem(fingerprint: string): Promise<string | undefined> {
    if (lastIssuerPem !== undefined) return lastIssuerPem;
    const keyPair = generateKeyPair();
    const signed = await requestCertificate(connection(replicas[0]!.address), { csrPem: await createCsr({ keyPair }), token: await token("issuer-probe"), validator: "JOIN_TOKEN", namespace: "", appId: "" });
    const pems = signed.certChainPem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n/g) ?? [];
    if (inspectCertificate(pems[1]!).fingerprint256 === fingerprint) lastIssuerPem = pems[1];
    return lastIssuerPem;
  }
  function verifies(der: Buffer, issuerPem: string): boolean {
    try {
      parseCrl(der, new X509Certificate(issuerPem));
      return true;
    } catch {
      return false;
    }
  }

  it("kill -9 of the leader under issuance load (64 clients): issuance continues, a new leader signs the next CRL, no issuance is lost", async () => {
    const leader = leaderOf();
    expect(leader).toBeDefined();
    // Each client lists the three in its own order (as separate workloads would), so clients are
    // spread over the replicas and those on the leader must fail over when it dies.
    const lists = [0, 1, 2].map((k) => [0, 1, 2].map((i) => replicas[(i + k) % 3]!.address).join(","));
    const received: string[] = [];
    const failures: unknown[] = [];
    const multi = await token("load", 100_000);
    let killed = false;
    let afterKill = 0;
    const client = async (_: unknown, c: number) => {
      while (afterKill < 256) {
        try {
          const chain = await issue(lists[c % 3]!, multi);
          received.push(chain[0]!.serial);
          if (killed) afterKill += 1;
        } catch (error) {
          failures.push(error);
          if (failures.length > 50) return;
        }
      }
    };
    const clients = Array.from({ length: 64 }, client);
    await until("some issuance before the kill", 30_000, async () => (received.length >= 64 ? true : undefined));
    await leader!.stop("SIGKILL");
    killedAddress = leader!.address;
    killed = true;
    replicas = replicas.filter((r) => r !== leader);
    await Promise.all(clients);
    expect(failures.map(String)).toEqual([]);
    expect(afterKill).toBeGreaterThanOrEqual(256);

    // Every certificate a client received is in the issuance log.
    const db = openPostgresStore({ connectionString: store });
    try {
      const logged = new Set((await db.listIssuances({ spiffeId: `spiffe://${TD}/ns/ha/load` })).map((r) => r.serial));
      const missing = received.filter((serial) => !logged.has(serial));
      expect(missing).toEqual([]);
      // A new leader signs the next CRL: revoke one and watch it reach both survivors.
      const before = (await db.latestCrl())!.number;
      await admin(["cert", "revoke", "--serial", received[0]!]);
      await until("the next CRL from a new leader on both survivors", 10_000, async () => {
        const crls = await Promise.all(replicas.map((r) => crlOf(r.address)));
        return crls.every((der) => parseCrl(der).revokedSerials.has(received[0]!) && (parseCrl(der).crlNumber ?? 0n) > before && der.equals(crls[0]!)) ? true : undefined;
      });
      expect(replicas.filter((r) => /"event":"leader-elected"/.test(r.stderr()))).toHaveLength(1);
    } finally {
      await db.close();
    }
  }, 180_000);

  it("with one replica dead, a client given all three addresses gets certificates every time", async () => {
    // The leader killed above stays in the list, in its place among the three.
    expect(killedAddress).toBeDefined();
    const all = [replicas[0]!.address, killedAddress!, replicas[1]!.address].join(",");
    for (let i = 0; i < 10; i += 1) {
      const chain = await issue(all, await token(`failover-${i}`));
      expect(chain[0]!.uris).toEqual([`spiffe://${TD}/ns/ha/failover-${i}`]);
    }
  }, 60_000);
});
