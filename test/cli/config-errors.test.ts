import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { caConfigSchema } from "../../src/config/ca.ts";
import { expectRefused, runCli } from "../helpers/cli.ts";

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

  // Found by review (cli, LOW-8): an unknown key was reported at its mapping (the CA: line 1,
  // column 1; the sidecar: no line at all), not where it is written.
  it("an unknown key (a typo) is reported at its own line and column, in the sidecar's and the CA's config", async () => {
    const sidecar = join(dir, "unknown-keys.yaml");
    writeFileSync(sidecar, "appId: web\nca: 127.0.0.1:1\napp: 127.0.0.1:1\nlimits:\n  idleTimeout: 5s\n  maxConnectionz: 3\nbundel: /x\n");
    const r = await runCli(["sidecar", "--config", sidecar, "--token", "never-sent-0123456789"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${sidecar}:6:3: limits: Unrecognized key: "maxConnectionz"`);
    expect(r.stderr).toContain(`${sidecar}:7:1: (config): Unrecognized key: "bundel"`);
    const ca = join(dir, "ca-unknown-key.yaml");
    writeFileSync(ca, "listen: 127.0.0.1:0\nworkloadTtll: 1h\n");
    const c = await runCli(["ca", "serve", "--dir", join(dir, "no-ca-here"), "--config", ca]);
    expect(c.code).toBe(1);
    expect(c.stderr).toContain(`${ca}:2:1: (document): Unrecognized key: "workloadTtll"`);
  });

  it("timeouts and intervals that are zero, negative or past a Node timer's range are refused by name (a negative idleTimeout crashed the sidecar on its first TCP connection)", async () => {
    const cases: [string, RegExp][] = [
      ["limits:\n  idleTimeout: -5\n", /limits\.idleTimeout.*idle timeout must be at least 1ms \(got -5\)/s],
      ["limits:\n  headersTimeout: 0\n", /headers timeout must be at least 1ms \(got 0\)/],
      ["limits:\n  idleTimeout: 30d\n", /idle timeout must be at most 24d \(got "30d"\)/],
      ["policyReloadInterval: 0s\n", /policy reload interval must be at least 100ms \(got "0s"\)/],
      ["policyReloadInterval: -1\n", /policy reload interval must be at least 100ms/],
    ];
    for (const [yaml, message] of cases) {
      const config = join(dir, "durations.yaml");
      writeFileSync(config, `appId: web\nca: 127.0.0.1:1\nbundle: /nonexistent\napp: 127.0.0.1:1\n${yaml}`);
      const r = await runCli(["sidecar", "--config", config, "--token", "never-sent-0123456789"]);
      expect(r.code, yaml).toBe(1);
      expect(r.stderr, yaml).toMatch(message);
      expect(r.stderr).toContain("[E_CONFIG_INVALID]");
      expect(r.stderr).not.toMatch(/\n\s+at /);
    }
    const flag = await runCli(["sidecar", "--app-id", "web", "--ca", "127.0.0.1:1", "--app", "127.0.0.1:1", "--token", "never-sent-0123456789", "--policy-reload-interval", "0ms"]);
    expect(flag.code).toBe(2); // a flag's value: a usage error
    expect(flag.stderr).toMatch(/--policy-reload-interval.*must be at least 100ms/);
  });

  it("the CA's poll intervals and timeouts too: 0s (a busy loop) and 30d (past a timer's range) are refused", () => {
    for (const [field, value, message] of [
      ["crlRefresh", "0s", /CRL refresh interval must be at least 100ms/],
      ["anchorPoll", "30d", /anchor poll interval must be at most 24d/],
      ["requestTimeout", "0ms", /request timeout must be at least 1ms/],
    ] as [string, string, RegExp][]) {
      const parsed = caConfigSchema.safeParse({ [field]: value });
      expect(parsed.success, field).toBe(false);
      expect(parsed.error?.issues.map((issue) => issue.message).join("\n")).toMatch(message);
    }
    expect(caConfigSchema.parse({ crlRefresh: "250ms" }).crlRefresh).toBe(250);
  });

  it("an outbound or TCP upstream port off loopback is refused: anyone reaching it would call other apps as this workload", async () => {
    for (const [args, message] of [
      [["--outbound", "0.0.0.0:0"], /outbound address 0\.0\.0\.0:0 is not loopback: whoever reaches it calls other apps as this workload/],
      [["--tcp-upstream", "db=10.0.0.5:5432"], /TCP upstream listen address 10\.0\.0\.5:5432 is not loopback/],
      [["--outbound", "[::]:3500"], /outbound address \[::\]:3500 is not loopback/],
    ] as [string[], RegExp][]) {
      const r = await runCli(["sidecar", "--app-id", "web", "--ca", "127.0.0.1:1", "--token", "never-sent-0123456789", ...args]);
      expect(r.code, args.join(" ")).toBe(2); // a flag's value: a usage error
      expect(r.stderr).toMatch(message);
      expect(r.stderr).toContain("[E_CONFIG_INVALID]");
    }
  });

  // Found by review (egress, LOW-4): `mtls=True`, `yes`, `1` or a typo became mtls: false without a
  // word (the workload presented no certificate to the backend); the YAML config refuses them.
  it("--egress …,mtls= takes true or false only: anything else is a usage error naming the flag", async () => {
    const sidecar = (mtls: string) =>
      runCli(["sidecar", "--app-id", "web", "--ca", "127.0.0.1:1", "--token", "never-sent-0123456789", "--egress", `listen=127.0.0.1:0,backend=127.0.0.1:1,mtls=${mtls}`]);
    for (const mtls of ["True", "yes", "1", "ture", "TRUE", "false "]) {
      expectRefused(await sidecar(mtls), "E_USAGE", new RegExp(`--egress: mtls takes true or false, got "${mtls}"`));
    }
    // true and false get past the flag (this sidecar then stops at its missing trust bundle).
    for (const mtls of ["true", "false"]) expectRefused(await sidecar(mtls), "E_USAGE", /no trust bundle/);
  });

  it("cert issue with a --bundle that is not PEM names the file (E_BUNDLE_INVALID), before any CA is asked", async () => {
    const garbage = join(dir, "garbage.pem");
    writeFileSync(garbage, "not a certificate\n", { mode: 0o600 }); // also the token file, which must be 0600
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
