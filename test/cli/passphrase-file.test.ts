import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { runCli } from "../helpers/cli.ts";

/**
 * Red team: the CA passphrase file decrypts the root and issuer keys (and, with several
 * replicas, the keys kept in the shared store). A group- or world-readable one was accepted
 * silently, though the key files themselves are held to 0600 (ssh's rule for private keys). It
 * is now held to the same rule as the key files, with the same Kubernetes Secret exception.
 */
describe("--passphrase-file must be readable by its owner only", () => {
  const work = mkdtempSync(join(tmpdir(), "meshward-passphrase-file-"));
  afterAll(() => rmSync(work, { recursive: true, force: true }));
  const passphrase = (name: string, mode: number) => {
    const path = join(work, name);
    writeFileSync(path, "correct horse battery staple\n");
    chmodSync(path, mode);
    return path;
  };

  it("ca init refuses a passphrase file group or others can read, before writing anything, naming the fix", async () => {
    for (const mode of [0o644, 0o640, 0o604]) {
      const file = passphrase(`loose-${mode.toString(8)}`, mode);
      const dir = join(work, `ca-${mode.toString(8)}`);
      const r = await runCli(["ca", "init", "--trust-domain", "pass.test", "--dir", dir, "--passphrase-file", file]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(new RegExp(`passphrase file ${file} is accessible by group or others \\(mode 0${mode.toString(8)}\\).*chmod 600 ${file}.*\\[E_KEY_PERMISSIONS\\]`));
      expect(r.stderr).not.toMatch(/\n\s+at |unexpected error/);
      expect(existsSync(join(dir, "issuer.key"))).toBe(false);
    }
  });

  it("ca init and ca status accept an owner-only passphrase file (0600, 0400)", async () => {
    const file = passphrase("private", 0o600);
    const dir = join(work, "ca-ok");
    const init = await runCli(["ca", "init", "--trust-domain", "pass.test", "--dir", dir, "--passphrase-file", file]);
    expect(init.code, init.stderr).toBe(0);
    chmodSync(file, 0o400);
    const status = await runCli(["ca", "status", "--dir", dir, "--passphrase-file", file]);
    expect(status.code, status.stderr).toBe(0);
    // The same file loosened afterwards is refused by every command that reads it.
    chmodSync(file, 0o644);
    const loose = await runCli(["ca", "status", "--dir", dir, "--passphrase-file", file]);
    expect(loose.code).toBe(1);
    expect(loose.stderr).toMatch(/\[E_KEY_PERMISSIONS\]/);
  });
});
