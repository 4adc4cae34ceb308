import { X509Certificate } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";

// rotate-issuer --now / import-issuer --now retire the replaced issuer: the root's CRL lists it
// (issuers-retired.json, root-crl.ts). That record is made by the rotation itself, so code calling
// rotateIssuer/importIssuer({ keepPrevious: false }) gets it too (only the CLI used to write it), and
// in a CA directory it is switched with the new issuer pair (pair-switch.ts): a crash at any point
// leaves the old issuer and no record, or the new issuer and the record, never the new issuer
// without the record. A failing rename stands in for the crash (renameDurably throws once).
const failRename = vi.hoisted(() => ({ target: undefined as string | undefined }));
vi.mock("../../src/util/files.ts", async (importOriginal) => {
  const original = await importOriginal<typeof import("../../src/util/files.ts")>();
  return {
    ...original,
    renameDurably: (from: string, to: string) => {
      if (failRename.target !== undefined && to === failRename.target) {
        failRename.target = undefined;
        throw Object.assign(new Error("ENOSPC: no space left on device (simulated)"), { code: "ENOSPC" });
      }
      original.renameDurably(from, to);
    },
  };
});

const { directoryFiles } = await import("../../src/ca/anchor-files.ts");
const { caLayout, initAnchors, loadAnchors } = await import("../../src/ca/anchors.ts");
const { tryLockCaDir } = await import("../../src/ca/dir-lock.ts");
const { readRetiredIssuers } = await import("../../src/ca/root-crl.ts");
const { importIssuer, rotateIssuer } = await import("../../src/ca/rotation.ts");
const { createIssuerCertificate } = await import("../../src/pki/certificate.ts");
const { decodePrivateKey, encodePrivateKey, generateKeyPair } = await import("../../src/pki/keys.ts");
const { toPem } = await import("../../src/pki/pem.ts");

const TD = "retired-record.test";

