import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, request, type Server } from "node:https";
import { connect as netConnect, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import jsonPatch from "fast-json-patch";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseAllDocuments, stringify } from "yaml";
import { runCli, startCli, type LongRunning } from "../helpers/cli.ts";
import { validateK8sObjects } from "../helpers/k8s-schema.ts";
import { createTestPki, type TestPki } from "../helpers/openssl-pki.ts";

// `meshward injector` as the API server calls it: HTTPS to its Service's DNS name, verified
// against the CA's bundle (the webhook's caBundle), POST /mutate with a real AdmissionReview v1
// (the shape of k8s.io/api/admission/v1 types.go; compare dapr/dapr pkg/injector/service and
// linkerd2 controller/webhook). The JSONPatch is applied with fast-json-patch, an RFC 6902
// implementation independent of ours, and must give exactly what `meshward inject` prints.
const HERE = new URL(".", import.meta.url).pathname;
const ISSUER = "https://kubernetes.default.svc.cluster.local";
const SERVICE_DNS = "meshward-injector.meshward-system.svc";
const SIDECAR_CA = "meshward-ca.meshward-system.svc:8443";

interface Review {
  response: { uid: string; allowed: boolean; patchType?: string; patch?: string; status?: { code: number; message: string }; warnings?: string[] };
}

