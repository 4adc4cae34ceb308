import { createPrivateKey } from "node:crypto";
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { isEncryptedPrivateKeyPem } from "../../src/pki/keys.ts";
import { runCli, type CliResult } from "../helpers/cli.ts";

/**
 * Review finding (HIGH): a CA made with --passphrase-file silently got keys in the clear. Every
 * step that writes a key encoded it with whatever passphrase it was given, none when the operator
 * left --passphrase-file out: `rotate-root prepare` wrote root.next.key unencrypted, `activate`
 * then installed it as root.key, `import-issuer` wrote issuer.key in plain PEM. The CA now knows
 * it keeps its keys encrypted (ca.json `keysEncrypted`, or, in a directory made before that was
 * recorded, an encrypted key file) and refuses such a step before writing anything.
 */

/** Whether a key file is encrypted; one that is not must be a private key readable without a passphrase. */
function encrypted(path: string): boolean {
  const pem = readFileSync(path, "utf8");
  if (isEncryptedPrivateKeyPem(pem)) return true;
  createPrivateKey(pem);
  return false;
}

describe("a CA that keeps its keys encrypted never gets a key in the clear", () => {
  const work = mkdtempSync(join(tmpdir(), "meshward-key-encryption-"));
  afterAll(() => rmSync(work, { recursive: true, force: true }));
  const passphraseFile = join(work, "passphrase");
  writeFileSync(passphraseFile, "correct horse battery staple\n");
  chmodSync(passphraseFile, 0o600);
  // The key's own passphrase for import-issuer (the imported key is encrypted, the CA's is not given).
  const keyPassphraseFile = join(work, "key-passphrase");
  writeFileSync(keyPassphraseFile, "correct horse battery staple\n", { mode: 0o600 });

  const ok = async (args: string[]): Promise<CliResult> => {
    const r = await runCli(args);
    expect(r.code, `meshward ${args.join(" ")}\n${r.stderr}`).toBe(0);
    return r;
  };
  const snapshot = (dir: string) => Object.fromEntries(readdirSync(dir).filter((f) => f !== "ca.db").sort().map((f) => [f, readFileSync(join(dir, f), "utf8")]));
  const refusedForPassphrase = (r: CliResult, dir: string, because: RegExp) => {
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`${dir} keeps its keys encrypted \\(${because.source}\\).*--passphrase-file FILE.*nothing was written \\[E_KEY_PASSPHRASE_REQUIRED\\]`));
    expect(r.stderr).not.toMatch(/\n\s+at |unexpected error/);
    expect(r.stderr).not.toContain("correct horse");
  };
  const initEncrypted = async (name: string) => {
    const dir = join(work, name);
    await ok(["ca", "init", "--trust-domain", "enc.test", "--dir", dir, "--passphrase-file", passphraseFile]);
    return dir;
  };

  it("ca init records keysEncrypted; prepare, import-issuer and activate without the passphrase are refused, nothing written", async () => {
    const dir = await initEncrypted("ca");
    const before = snapshot(dir);

    refusedForPassphrase(await runCli(["ca", "rotate-root", "prepare", "--dir", dir]), dir, /ca\.json records keysEncrypted/);
    expect(existsSync(join(dir, "root.next.key"))).toBe(false);
    // The imported key decrypts with its own passphrase file; the CA passphrase is missing.
    refusedForPassphrase(
      await runCli(["ca", "import-issuer", "--dir", dir, "--issuer-cert", join(dir, "issuer.pem"), "--issuer-key", join(dir, "issuer.key"), "--issuer-key-passphrase-file", keyPassphraseFile]),
      dir,
      /ca\.json records keysEncrypted/,
    );
    expect(snapshot(dir)).toEqual(before);
    expect(JSON.parse(readFileSync(join(dir, "ca.json"), "utf8")).keysEncrypted).toBe(true);

    // With the passphrase every step works and every key it writes is encrypted.
    await ok(["ca", "rotate-root", "prepare", "--dir", dir, "--passphrase-file", passphraseFile]);
    expect(encrypted(join(dir, "root.next.key"))).toBe(true);
    const prepared = snapshot(dir);
    refusedForPassphrase(await runCli(["ca", "rotate-root", "activate", "--dir", dir]), dir, /ca\.json records keysEncrypted/);
    expect(snapshot(dir)).toEqual(prepared);
    await ok(["ca", "rotate-root", "activate", "--dir", dir, "--passphrase-file", passphraseFile]);
    await ok(["ca", "import-issuer", "--dir", dir, "--issuer-cert", join(dir, "issuer.pem"), "--issuer-key", join(dir, "issuer.key"), "--passphrase-file", passphraseFile]);
    await ok(["ca", "rotate-issuer", "--dir", dir, "--now", "--passphrase-file", passphraseFile]);
    for (const file of readdirSync(dir).filter((f) => f.endsWith(".key"))) {
      expect(encrypted(join(dir, file)), file).toBe(true);
    }
  }, 180_000);

  it("a CA directory made before keysEncrypted was recorded is judged by its key files", async () => {
    const dir = await initEncrypted("legacy");
    const state = JSON.parse(readFileSync(join(dir, "ca.json"), "utf8"));
    delete state.keysEncrypted;
    writeFileSync(join(dir, "ca.json"), `${JSON.stringify(state, null, 2)}\n`);
    const before = snapshot(dir);
    refusedForPassphrase(await runCli(["ca", "rotate-root", "prepare", "--dir", dir]), dir, /root\.key is encrypted/);
    expect(snapshot(dir)).toEqual(before);
  }, 60_000);

  it("a CA whose keys are in the clear: without a passphrase nothing changes; given one, new keys are encrypted, ca.json says so and stderr tells", async () => {
    const dir = join(work, "plain");
    await ok(["ca", "init", "--trust-domain", "plain.test", "--dir", dir]);
    expect(JSON.parse(readFileSync(join(dir, "ca.json"), "utf8")).keysEncrypted).toBe(false);
    await ok(["ca", "rotate-root", "prepare", "--dir", dir]);
    expect(encrypted(join(dir, "root.next.key"))).toBe(false);

    // The passphrase encrypts what this step writes, also the prepared root it installs.
    const activated = await ok(["ca", "rotate-root", "activate", "--dir", dir, "--passphrase-file", passphraseFile]);
    expect(activated.stderr).toMatch(/note: .*plain kept its keys unencrypted; the new key is encrypted .*'meshward ca serve' included, needs the passphrase/);
    expect(encrypted(join(dir, "root.key"))).toBe(true);
    expect(encrypted(join(dir, "issuer.key"))).toBe(true);
    expect(JSON.parse(readFileSync(join(dir, "ca.json"), "utf8")).keysEncrypted).toBe(true);
    // From then on it is an encrypted CA: a key-writing step without the passphrase is refused.
    await ok(["ca", "rotate-root", "retire", "--dir", dir]);
    refusedForPassphrase(await runCli(["ca", "rotate-root", "prepare", "--dir", dir]), dir, /ca\.json records keysEncrypted/);
    const status = await runCli(["ca", "status", "--dir", dir]);
    expect(status.stderr).toMatch(/issuer\.key is encrypted: give the CA passphrase with --passphrase-file FILE \(or MESHWARD_CA_PASSPHRASE\) \[E_KEY_PASSPHRASE_REQUIRED\]/);
  }, 180_000);
});
