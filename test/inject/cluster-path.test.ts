import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseAllDocuments, parse as parseYaml, stringify } from "yaml";
import { injectManifest } from "../../src/inject/manifest.ts";
import { startHttpApp, type HttpApp } from "../helpers/app-servers.ts";
import { runCli, startCli, type LongRunning } from "../helpers/cli.ts";
import { createTestPki, type TestPki } from "../helpers/openssl-pki.ts";

// The whole path as deploy/kubernetes sets it up, outside a cluster:
//   - the CA runs with the ca.yaml of the rendered `single` overlay (OIDC discovery), pointed at
//     a local HTTPS server standing in for the API server (recorded discovery documents, a
//     cluster CA made with openssl, the CA's own bearer token checked);
//   - the example app (deploy/kubernetes/examples/orders) goes through `meshward inject`, and its
//     sidecar's command line runs with the kubelet's work done by hand: $(POD_NAMESPACE) expanded,
//     the projected token and the policy ConfigMap written as files, and the fixed ports 3501,
//     9090 and the app's 8080 replaced by port 0 / the test app's port (tests bind no fixed port).
const ROOT = new URL("../../", import.meta.url).pathname;
const FIXTURES = join(ROOT, "test/ca/fixtures/kubernetes-oidc");
const DISCOVERY = readFileSync(join(FIXTURES, "openid-configuration.json"), "utf8");
const ISSUER = (JSON.parse(DISCOVERY) as { issuer: string }).issuer;
const CA_SA_TOKEN = "ca-own-service-account-token";

type Doc = Record<string, any>;
const kustomize = (dir: string): string => {
  const result = spawnSync("kubectl", ["kustomize", join(ROOT, "deploy/kubernetes", dir)], { encoding: "utf8", timeout: 60_000 });
  expect(result.status, result.stderr).toBe(0);
  return result.stdout;
};

