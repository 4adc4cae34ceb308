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

/**
 * Review atrest (note): --issuer-key-passphrase-file, the passphrase of an imported (encrypted)
 * issuer key, was read without the check --passphrase-file gets: a world-readable one was taken
 * silently. Same rule now (assertPrivateFile), for ca init and ca import-issuer.
 */
describe("--issuer-key-passphrase-file must be readable by its owner only", { timeout: 60_000 }, () => {
  const work = mkdtempSync(join(tmpdir(), "meshward-issuer-passphrase-"));
  afterAll(() => rmSync(work, { recursive: true, force: true }));
  const source = join(work, "source");
  const pass = join(work, "pass");

  it("ca init and ca import-issuer refuse a loose one before writing anything, and ca init takes a 0600 one", async () => {
    writeFileSync(pass, "import passphrase 0123456789\n", { mode: 0o600 });
    // A CA whose issuer key is encrypted with that passphrase: its files are the ones imported.
    const made = await runCli(["ca", "init", "--trust-domain", "imp.test", "--dir", source, "--passphrase-file", pass]);
    expect(made.code, made.stderr).toBe(0);
    const importArgs = ["--issuer-cert", join(source, "issuer.pem"), "--issuer-key", join(source, "issuer.key"), "--issuer-key-passphrase-file", pass];
    for (const mode of [0o644, 0o640]) {
      chmodSync(pass, mode);
      const target = join(work, `init-${mode.toString(8)}`);
      const init = await runCli(["ca", "init", "--trust-domain", "imp.test", "--dir", target, "--root-cert", join(source, "root.pem"), "--trust-every-ca-under-root", ...importArgs]);
      expect(init.code, init.stdout).toBe(1);
      expect(init.stderr).toMatch(new RegExp(`passphrase file ${pass} is accessible by group or others \\(mode 0${mode.toString(8)}\\).*chmod 600 ${pass}.*\\[E_KEY_PERMISSIONS\\]`));
      expect(existsSync(join(target, "issuer.key"))).toBe(false);
      const imported = await runCli(["ca", "import-issuer", "--dir", source, ...importArgs], { env: { MESHWARD_CA_PASSPHRASE: "import passphrase 0123456789" } });
      expect(imported.code, imported.stdout).toBe(1);
      expect(imported.stderr).toMatch(/issuer key passphrase file .* is accessible by group or others.*\[E_KEY_PERMISSIONS\]/);
    }
    chmodSync(pass, 0o600);
    const ok = await runCli(["ca", "init", "--trust-domain", "imp.test", "--dir", join(work, "init-ok"), "--root-cert", join(source, "root.pem"), "--trust-every-ca-under-root", ...importArgs]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(existsSync(join(work, "init-ok", "issuer.key"))).toBe(true);
  });
});
