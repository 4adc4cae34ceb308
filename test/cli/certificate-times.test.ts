import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { createTokenCli, runCli, startCaCli, type LongRunning } from "../helpers/cli.ts";

// Review newuser L5: `cert list` showed NOT AFTER 2026-12-08T13:55:15.575Z (the store's unrounded
// time) for a certificate whose notAfter is 13:55:15: up to a second later than the real expiry.
// Times that come from certificates are printed at the certificate's precision, whole seconds.
const SECONDS = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/;

describe("certificate times at second precision", () => {
  const dir = mkdtempSync(join(tmpdir(), "meshward-cert-times-"));
  let ca: LongRunning | undefined;
  afterAll(async () => {
    await ca?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("cert issue, cert inspect, cert list and ca status print the certificate's own notAfter, no milliseconds", async () => {
    const caDir = join(dir, "ca");
    const started = await startCaCli(caDir, "times.test");
    ca = started.ca;
    const token = await createTokenCli(caDir, "shop", "orders");
    const out = join(dir, "orders");
    const issued = await runCli(["cert", "issue", "--ca", started.address, "--bundle", join(caDir, "bundle.pem"), "--out", out], { env: { MESHWARD_TOKEN: token } });
    expect(issued.code, issued.stderr).toBe(0);
    const until = issued.stdout.match(/valid until (\S+) \(/)?.[1];
    expect(until).toMatch(SECONDS);

    const inspect = await runCli(["cert", "inspect", "--json", join(out, "cert.pem")]);
    expect(inspect.code, inspect.stderr).toBe(0);
    const inspected = JSON.parse(inspect.stdout) as { notBefore: string; notAfter: string };
    expect(inspected.notBefore).toMatch(SECONDS);
    expect(inspected.notAfter).toBe(until);

    const list = await runCli(["cert", "list", "--dir", caDir]);
    expect(list.code, list.stderr).toBe(0);
    const row = list.stdout.split("\n").find((line) => line.endsWith("spiffe://times.test/ns/shop/orders"));
    expect(row?.split(/\s+/)[2]).toBe(until);
    const listJson = await runCli(["cert", "list", "--dir", caDir, "--json"]);
    expect((JSON.parse(listJson.stdout) as { notAfter: string }[])[0]?.notAfter).toBe(until);

    const status = await runCli(["ca", "status", "--dir", caDir, "--json"]);
    expect(status.code, status.stderr).toBe(0);
    for (const time of status.stdout.match(/"notAfter": "[^"]*"/g) ?? ["none"]) expect(time.slice(13, -1)).toMatch(SECONDS);
  });
});
