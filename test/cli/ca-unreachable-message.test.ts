import { createServer } from "node:net";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli, spawnCli } from "../helpers/cli.ts";

/**
 * New-user review L4: with no CA running, `cert issue` said "the CA at … is unreachable: The
 * pending stream has been canceled (caused by: connect ECONNREFUSED …)" (Node's HTTP/2 wording),
 * and `identity` logged each first attempt as a plain renewal-failed. Now the reason is the
 * connection refused, with what to check, and the log line of a first attempt says first: true
 * ("could not get a workload certificate").
 */
describe("a CA that is not running", () => {
  const work = mkdtempSync(join(tmpdir(), "meshward-ca-unreachable-"));
  const caDir = join(work, "ca");
  const tokenFile = join(work, "token");
  let closed: string;

  beforeAll(async () => {
    const init = await runCli(["ca", "init", "--trust-domain", "down.test", "--dir", caDir]);
    expect(init.code, init.stderr).toBe(0);
    writeFileSync(tokenFile, "mwjt_not-a-real-token\n", { mode: 0o600 });
    // A port nothing listens on: bound, then closed.
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    closed = `127.0.0.1:${(server.address() as { port: number }).port}`;
    await new Promise((resolve) => server.close(resolve));
  });
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  const reason = () => `the CA at ${closed} is unreachable: connection refused (ECONNREFUSED: nothing listens at ${closed}): is 'meshward ca serve' running, with --listen ${closed}?`;

  it("cert issue says the connection was refused and what to check", async () => {
    const r = await runCli(["cert", "issue", "--ca", closed, "--bundle", join(caDir, "bundle.pem"), "--token-file", tokenFile, "--out", join(work, "out")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`meshward: ${reason()} [E_CA_UNAVAILABLE]\n`);
  });

  it("identity logs its first attempts as could not get a workload certificate, first: true, with that reason", async () => {
    const identity = spawnCli(["identity", "--ca", closed, "--bundle", join(caDir, "bundle.pem"), "--token-file", tokenFile, "--out", join(work, "identity")]);
    try {
      const deadline = Date.now() + 30_000;
      while (!identity.stderr().includes('"event":"renewal-failed"') && identity.child.exitCode === null && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      const line = identity.stderr().split("\n").find((l) => l.includes('"event":"renewal-failed"'));
      expect(line, identity.stderr()).toBeDefined();
      expect(JSON.parse(line as string)).toMatchObject({ event: "renewal-failed", first: true, reason: "E_CA_UNAVAILABLE", error: `E_CA_UNAVAILABLE: ${reason()}`, msg: "could not get a workload certificate; retrying" });
      expect(identity.stderr()).not.toMatch(/pending stream/);
    } finally {
      expect(await identity.stop()).toBe(0);
    }
  }, 60_000);
});
