import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli, startCli, type LongRunning } from "../helpers/cli.ts";

/**
 * Red team: the status token (--status-token-file of `ca serve`, `identity`, `sidecar`, and of
 * the `meshward status` client) opens the status page and its feed, which name every identity,
 * refusal and rotation. A group- or world-readable token file was accepted silently; it is now
 * held to the key files' rule, as --passphrase-file is (test/cli/passphrase-file.test.ts):
 * owner-only (or the Kubernetes Secret shape with fsGroup), else E_KEY_PERMISSIONS naming the
 * fix, before anything starts or is sent.
 */
const TOKEN = "0123456789abcdef0123456789abcdef";

describe("--status-token-file must be readable by its owner only", () => {
  const work = mkdtempSync(join(tmpdir(), "meshward-status-token-mode-"));
  const caDir = join(work, "ca");
  const bundle = join(caDir, "bundle.pem");
  const running: LongRunning[] = [];
  let caAddress: string;
  let statusUrl: string;
  const tokenFile = (name: string, mode: number) => {
    const path = join(work, name);
    writeFileSync(path, `${TOKEN}\n`);
    chmodSync(path, mode);
    return path;
  };
  const joinToken = async (appId: string) => (await runCli(["token", "create", "--dir", caDir, "--namespace", "jobs", "--app-id", appId])).stdout.trim().split("\n").pop() as string;
  const refused = (r: { code: number | null; stdout: string; stderr: string }, file: string, mode: number) => {
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`status token file ${file} is accessible by group or others \\(mode 0${mode.toString(8)}\\).*chmod 600 ${file}.*\\[E_KEY_PERMISSIONS\\]`));
    expect(r.stderr).not.toMatch(/\n\s+at |unexpected error/);
    expect(r.stderr).not.toContain(TOKEN);
    expect(r.stdout).not.toMatch(/listening|ready/);
  };

  beforeAll(async () => {
    const init = await runCli(["ca", "init", "--trust-domain", "statusmode.test", "--dir", caDir]);
    expect(init.code, init.stderr).toBe(0);
    const ca = await startCli(["ca", "serve", "--dir", caDir, "--listen", "127.0.0.1:0", "--status", "127.0.0.1:0", "--status-token-file", tokenFile("ca-token", 0o600)], /status page: (\S+)\//);
    running.push(ca);
    caAddress = (ca.stdout().match(/listening on (\S+) as/) as RegExpMatchArray)[1] as string;
    statusUrl = ca.match[1] as string;
  }, 60_000);
  afterAll(async () => {
    for (const process of running) await process.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it("ca serve accepted its 0600 token file, and its page asks for that token", async () => {
    expect((await fetch(`${statusUrl}/`)).status).toBe(401);
    expect((await fetch(`${statusUrl}/`, { headers: { authorization: `Bearer ${TOKEN}` } })).status).toBe(200);
  });

  it("ca serve refuses a token file group or others can read, before serving", async () => {
    for (const mode of [0o644, 0o640, 0o604]) {
      const file = tokenFile(`ca-loose-${mode.toString(8)}`, mode);
      refused(await runCli(["ca", "serve", "--dir", caDir, "--listen", "127.0.0.1:0", "--status", "127.0.0.1:0", "--status-token-file", file], { timeoutMs: 20_000 }), file, mode);
    }
  });

  it("identity refuses a 0644 token file before contacting the CA (the token is not spent), and starts with it at 0600", async () => {
    const loose = tokenFile("identity-loose", 0o644);
    const token = await joinToken("reporter");
    const args = ["identity", "--ca", caAddress, "--bundle", bundle, "--token", token, "--out", join(work, "identity-out"), "--status", "127.0.0.1:0"];
    refused(await runCli([...args, "--status-token-file", loose], { timeoutMs: 20_000 }), loose, 0o644);
    chmodSync(loose, 0o600);
    const identity = await startCli([...args, "--status-token-file", loose], /identity ready: (\S+) .* status=(\S+)/);
    running.push(identity);
    expect(identity.match[1]).toBe("spiffe://statusmode.test/ns/jobs/reporter");
    expect(await identity.stop()).toBe(0);
  }, 60_000);

  it("sidecar refuses a 0644 token file before contacting the CA, and starts with it at 0600", async () => {
    const loose = tokenFile("sidecar-loose", 0o644);
    const token = await joinToken("caller");
    const args = ["sidecar", "--ca", caAddress, "--bundle", bundle, "--token", token, "--namespace", "jobs", "--app-id", "caller", "--outbound", "127.0.0.1:0", "--status", "127.0.0.1:0"];
    refused(await runCli([...args, "--status-token-file", loose], { timeoutMs: 20_000 }), loose, 0o644);
    chmodSync(loose, 0o600);
    const sidecar = await startCli([...args, "--status-token-file", loose], /spiffe:\/\/statusmode\.test\/ns\/jobs\/caller/);
    running.push(sidecar);
    expect(await sidecar.stop()).toBe(0);
  }, 60_000);

  it("meshward status refuses a 0644 token file before sending it, and reads the CA's page with it at 0600", async () => {
    const loose = tokenFile("client-loose", 0o644);
    const args = ["status", "--status-url", statusUrl, "--json"];
    refused(await runCli([...args, "--status-token-file", loose], { env: { MESHWARD_STATUS_TOKEN: "" } }), loose, 0o644);
    chmodSync(loose, 0o600);
    const ok = await runCli([...args, "--status-token-file", loose], { env: { MESHWARD_STATUS_TOKEN: "" } });
    expect(ok.code, ok.stdout + ok.stderr).toBe(0);
    expect(ok.stdout).not.toMatch(/HTTP 401/);
  });
});
