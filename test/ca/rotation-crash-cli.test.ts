import { createHash, X509Certificate } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { caLayout, initAnchors, loadAnchors, readCaState } from "../../src/ca/anchors.ts";
import { prepareRoot } from "../../src/ca/rotation.ts";
import { keysMatch, decodePrivateKey } from "../../src/pki/keys.ts";
import { certificatesFromPem } from "../../src/pki/pem.ts";
import { runCli, startCli, type CliResult } from "../helpers/cli.ts";

/**
 * Review atrest HIGH-1 and MEDIUM-3, as an operator meets them: a rotation command killed (or
 * hitting a full disk) at any one of its file changes. The fault is injected into the real CLI
 * process (test/helpers/fault-rename.mjs: SIGKILL or ENOSPC at the rename onto one file name).
 * Before the fix, a fault between issuer.key and issuer.pem left the new key beside the old
 * certificate: 'ca serve', 'ca status' and the repair 'ca rotate-issuer --now' all failed
 * E_CA_CORRUPT; and a retried 'rotate-root activate' copied the new root over root.prev.*.
 * The steps before the one interrupted (the CA directory, a prepared root) are made in-process;
 * every step interrupted, checked or repaired is a real process.
 */
const FAULT = fileURLToPath(new URL("../helpers/fault-rename.mjs", import.meta.url));
const TD = "crash.test";

function faulty(args: string[], target: string, mode: "kill" | "enospc"): Promise<CliResult> {
  return runCli(args, { env: { NODE_OPTIONS: `--import ${FAULT}`, MESHWARD_FAULT_RENAME_TO: target, MESHWARD_FAULT_MODE: mode } });
}

const sha256 = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex");
const fingerprint = (path: string) => new X509Certificate(readFileSync(path)).fingerprint256;
/** What no finished step may leave in the directory: staged pairs, temp files, the lock. */
const leftovers = (dir: string) => readdirSync(dir).filter((name) => name.startsWith(".") || name.includes(".pending."));

