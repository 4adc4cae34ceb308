import { spawn } from "node:child_process";
import { createHash, X509Certificate } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, describe, expect, it } from "vitest";
import { caLayout, initAnchors, loadAnchors } from "../../src/ca/anchors.ts";
import { CA_DIR_LOCK, tryLockCaDir } from "../../src/ca/dir-lock.ts";
import { pendingPath } from "../../src/ca/pair-switch.ts";
import { startCaServer } from "../../src/ca/server.ts";
import { caConfigSchema } from "../../src/config/ca.ts";
import { createIssuerCertificate } from "../../src/pki/certificate.ts";
import { decodePrivateKey, encodePrivateKey, generateKeyPair } from "../../src/pki/keys.ts";
import { toPem } from "../../src/pki/pem.ts";
import { expectRefused, runCli } from "../helpers/cli.ts";
import { waitFor } from "../helpers/wait.ts";

const TD = "lock.test";
const HOUR = 3_600_000;
const sha256 = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex");
const fingerprint = (path: string) => new X509Certificate(readFileSync(path)).fingerprint256;

/** A new issuer for `dir`, signed by its root, as the in-between states of a switch need: PEMs only. */
async function newIssuerPems(dir: string): Promise<{ cert: string; key: string; fingerprint: string }> {
  const layout = caLayout(dir);
  const root = new X509Certificate(readFileSync(layout.rootCert));
  const keys = generateKeyPair();
  const issued = await createIssuerCertificate({ trustDomain: TD, publicKey: keys.publicKey, signer: { certificate: root, der: root.raw, privateKey: decodePrivateKey(readFileSync(layout.rootKey, "utf8")) }, notBefore: new Date(Date.now() - 60_000), notAfter: new Date(Date.now() + 24 * HOUR) });
  return { cert: toPem(issued.der, "CERTIFICATE"), key: encodePrivateKey(keys.privateKey), fingerprint: new X509Certificate(issued.der).fingerprint256 };
}

/**
 * Review atrest HIGH-1 (the crash points of a key/certificate switch, as the files are left) and
 * MEDIUM-2 (one writer at a time in a CA directory: commands and the running CA's rotation).
 */
