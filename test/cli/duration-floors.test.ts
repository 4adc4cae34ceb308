import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { expectRefused, runCli } from "../helpers/cli.ts";

/**
 * Lifetimes and intervals of zero or close to it are refused by name (review cli, findings 3
 * and 5): a CA with `--workload-ttl 0s` issued certificates already expired and spent a join
 * token on each, and `injector --bundle-refresh-interval 0` fetched from the CA in a tight loop.
 * Real processes; none of them gets as far as listening.
 */
describe("durations with a floor (real processes)", { timeout: 60_000 }, () => {
  const work = mkdtempSync(join(tmpdir(), "meshward-duration-floors-"));
  const caDir = join(work, "ca");
  beforeAll(async () => {
    const init = await runCli(["ca", "init", "--trust-domain", "floors.test", "--dir", caDir]);
    expect(init.code, init.stderr).toBe(0);
  });
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it("ca serve --workload-ttl under 5s is refused naming the flag, before it listens", async () => {
    for (const ttl of ["0s", "0", "1ms", "4s"]) {
      const r = await runCli(["ca", "serve", "--dir", caDir, "--listen", "127.0.0.1:0", "--workload-ttl", ttl]);
      expectRefused(r, "E_CONFIG_INVALID", new RegExp(`--workload-ttl: workloadTtl: workload TTL "${ttl}" is too short: at least 5s`), true);
      expect(r.stdout).not.toMatch(/listening/);
    }
  });

  it("ca serve --config: workloadTtl, issuerTtl, jwtSvid.ttl and expiryWarning below their floors are refused naming file:line and the key", async () => {
    const cases: [string, RegExp][] = [
      ["workloadTtl: 0s\n", /c\.yaml:1:\d+: workloadTtl: workload TTL "0s" is too short: at least 5s/],
      ["issuerTtl: 0s\n", /c\.yaml:1:\d+: issuerTtl: issuer TTL "0s" is too short: at least 1h/],
      ["issuerTtl: 59m\n", /issuerTtl: issuer TTL "59m" is too short: at least 1h/],
      ["jwtSvid:\n  ttl: 0s\n", /c\.yaml:2:\d+: jwtSvid\.ttl: JWT-SVID TTL "0s" is too short: at least 1m/],
      ["expiryWarning: 0s\n", /c\.yaml:1:\d+: expiryWarning: expiry warning "0s" is too short: at least 1h/],
    ];
    const config = join(work, "c.yaml");
    for (const [yaml, message] of cases) {
      writeFileSync(config, yaml);
      const r = await runCli(["ca", "serve", "--dir", caDir, "--listen", "127.0.0.1:0", "--config", config]);
      expectRefused(r, "E_CONFIG_INVALID", message);
    }
  });

  it("injector --bundle-refresh-interval under 1s is a usage error, as for identity", async () => {
    const base = ["--namespace", "meshward-system", "--ca", "127.0.0.1:1", "--bundle", join(caDir, "bundle.pem"), "--token-file", join(work, "no-token")];
    for (const value of ["0", "0s", "500ms"]) {
      const injector = await runCli(["injector", ...base, "--bundle-refresh-interval", value]);
      expect(injector.stderr).toMatch(new RegExp(`--bundle-refresh-interval "${value}": at least 1s .*\\[E_USAGE\\]`));
      expect(injector.stdout).not.toMatch(/ready/);
      const identity = await runCli(["identity", "--ca", "127.0.0.1:1", "--bundle", join(caDir, "bundle.pem"), "--token-file", join(work, "no-token"), "--out", join(work, "id"), "--bundle-refresh-interval", value]);
      expect(identity.stderr).toMatch(new RegExp(`--bundle-refresh-interval "${value}": at least 1s .*\\[E_USAGE\\]`));
    }
  });
});
