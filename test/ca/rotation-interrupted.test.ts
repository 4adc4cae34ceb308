import { createHash, X509Certificate } from "node:crypto";
import { copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { caLayout, initAnchors, loadAnchors, readCaState } from "../../src/ca/anchors.ts";
import { directoryFiles, type AnchorFiles } from "../../src/ca/anchor-files.ts";
import { activateRoot, prepareRoot, retireRoot, rotateIssuer } from "../../src/ca/rotation.ts";
import { decodePrivateKey, keysMatch } from "../../src/pki/keys.ts";
import { certificatesFromPem, toPem } from "../../src/pki/pem.ts";
import type { Store } from "../../src/store/store.ts";

/**
 * Review files MEDIUM-1: a root rotation step interrupted at any one of its file changes (crash,
 * kill, full disk), then run again, leaves exactly the roots ca.json records, each with its key.
 *
 * The interruption is injected through the steps' `files` option (AnchorFiles, how the CA and the
 * store-backed replicas already hand the steps their files): a wrapper around the real directory
 * that throws at the n-th change, before making it. No hook was added to the code under test: each
 * change of directoryFiles is atomic (temp file + rename, pairs switched as one unit), so "the
 * n-th change never happened, nor anything after it" is exactly what a SIGKILL or ENOSPC at that
 * point leaves; test/ca/rotation-crash-cli.test.ts does the same to real CLI processes.
 */
class Interrupted extends Error {}

function failingAt(n: number): { files: AnchorFiles; changes: string[] } {
  const changes: string[] = [];
  const change = (what: string) => {
    changes.push(what);
    if (changes.length === n) throw new Interrupted(`interrupted before change ${n}: ${what}`);
  };
  const files: AnchorFiles = {
    ...directoryFiles,
    write: (path, content, options) => {
      change(`write ${path.split("/").pop()}`);
      directoryFiles.write(path, content, options);
    },
    writePair: (key, cert, also) => {
      change(`writePair ${key.path.split("/").pop()}`);
      directoryFiles.writePair(key, cert, also);
    },
    remove: (path) => {
      change(`remove ${path.split("/").pop()}`);
      directoryFiles.remove(path);
    },
  };
  return { files, changes };
}

/** retire asks the issuance log how many certificates still chain to the old root: none here. */
const noCertificates = { countValidByRoot: async () => new Map<string, number>() } as unknown as Store;

const TD = "interrupted.test";
const sha256 = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex");
const fingerprint = (path: string) => new X509Certificate(readFileSync(path)).fingerprint256;
const bundle = (dir: string) => certificatesFromPem(readFileSync(caLayout(dir).bundle, "utf8")).map((der) => new X509Certificate(der).fingerprint256);
const keyOf = (keyPath: string, certPath: string) => keysMatch(decodePrivateKey(readFileSync(keyPath, "utf8")), new X509Certificate(readFileSync(certPath)).publicKey);

/** Counts the changes a step makes when nothing interrupts it. */
async function changesOf(step: (files: AnchorFiles) => Promise<unknown>): Promise<string[]> {
  const probe = failingAt(Number.POSITIVE_INFINITY);
  await step(probe.files);
  return probe.changes;
}

describe("a root rotation step interrupted at any file change, then run again", { timeout: 300_000 }, () => {
  const work = mkdtempSync(join(tmpdir(), "meshward-rotation-interrupted-"));
  afterAll(() => rmSync(work, { recursive: true, force: true }));
  let made = 0;
  const fresh = async () => {
    const dir = join(work, `ca-${++made}`);
    await initAnchors({ dir, trustDomain: TD, now: new Date() });
    return dir;
  };

  it("prepare: at every change, the retry keeps the key written, one new root joins the bundle, and activate + retire leave only it", async () => {
    const steps = await changesOf(async (files) => prepareRoot({ dir: await fresh(), now: new Date(), files }));
    // ca.json first names the key about to be written (preparingRoot), and last records the prepared root.
    expect(steps).toEqual(["write ca.json", "write root.next.key", "write root.next.pem", "write bundle.pem", "write ca.json"]);
    for (let n = 1; n <= steps.length; n++) {
      const dir = await fresh();
      const layout = caLayout(dir);
      const oldRoot = fingerprint(layout.rootCert);
      const { files } = failingAt(n);
      await expect(prepareRoot({ dir, now: new Date(), files })).rejects.toBeInstanceOf(Interrupted);
      expect(readCaState(dir).rootRotation, `change ${n}`).toBeUndefined();
      const keyWritten = existsSync(layout.nextRootKey) ? sha256(layout.nextRootKey) : undefined;
      const rootWritten = existsSync(layout.nextRootCert) ? fingerprint(layout.nextRootCert) : undefined;
      // The CA still starts on what the interrupted step left.
      expect(loadAnchors({ dir }).issuerRoot.fingerprint256).toBe(oldRoot);

      const next = await prepareRoot({ dir, now: new Date() });
      const state = readCaState(dir);
      expect(state.rootRotation?.phase).toBe("prepared");
      expect(state.rootRotation?.nextRootFingerprint).toBe(next.fingerprint256);
      expect(fingerprint(layout.nextRootCert)).toBe(next.fingerprint256);
      expect(keyOf(layout.nextRootKey, layout.nextRootCert), `change ${n}: root.next.key belongs to root.next.pem`).toBe(true);
      expect(statSync(layout.nextRootKey).mode & 0o777).toBe(0o600);
      // The key an interrupted attempt wrote is never overwritten, and its root is the one prepared.
      if (keyWritten !== undefined) expect(sha256(layout.nextRootKey), `change ${n}`).toBe(keyWritten);
      if (rootWritten !== undefined) expect(next.fingerprint256, `change ${n}`).toBe(rootWritten);
      expect(bundle(dir), `change ${n}`).toEqual([oldRoot, next.fingerprint256]);

      await activateRoot({ dir, now: new Date() });
      await retireRoot({ dir, store: noCertificates, now: new Date(), force: true });
      expect(bundle(dir), `change ${n}`).toEqual([next.fingerprint256]);
      expect(readCaState(dir).rootRotation).toBeUndefined();
      expect(keyOf(layout.rootKey, layout.rootCert)).toBe(true);
      expect(readdirSync(dir).filter((f) => f.startsWith("root.next") || f.startsWith("root.prev"))).toEqual([]);
    }
  });

  it("prepare with encrypted keys, interrupted before ca.json: the retry without the passphrase changes nothing, with it prepares the same root, its key still encrypted", async () => {
    const dir = join(work, "encrypted");
    const passphrase = "correct horse battery staple";
    await initAnchors({ dir, trustDomain: TD, now: new Date(), passphrase });
    const layout = caLayout(dir);
    const oldRoot = fingerprint(layout.rootCert);
    await expect(prepareRoot({ dir, now: new Date(), passphrase, files: failingAt(5).files })).rejects.toBeInstanceOf(Interrupted);
    const key = sha256(layout.nextRootKey);
    const first = fingerprint(layout.nextRootCert);
    const refused = await prepareRoot({ dir, now: new Date() }).catch((e: { code: string }) => e.code);
    expect(refused).toMatch(/^E_/);
    expect(sha256(layout.nextRootKey)).toBe(key);
    const next = await prepareRoot({ dir, now: new Date(), passphrase });
    expect(next.fingerprint256).toBe(first);
    expect(sha256(layout.nextRootKey)).toBe(key);
    expect(readFileSync(layout.nextRootKey, "utf8")).toContain("ENCRYPTED PRIVATE KEY");
    expect(keysMatch(decodePrivateKey(readFileSync(layout.nextRootKey, "utf8"), passphrase), next.publicKey)).toBe(true);
    expect(bundle(dir)).toEqual([oldRoot, first]);
  });

  it("prepare after an older meshward's retry overwrote root.next.key (the reviewer's state): the root without a key leaves the bundle", async () => {
    const dir = await fresh();
    const layout = caLayout(dir);
    const oldRoot = fingerprint(layout.rootCert);
    // Interrupted before ca.json: root.next.* and the bundle hold the first attempt's root.
    await expect(prepareRoot({ dir, now: new Date(), files: failingAt(5).files })).rejects.toBeInstanceOf(Interrupted);
    const orphan = fingerprint(layout.nextRootCert);
    // Then its key is lost (what the old retry's overwrite did); root.next.pem still names that root.
    rmSync(layout.nextRootKey);
    const next = await prepareRoot({ dir, now: new Date() });
    expect(next.fingerprint256).not.toBe(orphan);
    expect(bundle(dir)).toEqual([oldRoot, next.fingerprint256]);
    expect(keyOf(layout.nextRootKey, layout.nextRootCert)).toBe(true);
  });

  it("prepare interrupted before ca.json recorded the root, root.next.* then moved out: the retry drops the root with the key ca.json names from the bundle and prepares a new one", async () => {
    const dir = await fresh();
    const layout = caLayout(dir);
    const oldRoot = fingerprint(layout.rootCert);
    await expect(prepareRoot({ dir, now: new Date(), files: failingAt(5).files })).rejects.toBeInstanceOf(Interrupted);
    const orphan = fingerprint(layout.nextRootCert);
    expect(bundle(dir)).toEqual([oldRoot, orphan]);
    rmSync(layout.nextRootKey);
    rmSync(layout.nextRootCert);
    const resumed: unknown[] = [];
    const next = await prepareRoot({ dir, now: new Date(), onResume: (r) => resumed.push(r) });
    expect(next.fingerprint256).not.toBe(orphan);
    expect(bundle(dir)).toEqual([oldRoot, next.fingerprint256]);
    expect(resumed).toEqual([]);
  });

  it("prepare --root-cert interrupted before ca.json, then run again with the same root: it is not 'already in the bundle'; with another root: the first one leaves the bundle", async () => {
    const source = await fresh();
    const rootA = toPem(new X509Certificate(readFileSync(caLayout(source).rootCert)).raw, "CERTIFICATE");
    const sourceB = await fresh();
    const rootB = toPem(new X509Certificate(readFileSync(caLayout(sourceB).rootCert)).raw, "CERTIFICATE");
    for (const [retryPem, expected] of [[rootA, new X509Certificate(rootA).fingerprint256], [rootB, new X509Certificate(rootB).fingerprint256]] as const) {
      const dir = await fresh();
      const oldRoot = fingerprint(caLayout(dir).rootCert);
      await expect(prepareRoot({ dir, now: new Date(), importedRootPem: rootA, trustEveryCaUnderRoot: true, files: failingAt(3).files })).rejects.toBeInstanceOf(Interrupted);
      const next = await prepareRoot({ dir, now: new Date(), importedRootPem: retryPem, trustEveryCaUnderRoot: true });
      expect(next.fingerprint256).toBe(expected);
      expect(bundle(dir)).toEqual([oldRoot, expected]);
      expect(readCaState(dir).rootRotation?.nextRootFingerprint).toBe(expected);
    }
  });

  it("prepare --root-cert after an interrupted generating prepare: refused, nothing changed, the generated root's key kept", async () => {
    const dir = await fresh();
    const layout = caLayout(dir);
    await expect(prepareRoot({ dir, now: new Date(), files: failingAt(5).files })).rejects.toBeInstanceOf(Interrupted);
    const key = sha256(layout.nextRootKey);
    const before = bundle(dir);
    const other = await fresh();
    const refused = await prepareRoot({ dir, now: new Date(), importedRootPem: readFileSync(caLayout(other).rootCert, "utf8"), trustEveryCaUnderRoot: true }).catch((e: { code: string }) => e.code);
    expect(refused).toBe("E_ROTATION_STATE");
    expect(sha256(layout.nextRootKey)).toBe(key);
    expect(bundle(dir)).toEqual(before);
  });

  it("prepare finding another trust domain's root.next.* (copied from another CA's directory, review today3 LOW-4): refused E_ROTATION_STATE, nothing changed; without them a new root of this CA is generated", async () => {
    const dir = await fresh();
    const layout = caLayout(dir);
    const otherDir = join(work, `other-${++made}`);
    await initAnchors({ dir: otherDir, trustDomain: "other.test", now: new Date() });
    const other = caLayout(otherDir);
    // The other CA's prepare interrupted before its ca.json: its root.next.key and root.next.pem.
    await expect(prepareRoot({ dir: otherDir, now: new Date(), files: failingAt(5).files })).rejects.toBeInstanceOf(Interrupted);
    copyFileSync(other.nextRootKey, layout.nextRootKey);
    copyFileSync(other.nextRootCert, layout.nextRootCert);
    const snapshot = () => Object.fromEntries(readdirSync(dir).filter((name) => !name.startsWith(".meshward-ca.lock")).map((name) => [name, sha256(join(dir, name))]));
    const before = snapshot();
    const refused = await prepareRoot({ dir, now: new Date() }).then(() => undefined, (e: { code: string; message: string }) => e);
    expect(refused?.code).toBe("E_ROTATION_STATE");
    expect(refused?.message).toContain("root.next.pem");
    expect(refused?.message).toContain("meshward root other.test G2");
    expect(snapshot()).toEqual(before);
    expect(readCaState(dir).rootRotation).toBeUndefined();
    // The operator moves them out: a fresh root of this CA, not the other one.
    rmSync(layout.nextRootKey);
    rmSync(layout.nextRootCert);
    const next = await prepareRoot({ dir, now: new Date() });
    expect(next.subject).toContain(`CN=meshward root ${TD} G2`);
    expect(next.fingerprint256).not.toBe(fingerprint(other.nextRootCert));
    expect(bundle(dir)).not.toContain(fingerprint(other.nextRootCert));
  });

  it("activate: at every change, the retry keeps the old root and the old issuer (root.prev.*, issuer.prev.*) with their keys, retire leaves the new root alone in the bundle, and the next prepare starts a fresh rotation", async () => {
    const steps = await changesOf(async (files) => {
      const dir = await fresh();
      await prepareRoot({ dir, now: new Date() });
      return activateRoot({ dir, now: new Date(), files });
    });
    expect(steps.at(-1)).toBe("remove issuer.next.key");
    for (let n = 1; n <= steps.length; n++) {
      const dir = await fresh();
      const layout = caLayout(dir);
      const oldRoot = fingerprint(layout.rootCert);
      const oldRootKey = sha256(layout.rootKey);
      const next = await prepareRoot({ dir, now: new Date() });
      const nextKey = sha256(layout.nextRootKey);
      const oldIssuerKey = sha256(layout.issuerKey);
      await expect(activateRoot({ dir, now: new Date(), files: failingAt(n).files })).rejects.toBeInstanceOf(Interrupted);
      if (readCaState(dir).rootRotation?.phase === "prepared") await activateRoot({ dir, now: new Date() });
      expect(fingerprint(layout.previousRootCert), `change ${n}`).toBe(oldRoot);
      expect(sha256(layout.previousRootKey), `change ${n}`).toBe(oldRootKey);
      expect(sha256(layout.rootKey), `change ${n}`).toBe(nextKey);
      // The old root's issuer stays in issuer.prev.* (its key signs the CRL of what it issued), not
      // replaced by the issuer the interrupted attempt installed; issuer.* is under the new root.
      expect(sha256(layout.previousIssuerKey), `change ${n}: issuer.prev.key`).toBe(oldIssuerKey);
      expect(loadAnchors({ dir }).issuerRoot.fingerprint256).toBe(next.fingerprint256);
      await retireRoot({ dir, store: noCertificates, now: new Date(), force: true });
      expect(bundle(dir), `change ${n}`).toEqual([next.fingerprint256]);
      expect(readdirSync(dir).filter((f) => f.startsWith("root.next") || f.startsWith("root.prev")), `change ${n}`).toEqual([]);
      // The next rotation generates a new root, not the current one again.
      const third = await prepareRoot({ dir, now: new Date() });
      expect(third.fingerprint256).not.toBe(next.fingerprint256);
      expect(bundle(dir)).toEqual([next.fingerprint256, third.fingerprint256]);
    }
  });

  it("retire: at every change, the retry leaves exactly the new root in the bundle and ca.json without a rotation", async () => {
    const steps = await changesOf(async (files) => {
      const dir = await fresh();
      await prepareRoot({ dir, now: new Date() });
      await activateRoot({ dir, now: new Date() });
      return retireRoot({ dir, store: noCertificates, now: new Date(), force: true, files });
    });
    expect(steps.at(-1)).toBe("write ca.json");
    for (let n = 1; n <= steps.length; n++) {
      const dir = await fresh();
      const next = await prepareRoot({ dir, now: new Date() });
      await activateRoot({ dir, now: new Date() });
      await expect(retireRoot({ dir, store: noCertificates, now: new Date(), force: true, files: failingAt(n).files })).rejects.toBeInstanceOf(Interrupted);
      expect(readCaState(dir).rootRotation?.phase).toBe("activated");
      // Whatever was left, the CA starts: it signs under the new root.
      expect(loadAnchors({ dir }).issuerRoot.fingerprint256).toBe(next.fingerprint256);
      await retireRoot({ dir, store: noCertificates, now: new Date(), force: true });
      expect(bundle(dir), `change ${n}`).toEqual([next.fingerprint256]);
      expect(readCaState(dir).rootRotation).toBeUndefined();
    }
  });

  it("retire after an issuer rotation under the new root, interrupted at every change: the previous issuer (under the new root) and its key are kept", async () => {
    for (let n = 1; ; n++) {
      const dir = await fresh();
      const layout = caLayout(dir);
      const next = await prepareRoot({ dir, now: new Date() });
      await activateRoot({ dir, now: new Date() });
      // issuer.prev.* now holds the issuer activate made (under the new root): its certificates stay trusted.
      await rotateIssuer({ dir, now: new Date() });
      const keptIssuerKey = sha256(layout.previousIssuerKey);
      const probe = failingAt(n);
      const finished = await retireRoot({ dir, store: noCertificates, now: new Date(), force: true, files: probe.files }).then(
        () => true,
        (error: unknown) => {
          if (!(error instanceof Interrupted)) throw error;
          return false;
        },
      );
      if (!finished) await retireRoot({ dir, store: noCertificates, now: new Date(), force: true });
      expect(bundle(dir), `change ${n}`).toEqual([next.fingerprint256]);
      expect(sha256(layout.previousIssuerKey), `change ${n}: issuer.prev.key`).toBe(keptIssuerKey);
      if (finished) break;
    }
  });
});
