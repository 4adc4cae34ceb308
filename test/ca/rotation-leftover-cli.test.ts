import { createHash, X509Certificate } from "node:crypto";
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { caLayout, initAnchors, keyFingerprint, readCaState } from "../../src/ca/anchors.ts";
import { prepareRoot } from "../../src/ca/rotation.ts";
import { decodePrivateKey, keysMatch } from "../../src/pki/keys.ts";
import { certificatesFromPem } from "../../src/pki/pem.ts";
import { expectRefused, runCli, type CliResult } from "../helpers/cli.ts";

/**
 * Review rotation (task 1, 2): `meshward ca rotate-root prepare` took up any root.next.pem/root.next.key
 * whose names matched, so the files of another CA with the SAME trust-domain name (copied in by
 * mistake) joined the bundle as this CA's next root, and a root.next.key alone became the key of a
 * new root. Now ca.json records the key a prepare is about to write (preparingRoot) before it writes
 * root.next.key, and a retry takes up only that key; anything else is refused (E_ROTATION_STATE) and
 * nothing is changed. A retry that does take up an interrupted prepare says so. Every step under test
 * is a real process; the other CA, and the interrupted prepares, are set up in-process or with an
 * injected SIGKILL (test/helpers/fault-rename.mjs).
 */
const FAULT = fileURLToPath(new URL("../helpers/fault-rename.mjs", import.meta.url));
const TD = "leftover.test";

const sha256 = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex");
const fingerprint = (path: string) => new X509Certificate(readFileSync(path)).fingerprint256;
const bundleOf = (dir: string) => certificatesFromPem(readFileSync(caLayout(dir).bundle, "utf8")).map((der) => new X509Certificate(der).fingerprint256);
/** Every file of the directory and its content: what "nothing was changed" compares (not the lock, nor a temp file a killed process left, which the next command's lock clears). */
const snapshot = (dir: string) => Object.fromEntries(readdirSync(dir).filter((name) => !name.startsWith(".")).map((name) => [name, sha256(join(dir, name))]));

function killedAt(args: string[], target: string): Promise<CliResult> {
  return runCli(args, { env: { NODE_OPTIONS: `--import ${FAULT}`, MESHWARD_FAULT_RENAME_TO: target, MESHWARD_FAULT_MODE: "kill" } });
}

