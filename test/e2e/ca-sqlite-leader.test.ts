import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fetchFromCa, requestCertificate, type CaConnection } from "../../src/identity/ca-client.ts";
import { parseCrl } from "../../src/pki/crl.ts";
import { createCsr } from "../../src/pki/csr.ts";
import { inspectCertificate } from "../../src/pki/inspect.ts";
import { generateKeyPair } from "../../src/pki/keys.ts";
import { certificatesFromPem } from "../../src/pki/pem.ts";
import { runCli, startCli, type LongRunning } from "../helpers/cli.ts";
import { until } from "../helpers/wait.ts";

// Several `meshward ca serve` on one CA directory and its SQLite store (as
// test/e2e/ca-failover.test.ts runs three) elect one leader, as replicas on PostgreSQL do: only
// it rotates and signs CRLs. Before, every process acted as leader: with automatic root rotation
// due, each prepared its own next root (the bundle ended with an orphan root whose key another
// process had overwritten), and each signed its own CRL, so replicas served different CRLs.
// Polling loops wait for observable states; nothing asserts how fast they happened.
const TD = "sqlite-leader.test";

type Replica = LongRunning & { address: string };

describe("CA processes sharing one SQLite CA directory elect one leader", () => {
  let work: string;
  let caDir: string;
  let replicas: Replica[] = [];
  let bundlePem: string;

  const connection = (address: string): CaConnection => ({ address, bundlePem, trustDomain: TD, timeoutMs: 10_000 });
  const crlOf = async (address: string) => fetchFromCa(connection(address), "/v1/crl");
  const rootsOf = (pem: string) => certificatesFromPem(pem).map((der) => inspectCertificate(der).fingerprint256).sort();
  const started = (r: Replica) => /"event":"ca-started"/.test(r.stderr());
  const prepares = () => replicas.reduce((n, r) => n + (r.stderr().match(/"kind":"root","step":"prepare"/g) ?? []).length, 0);

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "meshward-sqlite-leader-"));
    caDir = join(work, "ca");
    const init = await runCli(["ca", "init", "--trust-domain", TD, "--dir", caDir, "--root-ttl", "60d"]);
    expect(init.code, init.stderr).toBe(0);
    bundlePem = readFileSync(join(caDir, "bundle.pem"), "utf8");
    // Root rotation is due at once (the root expires within prepareBefore), checked every 100 ms.
    writeFileSync(join(work, "ca.yaml"), "autoRotateRoot:\n  enabled: true\n  prepareBefore: 1y\n  activateAfter: 7d\nrotationCheck: 100ms\nsignRateLimit: false\n");
    // Started together, as a Deployment's pods would be.
    const starting = [0, 1].map(() =>
      startCli(["ca", "serve", "--dir", caDir, "--config", join(work, "ca.yaml"), "--listen", "127.0.0.1:0"], /listening on (\S+) as (\S+)/, { timeoutMs: 30_000 }),
    );
    const settled = await Promise.allSettled(starting);
    for (const s of settled) if (s.status === "fulfilled") replicas.push({ ...s.value, address: s.value.match[1] as string });
    const failed = settled.find((s) => s.status === "rejected");
    if (failed !== undefined) throw (failed as PromiseRejectedResult).reason;
    await until("both processes logged ca-started", 10_000, async () => (replicas.every(started) ? true : undefined));
  }, 90_000);

  afterAll(async () => {
    for (const replica of replicas) await replica.stop("SIGKILL");
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it("exactly one is the leader; only it prepares the next root, and both serve the one bundle it wrote", async () => {
    expect(replicas.filter((r) => /"event":"ca-started"[^\n]*"leader":true/.test(r.stderr()))).toHaveLength(1);
    expect(replicas.filter((r) => /"event":"ca-started"[^\n]*"leader":false/.test(r.stderr()))).toHaveLength(1);
    // The follower picks up the leader's rotated files: both serve the same two-root bundle.
    const served = await until("both processes serving the prepared bundle", 20_000, async () => {
      const bundles = await Promise.all(replicas.map((r) => fetchFromCa(connection(r.address), "/v1/bundle")));
      const roots = bundles.map((b) => rootsOf(b.toString("utf8")));
      return roots.every((r) => r.length >= 2 && r.join() === roots[0]!.join()) ? roots[0] : undefined;
    });
    expect(served).toHaveLength(2);
    expect(rootsOf(readFileSync(join(caDir, "bundle.pem"), "utf8"))).toEqual(served);
    expect(prepares()).toBe(1);
  }, 60_000);

  it("both serve the CRL the leader signed, byte for byte", async () => {
    await until("the same CRL on both processes", 20_000, async () => {
      const crls = await Promise.all(replicas.map((r) => crlOf(r.address)));
      return crls.every((der) => der.equals(crls[0]!)) ? true : undefined;
    });
  }, 60_000);

  it("when the leader is killed, the other takes over: it signs the next CRL, with a revocation made after the kill", async () => {
    const leader = replicas.find((r) => /"event":"ca-started"[^\n]*"leader":true/.test(r.stderr()))!;
    const follower = replicas.find((r) => r !== leader)!;
    const token = await runCli(["token", "create", "--dir", caDir, "--namespace", "shop", "--app-id", "takeover"]);
    expect(token.code, token.stderr).toBe(0);
    const signed = await requestCertificate(connection(follower.address), {
      csrPem: await createCsr({ keyPair: generateKeyPair() }),
      token: token.stdout.trim().split("\n").at(-1) as string,
      validator: "JOIN_TOKEN",
      namespace: "",
      appId: "",
    });
    const serial = inspectCertificate(certificatesFromPem(signed.certChainPem)[0]!).serial;
    const before = parseCrl(await crlOf(follower.address)).crlNumber ?? 0n;

    await leader.stop("SIGKILL");
    replicas = [follower];
    await until("the follower becoming the leader", 10_000, async () => (/"event":"leader-elected"/.test(follower.stderr()) ? true : undefined));
    const revoke = await runCli(["cert", "revoke", "--dir", caDir, "--serial", serial]);
    expect(revoke.code, revoke.stderr).toBe(0);
    await until("the new leader's CRL with the revocation", 20_000, async () => {
      const crl = parseCrl(await crlOf(follower.address));
      return crl.revokedSerials.has(serial) && (crl.crlNumber ?? 0n) > before ? true : undefined;
    });
  }, 90_000);
});
