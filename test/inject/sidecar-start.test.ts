import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { injectManifest } from "../../src/inject/manifest.ts";
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
  function injectedSidecar(serviceAccount: string): { args: string[]; env: Record<string, string> } {
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
        .replace("/var/run/secrets/meshward.io/token", tokenDir)
        .replace("/etc/meshward/policy", policyDir)
        .replace(/^0\.0\.0\.0:(3501|9090)$/, "0.0.0.0:0"),
    );
    expect(container.args).toContain("--no-status-page");
    return { args, env: { ...env, tokenDir } };
  }

  it("starts with the injected args and env, gets its certificate with a projected-style token, and /readyz answers 200", async () => {
    const { args, env } = injectedSidecar("orders");
    // In the pod this file is /var/run/secrets/meshward.io/token/token (a projected volume, 0644,
    // accepted there with a warning); moved to a temporary directory, it is written owner-only as
    // a token file anywhere else must be (test/cli/join-token-file-mode.test.ts).
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
