import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { expectRefused, runCli, spawnCli } from "../helpers/cli.ts";
import { closedPort } from "../helpers/closed-port.ts";

// Review of the Workload API, LOW 5: the CLI always made the socket 0600 (owner only), while
// getting-started said the directory's mode decides who may connect: a workload running as another
// user than meshward could not connect, whatever the operator wanted. --workload-api-socket-mode
// (and --workload-api-socket-group) say who may. Real process; the CA is down, and the socket is
// bound before the CA is asked, so its mode can be read while meshward waits for the CA.
describe("meshward identity --workload-api-socket-mode / -group (real process)", () => {
  let work: string;
  let bundle: string;
  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "meshward-socket-mode-"));
    expect((await runCli(["ca", "init", "--trust-domain", "mode.test", "--dir", join(work, "ca")])).code).toBe(0);
    bundle = join(work, "ca", "bundle.pem");
  }, 60_000);
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  /** Mode and gid of the socket meshward binds with `extra` flags, read while it waits for the CA. */
  async function socketAs(name: string, extra: string[]): Promise<{ mode: number; gid: number }> {
    const dir = join(work, name);
    mkdirSync(dir, { mode: 0o755 });
    const socket = join(dir, "api.sock");
    const identity = spawnCli(["identity", "--ca", `127.0.0.1:${await closedPort()}`, "--bundle", bundle, "--token", "unused", "--workload-api-socket", socket, ...extra]);
    try {
      const deadline = Date.now() + 20_000;
      // Waiting for the CA: the socket is bound and the first attempt has failed (SIGTERM is handled from then on).
      while (!/"event":"renewal-failed"/.test(identity.stdout() + identity.stderr())) {
        if (identity.child.exitCode !== null || Date.now() > deadline) throw new Error(`not listening: ${identity.stdout()}${identity.stderr()}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      const stat = statSync(socket);
      expect(stat.isSocket()).toBe(true);
      return { mode: stat.mode & 0o7777, gid: stat.gid };
    } finally {
      expect(await identity.stop()).toBe(0);
      expect(existsSync(socket)).toBe(false);
    }
  }

  it("binds the socket 0600 by default, and with the mode and group given", async () => {
    expect((await socketAs("default", [])).mode).toBe(0o600);
    const gid = process.getgid!();
    expect(await socketAs("group", ["--workload-api-socket-mode", "0660", "--workload-api-socket-group", String(gid)])).toEqual({ mode: 0o660, gid });
    expect((await socketAs("everyone", ["--workload-api-socket-mode", "666"])).mode).toBe(0o666);
  }, 90_000);

  it("refuses a mode that would not let a peer connect or that is not octal, an unknown group, and the flags without the socket, before anything starts", async () => {
    const dir = join(work, "refused");
    mkdirSync(dir, { mode: 0o755 });
    const args = (...extra: string[]) => ["identity", "--ca", "127.0.0.1:9", "--bundle", bundle, "--token", "unused", "--workload-api-socket", join(dir, "api.sock"), ...extra];
    for (const mode of ["0640", "0644", "0700", "0777", "0460", "rw-rw----", "06600"]) {
      expectRefused(await runCli(args("--workload-api-socket-mode", mode)), "E_USAGE", /--workload-api-socket-mode .*(each of group and others gets rw- or nothing|expected an octal mode such as 0600, 0660 or 0666)/);
    }
    expectRefused(await runCli(args("--workload-api-socket-group", "no-such-group-mw")), "E_USAGE", /--workload-api-socket-group: no group named "no-such-group-mw"/);
    expectRefused(
      await runCli(["identity", "--ca", "127.0.0.1:9", "--bundle", bundle, "--token", "unused", "--out", join(dir, "out"), "--workload-api-socket-mode", "0660"]),
      "E_USAGE",
      /--workload-api-socket-mode and --workload-api-socket-group apply to the Workload API socket; give --workload-api-socket PATH/,
    );
    expect(readdirSync(dir)).toEqual([]);
  }, 90_000);
});
