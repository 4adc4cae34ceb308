import { createPrivateKey } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isEncryptedPrivateKeyPem } from "../../src/pki/keys.ts";
import { expectRefused, runCli, startCli } from "../helpers/cli.ts";
import { makeDaprAnchors } from "../dapr/openssl-anchors.ts";

// `ca init` refuses at import whatever `ca serve` would refuse (issue 16): before, an Ed448
// issuer (or one without keyCertSign) imported fine and the server then failed or issued leaves
// nobody could verify. Anchors are made by openssl, shaped like Dapr's dapr-trust-bundle Secret.
describe("ca init --root-cert/--issuer-cert/--issuer-key checks what ca serve needs", () => {
  let work: string;
  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), "meshward-import-check-"));
  });
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  // Dapr's ca.crt carries no name constraints: importing it takes --trust-every-ca-under-root
  // (test/ca/root-scope-cli.test.ts checks that refusal).
  const init = (anchors: { rootCert: string; issuerCert: string; issuerKey: string }, dir: string, more: string[] = []) =>
    runCli(["ca", "init", "--trust-domain", "public", "--dir", dir, "--root-cert", anchors.rootCert, "--issuer-cert", anchors.issuerCert, "--issuer-key", anchors.issuerKey, "--trust-every-ca-under-root", ...more]);

  it("refuses an Ed448 issuer (ca serve cannot sign with it) and writes nothing", async () => {
    const anchors = makeDaprAnchors(join(work, "ed448"), { key: "ed448" });
    const dir = join(work, "ca-ed448");
    const r = await init(anchors, dir);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/E_IMPORT_INVALID/);
    expect(r.stderr).toMatch(/Ed448/);
    expect(r.stderr).toMatch(/meshward ca serve/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(existsSync(join(dir, "ca.json"))).toBe(false);
    expect(existsSync(join(dir, "issuer.key"))).toBe(false);
  });

  it("refuses an issuer without keyCertSign (its leaves would not verify)", async () => {
    const anchors = makeDaprAnchors(join(work, "no-certsign"), { key: "p256", issuerKeyUsage: "digitalSignature,cRLSign" });
    const r = await init(anchors, join(work, "ca-no-certsign"));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/E_IMPORT_INVALID/);
    // OpenSSL's X509_check_ca (node's X509Certificate.ca) already says no CA without keyCertSign.
    expect(r.stderr).toMatch(/not a CA certificate/);
  });

  it("refuses an Ed448 issuer in ca import-issuer too, and keeps the current one", async () => {
    const good = makeDaprAnchors(join(work, "p256"), { key: "p256" });
    const dir = join(work, "ca-p256");
    expect((await init(good, dir)).code).toBe(0);
    const bad = makeDaprAnchors(join(work, "ed448-2"), { key: "ed448" });
    const r = await runCli(["ca", "import-issuer", "--dir", dir, "--issuer-cert", bad.issuerCert, "--issuer-key", bad.issuerKey]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/E_IMPORT_INVALID/);
  });

  it("imports an encrypted issuer key with --issuer-key-passphrase-file; without it, refused by name and nothing written", async () => {
    const anchors = makeDaprAnchors(join(work, "encrypted"), { key: "p256" });
    const keyPassphrase = join(work, "issuer-key-passphrase");
    writeFileSync(keyPassphrase, "issuer key secret\n", { mode: 0o600 });
    const encryptedKey = join(work, "encrypted", "issuer.enc.key");
    writeFileSync(encryptedKey, createPrivateKey(readFileSync(anchors.issuerKey)).export({ type: "pkcs8", format: "pem", cipher: "aes-256-cbc", passphrase: "issuer key secret" }));
    const withEncrypted = { ...anchors, issuerKey: encryptedKey };

    const refused = await init(withEncrypted, join(work, "ca-encrypted-refused"));
    expectRefused(refused, "E_KEY_PASSPHRASE_REQUIRED", /--issuer-key .*issuer\.enc\.key: the private key is encrypted; give its passphrase with --issuer-key-passphrase-file FILE/);
    expect(existsSync(join(work, "ca-encrypted-refused"))).toBe(false);
    const wrong = join(work, "wrong-passphrase");
    writeFileSync(wrong, "not it\n", { mode: 0o600 });
    const wrongDir = join(work, "ca-encrypted-wrong");
    expect((await init(withEncrypted, wrongDir, ["--issuer-key-passphrase-file", wrong])).code).toBe(1);
    expect(existsSync(wrongDir)).toBe(false);

    // Kept encrypted with the CA's own passphrase, which differs from the imported key's.
    const caPassphrase = join(work, "ca-passphrase");
    writeFileSync(caPassphrase, "ca secret\n", { mode: 0o600 });
    const dir = join(work, "ca-encrypted");
    const r = await init(withEncrypted, dir, ["--issuer-key-passphrase-file", keyPassphrase, "--passphrase-file", caPassphrase]);
    expect(r.code, r.stderr).toBe(0);
    // No note about a decrypted key (the warning about the root's missing name constraints stays).
    expect(r.stderr).not.toMatch(/note:/);
    const stored = readFileSync(join(dir, "issuer.key"), "utf8");
    expect(isEncryptedPrivateKeyPem(stored)).toBe(true);
    expect(createPrivateKey({ key: stored, passphrase: "ca secret" }).asymmetricKeyType).toBe("ec");
    const served = await startCli(["ca", "serve", "--dir", dir, "--listen", "127.0.0.1:0", "--passphrase-file", caPassphrase], /listening on (\S+) as (\S+)/);
    await served.stop();

    // Without a CA passphrase the key is stored decrypted, 0600, and stderr says so.
    const plainDir = join(work, "ca-encrypted-plain");
    const plain = await init(withEncrypted, plainDir, ["--issuer-key-passphrase-file", keyPassphrase]);
    expect(plain.code, plain.stderr).toBe(0);
    expect(plain.stderr).toMatch(/the imported issuer key was encrypted; .*issuer\.key holds it decrypted \(mode 0600\)/);
    expect(statSync(join(plainDir, "issuer.key")).mode & 0o777).toBe(0o600);
    expect(createPrivateKey(readFileSync(join(plainDir, "issuer.key"))).asymmetricKeyType).toBe("ec");
    for (const out of [refused, r, plain]) expect(out.stderr + out.stdout).not.toMatch(/issuer key secret|ca secret/);
  }, 60_000);

  it("refuses --issuer-key-passphrase-file without an import", async () => {
    const r = await runCli(["ca", "init", "--trust-domain", "public", "--dir", join(work, "ca-stray-flag"), "--issuer-key-passphrase-file", join(work, "nope")]);
    expectRefused(r, "E_USAGE", /--issuer-key-passphrase-file goes with an imported --issuer-key/);
    expect(existsSync(join(work, "ca-stray-flag"))).toBe(false);
  });

  it("accepts Dapr >= 1.18 Ed25519 anchors, and ca serve then starts with them", async () => {
    const anchors = makeDaprAnchors(join(work, "ed25519"), { key: "ed25519" });
    const dir = join(work, "ca-ed25519");
    const r = await init(anchors, dir);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/imported root/);
    const served = await startCli(["ca", "serve", "--dir", dir, "--listen", "127.0.0.1:0"], /listening on (\S+) as (\S+)/);
    try {
      expect(served.match[2]).toBe("spiffe://public/ns/meshward-system/meshward-ca");
    } finally {
      await served.stop();
    }
  }, 60_000);
});