describe("meshward injector (mutating admission webhook over HTTPS)", () => {
  let work: string;
  let ca: LongRunning | undefined;
  let injector: LongRunning | undefined;
  let port: number;
  let bundle: string;
  // A stand-in for the API server holding the rendered MutatingWebhookConfiguration: GET, and
  // PATCH with an RFC 6902 JSON patch (its `test` on resourceVersion honoured, as the API server does).
  let pki: TestPki;
  let apiServer: Server;
  let webhookConfiguration: Record<string, any>;
  const patches: unknown[][] = [];
  const API_TOKEN = "injector-service-account-token";

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "meshward-injector-"));
    pki = createTestPki({ name: "cluster ca" });
    const leaf = pki.issueLeaf({ dnsNames: ["localhost"] });
    const rendered = spawnSync("kubectl", ["kustomize", join(HERE, "../../deploy/kubernetes/overlays/single")], { encoding: "utf8" });
    webhookConfiguration = parseAllDocuments(rendered.stdout).map((d) => d.toJS()).find((d: any) => d.kind === "MutatingWebhookConfiguration");
    webhookConfiguration.metadata.resourceVersion = "1";
    const path = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/meshward-injector";
    apiServer = createServer({ cert: leaf.chainPem, key: leaf.keyPem }, (req, res) => {
      let body = "";
      req.on("data", (d) => (body += d));
      req.on("end", () => {
        if (req.headers.authorization !== `Bearer ${API_TOKEN}`) return void res.writeHead(401).end("{}");
        if (req.url !== path) return void res.writeHead(404).end("{}");
        if (req.method === "PATCH" && req.headers["content-type"] === "application/json-patch+json") {
          const ops = JSON.parse(body) as jsonPatch.Operation[];
          try {
            webhookConfiguration = jsonPatch.applyPatch(structuredClone(webhookConfiguration), ops, true, false).newDocument;
          } catch {
            return void res.writeHead(409).end("{}");
          }
          patches.push(ops);
          webhookConfiguration.metadata.resourceVersion = String(Number(webhookConfiguration.metadata.resourceVersion) + 1);
        } else if (req.method !== "GET") return void res.writeHead(405).end("{}");
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(webhookConfiguration));
      });
    });
    await new Promise<void>((resolve) => apiServer.listen(0, "127.0.0.1", resolve));
    writeFileSync(join(work, "api-token"), API_TOKEN);
    const keys = await generateKeyPair("ES256");
    writeFileSync(join(work, "jwks.json"), JSON.stringify({ keys: [{ ...(await exportJWK(keys.publicKey)), kid: "k1", alg: "ES256" }] }));
    expect((await runCli(["ca", "init", "--trust-domain", "cluster.test", "--dir", join(work, "ca")])).code).toBe(0);
    bundle = join(work, "ca", "bundle.pem");
    const startedCa = await startCli(
      ["ca", "serve", "--dir", join(work, "ca"), "--listen", "127.0.0.1:0", "--jwks-file", join(work, "jwks.json"), "--jwt-issuer", ISSUER, "--jwt-audience", "meshward"],
      /listening on (\S+)/,
    );
    ca = startedCa;
    // The injector's own projected service-account token: account meshward-injector in meshward-system.
    const token = await new SignJWT({ "kubernetes.io": { namespace: "meshward-system", serviceaccount: { name: "meshward-injector", uid: "u-1" }, pod: { name: "meshward-injector-0", uid: "u-2" } } })
      .setProtectedHeader({ alg: "ES256", kid: "k1" })
      .setIssuer(ISSUER)
      .setAudience(["meshward"])
      .setSubject("system:serviceaccount:meshward-system:meshward-injector")
      .setIssuedAt()
      .setExpirationTime("1h")
      .sign(keys.privateKey);
    writeFileSync(join(work, "token"), token, { mode: 0o600 });
    const started = await startCli(
      [
        "injector", "--ca", startedCa.match[1] as string, "--bundle", bundle, "--token-file", join(work, "token"), "--namespace", "meshward-system",
        "--listen", "127.0.0.1:0", "--image", "meshward:test", "--ca-address", SIDECAR_CA,
        "--webhook-config", "meshward-injector", "--api-server", `https://localhost:${(apiServer.address() as AddressInfo).port}`,
        "--api-token-file", join(work, "api-token"), "--api-ca-file", pki.rootPath, "--bundle-refresh-interval", "1s",
      ],
      /meshward injector ready: id=(\S+) listen=(\S+)/,
    );
    injector = started;
    expect(started.match[1]).toBe("spiffe://cluster.test/ns/meshward-system/meshward-injector");
    port = Number((started.match[2] as string).split(":").pop());
  }, 60_000);

  afterAll(async () => {
    await injector?.stop();
    await ca?.stop();
    apiServer?.closeAllConnections();
    await new Promise<void>((resolve) => (apiServer ? apiServer.close(() => resolve()) : resolve()));
    pki?.cleanup();
    rmSync(work, { recursive: true, force: true });
  });

  /** POST over HTTPS as the API server does: verify the serving certificate for `servername` with the CA bundle. */
  function post(body: string, options: { servername?: string; path?: string; contentType?: string } = {}): Promise<{ status: number; json: any }> {
    return new Promise((resolve, reject) => {
      const req = request(
        {
          host: "127.0.0.1",
          port,
          path: options.path ?? "/mutate",
          method: "POST",
          ca: readFileSync(bundle),
          servername: options.servername ?? SERVICE_DNS,
          headers: { "content-type": options.contentType ?? "application/json" },
        },
        (res) => {
          let text = "";
          res.on("data", (d) => (text += d));
          res.on("end", () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(text) }));
        },
      );
      req.on("error", reject);
      req.end(body);
    });
  }

  /** GET over HTTPS, verified as the API server (or Prometheus with the bundle) would. */
  function get(path: string, onPort = port): Promise<string> {
    return new Promise((resolve, reject) => {
      const req = request({ host: "127.0.0.1", port: onPort, path, ca: readFileSync(bundle), servername: SERVICE_DNS }, (res) => {
        let text = "";
        res.on("data", (d) => (text += d));
        res.on("end", () => (res.statusCode === 200 ? resolve(text) : reject(new Error(`GET ${path}: HTTP ${res.statusCode}`))));
      });
      req.on("error", reject);
      req.end();
    });
  }

  /** Prometheus text exposition as `name{labels}` → value (labels as printed, sorted by prom-client). */
  const metricsOf = (text: string): Map<string, number> =>
    new Map(text.split("\n").filter((line) => line !== "" && !line.startsWith("#")).map((line) => [line.slice(0, line.lastIndexOf(" ")), Number(line.slice(line.lastIndexOf(" ") + 1))] as const));

  const admissionReview = (pod: Record<string, unknown>, namespace: string, uid = "705ab4f5-6393-11e8-b7cc-42010a800002") => ({
    apiVersion: "admission.k8s.io/v1",
    kind: "AdmissionReview",
    request: {
      uid,
      kind: { group: "", version: "v1", kind: "Pod" },
      resource: { group: "", version: "v1", resource: "pods" },
      requestKind: { group: "", version: "v1", kind: "Pod" },
      requestResource: { group: "", version: "v1", resource: "pods" },
      name: "",
      namespace,
      operation: "CREATE",
      userInfo: { username: "system:serviceaccount:kube-system:replicaset-controller", uid: "a1", groups: ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"] },
      object: pod,
      oldObject: null,
      dryRun: false,
      options: { kind: "CreateOptions", apiVersion: "meta.k8s.io/v1" },
    },
  });

  /** The pod a ReplicaSet of the Dapr quickstart Deployment creates, as the API server has it when webhooks run. */
  function quickstartPod(namespace: string): Record<string, any> {
    const deployment = parseAllDocuments(readFileSync(join(HERE, "fixtures", "dapr-quickstart.yaml"), "utf8"))[1]!.toJS() as any;
    const template = deployment.spec.template;
    return {
      apiVersion: "v1",
      kind: "Pod",
      metadata: { generateName: "nodeapp-6b5b4b9c7d-", namespace, labels: { ...template.metadata.labels, "pod-template-hash": "6b5b4b9c7d" }, annotations: template.metadata.annotations },
      spec: { ...template.spec, serviceAccountName: "default", restartPolicy: "Always", dnsPolicy: "ClusterFirst", terminationGracePeriodSeconds: 30 },
    };
  }

  it("patches a pod so that it equals `meshward inject`'s output for the same pod, and the result validates", async () => {
    const pod = quickstartPod("shop");
    const { status, json } = await post(JSON.stringify(admissionReview(pod, "shop")));
    expect(status).toBe(200);
    const review = json as Review;
    expect(review.response).toMatchObject({ uid: "705ab4f5-6393-11e8-b7cc-42010a800002", allowed: true, patchType: "JSONPatch" });
    const patch = JSON.parse(Buffer.from(review.response.patch as string, "base64").toString("utf8"));
    const patched = jsonPatch.applyPatch(structuredClone(pod), patch, true, false).newDocument;

    // The same pod through the real `meshward inject`, with the CA's bundle as trust anchors.
    const inject = await runCli(["inject", "-", "--trust-anchors", bundle, "--image", "meshward:test", "--ca-address", SIDECAR_CA], { input: stringify(pod) });
    expect(inject.code, inject.stderr).toBe(0);
    const offline = parseAllDocuments(inject.stdout)[0]!.toJS();
    expect(patched).toEqual(offline);
    expect(patched.spec.initContainers[0].restartPolicy).toBe("Always");
    expect(patched.spec.serviceAccountName).toBe("nodeapp");
    expect(validateK8sObjects([patched])).toBe(1);
    expect(review.response.warnings?.join("\n")).toMatch(/ServiceAccount nodeapp/);
  });

  it("a pod without the annotation, or in the injector's own namespace, is allowed without a patch", async () => {
    const plain = quickstartPod("shop");
    delete plain.metadata.annotations;
    const first = (await post(JSON.stringify(admissionReview(plain, "shop")))).json as Review;
    expect(first.response).toEqual({ uid: "705ab4f5-6393-11e8-b7cc-42010a800002", allowed: true });
    const own = (await post(JSON.stringify(admissionReview(quickstartPod("meshward-system"), "meshward-system")))).json as Review;
    expect(own.response).toEqual({ uid: "705ab4f5-6393-11e8-b7cc-42010a800002", allowed: true });
  });

  it("admits unchanged what is not a Pod, a pods/* subresource, or not a CREATE (an UPDATE of a pod without the sidecar), as Dapr's injector does; a review without operation is refused", async () => {
    const pod = quickstartPod("shop");
    const base = admissionReview(pod, "shop");
    const variants: Record<string, unknown>[] = [
      { ...base.request, kind: { group: "apps", version: "v1", kind: "Deployment" }, resource: { group: "apps", version: "v1", resource: "deployments" } },
      { ...base.request, kind: { group: "", version: "v1", kind: "Binding" }, subResource: "binding" },
      { ...base.request, subResource: "ephemeralcontainers" },
      { ...base.request, kind: { group: "example.com", version: "v1", kind: "Pod" } },
      { ...base.request, kind: undefined },
      // An UPDATE of a pod without the sidecar (as stored), a DELETE: not the injector's business.
      { ...base.request, operation: "UPDATE", oldObject: pod },
      { ...base.request, operation: "DELETE", object: null, oldObject: pod },
    ];
    for (const request of variants) {
      const review = (await post(JSON.stringify({ ...base, request }))).json as Review;
      expect(review.response, JSON.stringify(request.kind)).toEqual({ uid: "705ab4f5-6393-11e8-b7cc-42010a800002", allowed: true });
    }
    // The same pod as a Pod CREATE is patched (the control).
    expect(((await post(JSON.stringify(base))).json as Review).response.patchType).toBe("JSONPatch");
    // A pod UPDATE without the stored pod cannot be compared with it (the API server always sends it): refused.
    const noOld = (await post(JSON.stringify({ ...base, request: { ...base.request, operation: "UPDATE" } }))).json as Review;
    expect(noOld.response).toMatchObject({ allowed: false, status: { code: 400, message: expect.stringMatching(/request\.oldObject is not a Pod object; .*\[E_ADMISSION_INVALID\]$/) } });
    const noOperation = await post(JSON.stringify({ ...base, request: { ...base.request, operation: undefined } }));
    expect(noOperation.status).toBe(400);
    expect(noOperation.json.code).toBe("E_ADMISSION_INVALID");
  });

  it("denies a pod whose annotations are wrong, with the reason (failurePolicy does not matter: the webhook answered)", async () => {
    const pod = quickstartPod("shop");
    pod.metadata.annotations["dapr.io/app-port"] = "http";
    const review = (await post(JSON.stringify(admissionReview(pod, "shop", "uid-2")))).json as Review;
    expect(review.response.allowed).toBe(false);
    expect(review.response.patch).toBeUndefined();
    expect(review.response.status?.code).toBe(400);
    expect(review.response.status?.message).toMatch(/app-port must be a port number.*E_INJECT_ANNOTATION/);
  });

  it("refuses what is not an AdmissionReview v1: other JSON, no uid, not JSON, wrong content type, wrong path or method", async () => {
    expect((await post(JSON.stringify({ apiVersion: "admission.k8s.io/v1beta1", kind: "AdmissionReview", request: { uid: "x" } }))).status).toBe(400);
    expect((await post(JSON.stringify({ apiVersion: "admission.k8s.io/v1", kind: "AdmissionReview", request: {} }))).json.code).toBe("E_ADMISSION_INVALID");
    expect((await post("{not json")).status).toBe(400);
    expect((await post("{}", { contentType: "text/plain" })).status).toBe(415);
    expect((await post("{}", { path: "/other" })).status).toBe(404);
  });

  it("serves a certificate from the CA for its Service's DNS name only: another name does not verify", async () => {
    await expect(post("{}", { servername: "meshward-injector.other.svc" })).rejects.toThrow(/altnames|does not match|Hostname/i);
    const { status } = await post(JSON.stringify(admissionReview(quickstartPod("shop"), "shop")), { servername: `${SERVICE_DNS}` });
    expect(status).toBe(200);
  });

  it("cannot get a certificate for a DNS name its service account does not own (the CA refuses)", async () => {
    const result = await runCli(
      ["injector", "--ca", (ca as LongRunning & { match: RegExpMatchArray }).match[1] as string, "--bundle", bundle, "--token-file", join(work, "token"), "--namespace", "meshward-system", "--listen", "127.0.0.1:0", "--dns-name", "meshward-ca.meshward-system.svc"],
      { timeoutMs: 30_000 },
    );
    // Exit 1 with the CA's reason: retrying cannot help, and the process must not wait for ever
    // (before the identity sources held the event loop, an unrelated exit 13 hid the difference).
    expect(result.code, result.stderr).toBe(1);
    expect(result.stderr).toMatch(/E_CSR_DNS_NOT_ALLOWED/);
    expect(result.stderr).not.toMatch(/\n\s+at |unexpected error/);
  });

  it("--max-connections and --max-connections-per-address: bad values are E_USAGE; a given cap is applied", async () => {
    const caAddress = (ca as LongRunning & { match: RegExpMatchArray }).match[1] as string;
    const base = ["injector", "--ca", caAddress, "--bundle", bundle, "--token-file", join(work, "token"), "--namespace", "meshward-system", "--listen", "127.0.0.1:0", "--image", "meshward:test"];
    for (const [flag, value] of [["--max-connections", "0"], ["--max-connections-per-address", "many"], ["--max-connections", "1.5"]] as const) {
      const bad = await runCli([...base, flag, value], { timeoutMs: 30_000 });
      expect(bad.code, bad.stderr).toBe(2); // a usage error
      expect(bad.stderr).toContain("[E_USAGE]");
      expect(bad.stderr).toContain(flag);
      expect(bad.stderr).not.toMatch(/\n\s+at /);
    }
    const capped = await startCli([...base, "--max-connections-per-address", "1"], /meshward injector ready: id=(\S+) listen=(\S+)/);
    try {
      const cappedPort = Number((capped.match[2] as string).split(":").pop());
      const held = netConnect({ host: "127.0.0.1", port: cappedPort });
      await new Promise<void>((resolve, reject) => held.once("connect", resolve).once("error", reject));
      await new Promise((r) => setTimeout(r, 200)); // accepted and counted by the gate
      const second = netConnect({ host: "127.0.0.1", port: cappedPort });
      const outcome = await new Promise<string>((resolve) => {
        second.once("error", (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
        second.once("close", () => resolve("closed"));
      });
      expect(["ECONNRESET", "closed"]).toContain(outcome);
      expect(held.destroyed).toBe(false);
      held.destroy();
      await new Promise((r) => setTimeout(r, 200)); // the held connection's slot is free again
      const refused = metricsOf(await get("/metrics", cappedPort));
      expect(refused.get('meshward_injector_connections_refused_total{reason="max_connections_per_address"}')).toBeGreaterThanOrEqual(1);
    } finally {
      await capped.stop();
    }
  });

  /** The certificates (DER, base64) in a PEM text or a base64 caBundle. */
  const certs = (pem: string) => [...pem.matchAll(/-----BEGIN CERTIFICATE-----([\s\S]+?)-----END CERTIFICATE-----/g)].map((m) => (m[1] as string).replace(/\s/g, ""));
  const caBundleCerts = () => certs(Buffer.from(String(webhookConfiguration.webhooks[0].clientConfig.caBundle ?? ""), "base64").toString("utf8"));
  async function until(condition: () => boolean, what: string): Promise<void> {
    for (let i = 0; i < 300 && !condition(); i++) await new Promise((r) => setTimeout(r, 100));
    expect(condition(), what).toBe(true);
  }

  it("serves /metrics on the webhook port (as the CA does on its API port): reviews by result, refused connections, caBundle syncs, its certificate's expiry", async () => {
    // One review of each kind, counted on top of whatever the tests before this one sent.
    const before = metricsOf(await get("/metrics"));
    const pod = quickstartPod("shop");
    await post(JSON.stringify(admissionReview(pod, "shop")));
    delete pod.metadata.annotations;
    await post(JSON.stringify(admissionReview(pod, "shop")));
    const wrong = quickstartPod("shop");
    wrong.metadata.annotations["dapr.io/app-port"] = "http";
    await post(JSON.stringify(admissionReview(wrong, "shop")));
    await post("{not json");
    const text = await get("/metrics");
    const after = metricsOf(text);
    for (const result of ["injected", "unchanged", "denied", "invalid"]) {
      expect(after.get(`meshward_injector_reviews_total{result="${result}"}`), result).toBe((before.get(`meshward_injector_reviews_total{result="${result}"}`) ?? 0) + 1);
    }
    expect(after.get('meshward_injector_reviews_total{result="unavailable"}')).toBe(0);
    expect(after.get('meshward_injector_connections_refused_total{reason="max_connections"}') ?? 0).toBe(0);
    expect(after.get('meshward_injector_ca_bundle_syncs_total{result="patched"}')).toBeGreaterThanOrEqual(1);
    expect(after.get('meshward_injector_ca_bundle_syncs_total{result="error"}')).toBe(0);
    // The serving certificate: what MeshwardWorkloadCertificateExpiringSoon and MeshwardRenewalFailing read.
    const expiry = after.get('meshward_cert_expiry_timestamp_seconds{kind="workload"}') ?? 0;
    expect(expiry * 1000).toBeGreaterThan(Date.now());
    expect(after.has('meshward_rotation_total{kind="workload",result="error"}')).toBe(true);
    const promtool = spawnSync("promtool", ["check", "metrics"], { input: text, encoding: "utf8" });
    expect(`${promtool.stdout}${promtool.stderr}`.trim()).toBe("");
    expect(promtool.status).toBe(0);
  });

  it("keeps the webhook's caBundle equal to the CA's bundle, through a root rotation (prepare adds the new root)", async () => {
    await until(() => caBundleCerts().length > 0, "the injector set caBundle");
    expect(caBundleCerts()).toEqual(certs(readFileSync(bundle, "utf8")));
    // The patch is guarded by the resourceVersion it read and touches only caBundle.
    const first = patches[0] as { op: string; path: string }[];
    expect(first[0]).toMatchObject({ op: "test", path: "/metadata/resourceVersion" });
    // Both webhooks (Pod CREATE and ephemeral containers; the sidecar guard on pod UPDATEs) call the same service.
    expect(first.slice(1).map((op) => op.path)).toEqual(["/webhooks/0/clientConfig/caBundle", "/webhooks/1/clientConfig/caBundle"]);
    const result = await runCli(["ca", "rotate-root", "prepare", "--dir", join(work, "ca")]);
    expect(result.code, result.stderr).toBe(0);
    expect(certs(readFileSync(bundle, "utf8"))).toHaveLength(2);
    await until(() => caBundleCerts().length === 2, "the injector added the new root to caBundle");
    expect(caBundleCerts().sort()).toEqual(certs(readFileSync(bundle, "utf8")).sort());
    expect(webhookConfiguration.webhooks[1].clientConfig.caBundle).toBe(webhookConfiguration.webhooks[0].clientConfig.caBundle);
    // Nothing else in the object changed.
    expect(webhookConfiguration.webhooks[0].failurePolicy).toBe("Fail");
    expect(webhookConfiguration.webhooks[1].matchConditions).toHaveLength(2);
    expect(validateK8sObjects([webhookConfiguration])).toBe(1);
  }, 60_000);
});
