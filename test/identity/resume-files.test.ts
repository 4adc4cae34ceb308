import { execFileSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { chmodSync, chownSync, copyFileSync, linkSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readResumableSvid } from "../../src/identity/resume.ts";
import { runCli, startCli, type LongRunning } from "../helpers/cli.ts";

// A restart renews with the certificate and key an earlier run left in --out (resume). With
// --owner, root runs the agent and the files' owner (postgres, say: docs/backends.md) may write
// the directory. Before src/identity/resume.ts checked the files themselves, that user could link
// cert.pem and key.pem to another workload's public certificate and root-only key: root followed
// the links, renewed that workload's identity and wrote its new key into the directory, owned by
// that user (found by a review session, reproduced with a real agent).

const OTHER_UID = 23_456;
const TD = "resume.test";

describe("resume reads only files this process writes", () => {
  const work = mkdtempSync(join(tmpdir(), "meshward-resume-files-"));
  const caDir = join(work, "ca");
  const bundle = join(caDir, "bundle.pem");
  const running: LongRunning[] = [];
  let caAddress: string;
  /** payments: another workload on the host, its key root-only in a root-only directory. */
  const payments = join(work, "payments");

  const token = async (appId: string) => (await runCli(["token", "create", "--dir", caDir, "--namespace", "shop", "--app-id", appId])).stdout.trim().split("\n").pop() as string;
  const resume = (dir: string, filesOwner?: number) => readResumableSvid(dir, { now: new Date(), ...(filesOwner !== undefined ? { filesOwner } : {}) });
  /** A directory as the agent leaves it: a copy of payments' files, regular and this user's. */
  const copyOfPayments = (name: string): string => {
    const dir = join(work, name);
    mkdirSync(dir, { mode: 0o700 });
    for (const file of ["cert.pem", "key.pem"]) copyFileSync(join(payments, file), join(dir, file));
    return dir;
  };

  beforeAll(async () => {
    expect(process.getuid?.()).toBe(0); // files of another user, and --owner, need root
    expect((await runCli(["ca", "init", "--trust-domain", TD, "--dir", caDir])).code).toBe(0);
    const ca = await startCli(["ca", "serve", "--dir", caDir, "--listen", "127.0.0.1:0"], /listening on (\S+)/);
    running.push(ca);
    caAddress = ca.match[1] as string;
    const issued = await runCli(["cert", "issue", "--ca", caAddress, "--bundle", bundle, "--token", await token("payments"), "--out", payments]);
    expect(issued.code, issued.stderr).toBe(0);
    chmodSync(payments, 0o700);
  }, 60_000);
  afterAll(async () => {
    for (const p of running.reverse()) await p.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it("control: the files as written are resumed", () => {
    expect(resume(copyOfPayments("as-written"))?.spiffeId).toBe(`spiffe://${TD}/ns/shop/payments`);
  });

  it("refuses a symbolic link for either file, even to the right key and certificate", () => {
    for (const file of ["cert.pem", "key.pem"]) {
      const dir = copyOfPayments(`link-${file}`);
      rmSync(join(dir, file));
      symlinkSync(join(payments, file), join(dir, file));
      expect(resume(dir), file).toBeUndefined();
    }
    const dangling = copyOfPayments("link-dangling");
    rmSync(join(dangling, "key.pem"));
    symlinkSync(join(work, "nothing-here"), join(dangling, "key.pem"));
    expect(resume(dangling)).toBeUndefined();
  });

  it("refuses a file with a second name (a hard link to another workload's key)", () => {
    const dir = copyOfPayments("hard-link");
    rmSync(join(dir, "key.pem"));
    linkSync(join(payments, "key.pem"), join(dir, "key.pem"));
    expect(lstatSync(join(dir, "key.pem")).nlink).toBe(2);
    expect(resume(dir)).toBeUndefined();
  });

  it("refuses a file of another user, unless that user is the files' owner (--owner)", () => {
    const dir = copyOfPayments("other-user");
    chownSync(join(dir, "key.pem"), OTHER_UID, OTHER_UID);
    expect(resume(dir)).toBeUndefined();
    expect(resume(dir, OTHER_UID)?.spiffeId).toBe(`spiffe://${TD}/ns/shop/payments`);
    expect(resume(dir, OTHER_UID + 1)).toBeUndefined();
  });

  it("meshward identity does not wait on a FIFO planted as key.pem: it attests with its token (real process)", async () => {
    // Checked on a real process: reading a FIFO without a writer blocks the whole thread.
    const dir = copyOfPayments("fifo");
    rmSync(join(dir, "key.pem"));
    execFileSync("mkfifo", ["-m", "600", join(dir, "key.pem")]);
    const tokenFile = join(work, "fifo.token");
    writeFileSync(tokenFile, await token("fifo"), { mode: 0o600 });
    const agent = await startCli(["identity", "--ca", caAddress, "--bundle", bundle, "--token-file", tokenFile, "--out", dir], /identity ready: (\S+)/);
    running.push(agent);
    expect(agent.match[1]).toBe(`spiffe://${TD}/ns/shop/fifo`);
    expect(agent.stderr()).toMatch(/"event":"resume-ignored".*key\.pem is not a regular file/);
    await agent.stop();
  });

  it("meshward identity --owner: links planted by the files' owner do not make it renew another identity (real process)", async () => {
    // The postgres deployment of docs/backends.md: --out belongs to the server's user.
    const out = join(work, "postgres");
    mkdirSync(out, { mode: 0o755 });
    chownSync(out, OTHER_UID, OTHER_UID);
    const tokenFile = join(work, "postgres.token");
    writeFileSync(tokenFile, await token("postgres"), { mode: 0o600 });
    symlinkSync(join(payments, "key.pem"), join(out, "key.pem"));
    symlinkSync(join(payments, "cert.pem"), join(out, "cert.pem"));

    const agent = await startCli(["identity", "--ca", caAddress, "--bundle", bundle, "--token-file", tokenFile, "--out", out, "--owner", `${OTHER_UID}:${OTHER_UID}`], /identity ready: (\S+)/);
    running.push(agent);
    expect(agent.match[1]).toBe(`spiffe://${TD}/ns/shop/postgres`);
    expect(agent.stderr()).toMatch(/"event":"resume-ignored".*is a symbolic link/);
    await agent.stop();
    const key = lstatSync(join(out, "key.pem"));
    expect(key.isFile() && key.uid === OTHER_UID).toBe(true);
    expect(new X509Certificate(readFileSync(join(out, "cert.pem"))).subjectAltName).toBe(`URI:spiffe://${TD}/ns/shop/postgres`);
    // payments' own files are untouched.
    expect(new X509Certificate(readFileSync(join(payments, "cert.pem"))).subjectAltName).toBe(`URI:spiffe://${TD}/ns/shop/payments`);
  });
});
