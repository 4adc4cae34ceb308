import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { expectRefused, runCli } from "../helpers/cli.ts";

// `meshward identity --owner X` / `--mode Y` (and --workload-api-socket-mode / -group) refused a
// value by quoting it whole: 5,000 characters, or a terminal escape sequence and a newline, went
// as they were into the terminal and the log. They are now shown as every other flag value is
// (shownValue: JSON-quoted, so control characters are escaped, and at most 40 characters with the
// length). Each is refused before anything is read, written or asked of the CA.
describe("identity --owner / --mode: a refused value is shown shortened and escaped (real process)", { timeout: 60_000 }, () => {
  const work = mkdtempSync(join(tmpdir(), "meshward-owner-values-"));
  afterAll(() => rmSync(work, { recursive: true, force: true }));
  const args = (...extra: string[]) => ["identity", "--ca", "127.0.0.1:9", "--bundle", join(work, "no-bundle.pem"), "--token", "unused", "--out", join(work, "out"), ...extra];
  const long = "a".repeat(5000);
  const escape = "\u001b[2J\u001b[31mroot";
  const newline = "postgres\nmeshward: all fine";

  /** The refusal: exit 2, [E_USAGE], one line on stderr, no control character, no more than a screen line or two. */
  function shown(stderr: string): void {
    expect(stderr.trimEnd().split("\n")).toHaveLength(1);
    expect(stderr).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f]/);
    expect(stderr.length).toBeLessThan(400);
  }

  it("--owner: 5,000 characters (a name, or digits), an escape sequence, a newline", async () => {
    let r = await runCli(args("--owner", long));
    expectRefused(r, "E_USAGE", new RegExp(`--owner: no user named "${"a".repeat(40)}"… \\(5000 characters\\) on this host`));
    shown(r.stderr);
    r = await runCli(args("--owner", `root:${long}`));
    expectRefused(r, "E_USAGE", /--owner "root:a{35}"… \(5005 characters\): no group named "a{40}"… \(5000 characters\) on this host/);
    shown(r.stderr);
    r = await runCli(args("--owner", "9".repeat(5000)));
    expectRefused(r, "E_USAGE", /--owner "9{40}"… \(5000 characters\): not a valid user or group id/);
    shown(r.stderr);
    r = await runCli(args("--owner", escape));
    expectRefused(r, "E_USAGE", /--owner: no user named "\\u001b\[2J\\u001b\[31mroot" on this host/);
    shown(r.stderr);
    r = await runCli(args("--owner", `root:${escape}`));
    expectRefused(r, "E_USAGE", /--owner "root:\\u001b\[2J\\u001b\[31mroot": no group named "\\u001b\[2J\\u001b\[31mroot" on this host/);
    shown(r.stderr);
    r = await runCli(args("--owner", newline));
    expectRefused(r, "E_USAGE", /--owner "postgres\\nmeshward: all fine": expected USER or USER:GROUP/);
    shown(r.stderr);
  });

  it("--mode: 5,000 characters, an escape sequence, a newline around a mode it would refuse", async () => {
    let r = await runCli(args("--mode", "0".repeat(5000)));
    expectRefused(r, "E_USAGE", /--mode "0{40}"… \(5000 characters\): expected an octal mode such as 0600 or 0640/);
    shown(r.stderr);
    r = await runCli(args("--mode", `0600${escape}`));
    expectRefused(r, "E_USAGE", /--mode "0600\\u001b\[2J\\u001b\[31mroot": expected an octal mode/);
    shown(r.stderr);
    r = await runCli(args("--mode", "\n0644\n"));
    expectRefused(r, "E_USAGE", /--mode 0644: the key file must stay private/);
    shown(r.stderr);
  });

  it("--workload-api-socket-mode and -group: the same", async () => {
    const socket = ["--workload-api-socket", join(work, "api.sock")];
    let r = await runCli(args(...socket, "--workload-api-socket-mode", long));
    expectRefused(r, "E_USAGE", /--workload-api-socket-mode "a{40}"… \(5000 characters\): expected an octal mode/);
    shown(r.stderr);
    r = await runCli(args(...socket, "--workload-api-socket-group", escape));
    expectRefused(r, "E_USAGE", /--workload-api-socket-group: no group named "\\u001b\[2J\\u001b\[31mroot" on this host/);
    shown(r.stderr);
    r = await runCli(args(...socket, "--workload-api-socket-group", `${long} x`));
    expectRefused(r, "E_USAGE", /--workload-api-socket-group "a{40}"… \(5002 characters\): expected a group name or numeric id/);
    shown(r.stderr);
  });
});
