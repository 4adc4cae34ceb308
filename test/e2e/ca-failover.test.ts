import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createIdentity } from "../../src/identity/ca-source.ts";
import { runCli, startCli, type LongRunning } from "../helpers/cli.ts";

// Issue 17, clients fail over: three real `meshward ca serve` processes on one CA directory and
// one store (SQLite here; test/e2e/ca-ha.test.ts does the same on PostgreSQL), one of them killed
// with SIGKILL. A client given all three addresses gets a certificate every time, with a
// single-use token each time (a failed attempt on the dead replica never spends it).
describe("CA clients fail over between replicas (3 processes, one dead)", () => {
  let work: string;
  let caDir: string;
  const replicas: (LongRunning & { address: string })[] = [];
  let all: string;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "meshward-ca-failover-"));
    caDir = join(work, "ca");
    const init = await runCli(["ca", "init", "--trust-domain", "failover.test", "--dir", caDir]);
    expect(init.code, init.stderr).toBe(0);
    for (let i = 0; i < 3; i += 1) {
      const started = await startCli(["ca", "serve", "--dir", caDir, "--listen", "127.0.0.1:0"], /listening on (\S+) as (\S+)/);
      replicas.push({ ...started, address: started.match[1] as string });
    }
    all = replicas.map((r) => r.address).join(",");
    // The first one tried is random per process, so kill the middle one: every order meets it sometimes.
    await replicas[1]!.stop("SIGKILL");
  }, 90_000);

  afterAll(async () => {
    for (const replica of replicas) await replica.stop();
    rmSync(work, { recursive: true, force: true });
  });

  const token = async (appId: string) => {
    const r = await runCli(["token", "create", "--dir", caDir, "--namespace", "shop", "--app-id", appId]);
    expect(r.code, r.stderr).toBe(0);
    return r.stdout.trim().split("\n").at(-1) as string;
  };

  it("cert issue --ca A,B,C gets a certificate every time with B dead, each with a single-use token", async () => {
    for (let i = 0; i < 8; i += 1) {
      const out = join(work, `out-${i}`);
      const issued = await runCli(["cert", "issue", "--ca", all, "--bundle", join(caDir, "bundle.pem"), "--token", await token(`app-${i}`), "--out", out]);
      expect(issued.code, issued.stderr).toBe(0);
      expect(issued.stdout).toContain(`spiffe://failover.test/ns/shop/app-${i}`);
      expect(readFileSync(join(out, "cert.pem"), "utf8")).toMatch(/BEGIN CERTIFICATE/);
    }
  }, 120_000);

  it("the SDK's ca option takes the replicas as an array and the identity becomes ready", async () => {
    const identity = createIdentity({
      ca: replicas.map((r) => r.address),
      bundlePem: readFileSync(join(caDir, "bundle.pem"), "utf8"),
      namespace: "shop",
      appId: "sdk",
      token: await token("sdk"),
      logger: pino({ level: "silent" }),
    });
    try {
      const snapshot = await identity.ready();
      expect(snapshot.svid.spiffeId).toBe("spiffe://failover.test/ns/shop/sdk");
      // The bundle and CRL are fetched with the same failover.
      await identity.refreshBundle();
    } finally {
      await identity.close();
    }
  }, 60_000);

  it("with every replica dead, says so for each one; a bad list is refused before any request", async () => {
    const dead = replicas[1]!.address;
    const r = await runCli(["cert", "issue", "--ca", `${dead},${dead.replace(/:\d+$/, ":1")}`, "--bundle", join(caDir, "bundle.pem"), "--token", await token("nobody"), "--out", join(work, "none")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/E_CA_UNAVAILABLE/);
    expect(r.stderr).toContain(dead);
    const bad = await runCli(["cert", "issue", "--ca", `${replicas[0]!.address},`, "--bundle", join(caDir, "bundle.pem"), "--token", await token("nobody2"), "--out", join(work, "none2")]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/E_ADDRESS_INVALID/);
  }, 60_000);
});
