import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli, startCli, type LongRunning } from "../helpers/cli.ts";
import { exec } from "../helpers/exec.ts";

// daprd dials Sentry with go-spiffe's tlsconfig.AuthorizeID(spiffe://<cp td>/ns/<cp ns>/dapr-sentry)
// (dapr/dapr pkg/security/sentry.go newRequestFn, pkg/security/security.go SentryID): the CA must be
// able to present that ID instead of its own default.
describe("ca serve --serving-spiffe-id (real processes, openssl s_client)", () => {
  let work: string;
  let caDir: string;
  const servers: LongRunning[] = [];

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "meshward-serving-id-"));
    caDir = join(work, "ca");
    const init = await runCli(["ca", "init", "--trust-domain", "public", "--dir", caDir]);
    expect(init.code, init.stderr).toBe(0);
  }, 60_000);

  afterAll(async () => {
    for (const server of servers) await server.stop();
    rmSync(work, { recursive: true, force: true });
  });

  const serve = async (extra: string[]) => {
    const started = await startCli(["ca", "serve", "--dir", caDir, "--listen", "127.0.0.1:0", ...extra], /listening on (\S+) as (\S+)/);
    servers.push(started);
    return { address: started.match[1] as string, id: started.match[2] as string, server: started };
  };

  const presentedUris = async (address: string) => {
    const [host, port] = address.split(":");
    const shown = await exec("sh", ["-c", `openssl s_client -connect ${host}:${port} -CAfile ${join(caDir, "bundle.pem")} </dev/null 2>/dev/null | openssl x509 -noout -ext subjectAltName`]);
    return shown.stdout;
  };

  it("presents the configured ID, exactly one URI SAN; meshward clients follow with --ca-spiffe-id", async () => {
    const sentryId = "spiffe://cluster.local/ns/dapr-system/dapr-sentry";
    const { address, id, server } = await serve(["--serving-spiffe-id", sentryId]);
    expect(id).toBe(sentryId);
    const san = await presentedUris(address);
    expect(san.match(/URI:/g)).toHaveLength(1);
    expect(san).toContain(`URI:${sentryId}`);

    const token = (await runCli(["token", "create", "--dir", caDir, "--namespace", "default", "--app-id", "orders"])).stdout.trim().split("\n").pop() as string;
    const bundle = join(caDir, "bundle.pem");
    // Without being told, a meshward client refuses a CA presenting another ID (and keeps its token).
    const refused = await runCli(["cert", "issue", "--ca", address, "--bundle", bundle, "--trust-domain", "public", "--token", token, "--out", join(work, "a")]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/E_SPIFFE_MISMATCH/);
    const issued = await runCli(["cert", "issue", "--ca", address, "--bundle", bundle, "--trust-domain", "public", "--token", token, "--ca-spiffe-id", sentryId, "--out", join(work, "b")]);
    expect(issued.code, issued.stderr).toBe(0);
    expect(issued.stdout).toMatch(/issued spiffe:\/\/public\/ns\/default\/orders/);
    await server.stop();
  }, 60_000);

  it("defaults to spiffe://<td>/ns/meshward-system/meshward-ca; the config file field works too", async () => {
    const plain = await serve([]);
    expect(plain.id).toBe("spiffe://public/ns/meshward-system/meshward-ca");
    expect(await presentedUris(plain.address)).toContain("URI:spiffe://public/ns/meshward-system/meshward-ca");
    await plain.server.stop();

    const config = join(work, "ca.yaml");
    writeFileSync(config, "servingSpiffeId: spiffe://public/ns/dapr-system/dapr-sentry\n");
    const fromFile = await serve(["--config", config]);
    expect(fromFile.id).toBe("spiffe://public/ns/dapr-system/dapr-sentry");
    expect(await presentedUris(fromFile.address)).toContain("URI:spiffe://public/ns/dapr-system/dapr-sentry");
    await fromFile.server.stop();
  }, 60_000);

  it("refuses an ID that is not a SPIFFE ID with a path, before listening", async () => {
    for (const bad of ["spiffe://public", "https://public/ns/x/y", "spiffe://Public/ns/a/b"]) {
      const r = await runCli(["ca", "serve", "--dir", caDir, "--listen", "127.0.0.1:0", "--serving-spiffe-id", bad]);
      expect(r.code, bad).toBe(2); // a flag's value: a usage error
      expect(r.stderr).toMatch(/E_CONFIG_INVALID/);
      expect(r.stderr).toMatch(/servingSpiffeId/);
      expect(r.stderr).not.toMatch(/\n\s+at /);
    }
  }, 60_000);
});