describe("an interrupted issuer switch, at each point: what loads, and what the next lock holder does", () => {
  const work = mkdtempSync(join(tmpdir(), "meshward-pair-switch-"));
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  const setUp = async (name: string) => {
    const dir = join(work, name);
    await initAnchors({ dir, trustDomain: TD, now: new Date() });
    const layout = caLayout(dir);
    return { dir, layout, old: fingerprint(layout.issuerCert), oldKey: sha256(layout.issuerKey), next: await newIssuerPems(dir) };
  };

  it("staging interrupted after the key (only issuer.pending.key): the old pair loads; the next lock holder removes the staged key", async () => {
    const { dir, layout, old, oldKey, next } = await setUp("staged-key");
    writeFileSync(pendingPath(layout.issuerKey), next.key, { mode: 0o600 });
    expect(loadAnchors({ dir }).issuer.certificate.fingerprint256).toBe(old);
    const lock = tryLockCaDir(dir, "test");
    if (!("release" in lock)) throw new Error("lock held");
    lock.release();
    expect(lock.repaired).toEqual([expect.stringMatching(/interrupted before it began: removed the staged issuer\.pending\.key and issuer\.pending\.pem; the pair in use is unchanged/)]);
    expect(sha256(layout.issuerKey)).toBe(oldKey);
    expect(readdirSync(dir).filter((f) => f.includes("pending") || f.startsWith("."))).toEqual([]);
  });

  it("staged in full, not switched: the old pair loads and stays", async () => {
    const { dir, layout, old, oldKey, next } = await setUp("staged-pair");
    writeFileSync(pendingPath(layout.issuerKey), next.key, { mode: 0o600 });
    writeFileSync(pendingPath(layout.issuerCert), next.cert);
    expect(loadAnchors({ dir }).issuer.certificate.fingerprint256).toBe(old);
    const lock = tryLockCaDir(dir, "test");
    if (!("release" in lock)) throw new Error("lock held");
    lock.release();
    expect(lock.repaired).toHaveLength(1);
    expect(fingerprint(layout.issuerCert)).toBe(old);
    expect(sha256(layout.issuerKey)).toBe(oldKey);
  });

  it("the new key in place, its certificate still staged: the NEW pair loads (no lock needed), and the next lock holder finishes the switch", async () => {
    const { dir, layout, old, next } = await setUp("key-switched");
    writeFileSync(pendingPath(layout.issuerCert), next.cert);
    writeFileSync(layout.issuerKey, next.key, { mode: 0o600 });
    const loaded = loadAnchors({ dir });
    expect(loaded.issuer.certificate.fingerprint256).toBe(next.fingerprint);
    expect(loaded.issuer.certificate.fingerprint256).not.toBe(old);
    const lock = tryLockCaDir(dir, "test");
    if (!("release" in lock)) throw new Error("lock held");
    lock.release();
    expect(lock.repaired).toEqual([expect.stringMatching(/after the new key was in place: finished it \(issuer\.pending\.pem renamed to issuer\.pem\)/)]);
    expect(fingerprint(layout.issuerCert)).toBe(next.fingerprint);
    expect(existsSync(pendingPath(layout.issuerCert))).toBe(false);
  });

  it("a key that belongs to no certificate there (no switch under way) stays E_CA_CORRUPT, with the command that repairs it, which works", async () => {
    const { dir, layout, next } = await setUp("foreign-key");
    writeFileSync(layout.issuerKey, next.key, { mode: 0o600 });
    expect(() => loadAnchors({ dir })).toThrow(/issuer\.key does not belong to .*issuer\.pem: restore the pair .*'meshward ca rotate-issuer --dir .* --now'/);
    const repaired = await runCli(["ca", "rotate-issuer", "--dir", dir, "--now"]);
    expect(repaired.code, repaired.stderr).toBe(0);
    expect(() => loadAnchors({ dir })).not.toThrow();
  });

  it("temp files of interrupted atomic writes in the CA directory are removed by the next lock holder", async () => {
    const { dir } = await setUp("temps");
    writeFileSync(join(dir, ".issuer.key.0123456789ab.tmp"), "a half-written key", { mode: 0o600 });
    writeFileSync(join(dir, ".ca.json.0123456789ab.tmp"), "{");
    const lock = tryLockCaDir(dir, "test");
    if (!("release" in lock)) throw new Error("lock held");
    lock.release();
    expect(lock.repaired).toEqual([expect.stringMatching(/removed what interrupted writes left: .*\.issuer\.key\.0123456789ab\.tmp/)]);
    expect(readdirSync(dir).filter((f) => f.startsWith("."))).toEqual([]);
  });
});

