import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTokenCli, runCli, startCaCli, startCli, type LongRunning } from "../helpers/cli.ts";
import { exec } from "../helpers/exec.ts";
import { fetchFromCa } from "../../src/identity/ca-client.ts";
import { parseCrl } from "../../src/pki/crl.ts";
import { trustBundleVersionOfPem } from "../../src/telemetry/bundle-version.ts";

// `meshward identity` and `meshward status` as an operator runs them: real processes.
describe("meshward identity + meshward status (real processes)", () => {
  let work: string;
  let ca: LongRunning;
  let caAddress: string;
  let identity: LongRunning;
  let statusAddress: string;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "meshward-identity-cli-"));
    ({ ca, address: caAddress } = await startCaCli(join(work, "ca"), "ops.test"));
    const token = await createTokenCli(join(work, "ca"), "ops", "nginx");
    const id = await startCli(
      ["identity", "--ca", caAddress, "--bundle", join(work, "ca", "bundle.pem"), "--token", token, "--out", join(work, "files"), "--on-rotate", `touch ${join(work, "rotated")}`, "--status", "127.0.0.1:0"],
      /identity ready: (\S+) .* status=(\S+)/,
    );
    identity = id;
    statusAddress = id.match[2] as string;
  }, 60_000);

  afterAll(async () => {
    await identity?.stop();
    await ca?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it("writes the identity files (key 0600), runs --on-rotate, and the certificate verifies with openssl", async () => {
    expect(statSync(join(work, "files", "key.pem")).mode & 0o777).toBe(0o600);
    // Its first certificate is "issued" in the log, not "renewed".
    expect(identity.stderr()).toContain('"msg":"workload certificate issued"');
    expect(identity.stderr()).not.toContain("workload certificate renewed");
    for (let i = 0; i < 50 && !existsSync(join(work, "rotated")); i++) await new Promise((r) => setTimeout(r, 100));
    expect(existsSync(join(work, "rotated"))).toBe(true);
    const verify = await exec("openssl", ["verify", "-CAfile", join(work, "files", "bundle.pem"), "-untrusted", join(work, "files", "cert.pem"), join(work, "files", "cert.pem")]);
    expect(verify.stdout).toMatch(/OK/);
    expect(readFileSync(join(work, "files", "cert.pem"), "utf8")).toMatch(/BEGIN CERTIFICATE/);
  });

  it("serves the status page feed", async () => {
    const feed = (await (await fetch(`http://${statusAddress}/status.json`)).json()) as { identities: { spiffeId: string }[]; health: { ok: boolean } };
    expect(feed.identities[0]?.spiffeId).toBe("spiffe://ops.test/ns/ops/nginx");
    expect(feed.health.ok).toBe(true);
    // the bundle version the page shows, equal to the CA's (docs/rotation.md)
    expect((feed as unknown as { bundleVersion: number }).bundleVersion).toBe(trustBundleVersionOfPem(readFileSync(join(work, "ca", "bundle.pem"), "utf8")));
    const metrics = await (await fetch(`http://${statusAddress}/metrics`)).text();
    expect(metrics).toContain(`meshward_trust_bundle_version ${trustBundleVersionOfPem(readFileSync(join(work, "ca", "bundle.pem"), "utf8"))}\n`);
    // The CRL it enforces, from its first certificate on (not a minute later, at the first bundle
    // refresh): the one the CA serves, which the alert MeshwardRevocationListBehind compares.
    const served = parseCrl(await fetchFromCa({ address: caAddress, bundlePem: readFileSync(join(work, "ca", "bundle.pem"), "utf8"), trustDomain: "ops.test" }, "/v1/crl"));
    expect(metrics).toContain(`meshward_crl_this_update_timestamp_seconds{kind="workload"} ${served.thisUpdate.getTime() / 1000}\n`);
    expect((await fetch(`http://${statusAddress}/`)).headers.get("content-type")).toMatch(/text\/html/);
  });

  it("meshward status shows the CA and the identity, and fails when something is unreachable", async () => {
    const ok = await runCli(["status", "--ca", caAddress, "--bundle", join(work, "ca", "bundle.pem"), "--status-url", `http://${statusAddress}`]);
    expect(ok.code, ok.stdout + ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/^COMPONENT\s+NAME\s+IDENTITY/);
    expect(ok.stdout).toMatch(/spiffe:\/\/ops\.test\/ns\/ops\/nginx\s+23 hours 59 minutes left|spiffe:\/\/ops\.test\/ns\/ops\/nginx\s+1 day left/);
    expect(ok.stdout).toMatch(/ca\s+ops\.test\s+root/);
    // The identity was issued before its status server started: no rotation since (it said "none yet").
    expect(ok.stdout).toMatch(/^identity\s.*\shealthy\s+none since start$/m);
    const json = JSON.parse((await runCli(["status", "--status-url", `http://${statusAddress}`, "--json"])).stdout) as { identity: string; healthy: boolean }[];
    expect(json).toEqual([expect.objectContaining({ identity: "spiffe://ops.test/ns/ops/nginx", healthy: true })]);
    // an identity process is labelled as one (it used to say "sidecar")
    expect(json[0]).toMatchObject({ component: "identity" });
    expect(ok.stdout).toMatch(/^identity\s+spiffe:\/\/ops\.test\/ns\/ops\/nginx\s/m);
    expect(ok.stdout).not.toMatch(/^sidecar/m);

    const down = await runCli(["status", "--status-url", "http://127.0.0.1:1"]);
    expect(down.code).toBe(1);
    expect(down.stdout).toMatch(/unreachable/);
  });

  it("refuses a status port off loopback without a token", async () => {
    const r = await runCli(["identity", "--ca", caAddress, "--bundle", join(work, "ca", "bundle.pem"), "--token", "mwjt_x", "--out", join(work, "x"), "--status", "0.0.0.0:0"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/needs a token.*E_STATUS_TOKEN_REQUIRED/);
  });
});
