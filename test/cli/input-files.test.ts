import { execFileSync, spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readInputText } from "../../src/util/read-input.ts";
import { expectRefused, MESHWARD_BIN, runCli } from "../helpers/cli.ts";

/**
 * Red team (review files LOW-3): files named on the command line were read whole with
 * readFileSync, whatever they were. `cert inspect /dev/zero` grew memory without bound (11 GB in
 * a minute), and a FIFO nobody writes to hung `ca init`, `ca serve --config`, `cert issue
 * --bundle` and `sidecar --config` forever, without a word. Now one bounded reader: a device is
 * refused naming what it is, a pipe with no writer ends at once with an error, a file larger than
 * its kind's limit is refused, and a pipe that is written (`--passphrase-file <(…)`, /dev/stdin)
 * still works. Real processes; each is killed by runCli if it hangs (exit code null fails the test).
 */
describe("input files: devices, FIFOs and huge files give a clear error, never a hang (real processes)", () => {
  const work = mkdtempSync(join(tmpdir(), "meshward-input-files-"));
  const fifo = join(work, "fifo");
  const caDir = join(work, "ca");
  afterAll(() => rmSync(work, { recursive: true, force: true }));
  beforeAll(async () => {
    // coreutils mkfifo (no Node API), mode 0600 as a secret file would be.
    execFileSync("mkfifo", ["-m", "600", fifo]);
    const init = await runCli(["ca", "init", "--trust-domain", "input.test", "--dir", caDir]);
    expect(init.code, init.stderr).toBe(0);
  }, 60_000);

  it("cert inspect /dev/zero is refused as a character device", async () => {
    const r = await runCli(["cert", "inspect", "/dev/zero"], { timeoutMs: 20_000 });
    expectRefused(r, "E_FILE_UNREADABLE", /certificate \/dev\/zero is a character device \(as \/dev\/zero or a terminal\), not a regular file/);
  });

  it("a FIFO with no writer ends at once with an error, for every command the review hung", async () => {
    const cases: { args: string[]; code: string }[] = [
      { args: ["cert", "inspect", fifo], code: "E_FILE_UNREADABLE" },
      { args: ["ca", "init", "--trust-domain", "fifo.test", "--dir", join(work, "ca-fifo"), "--root-cert", join(caDir, "root.pem"), "--issuer-cert", join(caDir, "issuer.pem"), "--issuer-key", fifo], code: "E_FILE_UNREADABLE" },
      { args: ["ca", "init", "--trust-domain", "fifo.test", "--dir", join(work, "ca-fifo2"), "--passphrase-file", fifo], code: "E_FILE_UNREADABLE" },
      { args: ["ca", "serve", "--dir", caDir, "--config", fifo], code: "E_FILE_UNREADABLE" },
      { args: ["cert", "issue", "--ca", "127.0.0.1:9", "--bundle", fifo, "--token", "mwjt_unused", "--out", join(work, "out")], code: "E_FILE_UNREADABLE" },
      { args: ["sidecar", "--config", fifo], code: "E_FILE_UNREADABLE" },
    ];
    for (const c of cases) {
      const r = await runCli(c.args, { timeoutMs: 20_000 });
      expect(r.code, `${c.args.join(" ")}: ${r.stderr}`).toBe(1);
      expect(r.stderr).toContain(`${fifo} is a named pipe (FIFO) and nothing was written to it`);
      expect(r.stderr).toContain(`[${c.code}]`);
      expect(r.stderr).not.toMatch(/\n\s+at |unexpected error/);
    }
  }, 120_000);

  it("a file larger than its kind's limit is refused (E_FILE_TOO_LARGE), without reading it all", async () => {
    const huge = join(work, "huge.pem");
    writeFileSync(huge, "");
    truncateSync(huge, 64 * 1024 * 1024); // sparse: no disk used
    const r = await runCli(["cert", "inspect", huge], { timeoutMs: 20_000 });
    expectRefused(r, "E_FILE_TOO_LARGE", new RegExp(`certificate ${huge} holds more than 8 MiB, the most a certificate may hold`));
    const config = join(work, "huge.yaml");
    writeFileSync(config, "");
    truncateSync(config, 16 * 1024 * 1024);
    expectRefused(await runCli(["ca", "serve", "--dir", caDir, "--config", config], { timeoutMs: 20_000 }), "E_FILE_TOO_LARGE", /config file .*huge\.yaml holds more than 4 MiB/);
  });

  it("a normal file, and a pipe that is written (/dev/stdin), still work", async () => {
    const cert = await runCli(["cert", "inspect", join(caDir, "bundle.pem")], { timeoutMs: 20_000 });
    expect(cert.code, cert.stderr).toBe(0);
    expect(cert.stdout).toMatch(/input\.test/);
    // --passphrase-file /dev/stdin fed by a shell pipe, as `--passphrase-file <(pass show ca)` is
    // (a pipe made by sh: node's own child stdin would be a socket pair).
    const init = spawnSync("sh", ["-c", 'printf "correct horse battery staple\\n" | exec "$0" "$@"', process.execPath, MESHWARD_BIN, "ca", "init", "--trust-domain", "pipe.test", "--dir", join(work, "ca-pipe"), "--passphrase-file", "/dev/stdin"], { encoding: "utf8", timeout: 30_000 });
    expect(init.status, init.stderr).toBe(0);
    expect(readFileSync(join(work, "ca-pipe", "issuer.key"), "utf8")).toContain("ENCRYPTED PRIVATE KEY");
  }, 60_000);

  it("a file re-read by a daemon (token file, policy) is never read from a pipe", () => {
    const token = join(work, "token");
    writeFileSync(token, "mwjt_x\n");
    chmodSync(token, 0o600);
    expect(readInputText(token, { what: "token file", maxBytes: 1024, pipes: false })).toBe("mwjt_x\n");
    expect(() => readInputText(fifo, { what: "token file", maxBytes: 1024, pipes: false })).toThrow(
      expect.objectContaining({ code: "E_FILE_UNREADABLE", message: expect.stringMatching(/token file .*fifo is a named pipe \(FIFO\), not a regular file; it is re-read while the process runs/) }),
    );
    expect(() => readInputText(work, { what: "token file", maxBytes: 1024 })).toThrow(expect.objectContaining({ code: "EISDIR" }));
  });
});
