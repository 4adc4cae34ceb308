import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { expectRefused, runCli } from "../helpers/cli.ts";

/**
 * `meshward ca init` takes its directory exclusively (review cli, finding 4): two runs on one
 * --dir both printed "Created a meshward CA", and one silently replaced the other (an encrypted
 * CA could end up with plaintext keys). Real processes. The claim is an fcntl lock, so an init
 * killed mid-way leaves nothing that blocks the next one (stop 44's note: a pid check is unsafe
 * across the PID namespaces of pods sharing a volume).
 */
describe("ca init: one CA per directory, even when two runs race (real processes)", { timeout: 90_000 }, () => {
  const work = mkdtempSync(join(tmpdir(), "meshward-ca-init-exclusive-"));
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it("a directory another init holds is refused E_CA_EXISTS, nothing is written there, and once that init is killed (SIGKILL) the next init succeeds", async () => {
    const dir = join(work, "held");
    mkdirSync(dir, { mode: 0o700 });
    const claim = join(dir, ".meshward-init.lock");
    // An init stopped mid-way: a real process holding the lock as initAnchors takes it, killed
    // below the way a node or pod dies. The timer keeps the lock referenced: a lock object that is
    // garbage-collected closes its database, and with it the lock (failed once under Node 26).
    const holderCode = `import { tryLockFile } from "./src/store/file-lock.ts"; const lock = tryLockFile(${JSON.stringify(claim)}); console.log(typeof lock === "string" ? \`refused: \${lock}\` : "locked"); setInterval(() => void lock, 60000);`;
    const holder = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", holderCode], { cwd: process.cwd(), stdio: ["ignore", "pipe", "inherit"] });
    try {
      await new Promise<void>((resolve, reject) => {
        holder.stdout.once("data", (line: Buffer) => (line.toString().trim() === "locked" ? resolve() : reject(new Error(`the lock holder: ${line.toString().trim()}`))));
        holder.once("exit", (code) => reject(new Error(`the lock holder exited ${code}`)));
      });
      const r = await runCli(["ca", "init", "--trust-domain", "held.test", "--dir", dir]);
      expectRefused(r, "E_CA_EXISTS", /another 'meshward ca init' is creating a CA in .*held \(it holds the lock on .*\.meshward-init\.lock\); refusing to write there\. Wait for it to finish, or stop it/);
      expect(readdirSync(dir)).toEqual([".meshward-init.lock"]);
    } finally {
      holder.kill("SIGKILL");
      await new Promise((resolve) => (holder.exitCode !== null || holder.signalCode !== null ? resolve(undefined) : holder.once("exit", resolve)));
    }
    // Killed before it wrote anything: its lock went with it, so no one has to remove the file.
    const after = await runCli(["ca", "init", "--trust-domain", "held.test", "--dir", dir]);
    expect(after.code, after.stderr).toBe(0);
    expect(JSON.parse(readFileSync(join(dir, "ca.json"), "utf8"))).toMatchObject({ trustDomain: "held.test" });
    expect(existsSync(claim)).toBe(false);
  });

  it("an init half-way through its files (keys written, no ca.json yet) is another init at work: E_CA_EXISTS, not an interrupted one; once it is killed, its files are an interrupted init (E_CA_INCOMPLETE)", async () => {
    // The race CI met (two inits at once): the loser looked at the directory before taking the
    // claim, saw the winner's keys without ca.json, and called them an interrupted init.
    const dir = join(work, "half-way");
    mkdirSync(dir, { mode: 0o700 });
    const claim = join(dir, ".meshward-init.lock");
    const holderCode = `import { tryLockFile } from "./src/store/file-lock.ts"; const lock = tryLockFile(${JSON.stringify(claim)}); console.log(typeof lock === "string" ? \`refused: \${lock}\` : "locked"); setInterval(() => void lock, 60000);`;
    const holder = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", holderCode], { cwd: process.cwd(), stdio: ["ignore", "pipe", "inherit"] });
    // What ca init writes before ca.json (their contents do not matter to the check: their presence does).
    const partial = ["root.key", "issuer.key", "root.pem", "bundle.pem", "issuer.pem"];
    try {
      await new Promise<void>((resolve, reject) => {
        holder.stdout.once("data", (line: Buffer) => (line.toString().trim() === "locked" ? resolve() : reject(new Error(`the lock holder: ${line.toString().trim()}`))));
        holder.once("exit", (code) => reject(new Error(`the lock holder exited ${code}`)));
      });
      for (const name of partial) writeFileSync(join(dir, name), "written by the init at work\n", { mode: 0o600 });
      const r = await runCli(["ca", "init", "--trust-domain", "half.test", "--dir", dir]);
      expectRefused(r, "E_CA_EXISTS", /another 'meshward ca init' is creating a CA in .*half-way/);
    } finally {
      holder.kill("SIGKILL");
      await new Promise((resolve) => (holder.exitCode !== null || holder.signalCode !== null ? resolve(undefined) : holder.once("exit", resolve)));
    }
    const after = await runCli(["ca", "init", "--trust-domain", "half.test", "--dir", dir]);
    expectRefused(after, "E_CA_INCOMPLETE", /holds part of a meshward CA .* but no ca\.json/);
    expect(readdirSync(dir).sort()).toEqual([...partial].sort());
    for (const name of partial) expect(readFileSync(join(dir, name), "utf8")).toBe("written by the init at work\n");
  });

  it("the claim file of an older release (a pid, not a lock) is refused with how to clear it", async () => {
    const dir = join(work, "legacy");
    mkdirSync(dir, { mode: 0o700 });
    writeFileSync(join(dir, ".meshward-init.lock"), "12345\n", { mode: 0o600 });
    const r = await runCli(["ca", "init", "--trust-domain", "legacy.test", "--dir", dir]);
    expectRefused(r, "E_CA_EXISTS", /\.meshward-init\.lock is the claim of a 'meshward ca init' of an older meshward release.*If none runs .*remove/);
    expect(readdirSync(dir)).toEqual([".meshward-init.lock"]);
    expect(readFileSync(join(dir, ".meshward-init.lock"), "utf8")).toBe("12345\n");
  });

  it("two inits at once: exactly one succeeds, the other is refused E_CA_EXISTS, and the directory holds the winner's CA (its trust domain, its encryption)", async () => {
    const passphrase = join(work, "passphrase");
    writeFileSync(passphrase, "a passphrase of some length\n", { mode: 0o600 });
    for (let i = 0; i < 3; i++) {
      const dir = join(work, `race-${i}`);
      const [a, b] = await Promise.all([
        runCli(["ca", "init", "--trust-domain", "a.test", "--dir", dir, "--passphrase-file", passphrase]),
        runCli(["ca", "init", "--trust-domain", "b.test", "--dir", dir]),
      ]);
      const ok = [a, b].filter((r) => r.code === 0);
      expect(ok.length, `${a.stderr}\n${b.stderr}`).toBe(1);
      const loser = a.code === 0 ? b : a;
      expectRefused(loser, "E_CA_EXISTS", /already holds a meshward CA|another 'meshward ca init' is creating a CA/);
      const state = JSON.parse(readFileSync(join(dir, "ca.json"), "utf8")) as { trustDomain: string; keysEncrypted: boolean };
      expect(state).toMatchObject(a.code === 0 ? { trustDomain: "a.test", keysEncrypted: true } : { trustDomain: "b.test", keysEncrypted: false });
      expect(readFileSync(join(dir, "root.key"), "utf8").includes("ENCRYPTED")).toBe(state.keysEncrypted);
      expect(existsSync(join(dir, ".meshward-init.lock"))).toBe(false);
    }
  });
});