describe("one writer at a time in a CA directory", { timeout: 120_000 }, () => {
  const work = mkdtempSync(join(tmpdir(), "meshward-ca-dir-lock-"));
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it("while another process holds the directory, rotate-issuer, import-issuer and rotate-root are refused E_CA_DIR_LOCKED naming it, and nothing changes; once it is killed, they run", async () => {
    const dir = join(work, "held");
    await initAnchors({ dir, trustDomain: TD, now: new Date() });
    const layout = caLayout(dir);
    const before = { key: sha256(layout.issuerKey), cert: sha256(layout.issuerCert), bundle: sha256(layout.bundle), state: sha256(layout.state) };
    const next = await newIssuerPems(dir);
    writeFileSync(join(work, "next.pem"), next.cert);
    writeFileSync(join(work, "next.key"), next.key, { mode: 0o600 });
    // A rotation in progress, stopped: a real process holding the lock as the commands take it.
    // The timer keeps the lock referenced (a collected lock object would close its database).
    const holderCode = `import { tryLockCaDir } from "./src/ca/dir-lock.ts"; const lock = tryLockCaDir(${JSON.stringify(dir)}, "'meshward ca rotate-issuer'"); console.log("release" in lock ? "locked" : "refused"); setInterval(() => void lock, 60000);`;
    const holder = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", holderCode], { cwd: process.cwd(), stdio: ["ignore", "pipe", "inherit"] });
    try {
      await new Promise<void>((resolve, reject) => {
        holder.stdout.once("data", (line: Buffer) => (line.toString().trim() === "locked" ? resolve() : reject(new Error(`the lock holder: ${line.toString().trim()}`))));
        holder.once("exit", (code) => reject(new Error(`the lock holder exited ${code}`)));
      });
      const holderNamed = new RegExp(`another process is changing the CA directory .*held: 'meshward ca rotate-issuer' \\(pid ${holder.pid}, since .*\\) holds its lock \\(\\.meshward-ca\\.lock\\)\\. Nothing was changed`);
      expectRefused(await runCli(["ca", "rotate-issuer", "--dir", dir, "--now"]), "E_CA_DIR_LOCKED", holderNamed);
      expectRefused(await runCli(["ca", "import-issuer", "--dir", dir, "--issuer-cert", join(work, "next.pem"), "--issuer-key", join(work, "next.key")]), "E_CA_DIR_LOCKED", holderNamed);
      expectRefused(await runCli(["ca", "rotate-root", "prepare", "--dir", dir]), "E_CA_DIR_LOCKED", holderNamed);
      expect({ key: sha256(layout.issuerKey), cert: sha256(layout.issuerCert), bundle: sha256(layout.bundle), state: sha256(layout.state) }).toEqual(before);
      // Reading takes no lock.
      const status = await runCli(["ca", "status", "--dir", dir]);
      expect(status.code, status.stderr).toBe(0);
    } finally {
      holder.kill("SIGKILL");
      await new Promise((resolve) => (holder.exitCode !== null || holder.signalCode !== null ? resolve(undefined) : holder.once("exit", resolve)));
    }
    // Killed: the operating system dropped its lock; its files are taken over and removed.
    const imported = await runCli(["ca", "import-issuer", "--dir", dir, "--issuer-cert", join(work, "next.pem"), "--issuer-key", join(work, "next.key")]);
    expect(imported.code, imported.stderr).toBe(0);
    expect(fingerprint(layout.issuerCert)).toBe(next.fingerprint);
    expect(existsSync(join(dir, CA_DIR_LOCK))).toBe(false);
    expect(readdirSync(dir).filter((f) => f.startsWith("."))).toEqual([]);
  });

  it("two rotate-issuer at once: one is refused or runs after the other; the pair always matches", async () => {
    const dir = join(work, "race");
    await initAnchors({ dir, trustDomain: TD, now: new Date() });
    const runs = await Promise.all([0, 1, 2].map(() => runCli(["ca", "rotate-issuer", "--dir", dir, "--now"])));
    for (const r of runs) if (r.code !== 0) expectRefused(r, "E_CA_DIR_LOCKED", /another process is changing the CA directory/);
    expect(runs.some((r) => r.code === 0)).toBe(true);
    expect(() => loadAnchors({ dir })).not.toThrow();
  });

  it("the running CA defers its automatic rotation while a command holds the directory (no error counted, nothing written), and rotates once it is free", async () => {
    const dir = join(work, "serving");
    // An issuer past its activation threshold: the CA rotates it at its first check.
    await initAnchors({ dir, trustDomain: TD, now: new Date(Date.now() - 55 * 60_000), issuerTtlMs: HOUR });
    const layout = caLayout(dir);
    const before = fingerprint(layout.issuerCert);
    const lines: { event?: string }[] = [];
    const logger = pino({ level: "info" }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    const held = tryLockCaDir(dir, "'meshward ca import-issuer'");
    if (!("release" in held)) throw new Error("lock held");
    const server = await startCaServer({ dir, config: caConfigSchema.parse({ listen: "127.0.0.1:0", anchorPoll: "100ms", rotationCheck: "200ms" }), logger });
    try {
      expect(lines.some((l) => l.event === "rotation-deferred")).toBe(true);
      expect(fingerprint(layout.issuerCert)).toBe(before);
      expect(await server.registry.metrics()).not.toMatch(/meshward_rotation_total\{kind="issuer",result="error"\} [1-9]/);
      held.release();
      await waitFor("the CA to rotate once the directory is free", () => fingerprint(layout.issuerCert) !== before);
      await waitFor("the rotation to be counted", () => lines.some((l) => l.event === "rotation"));
      expect(() => loadAnchors({ dir })).not.toThrow();
    } finally {
      await server.close();
    }
  });
});

