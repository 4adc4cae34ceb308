import { chmodSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { runCli } from "../helpers/cli.ts";

/**
 * New-user review M3: `meshward ca init --dir /tmp` (and `--out /tmp`) is refused, rightly, but
 * the message said "Fix it with: chmod go-w /tmp", which, run as root, breaks every program
 * that uses /tmp. A shared directory (sticky, as /tmp and /dev/shm, or a system one) now gets
 * "make a directory of your own in it" with the command; the chmod advice stays only for a
 * directory of the user's own that is not sticky.
 */
describe("the advice for a directory others can write", () => {
  const work = mkdtempSync(join(tmpdir(), "meshward-shared-dir-advice-"));
  afterAll(() => rmSync(work, { recursive: true, force: true }));
  const dirWithMode = (name: string, mode: number) => {
    const path = join(work, name);
    mkdirSync(path);
    chmodSync(path, mode);
    return path;
  };
  const expectRefused = (r: { code: number | null; stderr: string }, code: string) => {
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toContain(`[${code}]`);
    expect(r.stderr).not.toMatch(/\n\s+at |unexpected error/);
  };

  it("ca init --dir /tmp: make a directory of your own in it, never chmod /tmp", async () => {
    const mode = statSync("/tmp").mode & 0o7777;
    expect(mode & 0o1002).toBe(0o1002); // sticky and world-writable, as everywhere
    const r = await runCli(["ca", "init", "--trust-domain", "advice.test", "--dir", "/tmp"]);
    expectRefused(r, "E_CA_DIR_UNSAFE");
    expect(r.stderr).toMatch(/--dir \/tmp: the directory \/tmp is writable by group or others \(mode 1777\), as a shared directory is meant to be/);
    expect(r.stderr).toMatch(/Do not change its mode .*: make a directory of your own in it and give that instead, e\.g\. mkdir -m 700 \/tmp\/meshward-ca/);
    expect(r.stderr).not.toMatch(/chmod/);
  });

  it("a sticky directory of the user's own (mode 1777) gets the same advice", async () => {
    const sticky = dirWithMode("sticky", 0o1777);
    const ca = await runCli(["ca", "init", "--trust-domain", "advice.test", "--dir", sticky]);
    expectRefused(ca, "E_CA_DIR_UNSAFE");
    expect(ca.stderr).toContain(`mkdir -m 700 ${join(sticky, "meshward-ca")}`);
    expect(ca.stderr).not.toMatch(/chmod/);

    // --out: checked before the CA is contacted.
    const bundle = join(work, "bundle.pem");
    writeFileSync(bundle, "not used\n");
    const out = await runCli(["identity", "--ca", "127.0.0.1:1", "--bundle", bundle, "--out", sticky], { timeoutMs: 20_000 });
    expectRefused(out, "E_OUT_DIR_UNSAFE");
    expect(out.stderr).toContain(`make a directory of your own in it and give that instead, e.g. mkdir -m 700 ${join(sticky, "meshward-out")}`);
    expect(out.stderr).not.toMatch(/chmod/);
  });

  it("a directory of the user's own, not sticky (0777, 0770): chmod go-w DIR is the fix, as before", async () => {
    for (const [name, mode] of [["open", 0o777], ["group", 0o770]] as const) {
      const dir = dirWithMode(name, mode);
      const r = await runCli(["ca", "init", "--trust-domain", "advice.test", "--dir", dir]);
      expectRefused(r, "E_CA_DIR_UNSAFE");
      expect(r.stderr).toContain(`Fix it with: chmod go-w ${dir} (or use a directory of your own`);
      expect(r.stderr).not.toMatch(/mkdir/);
    }
  });
});
