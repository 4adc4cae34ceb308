import { X509Certificate } from "node:crypto";
import { readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startHttpApp, type HttpApp } from "../helpers/app-servers.ts";
import { runCli, startCli, type LongRunning } from "../helpers/cli.ts";
import { exec } from "../helpers/exec.ts";
import { startMeshCa, startTestSidecar, TD, type MeshCa, type TestSidecarWithApp } from "./fixtures.ts";

/**
 * An app that only calls others (a job, a CLI) runs `meshward sidecar` without `--app`: no
 * inbound listener, only outbound, as Dapr runs a sidecar without an app port
 * (dapr/dapr pkg/runtime/channels/channels.go, Refresh: with app port 0 the app channel is not
 * created, "App channel is not initialized"; the sidecar still serves outbound calls). The
 * outbound-only sidecar is a real process; the callee's sidecar and the CA run in-process
 * (issue 15, items 2 and 6).
 */
describe("meshward sidecar without --app: outbound only (real process)", () => {
  let ca: MeshCa;
  let app: HttpApp;
  let inventory: TestSidecarWithApp;
  const running: LongRunning[] = [];

  beforeAll(async () => {
    ca = await startMeshCa();
    app = await startHttpApp();
    inventory = await startTestSidecar(ca, { appId: "inventory", app: `127.0.0.1:${app.port}` });
  }, 60_000);
  afterAll(async () => {
    for (const r of running) await r.stop();
    await inventory?.close();
    await app?.close();
    await ca?.close();
  });

  it("item 2: starts with no inbound listener and calls a peer over mTLS; item 6: validator names in either spelling", async () => {
    // The config file spells the validator the CLI way, the docs' way is checked on the flag below.
    const file = join(ca.dir, "job.yaml");
    writeFileSync(file, `appId: nightly-job\nca: ${ca.server.address}\nbundle: ${ca.bundleFile}\nvalidator: join-token\n`);
    const job = await startCli(
      ["sidecar", "--config", file, "--token", await ca.token("default", "nightly-job"), "--outbound", "127.0.0.1:0", "--peer", `inventory=127.0.0.1:${inventory.addresses.inbound.port}`, "--status", "127.0.0.1:0"],
      /meshward sidecar ready: (.*)\n/,
    );
    running.push(job);
    const line = job.match[1] as string;
    expect(line).toMatch(new RegExp(`^id=spiffe://${TD.replace(/\./g, "\\.")}/ns/default/nightly-job outbound=127\\.0\\.0\\.1:\\d+ status=127\\.0\\.0\\.1:\\d+ mode=strict protocol=http$`));
    expect(line).not.toContain("inbound=");
    const outbound = /outbound=(\S+)/.exec(line)![1]!;
    const status = /status=(\S+)/.exec(line)![1]!;

    // Only the outbound and status ports are listening in that process (ss, from iproute2).
    const ss = await exec("ss", ["-Hltnp"]);
    const ports = ss.stdout
      .split("\n")
      .filter((l) => l.includes(`pid=${job.child.pid},`))
      .map((l) => l.split(/\s+/)[3]!)
      .sort();
    expect(ports).toEqual([outbound, status].sort());

    const r = await exec("curl", ["-sS", "--max-time", "10", "-H", "dapr-app-id: inventory", `http://${outbound}/items`]);
    const seen = JSON.parse(r.stdout) as { url: string; headers: Record<string, string> };
    expect(seen.url).toBe("/items");
    expect(seen.headers["x-forwarded-client-cert"]).toContain(`URI=spiffe://${TD}/ns/default/nightly-job`);
    expect((await fetch(`http://${status}/readyz`)).status).toBe(200);
    expect(await job.stop()).toBe(0);
  });

  it("item 2: says what an outbound-only sidecar needs, and refuses inbound settings without an app", async () => {
    const base = ["sidecar", "--app-id", "job", "--ca", ca.server.address, "--bundle", ca.bundleFile, "--token", "unused"];
    // Flags alone at fault (no --config): usage errors, exit 2.
    const nothing = await runCli(base);
    expect(nothing.code).toBe(2);
    expect(nothing.stderr).toMatch(/app: required unless the sidecar is outbound only: give app, or outbound, tcpUpstreams or egress/);
    const inboundOnly = await runCli([...base, "--outbound", "127.0.0.1:0", "--inbound", "127.0.0.1:0"]);
    expect(inboundOnly.code).toBe(2);
    expect(inboundOnly.stderr).toMatch(/--inbound: inbound: an inbound listener forwards to the app: give app too/);
    const permissive = await runCli([...base, "--outbound", "127.0.0.1:0", "--mode", "permissive"]);
    expect(permissive.code).toBe(2);
    expect(permissive.stderr).toMatch(/--mode: mode: permissive mode applies to the inbound listener/);
  });

  it("item 4: with --out, a restarted sidecar renews with the certificate it left there (the token is spent)", async () => {
    const out = join(ca.dir, "job-identity", "files");
    const t = await ca.token("default", "restarting-job", { uses: 1 });
    const args = ["sidecar", "--app-id", "restarting-job", "--ca", ca.server.address, "--bundle", ca.bundleFile, "--token", t, "--out", out, "--outbound", "127.0.0.1:0"];
    const first = await startCli(args, /meshward sidecar ready: id=(\S+)/);
    running.push(first);
    expect(statSync(out).mode & 0o777).toBe(0o700);
    expect(statSync(join(out, "key.pem")).mode & 0o777).toBe(0o600);
    const firstSerial = new X509Certificate(readFileSync(join(out, "cert.pem"))).serialNumber;
    expect(await first.stop()).toBe(0);

    const again = await startCli(args, /meshward sidecar ready: id=(\S+)/);
    running.push(again);
    expect(again.match[1]).toBe(`spiffe://${TD}/ns/default/restarting-job`);
    expect(again.stderr()).toContain('"event":"resuming"');
    expect(new X509Certificate(readFileSync(join(out, "cert.pem"))).serialNumber).not.toBe(firstSerial);
    expect(await again.stop()).toBe(0);

    // Without --out the spent token is all it has, and the CA says so.
    const without = await runCli(args.filter((a, i) => a !== "--out" && args[i - 1] !== "--out"));
    expect(without.code).toBe(1);
    expect(without.stderr).toMatch(/\[E_TOKEN_USED\]/);
  });

  it("item 6: --validator takes JOIN_TOKEN as well as join-token (cert issue, identity, sidecar), and lists both on a typo", async () => {
    const issued = await runCli(["cert", "issue", "--ca", ca.server.address, "--bundle", ca.bundleFile, "--token", await ca.token("default", "enum-spelling"), "--validator", "JOIN_TOKEN", "--out", join(ca.dir, "enum-spelling")]);
    expect(issued.code, issued.stderr).toBe(0);
    for (const command of [["cert", "issue"], ["identity"], ["sidecar"]]) {
      const typo = await runCli([...command, "--validator", "KUBERNETS", "--ca", ca.server.address, "--bundle", ca.bundleFile]);
      expect(typo.code).toBe(2);
      expect(typo.stderr).toContain("Allowed: join-token (JOIN_TOKEN), jwks (JWKS), kubernetes (KUBERNETES), insecure (INSECURE).");
    }
    const kubernetes = await runCli(["identity", "--validator", "KUBERNETES", "--ca", ca.server.address, "--bundle", ca.bundleFile, "--token", "x.y.z", "--out", join(ca.dir, "k8s")]);
    // Accepted as a spelling; this CA has no JWKS configured, so the CA refuses the validator itself.
    expect(kubernetes.stderr).not.toMatch(/Allowed:/);
    expect(kubernetes.code).toBe(1);
  });
});
