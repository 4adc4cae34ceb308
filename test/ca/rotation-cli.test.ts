import { X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { trustBundleVersionOfPem } from "../../src/telemetry/bundle-version.ts";
import { runCli, startCli, type LongRunning } from "../helpers/cli.ts";

/*
 * docs/rotation.md as a user runs it, every step a real `meshward` process: a CA with a status
 * port, one long-running `meshward identity` (renews, refreshes its bundle every second) and
 * one certificate from `meshward cert issue` whose process is long gone. The retire step is
 * refused because of that one; `cert list --root … --live` names it, `ca status` counts it per
 * root apart from the identity's superseded certificate, and the bundle version in /metrics
 * shows when every workload has fetched the new bundle.
 */
const TD = "rotation-cli.test";
let work: string;
let caDir: string;
let ca: LongRunning | undefined;
let identity: LongRunning | undefined;
let caAddress: string;
let caStatusUrl: string;
let identityStatusUrl: string;

async function cli(args: string[]): Promise<string> {
  const result = await runCli(args);
  if (result.code !== 0) throw new Error(`meshward ${args.join(" ")} exited ${result.code}\n${result.stdout}\n${result.stderr}`);
  return result.stdout;
}

async function token(appId: string): Promise<string> {
  const out = await cli(["token", "create", "--dir", caDir, "--namespace", "shop", "--app-id", appId]);
  return out.trim().split("\n").at(-1) as string;
}

/** meshward_trust_bundle_version from a component's /metrics. */
async function bundleVersion(statusUrl: string): Promise<number> {
  const text = await (await fetch(`${statusUrl}/metrics`)).text();
  const match = /^meshward_trust_bundle_version (\d+)$/m.exec(text);
  if (match === null) throw new Error(`no meshward_trust_bundle_version in ${statusUrl}/metrics`);
  return Number(match[1]);
}

async function waitFor(condition: () => Promise<boolean>, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

interface StatusJson {
  bundleVersion: number;
  anchors: { kind: string; subject: string; fingerprint256: string; liveCertificates?: number; certificates?: { unexpired: number; live: number; superseded: number; revoked: number } }[];
}

const caStatus = async () => JSON.parse(await cli(["ca", "status", "--dir", caDir, "--json"])) as StatusJson;
const certList = async (...args: string[]) => JSON.parse(await cli(["cert", "list", "--dir", caDir, "--json", ...args])) as { serial: string; status: string; spiffeId: string; supersededBy?: string; rootFingerprint: string }[];

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "meshward-rotation-cli-"));
  caDir = join(work, "ca");
  await cli(["ca", "init", "--trust-domain", TD, "--dir", caDir]);
  ca = await startCli(["ca", "serve", "--dir", caDir, "--listen", "127.0.0.1:0", "--status", "127.0.0.1:0"], /listening on (\S+) as [^\n]*\nstatus page: (\S+)\//);
  const match = ca.stdout().match(/listening on (\S+) as [^\n]*\nstatus page: (\S+)\//) as RegExpMatchArray;
  caAddress = match[1] as string;
  caStatusUrl = match[2] as string;
  identity = await startCli(
    ["identity", "--ca", caAddress, "--bundle", join(caDir, "bundle.pem"), "--token", await token("orders"), "--out", join(work, "orders"), "--status", "127.0.0.1:0", "--bundle-refresh-interval", "1s"],
    /identity ready: .* status=(\S+)/,
  );
  identityStatusUrl = `http://${(identity.stdout().match(/status=(\S+)/) as RegExpMatchArray)[1]}`;
}, 60_000);

afterAll(async () => {
  await identity?.stop();
  await ca?.stop();
  rmSync(work, { recursive: true, force: true });
});

