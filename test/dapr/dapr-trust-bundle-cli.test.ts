/**
 * `meshward ca dapr-trust-bundle`, run as a process: Dapr's `dapr-trust-bundle` from the CA's
 * trust bundle, in the shape Dapr reads, at each step of a root rotation.
 *
 * The shape comes from upstream dapr/dapr, read for this (see also src/ca/dapr-trust-bundle.ts):
 * - charts/dapr/charts/dapr_sentry/templates/dapr_sentry_deployment.yaml: Secret and ConfigMap,
 *   both `dapr-trust-bundle` in the release (control-plane) namespace, label `app: dapr-sentry`;
 *   the ConfigMap's data is `ca.crt` (PEM), the Secret's `ca.crt`, `issuer.crt`, `issuer.key`.
 * - pkg/sentry/server/ca/kube.go: Sentry reads the Secret (issuer pair + anchors) and writes the
 *   anchors to the ConfigMap as well, "public root certificate for other components".
 * - pkg/injector/service/config.go (DAPR_TRUST_ANCHORS_FILE), cmd/injector/app/app.go
 *   (security.New with that file; sec.CurrentTrustAnchors is what inj.Run hands each sidecar),
 *   pkg/injector/patcher/sidecar_container.go (DAPR_TRUST_ANCHORS env from those anchors),
 *   pkg/security/consts/consts.go (control-plane default /var/run/secrets/dapr.io/tls/ca.crt),
 *   pkg/operator/trustbundlesync.go (copies the dapr-trust-bundle ConfigMap: "Pods mount this
 *   ConfigMap as their trust anchor source"): the injector needs the anchors, not the issuer.
 * - charts/dapr/charts/dapr_sidecar_injector/templates/dapr_sidecar_injector_deployment.yaml at
 *   0bf214060756acaf774881f9b939789a399362f4 (before 1.12): the injector then read `ca.crt` from
 *   the Secret (--issuer-ca-secret-key), which `--secret` still serves, with `ca.crt` alone.
 * So no output of this command ever holds issuer.crt, issuer.key or any private key.
 */
import { execFile } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { certificatesFromPem } from "../../src/pki/pem.ts";
import { expectRefused, runCli } from "../helpers/cli.ts";
import { validateK8sObjects } from "../helpers/k8s-schema.ts";

interface Manifest {
  apiVersion: string;
  kind: string;
  type?: string;
  metadata: { name: string; namespace: string; labels: Record<string, string> };
  data: Record<string, string>;
}

const documents = (text: string): Manifest[] =>
  parseAllDocuments(text).map((document) => {
    expect(document.errors, text).toEqual([]);
    return document.toJSON() as Manifest;
  });

/** SHA-256 fingerprints of every certificate in a PEM text, in order. */
const fingerprints = (pem: string) => certificatesFromPem(pem).map((der) => new X509Certificate(der).fingerprint256);

/**
 * `kubectl create --dry-run=client -f - -o yaml` needs the API's discovery documents to map a
 * kind to its resource, even though it sends nothing: this loopback stub serves them (core/v1
 * configmaps and secrets, nothing else), so kubectl runs without a cluster. --validate=false:
 * schema validation needs the server's OpenAPI, which test/helpers/k8s-schema.ts checks instead.
 */
function discoveryStub(): Server {
  const resource = (kind: string, name: string) => ({ name, singularName: kind.toLowerCase(), namespaced: true, kind, verbs: ["create", "get", "list", "update", "patch", "delete"] });
  const routes: Record<string, unknown> = {
    "/version": { major: "1", minor: "32", gitVersion: "v1.32.0" },
    "/api": { kind: "APIVersions", versions: ["v1"], serverAddressByClientCIDRs: [{ clientCIDR: "0.0.0.0/0", serverAddress: "127.0.0.1" }] },
    "/apis": { kind: "APIGroupList", apiVersion: "v1", groups: [] },
    "/api/v1": { kind: "APIResourceList", groupVersion: "v1", resources: [resource("ConfigMap", "configmaps"), resource("Secret", "secrets")] },
  };
  return createServer((request, response) => {
    const body = request.method === "GET" ? routes[(request.url ?? "").split("?")[0] as string] : undefined;
    response.writeHead(body === undefined ? 404 : 200, { "content-type": "application/json" });
    response.end(JSON.stringify(body ?? { kind: "Status", apiVersion: "v1", status: "Failure", code: 404 }));
  });
}