// Each case has its own CA directory under `work` and its own processes: they run concurrently
// (vitest runs at most 5 at once). The time is the CLI processes starting, one after another
// within a case; run one case at a time they left the second core idle.
describe("a rotation command interrupted at any file change leaves a CA that starts (real processes, injected faults)", { timeout: 300_000, concurrent: true }, () => {
  const work = mkdtempSync(join(tmpdir(), "meshward-rotation-crash-"));
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  // The renames of 'ca rotate-issuer --now', in order: the staged key and certificate, then the switch.
  const issuerSteps = ["issuer.pending.key", "issuer.pending.pem", "issuer.key", "issuer.pem"];
  for (const mode of ["kill", "enospc"] as const) {
    it.each(issuerSteps)(`rotate-issuer, ${mode} at the rename onto %s: the old or the new issuer loads, ca status works, and the next rotate-issuer succeeds`, async (target) => {
      const dir = join(work, `issuer-${mode}-${target}`);
      await initAnchors({ dir, trustDomain: TD, now: new Date() });
      const layout = caLayout(dir);
      const oldKey = sha256(layout.issuerKey);
      const oldIssuer = fingerprint(layout.issuerCert);

      const interrupted = await faulty(["ca", "rotate-issuer", "--dir", dir, "--now"], target, mode);
      expect(interrupted.stderr).toContain(`[fault] ${mode} at the rename onto ${target}`);
      expect(interrupted.code).not.toBe(0);

      // Read as a starting CA reads it, before anything repairs it: one whole pair, old or new.
      const loaded = loadAnchors({ dir });
      const oldKept = sha256(layout.issuerKey) === oldKey;
      if (loaded.issuer.certificate.fingerprint256 === oldIssuer) expect(oldKept).toBe(true);
      else expect(oldKept).toBe(false);
      // The old key is replaced only once the new pair is complete on disk.
      if (!oldKept) expect(issuerSteps.indexOf(target)).toBeGreaterThanOrEqual(3);

      const status = await runCli(["ca", "status", "--dir", dir]);
      expect(status.code, status.stderr).toBe(0);
      const again = await runCli(["ca", "rotate-issuer", "--dir", dir, "--now"]);
      expect(again.code, again.stderr).toBe(0);
      const after = loadAnchors({ dir });
      expect(after.issuer.certificate.fingerprint256).toBe(fingerprint(layout.issuerCert));
      expect(keysMatch(decodePrivateKey(readFileSync(layout.issuerKey, "utf8")), new X509Certificate(readFileSync(layout.issuerCert)).publicKey)).toBe(true);
      expect(leftovers(dir)).toEqual([]);
    });
  }

  it("ca serve starts after a rotate-issuer killed between issuer.key and issuer.pem, finishes the switch and logs it", async () => {
    const dir = join(work, "serve-after-kill");
    await initAnchors({ dir, trustDomain: TD, now: new Date() });
    const oldIssuer = fingerprint(caLayout(dir).issuerCert);
    const interrupted = await faulty(["ca", "rotate-issuer", "--dir", dir, "--now"], "issuer.pem", "kill");
    expect(interrupted.code).not.toBe(0);
    const ca = await startCli(["ca", "serve", "--dir", dir, "--listen", "127.0.0.1:0"], /listening on/);
    try {
      expect(ca.stderr()).toMatch(/"event":"ca-dir-repaired".*issuer\.pending\.pem renamed to issuer\.pem/);
    } finally {
      await ca.stop();
    }
    expect(fingerprint(caLayout(dir).issuerCert)).not.toBe(oldIssuer);
    expect(loadAnchors({ dir }).issuer.certificate.fingerprint256).toBe(fingerprint(caLayout(dir).issuerCert));
    expect(leftovers(dir)).toEqual([]);
  });

  // The renames of 'ca rotate-root activate', in order: the old root kept, the new root switched in, a new issuer, ca.json.
  const activateSteps = ["root.prev.pem", "root.prev.key", "root.pending.key", "root.pending.pem", "root.key", "root.pem", "issuer.pending.key", "issuer.pending.pem", "issuer.key", "issuer.pem", "ca.json"];
  it.each(activateSteps)("rotate-root activate killed at the rename onto %s, then run again: root.prev.* hold the old root and its key, root.* the new one", async (target) => {
    const dir = join(work, `activate-${target}`);
    await initAnchors({ dir, trustDomain: TD, now: new Date() });
    const layout = caLayout(dir);
    const oldRoot = fingerprint(layout.rootCert);
    const oldRootKey = sha256(layout.rootKey);
    const oldIssuerKey = sha256(layout.issuerKey);
    // Prepared in-process, as the CA directory is made: the step under test is the activate below.
    await prepareRoot({ dir, now: new Date() });
    const newRoot = fingerprint(layout.nextRootCert);
    const newRootKey = sha256(layout.nextRootKey);

    const interrupted = await faulty(["ca", "rotate-root", "activate", "--dir", dir], target, "kill");
    expect(interrupted.stderr).toContain(`[fault] kill at the rename onto ${target}`);
    expect(readCaState(dir).rootRotation?.phase).toBe("prepared");
    const status = await runCli(["ca", "status", "--dir", dir]);
    expect(status.code, status.stderr).toBe(0);

    const again = await runCli(["ca", "rotate-root", "activate", "--dir", dir]);
    expect(again.code, again.stderr).toBe(0);
    expect(readCaState(dir).rootRotation?.phase).toBe("activated");
    expect(fingerprint(layout.previousRootCert)).toBe(oldRoot);
    expect(sha256(layout.previousRootKey)).toBe(oldRootKey);
    expect(fingerprint(layout.rootCert)).toBe(newRoot);
    expect(sha256(layout.rootKey)).toBe(newRootKey);
    // The old root's issuer (its key signs the CRL of what it issued) is not replaced by the one the interrupted attempt made.
    expect(sha256(layout.previousIssuerKey)).toBe(oldIssuerKey);
    expect(loadAnchors({ dir }).issuerRoot.fingerprint256).toBe(newRoot);
    expect(existsSync(layout.nextRootKey) || existsSync(layout.nextRootCert)).toBe(false);
    expect(leftovers(dir)).toEqual([]);
  });

  // The renames of 'ca rotate-root prepare', in order (review files MEDIUM-1: a retry after a crash
  // before ca.json generated a second root and left the first, its key overwritten, in bundle.pem for good):
  // ca.json naming the key about to be written, the key, the root, the bundle, ca.json recording the root.
  const prepareSteps = ["ca.json", "root.next.key", "root.next.pem", "bundle.pem", "ca.json,2"];
  const bundleOf = (dir: string) => certificatesFromPem(readFileSync(caLayout(dir).bundle, "utf8")).map((der) => new X509Certificate(der).fingerprint256);
  for (const [target, mode] of [...prepareSteps.map((t) => [t, "kill"] as const), ["ca.json,2", "enospc"] as const]) {
    it(`rotate-root prepare, ${mode} at the rename onto ${target}, then prepare, activate, retire --force: one new root, its key kept, no orphan in the bundle`, async () => {
      const dir = join(work, `prepare-${mode}-${target}`);
      await initAnchors({ dir, trustDomain: TD, now: new Date() });
      const layout = caLayout(dir);
      const oldRoot = fingerprint(layout.rootCert);
      const interrupted = await faulty(["ca", "rotate-root", "prepare", "--dir", dir], target, mode);
      expect(interrupted.stderr).toContain(`[fault] ${mode} at the rename onto ${target.split(",")[0]}`);
      expect(interrupted.code).not.toBe(0);
      expect(readCaState(dir).rootRotation).toBeUndefined();
      const keyWritten = existsSync(layout.nextRootKey) ? sha256(layout.nextRootKey) : undefined;
      const rootWritten = existsSync(layout.nextRootCert) ? fingerprint(layout.nextRootCert) : undefined;
      // ca status names the root the bundle gained without ca.json recording it.
      const status = await runCli(["ca", "status", "--dir", dir]);
      expect(status.code, status.stderr).toBe(0);
      if (bundleOf(dir).length === 2) expect(status.stdout).toMatch(/root \(prepare interrupted\)[\s\S]*run 'meshward ca rotate-root prepare --dir .*' again to finish it/);
      else expect(status.stdout).not.toContain("prepare interrupted");

      const again = await runCli(["ca", "rotate-root", "prepare", "--dir", dir]);
      expect(again.code, again.stderr).toBe(0);
      // It says whether it took up what the interrupted one wrote (its key, or its key and root).
      if (keyWritten !== undefined) expect(again.stderr).toContain("resumed an interrupted 'rotate-root prepare'");
      else expect(again.stderr).not.toContain("resumed");
      const next = fingerprint(layout.nextRootCert);
      if (keyWritten !== undefined) expect(sha256(layout.nextRootKey)).toBe(keyWritten);
      if (rootWritten !== undefined) expect(next).toBe(rootWritten);
      expect(keysMatch(decodePrivateKey(readFileSync(layout.nextRootKey, "utf8")), new X509Certificate(readFileSync(layout.nextRootCert)).publicKey)).toBe(true);
      expect(readCaState(dir).rootRotation?.nextRootFingerprint).toBe(next);
      expect(bundleOf(dir)).toEqual([oldRoot, next]);

      for (const step of [["activate"], ["retire", "--force"]]) {
        const done = await runCli(["ca", "rotate-root", ...step, "--dir", dir]);
        expect(done.code, done.stderr).toBe(0);
      }
      expect(bundleOf(dir)).toEqual([next]);
      expect(leftovers(dir)).toEqual([]);
    });
  }

  it("rotate-root activate on a full disk at issuer.pem, then again (the reviewer's case): the old root key survives", async () => {
    const dir = join(work, "activate-enospc");
    await initAnchors({ dir, trustDomain: TD, now: new Date() });
    const layout = caLayout(dir);
    const oldRoot = fingerprint(layout.rootCert);
    const oldRootKey = sha256(layout.rootKey);
    await prepareRoot({ dir, now: new Date() });
    const full = await faulty(["ca", "rotate-root", "activate", "--dir", dir], "issuer.pem", "enospc");
    expect(full.code).toBe(1);
    expect(full.stderr).toMatch(/issuer\.pending\.pem.*finishes the switch; nothing is lost \[E_FILE_WRITE\]/);
    const again = await runCli(["ca", "rotate-root", "activate", "--dir", dir]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toMatch(/finished it \(issuer\.pending\.pem renamed to issuer\.pem\)/);
    expect(fingerprint(layout.previousRootCert)).toBe(oldRoot);
    expect(sha256(layout.previousRootKey)).toBe(oldRootKey);
    expect(readFileSync(layout.previousRootKey)).not.toEqual(readFileSync(layout.rootKey));
  });
});