describe("root rotation from the CLI (docs/rotation.md)", () => {
  it("lists what holds back retire, counts it per root, and shows every workload on the new bundle", async () => {
    // A certificate whose holder is gone: `cert issue` ran once and exited.
    const issued = JSON.parse(await cli(["cert", "issue", "--ca", caAddress, "--bundle", join(caDir, "bundle.pem"), "--token", await token("batch"), "--out", join(work, "batch"), "--json"])) as { serial: string };
    const firstRoot = new X509Certificate(readFileSync(join(caDir, "root.pem")));
    const initialVersion = trustBundleVersionOfPem(readFileSync(join(caDir, "bundle.pem"), "utf8"));
    expect((await caStatus()).bundleVersion).toBe(initialVersion);
    expect(await bundleVersion(caStatusUrl)).toBe(initialVersion);
    expect(await bundleVersion(identityStatusUrl)).toBe(initialVersion);

    // prepare: a second root with its own subject; the bundle version changes, at the CA at once
    // and at the identity after its next bundle refresh.
    await cli(["ca", "rotate-root", "prepare", "--dir", caDir]);
    const prepared = await caStatus();
    const roots = prepared.anchors.filter((a) => a.kind.startsWith("root"));
    expect(roots.map((r) => r.subject)).toEqual([`O=SPIFFE, CN=meshward root ${TD} G1`, `O=SPIFFE, CN=meshward root ${TD} G2`]);
    expect(firstRoot.subject).toContain(`CN=meshward root ${TD} G1`);
    expect(prepared.bundleVersion).not.toBe(initialVersion);
    expect(prepared.bundleVersion).toBe(trustBundleVersionOfPem(readFileSync(join(caDir, "bundle.pem"), "utf8")));
    await waitFor(async () => (await bundleVersion(caStatusUrl)) === prepared.bundleVersion, "the CA to serve the two-root bundle");
    await waitFor(async () => (await bundleVersion(identityStatusUrl)) === prepared.bundleVersion, "the identity to fetch the two-root bundle");
    const statusText = await cli(["ca", "status", "--dir", caDir]);
    expect(statusText).toContain(`trust bundle version ${prepared.bundleVersion} (2 roots)`);

    // activate --reissue: the identity renews onto the new root with its current certificate,
    // which is then superseded; the `cert issue` certificate stays live under the old root.
    const identityOld = (await certList("--spiffe-id", `spiffe://${TD}/ns/shop/orders`))[0]!;
    await cli(["ca", "rotate-root", "activate", "--dir", caDir, "--reissue"]);
    await waitFor(async () => (await certList("--spiffe-id", `spiffe://${TD}/ns/shop/orders`)).length === 2, "the identity to renew onto the new root", 30_000);

    const retire = await runCli(["ca", "rotate-root", "retire", "--dir", caDir]);
    expect(retire.code).not.toBe(0);
    expect(retire.stderr).toContain("1 unexpired certificate still chain to the old root");
    expect(retire.stderr).toContain(`meshward cert list --dir ${caDir} --root ${firstRoot.fingerprint256} --live`);

    // What retire waits for, by the command the refusal names: exactly the dead process's certificate.
    const live = await certList("--root", firstRoot.fingerprint256, "--live");
    expect(live.map((r) => r.serial)).toEqual([issued.serial]);
    // The same root, typed without colons in lower case; everything issued under it, with status.
    const all = await certList("--root", firstRoot.fingerprint256.replace(/:/g, "").toLowerCase());
    expect(all.map((r) => [r.serial, r.status]).sort()).toEqual([[identityOld.serial, "superseded"], [issued.serial, "valid"]].sort());
    const renewed = (await certList("--spiffe-id", `spiffe://${TD}/ns/shop/orders`))[0]!;
    expect(all.find((r) => r.serial === identityOld.serial)?.supersededBy).toBe(renewed.serial);
    expect(renewed.rootFingerprint).not.toBe(firstRoot.fingerprint256);
    const table = await cli(["cert", "list", "--dir", caDir, "--root", firstRoot.fingerprint256]);
    expect(table).toMatch(new RegExp(`${identityOld.serial}\\s+superseded\\s`));

    // ca status: per-root counts, the hint for the retiring root.
    const activated = await caStatus();
    const retiring = activated.anchors.find((a) => a.kind === "root (retiring)")!;
    expect(retiring.certificates).toEqual({ unexpired: 2, live: 1, superseded: 1, revoked: 0 });
    expect(activated.anchors.find((a) => a.kind === "root (active)")!.certificates).toMatchObject({ live: 1, superseded: 0 });
    const text = await cli(["ca", "status", "--dir", caDir]);
    expect(text).toContain("1 live certificate chains to it (not counted: 1 superseded); list them: meshward cert list");

    // The operator revokes the orphan; retire goes through; the version changes once more and the
    // identity follows.
    await cli(["cert", "revoke", "--dir", caDir, "--serial", issued.serial, "--reason", "cessationOfOperation"]);
    expect((await caStatus()).anchors.find((a) => a.kind === "root (retiring)")!.certificates).toEqual({ unexpired: 2, live: 0, superseded: 1, revoked: 1 });
    expect(await certList("--root", firstRoot.fingerprint256, "--live")).toEqual([]);
    await cli(["ca", "rotate-root", "retire", "--dir", caDir]);
    const retired = await caStatus();
    expect(retired.bundleVersion).not.toBe(prepared.bundleVersion);
    await waitFor(async () => (await bundleVersion(identityStatusUrl)) === retired.bundleVersion, "the identity to fetch the one-root bundle");
    expect(await bundleVersion(caStatusUrl)).toBe(retired.bundleVersion);
  }, 120_000);

  it("refuses a --root that is not a fingerprint, with a message, and --limit that is not a number", async () => {
    const bad = await runCli(["cert", "list", "--dir", caDir, "--root", "AB:CD"]);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain("is not a SHA-256 fingerprint");
    expect(bad.stderr).not.toMatch(/\n\s+at /); // no stack trace
    const limit = await runCli(["cert", "list", "--dir", caDir, "--limit", "ten"]);
    expect(limit.code).not.toBe(0);
    expect(limit.stderr).toContain("--limit must be a whole number");
  });
});
