import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { injectManifest } from "../../src/inject/manifest.ts";
import { checkTokenFile, INJECTED_TOKEN_DIR, INJECTED_TOKEN_FILE } from "../../src/util/files.ts";
import { startHttpApp, type HttpApp } from "../helpers/app-servers.ts";
import { runCli, startCli, type LongRunning } from "../helpers/cli.ts";

// The injected sidecar's own command line, run for real outside a cluster: the args and env
// `meshward inject` wrote, with what the kubelet would do done by hand —
//   - $(POD_NAMESPACE) in args expanded from the env (the downward API value "shop"),
//   - volumes mounted: the projected token and the policy ConfigMap become files in a temp dir,
//   - listen ports: the sidecar's fixed container ports (3501, 9090) become port 0, because
//     tests never bind fixed ports; the hosts (0.0.0.0, so the status port is off loopback,
//     as in a pod) are kept.
// The token is shaped like a projected service-account token (kubernetes.io claims, iss, aud,
// exp, nbf, iat; compare kubernetes/pkg/serviceaccount/claims.go) and signed by a key in the
// JWKS file the CA is started with.
const ISSUER = "https://kubernetes.default.svc.cluster.local";

/**
 * The injector's token volume, at its real path, as the kubelet writes it. The path is fixed, so
 * one left by another run is an error, not something to overwrite; /run/secrets is removed
 * afterwards only if this made it and nothing else is in it.
 */
async function kubeletTokenVolume(token: string): Promise<{ dir: string; file: string; remove(): void }> {
  expect(process.getuid?.(), "this test writes under /run/secrets: run it as root (the tests' container does)").toBe(0);
  const secrets = "/run/secrets";
  const madeSecrets = !existsSync(secrets);
  mkdirSync(secrets, { recursive: true, mode: 0o755 });
  const top = join(secrets, "meshward.io");
  if (existsSync(top)) throw new Error(`${top} exists (left by another run?): remove it and run again`);
  const dir = join(top, "token");
  const stamp = "..2026_12_07_10_00_00.000000001";
  mkdirSync(join(dir, stamp), { recursive: true, mode: 0o755 });
  const file = join(dir, stamp, "token");
  writeFileSync(file, token);
  chmodSync(file, 0o644);
  symlinkSync(stamp, join(dir, "..data"));
  symlinkSync("..data/token", join(dir, "token"));
  return {
    dir,
    file,
    remove() {
      rmSync(top, { recursive: true, force: true });
      if (madeSecrets) {
        try {
          rmdirSync(secrets);
        } catch {
          // Another test file's secret mount is in it now; it removes the directory.
        }
      }
    },
  };
}