describe("rotate-root prepare and root.next.* it did not write (real processes)", { timeout: 120_000, concurrent: true }, () => {
  const work = mkdtempSync(join(tmpdir(), "meshward-rotation-leftover-"));
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  /** Another CA of the same trust domain, its next root prepared: the files an operator might copy by mistake. */
  const otherCa = async (name: string) => {
    const dir = join(work, `${name}-other`);
    await initAnchors({ dir, trustDomain: TD, now: new Date() });
    await prepareRoot({ dir, now: new Date() });
    return caLayout(dir);
  };

  it("another CA's root.next.pem and root.next.key (same trust domain): refused E_ROTATION_STATE, nothing changed; moved out, a new root of this CA is made", async () => {
    const dir = join(work, "both");
    await initAnchors({ dir, trustDomain: TD, now: new Date() });
    const layout = caLayout(dir);
    const other = await otherCa("both");
    copyFileSync(other.nextRootKey, layout.nextRootKey);
    copyFileSync(other.nextRootCert, layout.nextRootCert);
    const before = snapshot(dir);

    const refused = await runCli(["ca", "rotate-root", "prepare", "--dir", dir]);
    expectRefused(refused, "E_ROTATION_STATE", /root\.next\.pem holds the root .* which the trust bundle does not hold[\s\S]*Nothing was changed\. Move root\.next\.key and root\.next\.pem out of /);
    expect(snapshot(dir)).toEqual(before);
    expect(readCaState(dir).rootRotation).toBeUndefined();

    const aside = join(work, "both-aside");
    mkdirSync(aside);
    renameSync(layout.nextRootKey, join(aside, "root.next.key"));
    renameSync(layout.nextRootCert, join(aside, "root.next.pem"));
    const again = await runCli(["ca", "rotate-root", "prepare", "--dir", dir]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).not.toContain("resumed");
    expect(fingerprint(layout.nextRootCert)).not.toBe(fingerprint(other.nextRootCert));
    expect(bundleOf(dir)).not.toContain(fingerprint(other.nextRootCert));
    expect(keysMatch(decodePrivateKey(readFileSync(layout.nextRootKey, "utf8")), new X509Certificate(readFileSync(layout.nextRootCert)).publicKey)).toBe(true);
    // What the operator moved out is untouched.
    expect(sha256(join(aside, "root.next.key"))).toBe(sha256(other.nextRootKey));
    expect(readCaState(dir).preparingRoot).toBeUndefined();
  });

  it("another CA's root.next.key alone: refused E_ROTATION_STATE, nothing changed (it was used to build a new root)", async () => {
    const dir = join(work, "key-alone");
    await initAnchors({ dir, trustDomain: TD, now: new Date() });
    const layout = caLayout(dir);
    const other = await otherCa("key-alone");
    copyFileSync(other.nextRootKey, layout.nextRootKey);
    const before = snapshot(dir);
    const refused = await runCli(["ca", "rotate-root", "prepare", "--dir", dir]);
    expectRefused(refused, "E_ROTATION_STATE", /root\.next\.key holds the key [0-9A-F:]{95} without a certificate, and ca\.json records no root being prepared[\s\S]*Move root\.next\.key out of /);
    expect(snapshot(dir)).toEqual(before);
  });

  it("another CA's root.next.key sealed with its own passphrase: refused E_ROTATION_STATE as not this CA's (not 'wrong passphrase'), nothing changed", async () => {
    const dir = join(work, "sealed");
    const passphrase = "this CA's passphrase";
    await initAnchors({ dir, trustDomain: TD, now: new Date(), passphrase });
    const layout = caLayout(dir);
    const otherDir = join(work, "sealed-other");
    await initAnchors({ dir: otherDir, trustDomain: TD, now: new Date(), passphrase: "another passphrase" });
    await prepareRoot({ dir: otherDir, now: new Date(), passphrase: "another passphrase" });
    copyFileSync(caLayout(otherDir).nextRootKey, layout.nextRootKey);
    copyFileSync(caLayout(otherDir).nextRootCert, layout.nextRootCert);
    const before = snapshot(dir);
    const refused = await runCli(["ca", "rotate-root", "prepare", "--dir", dir], { env: { MESHWARD_CA_PASSPHRASE: passphrase } });
    expectRefused(refused, "E_ROTATION_STATE", /root\.next\.key is not sealed with this CA's passphrase \(which opens root\.key\)[\s\S]*Nothing was changed/);
    expect(snapshot(dir)).toEqual(before);
    // A wrong passphrase is still told as such.
    const wrong = await runCli(["ca", "rotate-root", "prepare", "--dir", dir], { env: { MESHWARD_CA_PASSPHRASE: "not it" } });
    expectRefused(wrong, "E_KEY_PASSPHRASE_WRONG", /the passphrase does not decrypt/);
    expect(snapshot(dir)).toEqual(before);
  });

  it("this CA's prepare killed after it wrote root.next.key, then another CA's files copied over it: refused, naming the key ca.json records; nothing changed", async () => {
    const dir = join(work, "over-own");
    await initAnchors({ dir, trustDomain: TD, now: new Date() });
    const layout = caLayout(dir);
    const killed = await killedAt(["ca", "rotate-root", "prepare", "--dir", dir], "root.next.pem");
    expect(killed.stderr).toContain("[fault] kill at the rename onto root.next.pem");
    const recorded = readCaState(dir).preparingRoot?.keyFingerprint;
    expect(recorded).toBe(keyFingerprint(decodePrivateKey(readFileSync(layout.nextRootKey, "utf8"))));
    const other = await otherCa("over-own");
    copyFileSync(other.nextRootKey, layout.nextRootKey);
    copyFileSync(other.nextRootCert, layout.nextRootCert);
    const before = snapshot(dir);
    const refused = await runCli(["ca", "rotate-root", "prepare", "--dir", dir]);
    expectRefused(refused, "E_ROTATION_STATE", new RegExp(`root\\.next\\.key holds the key [0-9A-F:]+, not the key ca\\.json records for the root being prepared \\(${recorded}\\)[\\s\\S]*Nothing was changed`));
    expect(snapshot(dir)).toEqual(before);
  });

  it("this CA's prepare killed after root.next.key (and after bundle.pem): the retry takes it up and says so on stderr and stdout", async () => {
    for (const target of ["root.next.pem", "ca.json,2"]) {
      const dir = join(work, `resume-${target}`);
      await initAnchors({ dir, trustDomain: TD, now: new Date() });
      const layout = caLayout(dir);
      const killed = await killedAt(["ca", "rotate-root", "prepare", "--dir", dir], target);
      expect(killed.code, killed.stderr).not.toBe(0);
      const key = sha256(layout.nextRootKey);
      const again = await runCli(["ca", "rotate-root", "prepare", "--dir", dir]);
      expect(again.code, again.stderr).toBe(0);
      expect(again.stderr, target).toMatch(/resumed an interrupted 'rotate-root prepare' \(the key matches the one ca\.json records\): (kept its key \(root\.next\.key\)|kept its root [0-9A-F:]+ and its key)/);
      expect(again.stdout).toContain("finishing an interrupted prepare");
      expect(sha256(layout.nextRootKey)).toBe(key);
      expect(readCaState(dir).rootRotation?.nextRootFingerprint).toBe(fingerprint(layout.nextRootCert));
      expect(readCaState(dir).preparingRoot).toBeUndefined();
    }
  });

  it("a CA directory of a meshward that recorded no key (ca.json without preparingRoot), its prepare interrupted after bundle.pem: taken up, and said so", async () => {
    const dir = join(work, "legacy");
    await initAnchors({ dir, trustDomain: TD, now: new Date() });
    const layout = caLayout(dir);
    const killed = await killedAt(["ca", "rotate-root", "prepare", "--dir", dir], "ca.json,2");
    expect(killed.code).not.toBe(0);
    // What an older meshward left: the same files, and a ca.json that names no key.
    const { preparingRoot: _dropped, ...old } = readCaState(dir);
    void _dropped;
    writeFileSync(layout.state, `${JSON.stringify(old, null, 2)}\n`);
    const root = fingerprint(layout.nextRootCert);
    const again = await runCli(["ca", "rotate-root", "prepare", "--dir", dir]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toMatch(/resumed an interrupted 'rotate-root prepare' \(ca\.json records no key \(an older meshward wrote it\) and the bundle already held that root\): kept its root/);
    expect(readCaState(dir).rootRotation?.nextRootFingerprint).toBe(root);
    expect(bundleOf(dir)).toHaveLength(2);
  });
});