describe("deploy/kubernetes end to end without a cluster: CA with OIDC discovery + the example app's injected sidecar", () => {
  let work: string;
  let pki: TestPki;
  let apiServer: Server;
  let ca: LongRunning | undefined;
  let app: HttpApp;
  let caAddress: string;
  let clusterKey: CryptoKey;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "meshward-cluster-path-"));
    pki = createTestPki({ name: "cluster ca" });
    const leaf = pki.issueLeaf({ dnsNames: ["localhost"] });
    const { privateKey, publicKey } = await generateKeyPair("RS256");
    clusterKey = privateKey as CryptoKey;
    const jwks = JSON.stringify({ keys: [{ use: "sig", kty: "RSA", kid: "cluster-1", alg: "RS256", n: (await exportJWK(publicKey)).n, e: "AQAB" }] });
    apiServer = createServer({ cert: leaf.chainPem, key: leaf.keyPem }, (req, res) => {
      if (req.headers.authorization !== `Bearer ${CA_SA_TOKEN}`) return void res.writeHead(401).end();
      if (req.url === "/.well-known/openid-configuration") return void res.writeHead(200, { "content-type": "application/json" }).end(DISCOVERY);
      if (req.url === "/openid/v1/jwks") return void res.writeHead(200, { "content-type": "application/jwk-set+json" }).end(jwks);
      res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => apiServer.listen(0, "127.0.0.1", resolve));
    writeFileSync(join(work, "ca-sa-token"), CA_SA_TOKEN);

    // The CA config exactly as the single overlay renders it, with the in-cluster paths moved.
    const configMap = parseAllDocuments(kustomize("overlays/single")).map((d) => d.toJS() as Doc).find((d) => d.kind === "ConfigMap" && d.metadata.name === "meshward-ca-config") as Doc;
    const config = parseYaml(configMap.data["ca.yaml"]) as Doc;
    expect(config.jwks.kubernetes).toEqual({});
    config.jwks.kubernetes = { apiServer: `https://localhost:${(apiServer.address() as AddressInfo).port}`, tokenFile: join(work, "ca-sa-token"), caFile: pki.rootPath };
    writeFileSync(join(work, "ca.yaml"), stringify(config));
    // The example policy names trust domain cluster.local.
    expect((await runCli(["ca", "init", "--trust-domain", "cluster.local", "--dir", join(work, "ca")])).code).toBe(0);
    const started = await startCli(["ca", "serve", "--dir", join(work, "ca"), "--config", join(work, "ca.yaml"), "--listen", "127.0.0.1:0"], /listening on (\S+)/);
    ca = started;
    caAddress = started.match[1] as string;
    app = await startHttpApp();
  }, 60_000);

  afterAll(async () => {
    await ca?.stop();
    await app?.close();
    apiServer?.closeAllConnections();
    await new Promise<void>((resolve) => (apiServer ? apiServer.close(() => resolve()) : resolve()));
    pki?.cleanup();
    rmSync(work, { recursive: true, force: true });
  });

  it("the example's sidecar gets spiffe://cluster.local/ns/shop/orders with a token the CA verifies by discovery, and becomes ready", async () => {
    const out = injectManifest(kustomize("examples/orders"), {
      image: "meshward:0.1.0",
      caAddress,
      audience: "meshward",
      trustAnchors: readFileSync(join(work, "ca", "bundle.pem"), "utf8"),
    }).text;
    const docs = parseAllDocuments(out).map((d) => d.toJS() as Doc);
    const pod = (docs.find((d) => d.kind === "Deployment") as Doc).spec.template;
    const sidecar = pod.spec.initContainers[0] as Doc;
    const tokenVolume = (pod.spec.volumes as Doc[]).find((v) => v.name === "meshward-token") as Doc;
    expect(tokenVolume.projected.sources[0].serviceAccountToken.audience).toBe("meshward");

    const tokenDir = join(work, "token");
    const policyDir = join(work, "policy");
    mkdirSync(tokenDir);
    mkdirSync(policyDir);
    const token = await new SignJWT({ "kubernetes.io": { namespace: "shop", serviceaccount: { name: pod.spec.serviceAccountName, uid: "u1" }, pod: { name: "orders-5d8f7c9b6-abcde", uid: "u2" } } })
      .setProtectedHeader({ alg: "RS256", kid: "cluster-1" })
      .setIssuer(ISSUER)
      .setAudience([tokenVolume.projected.sources[0].serviceAccountToken.audience])
      .setSubject(`system:serviceaccount:shop:${pod.spec.serviceAccountName}`)
      .setIssuedAt()
      .setExpirationTime(`${tokenVolume.projected.sources[0].serviceAccountToken.expirationSeconds}s`)
      .sign(clusterKey);
    writeFileSync(join(tokenDir, "token"), token, { mode: 0o600 }); // outside /var/run/secrets a token file must be 0600
    const policy = (docs.find((d) => d.kind === "ConfigMap" && d.metadata.name === "orders-policy") as Doc).data["config.yaml"] as string;
    writeFileSync(join(policyDir, "config.yaml"), policy);

    const env: Record<string, string> = {};
    for (const entry of sidecar.env as Doc[]) env[entry.name] = entry.valueFrom?.fieldRef?.fieldPath === "metadata.namespace" ? "shop" : entry.value;
    const args = (sidecar.args as string[]).map((arg) =>
      arg
        .replace(/\$\(([A-Z_]+)\)/g, (_m, name: string) => env[name] as string)
        .replace("/var/run/secrets/meshward.io/token", tokenDir)
        .replace("/etc/meshward/policy", policyDir)
        .replace(/^0\.0\.0\.0:(3501|9090)$/, "0.0.0.0:0")
        .replace(/^127\.0\.0\.1:8080$/, `127.0.0.1:${app.port}`)
        .replace(/^127\.0\.0\.1:3500$/, "127.0.0.1:0"),
    );
    const running = await startCli(args, /meshward sidecar ready: id=(\S+) .*status=(\S+)/, { env: { ...env, MESHWARD_STATUS_TOKEN: "" }, timeoutMs: 30_000 });
    try {
      expect(running.match[1]).toBe("spiffe://cluster.local/ns/shop/orders");
      const status = (running.match[2] as string).split(":").pop();
      expect((await fetch(`http://127.0.0.1:${status}/readyz`)).status).toBe(200);
    } finally {
      await running.stop();
    }
  }, 90_000);
});
