/**
 * The bundled CLI (scripts/bundle.ts → dist/bundle, what bin/meshward.js runs after
 * `npm run build`) is a different artefact from the sources the other tests run through tsx:
 * one folder of chunks, workers as entry points of their own, files found from the package
 * root. This runs every part that loads something at run time through a bundle built here:
 * the CA (signing worker, SQLite writer thread, status page assets, the JWKS fetch through
 * undici), the sidecar (lazy egress module, status page), the identity command (Workload API
 * proto) and the auditor (version from package.json) — real processes, real mTLS between them.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bundleCli } from "../../scripts/bundle.ts";
import { fetchX509Svid } from "../../src/identity/workload-api/index.ts";
import { startHttpApp, type HttpApp } from "../helpers/app-servers.ts";
import { runCli, startCli, type LongRunning } from "../helpers/cli.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const TD = "bundle.test";
const SIDECAR_READY = /meshward sidecar ready: id=(\S+) inbound=(\S+) (?:outbound=(\S+) )?.*status=(\S+)/;

describe("the bundled CLI (dist/bundle)", () => {
  // Inside the package (node_modules/.cache) so that better-sqlite3 and the package root resolve as in dist/.
  const out = join(ROOT, "node_modules/.cache", `meshward-bundle-test-${process.pid}`);
  const work = mkdtempSync(join(tmpdir(), "meshward-bundle-"));
  const caDir = join(work, "ca");
  const running: LongRunning[] = [];
  let bin: string;
  let caAddress: string;
  let caStatus: string;
  let app: HttpApp;

  const token = async (appId: string) => {
    const r = await runCli(["token", "create", "--dir", caDir, "--namespace", "default", "--app-id", appId], { bin });
    expect(r.code, r.stderr).toBe(0);
    return r.stdout.trim().split("\n").pop()!;
  };

  beforeAll(async () => {
    bin = await bundleCli(out);
    app = await startHttpApp();
    expect((await runCli(["ca", "init", "--trust-domain", TD, "--dir", caDir], { bin })).code).toBe(0);
    const ca = await startCli(["ca", "serve", "--dir", caDir, "--listen", "127.0.0.1:0", "--status", "127.0.0.1:0"], /listening on (\S+) as [^\n]*\nstatus page: (\S+)\//, { bin });
    running.push(ca);
    caAddress = ca.match[1]!;
    caStatus = ca.match[2]!;
  }, 60_000);

  afterAll(async () => {
    for (const r of running.reverse()) await r.stop();
    await app?.close();
    rmSync(out, { recursive: true, force: true });
    rmSync(work, { recursive: true, force: true });
  });

  it("is one folder: an entry, the two workers, chunks and the status page assets", () => {
    const files = readdirSync(out);
    for (const name of ["main.js", "signing-worker.js", "sqlite-writer-worker.js", "static"]) expect(files).toContain(name);
    expect(files.some((f) => f.startsWith("chunk-"))).toBe(true);
  });

  it("runs the CA: signs through its worker, records through its writer thread, serves its status page", async () => {
    const outDir = join(work, "issued");
    const issued = await runCli(["cert", "issue", "--ca", caAddress, "--bundle", join(caDir, "bundle.pem"), "--token", await token("issued"), "--out", outDir], { bin });
    expect(issued.code, issued.stderr).toBe(0);
    expect(statSync(join(outDir, "key.pem")).mode & 0o777).toBe(0o600);
    const list = await runCli(["cert", "list", "--dir", caDir], { bin });
    expect(list.stdout).toContain(`spiffe://${TD}/ns/default/issued`);
    const page = await fetch(`${caStatus}/`);
    expect(page.status).toBe(200);
    expect(await page.text()).toMatch(/<script[^>]*>[\s\S]+<\/script>/);
  });

  it("runs a CA that attests JWTs against a jwksUrl: the JWKS is fetched over HTTPS through the bundled undici", async () => {
    // The JWKS server's certificate is trusted the way an operator's is, through the system
    // store: NODE_EXTRA_CA_CERTS for the CA process (Node reads it at start only).
    const certFile = join(work, "jwks.crt");
    const keyFile = join(work, "jwks.key");
    execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", keyFile, "-out", certFile, "-days", "1", "-subj", "/CN=jwks", "-addext", "subjectAltName=IP:127.0.0.1"], { stdio: "ignore" });
    const signer = await generateKeyPair("ES256");
    const jwks = JSON.stringify({ keys: [{ ...(await exportJWK(signer.publicKey)), kid: "k1", alg: "ES256", use: "sig" }] });
    let fetches = 0;
    const server = createHttpsServer({ cert: readFileSync(certFile), key: readFileSync(keyFile) }, (_req, res) => {
      fetches += 1;
      res.writeHead(200, { "content-type": "application/json" });
      res.end(jwks);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const jwtCaDir = join(work, "jwt-ca");
      expect((await runCli(["ca", "init", "--trust-domain", TD, "--dir", jwtCaDir], { bin })).code).toBe(0);
      const config = join(work, "jwt-ca.yaml");
      const issuer = "https://issuer.bundle.test";
      writeFileSync(config, `jwks:\n  jwksUrl: https://127.0.0.1:${(server.address() as AddressInfo).port}/jwks.json\n  issuer: ${issuer}\n  audience: meshward-bundle-test\n  mapping:\n    namespaceClaim: ns\n    appIdClaim: app\n`);
      const ca = await startCli(["ca", "serve", "--dir", jwtCaDir, "--config", config, "--listen", "127.0.0.1:0"], /listening on (\S+) as/, { bin, env: { NODE_EXTRA_CA_CERTS: certFile } });
      running.push(ca);
      const jwt = await new SignJWT({ ns: "default", app: "jwt-app" }).setProtectedHeader({ alg: "ES256", kid: "k1" }).setIssuer(issuer).setAudience("meshward-bundle-test").setIssuedAt().setExpirationTime("5m").sign(signer.privateKey);
      const issued = await runCli(["cert", "issue", "--ca", ca.match[1]!, "--bundle", join(jwtCaDir, "bundle.pem"), "--token", jwt, "--validator", "jwks", "--namespace", "default", "--app-id", "jwt-app", "--out", join(work, "jwt-issued"), "--json"], { bin });
      expect(issued.code, issued.stderr).toBe(0);
      expect(issued.stdout).toContain(`spiffe://${TD}/ns/default/jwt-app`);
      expect(fetches).toBeGreaterThan(0);
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it("runs two sidecars: outbound → inbound over mTLS, egress (a lazily loaded chunk) to the same peer, status page", async () => {
    const b = await startCli(["sidecar", "--app-id", "b", "--ca", caAddress, "--bundle", join(caDir, "bundle.pem"), "--token", await token("b"), "--inbound", "127.0.0.1:0", "--app", `127.0.0.1:${app.port}`, "--status", "127.0.0.1:0"], SIDECAR_READY, { bin });
    running.push(b);
    const bInbound = b.match[2]!;
    const egressFlag = `listen=127.0.0.1:0,backend=${bInbound},mtls=true,expectSpiffeId=spiffe://${TD}/ns/default/b`;
    const a = await startCli(
      ["sidecar", "--app-id", "a", "--ca", caAddress, "--bundle", join(caDir, "bundle.pem"), "--token", await token("a"), "--inbound", "127.0.0.1:0", "--app", "127.0.0.1:1", "--outbound", "127.0.0.1:0", "--peer", `b=${bInbound}`, "--egress", egressFlag, "--status", "127.0.0.1:0"],
      SIDECAR_READY,
      { bin },
    );
    running.push(a);
    const egress = /egress\.0=(\S+)/.exec(a.stdout())?.[1];
    expect(egress, a.stdout()).toMatch(/^127\.0\.0\.1:\d+$/);

    for (const [address, headers] of [[a.match[3]!, { "dapr-app-id": "b" }], [egress!, {}]] as const) {
      const res = await fetch(`http://${address}/hello`, { headers });
      expect(res.status).toBe(200);
      const seen = (await res.json()) as { headers: Record<string, string> };
      expect(seen.headers["x-forwarded-client-cert"]).toContain(`URI=spiffe://${TD}/ns/default/a`);
    }
    const page = await fetch(`http://${b.match[4]}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get("content-type")).toMatch(/text\/html/);
  });

  it("runs the identity command with the Workload API (its .proto read from the package)", async () => {
    const socket = join(work, "workload.sock");
    const id = await startCli(["identity", "--ca", caAddress, "--bundle", join(caDir, "bundle.pem"), "--token", await token("files"), "--out", join(work, "files"), "--workload-api-socket", socket], /identity ready: (\S+)/, { bin });
    running.push(id);
    expect(id.match[1]).toBe(`spiffe://${TD}/ns/default/files`);
    // The client here runs from sources; the server answering it runs from the bundle.
    const fetched = await fetchX509Svid(socket);
    expect(fetched.svid.spiffeId).toBe(`spiffe://${TD}/ns/default/files`);
    expect(statSync(join(work, "files", "key.pem")).mode & 0o777).toBe(0o600);
  });

  it("prints the package version, from the bundle and from the sources", async () => {
    const { version } = (await import("../../package.json", { with: { type: "json" } })).default;
    for (const options of [{ bin }, {}]) {
      const r = await runCli(["--version"], options);
      expect(r.code).toBe(0);
      expect(r.stdout.trim()).toBe(version);
    }
  });

  it("runs the auditor, which reports the package version", async () => {
    const dir = join(work, "configs");
    mkdirSync(dir);
    writeFileSync(join(dir, "config.yaml"), "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: appconfig\nspec:\n  mtls:\n    enabled: false\n");
    const r = await runCli(["audit", dir, "--format", "sarif", "--fail-on", "high"], { bin });
    expect(r.code).toBe(1);
    const sarif = JSON.parse(r.stdout) as { runs: { tool: { driver: { version: string } }; results: unknown[] }[] };
    expect(sarif.runs[0]!.tool.driver.version).toBe((await import("../../package.json", { with: { type: "json" } })).default.version);
    expect(sarif.runs[0]!.results.length).toBeGreaterThan(0);
  });

  it("runs meshward inject (what the image's injector uses) with the same output as the sources", async () => {
    const fixture = join(ROOT, "test/inject/fixtures/multi.yaml");
    const args = ["inject", fixture, "--trust-anchors", join(ROOT, "test/inject/fixtures/trust-anchors.pem"), "--image", "meshward:test", "--quiet"];
    const fromBundle = await runCli(args, { bin });
    const fromSources = await runCli(args);
    expect(fromBundle.code, fromBundle.stderr).toBe(0);
    expect(fromBundle.stdout).toBe(fromSources.stdout);
    expect(fromBundle.stdout).toMatch(/restartPolicy: Always/);
  });
});
