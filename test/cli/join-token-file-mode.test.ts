import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, rmdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTokenCli, runCli, startCaCli, startCli, type LongRunning } from "../helpers/cli.ts";

/**
 * New-user review M4: README wrote a join token file 0644, and `cert issue`, `identity`,
 * `sidecar` (and the SDK's tokenFile) took a token file anyone could read: another local user
 * could spend the single-use token first and get the workload's certificate. A token file is now
 * held to the key files' rule (E_KEY_PERMISSIONS, `chmod 600 FILE`), refused before the token is
 * sent, so the same token still works once the mode is fixed. Allowed: 0600/0400, the Kubernetes
 * Secret shape with fsGroup (another owner, 0440, this process's group), and any file under a
 * platform's secret mount (/var/run/secrets, /run/secrets), where 0644 is the default and a
 * warning is printed instead.
 */
describe("a join token file must be readable by its owner only", () => {
  const work = mkdtempSync(join(tmpdir(), "meshward-join-token-mode-"));
  const caDir = join(work, "ca");
  const bundle = join(caDir, "bundle.pem");
  let ca: LongRunning;
  let address: string;
  const tokenFile = (path: string, token: string, mode: number) => {
    writeFileSync(path, `${token}\n`);
    chmodSync(path, mode);
    return path;
  };
  const refused = (r: { code: number | null; stdout: string; stderr: string }, file: string, mode: number, token: string) => {
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`token file ${file} is accessible by group or others \\(mode 0${mode.toString(8)}\\).*another local user could read the token.*the token was not sent.*chmod 600 ${file}.*\\[E_KEY_PERMISSIONS\\]`));
    expect(r.stderr).not.toMatch(/\n\s+at |unexpected error/);
    expect(r.stderr).not.toContain(token);
    expect(r.stdout).not.toMatch(/issued|ready/);
  };

  beforeAll(async () => {
    ({ ca, address } = await startCaCli(caDir, "tokenmode.test"));
  }, 60_000);
  afterAll(async () => {
    await ca.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it("cert issue refuses a 0644, 0640 or 0604 token file without spending the token; at 0600 the same token works", async () => {
    const token = await createTokenCli(caDir, "shop", "inventory");
    const file = join(work, "inventory.token");
    for (const mode of [0o644, 0o640, 0o604]) {
      tokenFile(file, token, mode);
      refused(await runCli(["cert", "issue", "--ca", address, "--bundle", bundle, "--token-file", file, "--out", join(work, "inventory")]), file, mode, token);
    }
    chmodSync(file, 0o600);
    const issued = await runCli(["cert", "issue", "--ca", address, "--bundle", bundle, "--token-file", file, "--out", join(work, "inventory")]);
    expect(issued.code, issued.stderr).toBe(0);
    expect(issued.stdout).toMatch(/issued spiffe:\/\/tokenmode\.test\/ns\/shop\/inventory/);
    expect(issued.stderr).toBe("");
  });

  it("identity and sidecar refuse a 0644 token file before contacting the CA; the token then works at 0400", async () => {
    const token = await createTokenCli(caDir, "shop", "orders");
    const file = tokenFile(join(work, "orders.token"), token, 0o644);
    refused(await runCli(["identity", "--ca", address, "--bundle", bundle, "--token-file", file, "--out", join(work, "orders-identity")], { timeoutMs: 20_000 }), file, 0o644, token);
    refused(
      await runCli(["sidecar", "--ca", address, "--bundle", bundle, "--token-file", file, "--namespace", "shop", "--app-id", "orders", "--outbound", "127.0.0.1:0"], { timeoutMs: 20_000 }),
      file,
      0o644,
      token,
    );
    chmodSync(file, 0o400);
    const identity = await startCli(["identity", "--ca", address, "--bundle", bundle, "--token-file", file, "--out", join(work, "orders-identity")], /identity ready: (\S+)/);
    expect(identity.match[1]).toBe("spiffe://tokenmode.test/ns/shop/orders");
    expect(identity.stderr()).not.toMatch(/token-file-readable/);
    expect(await identity.stop()).toBe(0);
  }, 60_000);

  it("the Kubernetes Secret shape passes: owned by another user, 0440, readable by this process's group", async () => {
    expect(process.getuid?.()).toBe(0);
    const token = await createTokenCli(caDir, "shop", "billing");
    const file = tokenFile(join(work, "billing.token"), token, 0o440);
    chownSync(file, 12345, process.getgid?.() as number);
    const issued = await runCli(["cert", "issue", "--ca", address, "--bundle", bundle, "--token-file", file, "--out", join(work, "billing")]);
    expect(issued.code, issued.stderr).toBe(0);
    expect(issued.stderr).toBe("");
  });

  it("under a platform's secret mount (/run/secrets) a 0644 token file is used, with a warning naming the fix", async () => {
    expect(process.getuid?.()).toBe(0);
    const created = !existsSync("/run/secrets");
    mkdirSync("/run/secrets", { recursive: true, mode: 0o755 });
    const mount = mkdtempSync("/run/secrets/meshward-test-");
    try {
      const token = await createTokenCli(caDir, "shop", "shipping");
      const file = tokenFile(join(mount, "token"), token, 0o644);
      const issued = await runCli(["cert", "issue", "--ca", address, "--bundle", bundle, "--token-file", file, "--out", join(work, "shipping")]);
      expect(issued.code, issued.stderr).toBe(0);
      expect(issued.stderr).toMatch(new RegExp(`meshward: warning: token file ${file} is accessible by group or others \\(mode 0644\\).*accepted under a platform's secret mount.*give the pod an fsGroup.*0640.*one runAsUser.*0600`));
      expect(issued.stderr).not.toContain(token);
    } finally {
      rmSync(mount, { recursive: true, force: true });
      if (created) {
        try {
          rmdirSync("/run/secrets");
        } catch {
          // test/inject/sidecar-start.test.ts's token volume is in it now; it removes the directory.
        }
      }
    }
  });
});
