import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { certificatesFromPem } from "../../src/pki/pem.ts";
import { inspectCertificate } from "../../src/pki/inspect.ts";
import { createTokenCli, runCli, startCaCli, startCli, type LongRunning } from "../helpers/cli.ts";

async function waitFor<T>(probe: () => Promise<T | undefined>, what: string, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

// Review of workload identity, MEDIUM 2: the CRL lists the workload's own certificate. Real
// processes: `ca serve`, `cert revoke`, `identity --status`.
describe("meshward identity whose own certificate is revoked (real processes)", () => {
  let work: string;
  let ca: LongRunning;
  let caAddress: string;
  let identity: LongRunning;
  let statusAddress: string;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "meshward-identity-revoked-"));
    ({ ca, address: caAddress } = await startCaCli(join(work, "ca"), "rv.test"));
    const token = await createTokenCli(join(work, "ca"), "ops", "rv");
    identity = await startCli(
      ["identity", "--ca", caAddress, "--bundle", join(work, "ca", "bundle.pem"), "--token", token, "--out", join(work, "files"), "--status", "127.0.0.1:0", "--bundle-refresh-interval", "1s"],
      /identity ready: (\S+) .* status=(\S+)/,
    );
    statusAddress = (identity as LongRunning & { match: RegExpMatchArray }).match[2] as string;
  }, 60_000);

  afterAll(async () => {
    await identity?.stop();
    await ca?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it("fails readiness naming the revoked serial, tries to renew at once, and says a new join token is needed when the CA refuses", async () => {
    const readyz = async () => {
      const res = await fetch(`http://${statusAddress}/readyz`);
      return { status: res.status, body: (await res.json()) as { checks: { identity: { ok: boolean; detail: string } } } };
    };
    expect((await readyz()).status).toBe(200);
    const serial = inspectCertificate(certificatesFromPem(readFileSync(join(work, "files", "cert.pem"), "utf8"))[0]!).serial;
    expect((await runCli(["cert", "revoke", "--dir", join(work, "ca"), "--serial", serial])).code).toBe(0);

    // Within a few bundle refreshes (1 s), not at the scheduled renewal 12 h away.
    const failing = await waitFor(async () => {
      const r = await readyz();
      return r.status === 503 && /a new join token is needed/.test(r.body.checks.identity.detail) ? r : undefined;
    }, "readiness to fail with the remedy");
    expect(failing.body.checks.identity.ok).toBe(false);
    expect(failing.body.checks.identity.detail).toContain(`this workload's certificate serial ${serial} was revoked`);
    expect(failing.body.checks.identity.detail).toMatch(/E_TOKEN_USED/);

    const log = identity.stdout() + identity.stderr();
    // Logged once, as an error; the renewal was tried at once (refused as revoked), then the spent token.
    expect(log.match(/"event":"own-certificate-revoked"/g)).toHaveLength(1);
    expect(log).toMatch(/"level":"error"[^\n]*"event":"own-certificate-revoked"/);
    expect(log).toMatch(/"event":"revoked"/);
    expect(log.match(/"event":"needs-new-token"/g)).toHaveLength(1);
    // Slow retries once a new token is needed: no second token attempt within the test.
    expect(log.match(/"event":"renewal-failed","reason":"E_TOKEN_USED"/g)?.length ?? 0).toBe(1);
  }, 60_000);
});
