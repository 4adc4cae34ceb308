import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../helpers/cli.ts";

// Input the CLI took without a word (found by review, stop 39): a sidecar config whose `limits`
// is a scalar was dropped when a flag set a limit or not at all, and `cert list` on a directory
// that is no CA created an empty store there and answered "no certificates issued yet".
let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "meshward-config-errors-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("bad input is refused, not silently taken", { timeout: 60_000 }, () => {
  it("a sidecar config whose limits is not a mapping (limits: 5) is refused naming file:line:column", async () => {
    const config = join(dir, "limits-scalar.yaml");
    writeFileSync(config, "appId: web\nca: 127.0.0.1:1\nbundle: /nonexistent\napp: 127.0.0.1:1\nlimits: 5\n");
    for (const extra of [[], ["--max-connections", "10"]]) {
      const r = await runCli(["sidecar", "--config", config, "--token", "never-sent-0123456789", ...extra]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/limits-scalar\.yaml:5:\d+: limits must be a mapping.*\[E_CONFIG_INVALID\]/s);
      expect(r.stderr).not.toMatch(/\n\s+at /);
    }
  });

  it("cert issue with a --bundle that is not PEM names the file (E_BUNDLE_INVALID), before any CA is asked", async () => {
    const garbage = join(dir, "garbage.pem");
    writeFileSync(garbage, "not a certificate\n");
    const r = await runCli(["cert", "issue", "--ca", "127.0.0.1:1", "--bundle", garbage, "--token-file", garbage, "--out", join(dir, "issued")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/the trust bundle .*garbage\.pem is not usable.*\[E_BUNDLE_INVALID\]/s);
    expect(r.stderr).not.toMatch(/\n\s+at |E_CA_UNAVAILABLE/);
  });

  it("cert list on a directory that is no CA says so, and creates no store there", async () => {
    const notCa = join(dir, "not-a-ca");
    mkdirSync(notCa);
    const r = await runCli(["cert", "list", "--dir", notCa]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/\[E_CA_[A-Z_]+\]/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(readdirSync(notCa)).toEqual([]);
  });
});