describe("the retired-issuer record of a --now rotation", () => {
  let work: string;
  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), "meshward-retired-record-"));
  });
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  const freshCa = async (name: string) => {
    const dir = join(work, name);
    await initAnchors({ dir, trustDomain: TD, now: new Date() });
    const layout = caLayout(dir);
    const issuer = () => new X509Certificate(readFileSync(layout.issuerCert));
    return { dir, layout, issuer };
  };
  const retired = (layout: ReturnType<typeof caLayout>) => readRetiredIssuers(directoryFiles, layout).map((r) => r.certificate.fingerprint256);

  it("rotateIssuer({ keepPrevious: false }) from code records the replaced issuer (the root CRL lists it); keepPrevious true records nothing", async () => {
    const { dir, layout, issuer } = await freshCa("code-rotate");
    const first = issuer();
    await rotateIssuer({ dir, now: new Date() });
    expect(retired(layout)).toEqual([]);
    const second = issuer();
    const third = await rotateIssuer({ dir, now: new Date(), keepPrevious: false });
    // The first one, kept as issuer.prev.* by the ordinary rotation and dropped by --now, is retired
    // too (review rotation task 3: it was not, and its JWT-SVID key stayed published up to the TTL).
    expect(retired(layout)).toEqual([second.fingerprint256, first.fingerprint256]);
    expect(loadAnchors({ dir }).retiredIssuers.map((r) => r.certificate.fingerprint256)).toEqual([second.fingerprint256, first.fingerprint256]);
    expect(existsSync(layout.previousIssuerCert) || existsSync(layout.previousIssuerKey)).toBe(false);
    expect(issuer().fingerprint256).toBe(third.fingerprint256);
  });

  it("--now interrupted before the new key is in place, with an issuer.prev.*: it is still there (not dropped unrecorded), and the retry retires it with the replaced one", async () => {
    const { dir, layout, issuer } = await freshCa("crash-with-previous");
    const first = issuer();
    await rotateIssuer({ dir, now: new Date() });
    const second = issuer();
    failRename.target = layout.issuerKey;
    await expect(rotateIssuer({ dir, now: new Date(), keepPrevious: false })).rejects.toMatchObject({ code: "E_FILE_WRITE" });
    const lock = tryLockCaDir(dir, "test");
    if (!("release" in lock)) throw new Error("the CA directory is locked");
    lock.release();
    expect(issuer().fingerprint256).toBe(second.fingerprint256);
    expect(new X509Certificate(readFileSync(layout.previousIssuerCert)).fingerprint256).toBe(first.fingerprint256);
    expect(existsSync(layout.retiredIssuers)).toBe(false);
    await rotateIssuer({ dir, now: new Date(), keepPrevious: false });
    expect(retired(layout)).toEqual([second.fingerprint256, first.fingerprint256]);
    expect(existsSync(layout.previousIssuerCert)).toBe(false);
  });

  it("importIssuer({ keepPrevious: false }) from code records the replaced issuer", async () => {
    const { dir, layout, issuer } = await freshCa("code-import");
    const replaced = issuer();
    const anchors = loadAnchors({ dir });
    const rootKey = readFileSync(layout.rootKey, "utf8");
    const keys = generateKeyPair();
    const now = Date.now();
    const made = await createIssuerCertificate({
      trustDomain: TD,
      publicKey: keys.publicKey,
      signer: { certificate: anchors.issuerRoot, der: anchors.issuerRoot.raw, privateKey: decodePrivateKey(rootKey) },
      notBefore: new Date(now - 60_000),
      notAfter: new Date(now + 86_400_000),
    });
    importIssuer({ dir, issuerCertPem: toPem(made.der, "CERTIFICATE"), issuerKeyPem: encodePrivateKey(keys.privateKey), now: new Date(), keepPrevious: false });
    expect(retired(layout)).toEqual([replaced.fingerprint256]);
  });

  it("interrupted after the new key is in place: the record is already there with it, and the repair finishes the certificate", async () => {
    const { dir, layout, issuer } = await freshCa("crash-after-key");
    const replaced = issuer();
    failRename.target = layout.issuerCert; // the last rename of the switch fails
    await expect(rotateIssuer({ dir, now: new Date(), keepPrevious: false })).rejects.toMatchObject({ code: "E_FILE_WRITE" });
    expect(retired(layout)).toEqual([replaced.fingerprint256]);
    // What a CA reads meanwhile: the new issuer (its staged certificate) and the record.
    const during = loadAnchors({ dir });
    expect(during.issuer.certificate.fingerprint256).not.toBe(replaced.fingerprint256);
    expect(during.retiredIssuers.map((r) => r.certificate.fingerprint256)).toEqual([replaced.fingerprint256]);
    const lock = tryLockCaDir(dir, "test");
    if (!("release" in lock)) throw new Error("the CA directory is locked");
    lock.release();
    expect(lock.repaired.join("\n")).toMatch(/finished it/);
    expect(issuer().fingerprint256).toBe(during.issuer.certificate.fingerprint256);
    expect(retired(layout)).toEqual([replaced.fingerprint256]);
  });

  it("interrupted between the new key and the record: the repair puts the staged record in place (never the new issuer without it)", async () => {
    const { dir, layout, issuer } = await freshCa("crash-before-record");
    const replaced = issuer();
    failRename.target = layout.retiredIssuers;
    await expect(rotateIssuer({ dir, now: new Date(), keepPrevious: false })).rejects.toMatchObject({ code: "E_FILE_WRITE" });
    expect(existsSync(layout.retiredIssuers)).toBe(false);
    const lock = tryLockCaDir(dir, "test");
    if (!("release" in lock)) throw new Error("the CA directory is locked");
    lock.release();
    expect(issuer().fingerprint256).not.toBe(replaced.fingerprint256);
    expect(retired(layout)).toEqual([replaced.fingerprint256]);
    expect(loadAnchors({ dir }).retiredIssuers.map((r) => r.certificate.fingerprint256)).toEqual([replaced.fingerprint256]);
  });

  it("interrupted before the new key is in place: the old issuer stays and nothing is recorded", async () => {
    const { dir, layout, issuer } = await freshCa("crash-before-key");
    const replaced = issuer();
    failRename.target = layout.issuerKey;
    await expect(rotateIssuer({ dir, now: new Date(), keepPrevious: false })).rejects.toMatchObject({ code: "E_FILE_WRITE" });
    const lock = tryLockCaDir(dir, "test");
    if (!("release" in lock)) throw new Error("the CA directory is locked");
    lock.release();
    expect(issuer().fingerprint256).toBe(replaced.fingerprint256);
    expect(existsSync(layout.retiredIssuers)).toBe(false);
    expect(loadAnchors({ dir }).issuer.certificate.fingerprint256).toBe(replaced.fingerprint256);
  });
});
