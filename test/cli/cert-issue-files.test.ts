import { spawnSync } from "node:child_process";
import { createPublicKey, X509Certificate } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli, spawnCli, startCli, type LongRunning } from "../helpers/cli.ts";
import { waitFor } from "../helpers/wait.ts";

/**
 * `meshward cert issue --out DIR` writes a key and its certificate that belong together (review
 * cli, finding 2): every file is written in full before any is renamed into place, a failure
 * part-way puts the old pair back, a failure after the CA answered names the serial and says
 * the token is used, and one run at a time holds the directory (a lock file). Real processes and
 * a real CA. `chattr +i` stands in for a rename that fails (EIO, a full disk): it needs root,
 * which the test machines run as (said plainly, not skipped).
 */
describe("meshward cert issue --out: the pair is never broken (real processes)", () => {
  const work = mkdtempSync(join(tmpdir(), "meshward-cert-issue-files-"));
  const caDir = join(work, "ca");
  const bundle = join(caDir, "bundle.pem");
  let ca: LongRunning & { match: RegExpMatchArray };
  let caAddress: string;
  let n = 0;

  const token = async () => {
    const r = await runCli(["token", "create", "--dir", caDir, "--namespace", "shop", "--app-id", `files-${++n}`]);
    expect(r.code, r.stderr).toBe(0);
    return { token: r.stdout.trim().split("\n").pop() as string, appId: `files-${n}` };
  };
  const issue = (t: { token: string; appId: string }, out: string) =>
    runCli(["cert", "issue", "--ca", caAddress, "--bundle", bundle, "--token", t.token, "--namespace", "shop", "--app-id", t.appId, "--out", out]);
  const keyId = (file: string) => createPublicKey(readFileSync(file)).export({ type: "spki", format: "der" }).toString("hex");
  const certKeyId = (file: string) => new X509Certificate(readFileSync(file)).publicKey.export({ type: "spki", format: "der" }).toString("hex");

  beforeAll(async () => {
    expect((await runCli(["ca", "init", "--trust-domain", "files.test", "--dir", caDir])).code).toBe(0);
    ca = await startCli(["ca", "serve", "--dir", caDir, "--listen", "127.0.0.1:0"], /listening on (\S+)/);
    caAddress = ca.match[1] as string;
  }, 60_000);
  afterAll(async () => {
    await ca?.stop();
    spawnSync("chattr", ["-R", "-i", work]);
    rmSync(work, { recursive: true, force: true });
  });

  it("a rename that fails after the CA answered leaves the old working pair in place, and names the serial and the spent token", async () => {
    const out = join(work, "pair");
    const first = await issue(await token(), out);
    expect(first.code, first.stderr).toBe(0);
    const before = { key: readFileSync(join(out, "key.pem"), "utf8"), cert: readFileSync(join(out, "cert.pem"), "utf8"), bundle: readFileSync(join(out, "bundle.pem"), "utf8") };
    expect(keyId(join(out, "key.pem"))).toBe(certKeyId(join(out, "cert.pem")));
    const chattr = spawnSync("chattr", ["+i", join(out, "cert.pem")], { encoding: "utf8" });
    expect(chattr.status, chattr.stderr).toBe(0);
    let second;
    try {
      second = await issue(await token(), out);
    } finally {
      spawnSync("chattr", ["-i", join(out, "cert.pem")]);
    }
    expect(second.code).toBe(1);
    expect(second.stderr).toMatch(/cannot write .*cert\.pem: .*EPERM.*the files renamed before it were put back.*The CA issued spiffe:\/\/files\.test\/ns\/shop\/files-\d+ \(serial ([0-9A-F]+)\) and the token is used.*meshward cert revoke --serial \1.*\[E_FILE_WRITE\]/s);
    expect(second.stderr).not.toMatch(/\n\s+at |PRIVATE KEY/);
    // The old pair, untouched: key.pem was put back, and it still matches cert.pem.
    expect(readFileSync(join(out, "key.pem"), "utf8")).toBe(before.key);
    expect(readFileSync(join(out, "cert.pem"), "utf8")).toBe(before.cert);
    expect(readFileSync(join(out, "bundle.pem"), "utf8")).toBe(before.bundle);
    expect(statSync(join(out, "key.pem")).mode & 0o777).toBe(0o600);
    expect(readdirSync(out).sort()).toEqual(["bundle.pem", "cert.pem", "key.pem"]);
  });

  it("a directory another run holds is refused before the CA is asked (the token still works); a lock left by a killed run is taken over", async () => {
    const out = join(work, "locked");
    const t = await token();
    expect((await issue(t, out)).code).toBe(0); // creates the directory
    const lock = join(out, ".meshward-cert-issue.lock");
    writeFileSync(lock, `${process.pid}\n`, { mode: 0o600 }); // a live process: this test's
    const t2 = await token();
    const busy = await issue(t2, out);
    expect(busy.code).toBe(1);
    expect(busy.stderr).toMatch(new RegExp(`another meshward cert issue \\(pid ${process.pid}\\) is writing there; wait for it, or, if none runs, remove .*\\.meshward-cert-issue\\.lock \\[E_OUT_DIR_BUSY\\]`));
    expect(busy.stderr).not.toMatch(/\n\s+at |E_TOKEN/);
    // A killed run's lock: its pid no longer runs.
    const gone = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"], { encoding: "utf8" });
    writeFileSync(lock, `${gone.stdout}\n`, { mode: 0o600 });
    const after = await issue(t2, out);
    expect(after.code, after.stderr).toBe(0);
    expect(existsSync(lock)).toBe(false);
    expect(keyId(join(out, "key.pem"))).toBe(certKeyId(join(out, "cert.pem")));
  });

  it("two runs at once into one directory: each exits 0 or is refused E_OUT_DIR_BUSY, and the key always matches the certificate", async () => {
    const out = join(work, "race");
    expect((await issue(await token(), out)).code).toBe(0);
    for (let i = 0; i < 3; i++) {
      const results = await Promise.all([issue(await token(), out), issue(await token(), out)]);
      for (const r of results) expect(r.code === 0 || r.stderr.includes("[E_OUT_DIR_BUSY]"), r.stderr).toBe(true);
      expect(keyId(join(out, "key.pem"))).toBe(certKeyId(join(out, "cert.pem")));
      expect(readdirSync(out).sort()).toEqual(["bundle.pem", "cert.pem", "key.pem"]);
    }
  });

  it("a run killed between its renames leaves the replaced key as a hidden link; the next run removes it and the temp files, and says so (review atrest LOW-6)", async () => {
    const out = join(work, "leftovers");
    const first = await issue(await token(), out);
    expect(first.code, first.stderr).toBe(0);
    const firstKey = readFileSync(join(out, "key.pem"), "utf8");
    const t = await token();
    const killed = await runCli(["cert", "issue", "--ca", caAddress, "--bundle", bundle, "--token", t.token, "--namespace", "shop", "--app-id", t.appId, "--out", out], {
      env: { NODE_OPTIONS: `--import ${join(process.cwd(), "test/helpers/fault-rename.mjs")}`, MESHWARD_FAULT_RENAME_TO: "cert.pem", MESHWARD_FAULT_MODE: "kill" },
    });
    expect(killed.stderr).toContain("[fault] kill at the rename onto cert.pem");
    const hidden = readdirSync(out).filter((name) => name.startsWith("."));
    const keyLink = hidden.find((name) => /^\.key\.pem\.[0-9a-f]{12}\.prev$/.test(name));
    expect(keyLink, hidden.join(" ")).toBeDefined();
    expect(readFileSync(join(out, keyLink as string), "utf8")).toBe(firstKey);
    const next = await issue(await token(), out);
    expect(next.code, next.stderr).toBe(0);
    expect(next.stderr).toMatch(/removed what an interrupted earlier write left in .*leftovers: .*\.key\.pem\.[0-9a-f]{12}\.prev/);
    expect(readdirSync(out).sort()).toEqual(["bundle.pem", "cert.pem", "key.pem"]);
  });
  /**
   * Review files LOW-4, made deterministic with test/helpers/fault-gate.mjs (file gates, no
   * sleeps). A killed run left the old pid lock file. Run B reads the dead pid and is stopped
   * just before it removes the file; run A then takes the directory over and is stopped just
   * before its last rename (cert.pem). B goes on to the end, then A. With the pid lock both
   * took it over: B's sweep removed A's temp file, A's rename failed, and A's rollback unlinked
   * the key.pem and bundle.pem B had just written and reported. Now exactly one holds the
   * directory (an fcntl lock), and the directory ends with a matching set.
   */
  it("two runs that both find a killed run's lock: only one takes it, and the directory keeps a matching key, certificate and bundle", async () => {
    const out = join(work, "stale-race");
    mkdirSync(out, { mode: 0o700 });
    const gates = mkdtempSync(join(work, "gates-"));
    const gone = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"], { encoding: "utf8" });
    writeFileSync(join(out, ".meshward-cert-issue.lock"), `${gone.stdout}\n`, { mode: 0o600 });
    const args = (t: { token: string; appId: string }) => ["cert", "issue", "--ca", caAddress, "--bundle", bundle, "--token", t.token, "--namespace", "shop", "--app-id", t.appId, "--out", out];
    const hook = `--import ${join(process.cwd(), "test/helpers/fault-gate.mjs")}`;
    const [ta, tb] = [await token(), await token()];
    const b = spawnCli(args(tb), { env: { NODE_OPTIONS: hook, MESHWARD_GATE_DIR: gates, MESHWARD_GATE_TAG: "b", MESHWARD_GATE_RM: ".meshward-cert-issue.lock" } });
    let a: ReturnType<typeof spawnCli> | undefined;
    try {
      await waitFor("run B stopped before removing the old lock", () => existsSync(join(gates, "b.paused")), 60_000, 20);
      // A starts only now, so that B is the one that got there first.
      a = spawnCli(args(ta), { env: { NODE_OPTIONS: hook, MESHWARD_GATE_DIR: gates, MESHWARD_GATE_TAG: "a", MESHWARD_GATE_RENAME: "cert.pem" } });
      let aCode: number | null | undefined;
      void a.exited.then((code) => (aCode = code));
      // A either holds the directory too (stopped at its last rename) or was refused.
      await waitFor("run A at its last rename, or ended", () => existsSync(join(gates, "a.paused")) || aCode !== undefined, 60_000, 20);
      writeFileSync(join(gates, "b.go"), "");
      const bCode = await b.exited;
      writeFileSync(join(gates, "a.go"), "");
      const aEnd = await a.exited;
      const results = [
        { code: bCode, stdout: b.stdout(), stderr: b.stderr() },
        { code: aEnd, stdout: a.stdout(), stderr: a.stderr() },
      ];
      for (const r of results) expect(r.code === 0 || r.stderr.includes("[E_OUT_DIR_BUSY]"), r.stderr).toBe(true);
      const winners = results.filter((r) => r.code === 0);
      expect(winners.length, results.map((r) => r.stderr).join("\n")).toBe(1);
      expect(winners[0]!.stdout).toMatch(/wrote .*key\.pem/);
      expect(readdirSync(out).sort()).toEqual(["bundle.pem", "cert.pem", "key.pem"]);
      expect(keyId(join(out, "key.pem"))).toBe(certKeyId(join(out, "cert.pem")));
    } finally {
      writeFileSync(join(gates, "a.go"), "");
      writeFileSync(join(gates, "b.go"), "");
      await a?.stop();
      await b.stop();
    }
  }, 120_000);

  it("a failed write's rollback leaves a file another writer put in place meanwhile (it removes only what this run wrote)", async () => {
    const out = join(work, "rollback-others");
    mkdirSync(out, { mode: 0o700 });
    const gates = mkdtempSync(join(work, "gates-"));
    const t = await token();
    const run = spawnCli(["cert", "issue", "--ca", caAddress, "--bundle", bundle, "--token", t.token, "--namespace", "shop", "--app-id", t.appId, "--out", out], {
      env: { NODE_OPTIONS: `--import ${join(process.cwd(), "test/helpers/fault-gate.mjs")}`, MESHWARD_GATE_DIR: gates, MESHWARD_GATE_TAG: "w", MESHWARD_GATE_RENAME: "cert.pem", MESHWARD_GATE_FAIL: "enospc" },
    });
    try {
      await waitFor("the run at its last rename", () => existsSync(join(gates, "w.paused")), 30_000, 20);
      // Another writer of the directory (an `identity --out` pointed at it by mistake) replaces key.pem.
      writeFileSync(join(out, ".other-key.tmp"), "OTHER WRITER'S KEY\n", { mode: 0o600 });
      renameSync(join(out, ".other-key.tmp"), join(out, "key.pem"));
      writeFileSync(join(gates, "w.go"), "");
      expect(await run.exited).toBe(1);
      expect(run.stderr()).toMatch(/cannot write .*cert\.pem: ENOSPC.*key\.pem had been replaced by another writer meanwhile and were left as they are.*\[E_FILE_WRITE\]/s);
      expect(readFileSync(join(out, "key.pem"), "utf8")).toBe("OTHER WRITER'S KEY\n");
      // What this run did write (bundle.pem, new) was removed again.
      expect(readdirSync(out).sort()).toEqual(["key.pem"]);
    } finally {
      writeFileSync(join(gates, "w.go"), "");
      await run.stop();
    }
  }, 60_000);
});