describe("meshward ca dapr-trust-bundle", () => {
  let work: string;
  let stub: Server;
  let kubeconfig: string;
  const dir = () => join(work, "ca");

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "meshward-dapr-trust-bundle-"));
    stub = discoveryStub();
    await new Promise<void>((resolve) => stub.listen(0, "127.0.0.1", resolve));
    kubeconfig = join(work, "kubeconfig");
    const server = `http://127.0.0.1:${(stub.address() as AddressInfo).port}`;
    writeFileSync(
      kubeconfig,
      `apiVersion: v1\nkind: Config\nclusters: [{name: stub, cluster: {server: "${server}"}}]\nusers: [{name: stub, user: {}}]\ncontexts: [{name: stub, context: {cluster: stub, user: stub}}]\ncurrent-context: stub\n`,
    );
    const init = await runCli(["ca", "init", "--trust-domain", "public", "--dir", dir()]);
    expect(init.code, init.stderr).toBe(0);
  }, 60_000);

  afterAll(async () => {
    await new Promise((resolve) => stub.close(resolve));
    rmSync(work, { recursive: true, force: true });
  });

  /** kubectl's verdict on the manifests, and what it would create. Async: the stub answers from this process. */
  const kubectlDryRun = (manifests: string) =>
    new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      const child = execFile(
        "kubectl",
        ["create", "--dry-run=client", "--validate=false", "-f", "-", "-o", "yaml", "--cache-dir", join(work, "kube-cache")],
        { env: { ...process.env, KUBECONFIG: kubeconfig }, timeout: 60_000 },
        (error, stdout, stderr) => resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      );
      child.stdin!.end(manifests);
    });

  /** Checks one output against the CA's bundle.pem now; returns the documents. */
  const expectDaprTrustBundle = async (stdout: string, namespace: string, kinds: readonly string[]) => {
    const bundle = readFileSync(join(dir(), "bundle.pem"), "utf8");
    const docs = documents(stdout);
    expect(docs.map((d) => d.kind)).toEqual(kinds);
    for (const doc of docs) {
      expect(doc.apiVersion).toBe("v1");
      expect(doc.metadata).toEqual({ name: "dapr-trust-bundle", namespace, labels: { app: "dapr-sentry" } });
      // ca.crt and nothing else: no issuer.crt, no issuer.key.
      expect(Object.keys(doc.data)).toEqual(["ca.crt"]);
      const pem = doc.kind === "Secret" ? Buffer.from(doc.data["ca.crt"] as string, "base64").toString("utf8") : (doc.data["ca.crt"] as string);
      expect(pem).toBe(bundle);
      expect(fingerprints(pem)).toEqual(fingerprints(bundle));
    }
    expect(stdout).not.toMatch(/PRIVATE KEY|issuer\./);
    expect(validateK8sObjects(docs)).toBe(kinds.length);
    // The header names the roots it carries.
    for (const fingerprint of fingerprints(bundle)) expect(stdout).toContain(`#   SHA-256 ${fingerprint}\n`);
    const kubectl = await kubectlDryRun(stdout);
    expect(kubectl.code, kubectl.stderr).toBe(0);
    expect(documents(kubectl.stdout).map((d) => [d.kind, d.metadata.namespace, d.data])).toEqual(docs.map((d) => [d.kind, d.metadata.namespace, d.data]));
    return docs;
  };

  it("prints the ConfigMap Dapr reads its trust anchors from (dapr-system by default), valid for kubectl; --secret adds the Secret with ca.crt alone", async () => {
    const configMap = await runCli(["ca", "dapr-trust-bundle", "--dir", dir()]);
    expect(configMap.code, configMap.stderr).toBe(0);
    expect(configMap.stderr).toBe("");
    await expectDaprTrustBundle(configMap.stdout, "dapr-system", ["ConfigMap"]);

    const both = await runCli(["ca", "dapr-trust-bundle", "--dir", dir(), "--namespace", "my-dapr", "--secret"]);
    expect(both.code, both.stderr).toBe(0);
    const [, secret] = await expectDaprTrustBundle(both.stdout, "my-dapr", ["ConfigMap", "Secret"]);
    expect(secret!.type).toBe("Opaque");
  }, 120_000);

  it("follows a root rotation: both roots after prepare and activate, the new one alone after retire; --format pem is the same anchors for self-hosted daprd", async () => {
    const roots = async () => {
      const yaml = await runCli(["ca", "dapr-trust-bundle", "--dir", dir()]);
      expect(yaml.code, yaml.stderr).toBe(0);
      await expectDaprTrustBundle(yaml.stdout, "dapr-system", ["ConfigMap"]);
      const pem = await runCli(["ca", "dapr-trust-bundle", "--dir", dir(), "--format", "pem"]);
      expect(pem.code, pem.stderr).toBe(0);
      expect(pem.stdout).toBe(readFileSync(join(dir(), "bundle.pem"), "utf8"));
      return fingerprints(pem.stdout);
    };
    const before = await roots();
    expect(before).toHaveLength(1);
    for (const step of ["prepare", "activate"]) {
      const r = await runCli(["ca", "rotate-root", step, "--dir", dir()]);
      expect(r.code, r.stderr).toBe(0);
      const during = await roots();
      expect(during).toHaveLength(2);
      expect(during).toContain(before[0]);
    }
    const retired = await runCli(["ca", "rotate-root", "retire", "--dir", dir()]);
    expect(retired.code, retired.stderr).toBe(0);
    const after = await roots();
    expect(after).toHaveLength(1);
    expect(after).not.toContain(before[0]);
  }, 120_000);

  it("--out writes the same text to a file atomically (no temporary file left) and says what it wrote", async () => {
    const printed = await runCli(["ca", "dapr-trust-bundle", "--dir", dir(), "--secret"]);
    expect(printed.code, printed.stderr).toBe(0);
    const outDir = mkdtempSync(join(work, "out-"));
    const out = join(outDir, "dapr-trust-bundle.yaml");
    writeFileSync(out, "old content\n");
    const written = await runCli(["ca", "dapr-trust-bundle", "--dir", dir(), "--secret", "--out", out]);
    expect(written.code, written.stderr).toBe(0);
    expect(written.stdout).toBe(`wrote Dapr's trust bundle (ConfigMap and Secret dapr-system/dapr-trust-bundle) with 1 root to ${out}\n`);
    expect(readFileSync(out, "utf8")).toBe(printed.stdout);
    expect(readdirSync(outDir)).toEqual(["dapr-trust-bundle.yaml"]);
    expect(statSync(out).mode & 0o777).toBe(0o644);

    const pemOut = join(outDir, "trust-anchors.pem");
    const pem = await runCli(["ca", "dapr-trust-bundle", "--dir", dir(), "--format", "pem", "--out", pemOut]);
    expect(pem.code, pem.stderr).toBe(0);
    expect(pem.stdout).toBe(`wrote the trust anchors (PEM) with 1 root to ${pemOut}\n`);
    expect(readFileSync(pemOut, "utf8")).toBe(readFileSync(join(dir(), "bundle.pem"), "utf8"));
  }, 60_000);

  it("refuses clearly, without a stack trace: no CA directory, a trust bundle without anchors, a bad namespace, flags that do not go together, an --out it cannot write", async () => {
    const missing = join(work, "no-such-ca");
    expectRefused(await runCli(["ca", "dapr-trust-bundle", "--dir", missing]), "E_CA_NOT_FOUND", /is not a meshward CA directory \(no ca\.json\)/);
    expect(() => statSync(missing)).toThrow(); // nothing made there

    const empty = join(work, "empty-bundle");
    const init = await runCli(["ca", "init", "--trust-domain", "public", "--dir", empty]);
    expect(init.code, init.stderr).toBe(0);
    writeFileSync(join(empty, "bundle.pem"), "");
    const noAnchors = await runCli(["ca", "dapr-trust-bundle", "--dir", empty]);
    expectRefused(noAnchors, "E_CA_CORRUPT", /bundle\.pem is damaged \(no (PEM block|CERTIFICATE block)[^)]*\)/);
    expect(noAnchors.stdout).toBe("");

    expectRefused(await runCli(["ca", "dapr-trust-bundle", "--dir", dir(), "--namespace", "Dapr_System"]), "E_USAGE", /--namespace "Dapr_System" is not a Kubernetes namespace name/);
    expectRefused(await runCli(["ca", "dapr-trust-bundle", "--dir", dir(), "--format", "pem", "--secret"]), "E_USAGE", /--secret goes with --format kubernetes/);
    expectRefused(await runCli(["ca", "dapr-trust-bundle", "--dir", dir(), "--format", "pem", "--namespace", "dapr-system"]), "E_USAGE", /--namespace goes with --format kubernetes/);
    const badFormat = await runCli(["ca", "dapr-trust-bundle", "--dir", dir(), "--format", "json"]);
    expect(badFormat.code).toBe(2);
    expect(badFormat.stderr).toMatch(/--format <format>' argument 'json' is invalid/);
    expectRefused(await runCli(["ca", "dapr-trust-bundle", "--dir", dir(), "--out", join(work, "no-such-dir", "x.yaml")]), "E_FILE_WRITE", /cannot write .*no-such-dir\/x\.yaml/);
  }, 60_000);
});
