import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { expectRefused, runCli } from "../helpers/cli.ts";

/**
 * `meshward ca init` takes its directory exclusively (review cli, finding 4): two runs on one
 * --dir both printed "Created a meshward CA", and one silently replaced the other (an encrypted
 * CA could end up with plaintext keys). Real processes.
 */
describe("ca init: one CA per directory, even when two runs race (real processes)", { timeout: 90_000 }, () => {
  const work = mkdtempSync(join(tmpdir(), "meshward-ca-init-exclusive-"));
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it("a directory another init holds is refused E_CA_EXISTS, and nothing is written there", async () => {
    const dir = join(work, "held");
    mkdirSync(dir, { mode: 0o700 });
    writeFileSync(join(dir, ".meshward-init.lock"), "12345\n", { mode: 0o600 });
    const r = await runCli(["ca", "init", "--trust-domain", "held.test", "--dir", dir]);
    expectRefused(r, "E_CA_EXISTS", /another 'meshward ca init' is creating a CA in .*held \(it holds .*\.meshward-init\.lock\); refusing to write there\. If none runs .*remove/);
    expect(readdirSync(dir)).toEqual([".meshward-init.lock"]);
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
