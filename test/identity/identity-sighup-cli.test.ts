import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli, spawnCli } from "../helpers/cli.ts";
import { closedPort } from "../helpers/closed-port.ts";

// Review of workload identity, LOW 6: SIGHUP (a closed terminal, a supervisor's kill -HUP) killed
// `meshward identity` at once (exit 129), leaving its Workload API socket behind. Real process.
describe("meshward identity stops cleanly on SIGHUP (real process)", () => {
  let work: string;
  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "meshward-identity-hup-"));
    expect((await runCli(["ca", "init", "--trust-domain", "hup.test", "--dir", join(work, "ca")])).code).toBe(0);
  }, 60_000);
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it("closes like SIGTERM: exit 0, event stopped, its Workload API socket removed", async () => {
    const socket = join(work, "api.sock");
    const identity = spawnCli(["identity", "--ca", `127.0.0.1:${await closedPort()}`, "--bundle", join(work, "ca", "bundle.pem"), "--token", "unused", "--workload-api-socket", socket]);
    try {
      // Waiting for the CA: the socket is bound and the first attempt has failed.
      const deadline = Date.now() + 20_000;
      while (!/"event":"renewal-failed"/.test(identity.stdout() + identity.stderr())) {
        if (Date.now() > deadline) throw new Error(`no renewal-failed: ${identity.stdout()}${identity.stderr()}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(existsSync(socket)).toBe(true);
      const code = await identity.stop("SIGHUP");
      expect(identity.child.signalCode).toBeNull();
      expect(code).toBe(0);
      expect(identity.stdout() + identity.stderr()).toMatch(/"event":"stopped"/);
      expect(existsSync(socket)).toBe(false);
    } finally {
      await identity.stop("SIGKILL");
    }
  }, 60_000);
});