describe("the injected sidecar starts and becomes ready against a local CA", () => {
  let work: string;
  let ca: LongRunning | undefined;
  let caAddress: string;
  let app: HttpApp;
  let signingKey: CryptoKey;

  const projectedToken = (serviceAccount: string, audience = "meshward") =>
    new SignJWT({
      "kubernetes.io": {
        namespace: "shop",
        pod: { name: `${serviceAccount}-7d9c5b6f4-x2x8q`, uid: "9f1c2e9a-0000-4000-8000-000000000001" },
        serviceaccount: { name: serviceAccount, uid: "9f1c2e9a-0000-4000-8000-000000000002" },
      },
    })
      .setProtectedHeader({ alg: "ES256", kid: "sa-key-1" })
      .setIssuer(ISSUER)
      .setAudience([audience])
      .setSubject(`system:serviceaccount:shop:${serviceAccount}`)
      .setIssuedAt()
      .setNotBefore("0s")
      .setExpirationTime("1h")
      .sign(signingKey);

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "meshward-inject-start-"));
    const keys = await generateKeyPair("ES256");
    signingKey = keys.privateKey as CryptoKey;
    writeFileSync(join(work, "jwks.json"), JSON.stringify({ keys: [{ ...(await exportJWK(keys.publicKey)), kid: "sa-key-1", alg: "ES256", use: "sig" }] }));
    expect((await runCli(["ca", "init", "--trust-domain", "cluster.test", "--dir", join(work, "ca")])).code).toBe(0);
    const started = await startCli(
      ["ca", "serve", "--dir", join(work, "ca"), "--listen", "127.0.0.1:0", "--jwks-file", join(work, "jwks.json"), "--jwt-issuer", ISSUER, "--jwt-audience", "meshward"],
      /listening on (\S+)/,
    );
    ca = started;
    caAddress = started.match[1] as string;
    app = await startHttpApp();
  }, 60_000);

  afterAll(async () => {
    await ca?.stop();
    await app?.close();
    rmSync(work, { recursive: true, force: true });
  });

  /** The sidecar container `meshward inject` writes for a pod of `serviceAccount` in namespace shop. */
  function injectedSidecar(serviceAccount: string, { realTokenDir = false } = {}): { args: string[]; env: Record<string, string> } {
    const manifest = [
      "apiVersion: v1",
      "kind: ConfigMap",
      "metadata: {name: orders-policy, namespace: shop}",
      "data:",
      "  config.yaml: |",
      "    apiVersion: dapr.io/v1alpha1",
      "    kind: Configuration",
      "    metadata: {name: orders-policy}",
      "    spec:",
      "      accessControl:",
      "        defaultAction: deny",
      "        trustDomain: cluster.test",
      "        policies: [{appId: checkout, namespace: shop, defaultAction: allow}]",
      "---",
      "apiVersion: apps/v1",
      "kind: Deployment",
      "metadata: {name: orders, namespace: shop}",
      "spec:",
      "  selector: {matchLabels: {app: orders}}",
      "  template:",
      "    metadata:",
      "      labels: {app: orders}",
      `      annotations: {meshward.io/inject: "true", meshward.io/app-port: "${app.port}", meshward.io/config: orders-policy}`,
      "    spec:",
      `      serviceAccountName: ${serviceAccount}`,
      "      containers: [{name: app, image: example/orders:1.0}]",
      "",
    ].join("\n");
    const out = injectManifest(manifest, {
      image: "meshward:test",
      caAddress,
      audience: "meshward",
      trustAnchors: readFileSync(join(work, "ca", "bundle.pem"), "utf8"),
    }).text;
    const [configMap, deployment] = parseAllDocuments(out).map((d) => d.toJS()) as [any, any];
    const container = deployment.spec.template.spec.initContainers[0];
    // "Mount" the volumes.
    const root = join(work, serviceAccount);
    const tokenDir = join(root, "token");
    const policyDir = join(root, "policy");
    mkdirSync(tokenDir, { recursive: true });
    mkdirSync(policyDir, { recursive: true });
    writeFileSync(join(policyDir, "config.yaml"), configMap.data["config.yaml"]);
    // The downward API and literal env, then the kubelet's $(VAR) expansion of args.
    const env: Record<string, string> = {};
    for (const entry of container.env as { name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string } } }[]) {
      if (entry.valueFrom?.fieldRef?.fieldPath === "metadata.namespace") env[entry.name] = "shop";
      else env[entry.name] = entry.value as string;
    }
    const args = (container.args as string[]).map((arg) =>
      arg
        .replace(/\$\(([A-Z_]+)\)/g, (_m, name: string) => env[name] ?? `$(${name})`)
        .replace("/var/run/secrets/meshward.io/token", realTokenDir ? "/var/run/secrets/meshward.io/token" : tokenDir)
        .replace("/etc/meshward/policy", policyDir)
        .replace(/^0\.0\.0\.0:(3501|9090)$/, "0.0.0.0:0"),
    );
    expect(container.args).toContain("--no-status-page");
    return { args, env: { ...env, tokenDir } };
  }

  it("starts with the injected args and env, gets its certificate with a projected-style token, and /readyz answers 200", async () => {
    const { args, env } = injectedSidecar("orders");
    // In the pod this file is /var/run/secrets/meshward.io/token/token (a projected volume, 0644,
    // mounted into the sidecar only; the next test puts it there); moved to a temporary directory,
    // it is written owner-only as a token file anywhere else must be
    // (test/cli/join-token-file-mode.test.ts).
    writeFileSync(join(env.tokenDir as string, "token"), await projectedToken("orders"), { mode: 0o600 });
    const { tokenDir: _ignored, ...processEnv } = env;
    // The image's entrypoint is `meshward`; args[0] is the command.
    expect(args[0]).toBe("sidecar");
    // No status token anywhere: the page is off, so 0.0.0.0 needs none.
    const sidecar = await startCli(args, /meshward sidecar ready: id=(\S+) .*status=(\S+)/, { env: { ...processEnv, MESHWARD_STATUS_TOKEN: "" }, timeoutMs: 30_000 });
    try {
      expect(sidecar.match[1]).toBe("spiffe://cluster.test/ns/shop/orders");
      const port = (sidecar.match[2] as string).split(":").pop();
      const ready = await fetch(`http://127.0.0.1:${port}/readyz`);
      expect(ready.status).toBe(200);
      expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
      // The status page, which would need a token, is not served.
      expect((await fetch(`http://127.0.0.1:${port}/`)).status).toBe(404);
      expect((await fetch(`http://127.0.0.1:${port}/status.json`)).status).toBe(404);
    } finally {
      await sidecar.stop();
    }
  }, 60_000);

  it("at the injector's path, laid out and moded as the kubelet writes it (0644, root's), the token is used without a token-file-readable warning", async () => {
    // /var/run/secrets/meshward.io/token as the kubelet fills a projected volume (atomic_writer):
    // the file in a timestamped directory, ..data linking to it, token linking through ..data;
    // mode = the volume's defaultMode (0644), owned by root (no fsGroup, no shared runAsUser).
    const volume = await kubeletTokenVolume(await projectedToken("orders"));
    try {
      const { args, env } = injectedSidecar("orders", { realTokenDir: true });
      expect(args[args.indexOf("--token-file") + 1]).toBe(INJECTED_TOKEN_FILE);
      const { tokenDir: _ignored, ...processEnv } = env;
      const sidecar = await startCli(args, /meshward sidecar ready: id=(\S+)/, { env: { ...processEnv, MESHWARD_STATUS_TOKEN: "" }, timeoutMs: 30_000 });
      try {
        expect(sidecar.match[1]).toBe("spiffe://cluster.test/ns/shop/orders");
        expect(sidecar.stderr() + sidecar.stdout()).not.toMatch(/token-file-readable|accessible by group or others/);
      } finally {
        await sidecar.stop();
      }
      // The same check, its other cases: only the injector's own file, really in that volume and
      // writable by its owner only, passes silently.
      const warnings: string[] = [];
      checkTokenFile(INJECTED_TOKEN_FILE, (m) => warnings.push(m));
      checkTokenFile("/run/secrets/meshward.io/token/token", (m) => warnings.push(m));
      expect(warnings).toEqual([]);
      chmodSync(volume.file, 0o666);
      checkTokenFile(INJECTED_TOKEN_FILE, (m) => warnings.push(m));
      expect(warnings).toEqual([expect.stringMatching(/mode 0666.*accepted under a platform's secret mount.*fsGroup/)]);
      chmodSync(volume.file, 0o644);
      // Another file of that volume, or a link from the injector's name out of the volume: the
      // platform rule (a warning), as for any other file under /var/run/secrets.
      writeFileSync(join(volume.dir, "other"), "t", { mode: 0o644 });
      const outside = join(work, "outside-token");
      writeFileSync(outside, "t", { mode: 0o644 });
      unlinkSync(join(volume.dir, "token"));
      symlinkSync(outside, join(volume.dir, "token"));
      warnings.length = 0;
      checkTokenFile(join(INJECTED_TOKEN_DIR, "other"), (m) => warnings.push(m));
      checkTokenFile(INJECTED_TOKEN_FILE, (m) => warnings.push(m));
      expect(warnings).toEqual([expect.stringMatching(/token file .*other is accessible/), expect.stringMatching(/token file .*meshward.io\/token\/token is accessible/)]);
      // A 0644 token a user points at anywhere else is still refused, before it is read.
      expect(() => checkTokenFile(outside, () => undefined)).toThrow(/accessible by group or others \(mode 0644\).*chmod 600.*/);
    } finally {
      volume.remove();
    }
  }, 60_000);

  it("refuses to become ready when the token was issued for another audience (the CA checks it)", async () => {
    const { args, env } = injectedSidecar("orders");
    writeFileSync(join(env.tokenDir as string, "token"), await projectedToken("orders", "some-other-audience"), { mode: 0o600 });
    const { tokenDir: _ignored, ...processEnv } = env;
    const result = await runCli(args, { env: processEnv, timeoutMs: 30_000 });
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/E_TOKEN_AUDIENCE|another audience/);
    expect(result.stdout).not.toMatch(/sidecar ready/);
  }, 60_000);

  it("without --no-status-page the same command line is refused: a status port off loopback needs a token", async () => {
    const { args, env } = injectedSidecar("orders");
    const { tokenDir: _ignored, ...processEnv } = env;
    const result = await runCli(args.filter((a) => a !== "--no-status-page"), { env: { ...processEnv, MESHWARD_STATUS_TOKEN: "" } });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/E_STATUS_TOKEN_REQUIRED/);
  });

  it("MESHWARD_TRUST_ANCHORS that is not PEM, or missing with no --bundle, is a clear error", async () => {
    const { args, env } = injectedSidecar("orders");
    const { tokenDir: _ignored, ...processEnv } = env;
    const bad = await runCli(args, { env: { ...processEnv, MESHWARD_TRUST_ANCHORS: "not a certificate" } });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/MESHWARD_TRUST_ANCHORS is not usable.*\[E_BUNDLE_INVALID\]/);
    const missing = await runCli(args, { env: { ...processEnv, MESHWARD_TRUST_ANCHORS: "" } });
    expect(missing.code).toBe(2); // a usage error
    expect(missing.stderr).toMatch(/no trust bundle.*\[E_USAGE\]/);
  });
});
