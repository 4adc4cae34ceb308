import { execFileSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:https";
import type { AddressInfo, Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { initAnchors } from "../../src/ca/anchors.ts";
import { kubeApiConnection } from "../../src/ca/attest/kube-api.ts";
import { DAPR_TRUST_BUNDLE_CONFLICT_RETRIES, DAPR_TRUST_BUNDLE_VERSION_ANNOTATION, syncDaprTrustBundle } from "../../src/ca/dapr-trust-bundle-sync.ts";
import { activateRoot, prepareRoot, retireRoot } from "../../src/ca/rotation.ts";
import { startCaServer, type CaServer } from "../../src/ca/server.ts";
import { caConfigSchema } from "../../src/config/ca.ts";
import { certificatesFromPem } from "../../src/pki/pem.ts";
import { capturingLogger } from "../helpers/ca-server.ts";
import { runCli, startCli } from "../helpers/cli.ts";

// The CA keeping Dapr's dapr-trust-bundle ConfigMap in step (src/ca/dapr-trust-bundle-sync.ts).
// No Kubernetes API server can run on this machine (no cluster, no kind), so the API server is a
// fake: a loopback node:https server on port 0 with a certificate made by openssl at test time,
// speaking the part of the API the CA uses (GET/PUT /api/v1/namespaces/NS/configmaps/NAME, POST
// /api/v1/namespaces/NS/configmaps) with the API server's semantics that matter here:
// resourceVersion checked on PUT (409 Conflict when stale), 409 AlreadyExists on a second POST,
// 404 for a missing object or namespace, 403 Forbidden for a namespace without RBAC, Status objects
// with a reason. It records every call, so "no write when unchanged" is a count.
const TOKEN = "ca-service-account-token-not-for-logs";
let dir: string;
let certFile: string;
let tokenFile: string;
let keyFile: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "meshward-dapr-tb-"));
  certFile = join(dir, "api.crt");
  keyFile = join(dir, "api.key");
  tokenFile = join(dir, "token");
  execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", keyFile, "-out", certFile, "-days", "1", "-subj", "/CN=kube-apiserver", "-addext", "subjectAltName=IP:127.0.0.1"], { stdio: "ignore" });
  writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
});

afterAll(() => {
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
});

type ConfigMap = { apiVersion: string; kind: string; metadata: { name: string; namespace: string; resourceVersion: string; labels?: Record<string, string>; annotations?: Record<string, string>; [k: string]: unknown }; data?: Record<string, string> };
interface Call {
  readonly method: string;
  readonly path: string;
  readonly status: number;
  readonly body?: ConfigMap;
}
interface FakeKube {
  readonly url: string;
  readonly calls: Call[];
  readonly objects: Map<string, ConfigMap>;
  /** Namespaces that exist. */
  readonly namespaces: Set<string>;
  /** Namespaces the CA's service account has no RBAC in. */
  readonly forbidden: Set<string>;
  /** Answers for the next requests, whatever they are (an API server in trouble). */
  readonly failNext: { status: number; reason: string; message: string }[];
  /** Before this many more writes, another writer changes the object first (its resourceVersion moves on). */
  interfere: number;
  /** The first `holdGets` GETs are answered together once that many have arrived (replicas racing). */
  holdGets: number;
  writes(): Call[];
  stop(): Promise<void>;
}

const status = (code: number, reason: string, message: string) => ({ kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message, reason, code });

async function fakeKube(): Promise<FakeKube> {
  const calls: Call[] = [];
  const objects = new Map<string, ConfigMap>();
  const namespaces = new Set(["dapr-system"]);
  const forbidden = new Set<string>();
  const failNext: FakeKube["failNext"] = [];
  let version = 100;
  let held: (() => void)[] = [];
  const fake = { interfere: 0, holdGets: 0 };
  const server: Server = createServer({ cert: readFileSync(certFile), key: readFileSync(keyFile) }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      const body = chunks.length === 0 ? undefined : (JSON.parse(Buffer.concat(chunks).toString("utf8")) as ConfigMap);
      const answer = (code: number, json: unknown) => {
        calls.push({ method: req.method ?? "", path: req.url ?? "", status: code, ...(body !== undefined ? { body } : {}) });
        res.writeHead(code, { "content-type": "application/json" }).end(JSON.stringify(json));
      };
      const handle = () => {
        if (req.headers.authorization !== `Bearer ${TOKEN}`) return answer(401, status(401, "Unauthorized", "Unauthorized"));
        const failure = failNext.shift();
        if (failure !== undefined) return answer(failure.status, status(failure.status, failure.reason, failure.message));
        const match = /^\/api\/v1\/namespaces\/([^/]+)\/configmaps(?:\/([^/]+))?$/.exec(req.url ?? "");
        if (match === null) return answer(404, status(404, "NotFound", "the server could not find the requested resource"));
        const [, ns, name] = match as unknown as [string, string, string | undefined];
        const verb = req.method === "GET" ? "get" : req.method === "PUT" ? "update" : "create";
        if (forbidden.has(ns)) {
          return answer(403, status(403, "Forbidden", `configmaps${name !== undefined ? ` "${name}"` : ""} is forbidden: User "system:serviceaccount:meshward-system:meshward-ca" cannot ${verb} resource "configmaps" in API group "" in the namespace "${ns}"`));
        }
        const key = `${ns}/${name ?? body?.metadata.name}`;
        if ((req.method === "PUT" || req.method === "POST") && fake.interfere > 0 && objects.has(key)) {
          fake.interfere -= 1;
          const other = objects.get(key)!;
          objects.set(key, { ...other, metadata: { ...other.metadata, resourceVersion: String((version += 1)), annotations: { "other-writer": String(version) } } });
        }
        if (req.method === "GET" && name !== undefined) {
          const found = objects.get(key);
          return found === undefined ? answer(404, status(404, "NotFound", `configmaps "${name}" not found`)) : answer(200, found);
        }
        if (req.method === "POST" && name === undefined && body !== undefined) {
          if (!namespaces.has(ns)) return answer(404, status(404, "NotFound", `namespaces "${ns}" not found`));
          if (objects.has(key)) return answer(409, status(409, "AlreadyExists", `configmaps "${body.metadata.name}" already exists`));
          const created = { ...body, metadata: { ...body.metadata, namespace: ns, resourceVersion: String((version += 1)) } };
          objects.set(key, created);
          return answer(201, created);
        }
        if (req.method === "PUT" && name !== undefined && body !== undefined) {
          const found = objects.get(key);
          if (found === undefined) return answer(404, status(404, "NotFound", `configmaps "${name}" not found`));
          if (body.metadata.resourceVersion !== found.metadata.resourceVersion) {
            return answer(409, status(409, "Conflict", `Operation cannot be fulfilled on configmaps "${name}": the object has been modified; please apply your changes to the latest version and try again`));
          }
          const updated = { ...body, metadata: { ...body.metadata, resourceVersion: String((version += 1)) } };
          objects.set(key, updated);
          return answer(200, updated);
        }
        return answer(405, status(405, "MethodNotAllowed", "the server does not allow this method on the requested resource"));
      };
      if (req.method === "GET" && fake.holdGets > 0) {
        held.push(handle);
        if (held.length >= fake.holdGets) {
          fake.holdGets = 0;
          const now = held;
          held = [];
          for (const go of now) go();
        }
        return;
      }
      handle();
    });
  });
  const sockets = new Set<Socket>();
  server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return Object.assign(fake, {
    url: `https://127.0.0.1:${(server.address() as AddressInfo).port}`,
    calls,
    objects,
    namespaces,
    forbidden,
    failNext,
    writes: () => calls.filter((call) => call.method !== "GET"),
    async stop() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of sockets) socket.destroy();
      await closed;
    },
  }) as FakeKube;
}

const fingerprints = (pem: string) => certificatesFromPem(pem).map((der) => new X509Certificate(der).fingerprint256);
const events = (logged: string[], event: string) => logged.map((line) => JSON.parse(line) as Record<string, unknown>).filter((line) => line.event === event);

/** A CA of its own (its directory, to rotate its root while it serves) with daprTrustBundle pointing at `api`. */
async function startCa(api: FakeKube, namespace = "dapr-system", extra: Record<string, unknown> = {}) {
  const work = mkdtempSync(join(tmpdir(), "meshward-dapr-tb-ca-"));
  const caDir = join(work, "ca");
  await initAnchors({ dir: caDir, trustDomain: "dapr-tb.test", now: new Date() });
  const { logger, logged } = capturingLogger();
  const config = caConfigSchema.parse({ listen: "127.0.0.1:0", signingWorkers: 0, anchorPoll: "100ms", daprTrustBundle: { namespace, apiServer: api.url, tokenFile, caFile: certFile }, ...extra });
  let server: CaServer;
  try {
    server = await startCaServer({ dir: caDir, config, logger, daprTrustBundleBackoff: { initialMs: 20, maxMs: 100 } });
  } catch (error) {
    rmSync(work, { recursive: true, force: true });
    throw error;
  }
  const metric = async (result: string) => ((await server.registry.getSingleMetric("meshward_ca_dapr_trust_bundle_syncs_total")?.get())?.values.find((v) => v.labels.result === result)?.value ?? 0);
  return {
    server,
    caDir,
    logged,
    metric,
    bundle: () => readFileSync(join(caDir, "bundle.pem"), "utf8"),
    async close() {
      try {
        await server.close();
      } finally {
        rmSync(work, { recursive: true, force: true });
      }
    },
  };
}

describe("meshward ca serve with daprTrustBundle: Dapr's dapr-trust-bundle ConfigMap follows the trust bundle", () => {
  it("creates it at start, updates it at prepare and retire, writes nothing at activate (unchanged), and never holds key material", async () => {
    const api = await fakeKube();
    const ca = await startCa(api);
    try {
      const configMap = () => api.objects.get("dapr-system/dapr-trust-bundle");
      // The counter moves once the CA has read the API server's answer (after the fake stored it).
      await vi.waitFor(async () => expect(await ca.metric("created")).toBe(1), { timeout: 10_000, interval: 20 });
      const created = configMap()!;
      expect(created.metadata.labels).toEqual({ app: "dapr-sentry" });
      expect(Object.keys(created.data ?? {})).toEqual(["ca.crt"]);
      expect(fingerprints(created.data!["ca.crt"]!)).toEqual(fingerprints(ca.bundle()));
      expect(api.writes().map((call) => `${call.method} ${call.status}`)).toEqual(["POST 201"]);
      expect(await ca.metric("created")).toBe(1);
      expect(events(ca.logged, "dapr-trust-bundle-created")).toHaveLength(1);

      // prepare: the bundle holds two roots, and so does the ConfigMap.
      const oldRoot = fingerprints(ca.bundle())[0]!;
      const newRoot = (await prepareRoot({ dir: ca.caDir, now: new Date() })).fingerprint256;
      await vi.waitFor(() => expect(fingerprints(configMap()!.data!["ca.crt"]!).sort()).toEqual([oldRoot, newRoot].sort()), { timeout: 10_000, interval: 20 });
      expect(fingerprints(configMap()!.data!["ca.crt"]!)).toEqual(fingerprints(ca.bundle()));
      await vi.waitFor(async () => expect(await ca.metric("updated")).toBe(1), { timeout: 10_000, interval: 20 });
      expect(api.writes().map((call) => `${call.method} ${call.status}`)).toEqual(["POST 201", "PUT 200"]);

      // activate: a new issuer, the same two roots: the CA reads the ConfigMap and writes nothing.
      const reads = api.calls.filter((call) => call.method === "GET").length;
      const unchanged = await ca.metric("unchanged");
      await activateRoot({ dir: ca.caDir, now: new Date() });
      await vi.waitFor(async () => expect(await ca.metric("unchanged")).toBeGreaterThan(unchanged), { timeout: 10_000, interval: 20 });
      expect(api.calls.filter((call) => call.method === "GET").length).toBeGreaterThan(reads);
      expect(api.writes()).toHaveLength(2);

      // retire: the new root alone.
      await retireRoot({ dir: ca.caDir, store: ca.server.store, now: new Date(), force: true });
      await vi.waitFor(() => expect(fingerprints(configMap()!.data!["ca.crt"]!)).toEqual([newRoot]), { timeout: 10_000, interval: 20 });
      await vi.waitFor(async () => expect(await ca.metric("updated")).toBe(2), { timeout: 10_000, interval: 20 });
      expect(api.writes().map((call) => `${call.method} ${call.status}`)).toEqual(["POST 201", "PUT 200", "PUT 200"]);
      expect(await ca.metric("error")).toBe(0);

      // Only certificates were ever sent, only under ca.crt, and the token never reached the log.
      for (const write of api.writes()) {
        expect(Object.keys(write.body?.data ?? {})).toEqual(["ca.crt"]);
        expect(write.body!.data!["ca.crt"]!.match(/-----BEGIN [A-Z ]+-----/g)!.every((header) => header === "-----BEGIN CERTIFICATE-----")).toBe(true);
        expect(JSON.stringify(write.body)).not.toMatch(/PRIVATE|issuer\.key/);
      }
      expect(ca.logged.join("")).not.toContain(TOKEN);
      // ConfigMaps only, never a Secret: of the two objects Sentry keeps (dapr/dapr
      // pkg/sentry/server/ca/kube.go store), only Sentry reads the Secret; Dapr's injector
      // (pkg/injector/service/config.go, its trust anchors file) and operator
      // (pkg/operator/trustbundlesync.go) read the ConfigMap.
      expect(api.calls.every((call) => call.path.startsWith("/api/v1/namespaces/dapr-system/configmaps"))).toBe(true);
    } finally {
      await ca.close();
      await api.stop();
    }
  });

  it("a Forbidden answer (no RBAC in the namespace) is logged with its status and reason, counted and retried with backoff; the CA serves meanwhile and catches up once allowed", async () => {
    const api = await fakeKube();
    api.forbidden.add("dapr-system");
    const ca = await startCa(api);
    try {
      await vi.waitFor(async () => expect(await ca.metric("error")).toBeGreaterThanOrEqual(3), { timeout: 10_000, interval: 20 });
      const failed = events(ca.logged, "dapr-trust-bundle-sync-failed");
      expect(failed[0]).toMatchObject({ namespace: "dapr-system", status: 403, reason: "Forbidden", failures: 1, level: 40 });
      expect(String(failed[0]!.error)).toMatch(/E_KUBERNETES_UNAVAILABLE: the Kubernetes API refused to read ConfigMap dapr-system\/dapr-trust-bundle: HTTP 403 Forbidden: .*cannot get resource "configmaps".*deploy\/kubernetes\/components\/dapr-trust-bundle/);
      expect(failed.slice(0, 3).map((line) => line.failures)).toEqual([1, 2, 3]);
      // The CA answers meanwhile: its bundle endpoint over its API port.
      const bundle = await fetchBundle(ca.server);
      expect(bundle).toContain("BEGIN CERTIFICATE");
      expect(api.writes()).toEqual([]);

      api.forbidden.delete("dapr-system");
      await vi.waitFor(() => expect(api.objects.get("dapr-system/dapr-trust-bundle")).toBeDefined(), { timeout: 10_000, interval: 20 });
      await vi.waitFor(() => expect(events(ca.logged, "dapr-trust-bundle-sync-recovered")).toHaveLength(1), { timeout: 10_000, interval: 20 });
      expect(ca.logged.join("")).not.toContain(TOKEN);
    } finally {
      await ca.close();
      await api.stop();
    }
  });

  it("the sync's state is on the status page's feed (status.json daprTrustBundle: last success, last error with its code, status and reason, the resourceVersion written), and never in /readyz", async () => {
    const api = await fakeKube();
    api.forbidden.add("dapr-system");
    const ca = await startCa(api, "dapr-system", { status: "127.0.0.1:0" });
    type Feed = { health: { ok: boolean; checks: Record<string, unknown> }; daprTrustBundle?: Record<string, unknown> & { lastError?: Record<string, unknown> } };
    const feed = async () => (await (await fetch(`${ca.server.status!.url}/status.json`)).json()) as Feed;
    try {
      await vi.waitFor(async () => expect((await feed()).daprTrustBundle).toMatchObject({ state: "failing" }), { timeout: 10_000, interval: 20 });
      const failing = (await feed()).daprTrustBundle!;
      expect(failing).toMatchObject({ namespace: "dapr-system", configMap: "dapr-trust-bundle", state: "failing", lastResult: "error", lastError: { code: "E_KUBERNETES_UNAVAILABLE", status: 403, reason: "Forbidden" } });
      expect(failing.failures).toBeGreaterThanOrEqual(1);
      expect(String(failing.lastError!.message)).toMatch(/refused to read ConfigMap dapr-system\/dapr-trust-bundle: HTTP 403 Forbidden/);
      expect(failing.lastSuccessAt).toBeUndefined();
      expect(failing.resourceVersion).toBeUndefined();
      expect(Number.isNaN(Date.parse(String(failing.retryAt)))).toBe(false);
      // Never fatal: /readyz answers 200 and names no dapr check; the page's health is the CA's.
      const ready = await fetch(`${ca.server.status!.url}/readyz`);
      expect(ready.status).toBe(200);
      expect(Object.keys(((await ready.json()) as { checks: Record<string, unknown> }).checks).some((name) => /dapr/i.test(name))).toBe(false);
      expect((await feed()).health.ok).toBe(true);
      expect(JSON.stringify(await feed())).not.toContain(TOKEN);

      api.forbidden.delete("dapr-system");
      await vi.waitFor(async () => expect((await feed()).daprTrustBundle).toMatchObject({ state: "in-step" }), { timeout: 10_000, interval: 20 });
      const written = api.objects.get("dapr-system/dapr-trust-bundle")!;
      const inStep = (await feed()).daprTrustBundle!;
      expect(inStep).toMatchObject({ state: "in-step", lastResult: "created", failures: 0, resourceVersion: written.metadata.resourceVersion, lastError: { code: "E_KUBERNETES_UNAVAILABLE", status: 403 } });
      expect(Date.parse(String(inStep.lastSuccessAt))).toBeGreaterThanOrEqual(Date.parse(String(failing.lastError!.at)));
      expect(inStep.lastWriteAt).toBe(inStep.lastSuccessAt);
      expect(inStep.retryAt).toBeUndefined();
    } finally {
      await ca.close();
      await api.stop();
    }
  });

  it("a namespace that does not exist (Dapr elsewhere, or not installed) is a logged NotFound, retried; the CA keeps serving and stops cleanly", async () => {
    const api = await fakeKube();
    const ca = await startCa(api, "dapr");
    try {
      await vi.waitFor(async () => expect(await ca.metric("error")).toBeGreaterThanOrEqual(2), { timeout: 10_000, interval: 20 });
      const failed = events(ca.logged, "dapr-trust-bundle-sync-failed")[0]!;
      expect(failed).toMatchObject({ namespace: "dapr", status: 404, reason: "NotFound" });
      expect(String(failed.error)).toMatch(/refused to create ConfigMap dapr\/dapr-trust-bundle: HTTP 404 NotFound: namespaces "dapr" not found \(is namespace dapr Dapr's control-plane namespace\?/);
      expect(await fetchBundle(ca.server)).toContain("BEGIN CERTIFICATE");
    } finally {
      await ca.close();
      await api.stop();
    }
  });
});

describe("meshward ca serve --dapr-trust-bundle-namespace (real processes)", () => {
  it("the flag sets the namespace over the file's, the file's apiServer/tokenFile/caFile stay; bad values are refused before listening", async () => {
    const api = await fakeKube();
    const work = mkdtempSync(join(dir, "cli-"));
    const caDir = join(work, "ca");
    try {
      expect((await runCli(["ca", "init", "--trust-domain", "dapr-tb.test", "--dir", caDir])).code).toBe(0);
      const config = join(work, "ca.yaml");
      writeFileSync(config, `daprTrustBundle:\n  namespace: not-this-one\n  apiServer: ${api.url}\n  tokenFile: ${tokenFile}\n  caFile: ${certFile}\n`);
      const server = await startCli(["ca", "serve", "--dir", caDir, "--listen", "127.0.0.1:0", "--config", config, "--dapr-trust-bundle-namespace", "dapr-system", "--log-format", "json"], /meshward CA listening on/);
      try {
        await vi.waitFor(() => expect(api.objects.get("dapr-system/dapr-trust-bundle")).toBeDefined(), { timeout: 20_000, interval: 50 });
        expect(fingerprints(api.objects.get("dapr-system/dapr-trust-bundle")!.data!["ca.crt"]!)).toEqual(fingerprints(readFileSync(join(caDir, "bundle.pem"), "utf8")));
        expect(api.calls.some((call) => call.path.includes("not-this-one"))).toBe(false);
      } finally {
        await server.stop();
      }

      const noCluster = { KUBERNETES_SERVICE_HOST: "" };
      const outside = await runCli(["ca", "serve", "--dir", caDir, "--listen", "127.0.0.1:0", "--dapr-trust-bundle-namespace", "dapr-system"], { env: noCluster });
      expect(outside.code).toBe(1);
      expect(outside.stderr).toMatch(/daprTrustBundle\.apiServer is not set and KUBERNETES_SERVICE_HOST is empty \(not running in a pod\).*meshward ca dapr-trust-bundle --dir DIR \| kubectl apply -f -/);
      expect(outside.stderr).toContain("[E_CONFIG_INVALID]");
      expect(outside.stdout).not.toMatch(/listening/);

      const bad = await runCli(["ca", "serve", "--dir", caDir, "--listen", "127.0.0.1:0", "--dapr-trust-bundle-namespace", "Dapr_System"], { env: noCluster });
      expect(bad.code).toBe(2);
      expect(bad.stderr).toMatch(/--dapr-trust-bundle-namespace: daprTrustBundle\.namespace: must be a Kubernetes namespace name/);
    } finally {
      rmSync(work, { recursive: true, force: true });
      await api.stop();
    }
  }, 120_000);
});

/** GET /v1/bundle over the CA's API port (trusting its own bundle). */
async function fetchBundle(server: CaServer): Promise<string> {
  const { request } = await import("node:https");
  return new Promise((resolve, reject) => {
    const req = request({ host: server.host, port: server.port, path: "/v1/bundle", rejectUnauthorized: false, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    });
    req.on("error", reject);
    req.end();
  });
}

describe("syncDaprTrustBundle against the fake API server", () => {
  const roots = () => certificatesFromPem(readFileSync(certFile, "utf8")).map((der) => new X509Certificate(der));
  const syncer = (api: FakeKube, logger = capturingLogger().logger) => {
    const connection = kubeApiConnection({ apiServer: api.url, tokenFile, caFile: certFile });
    const results: string[] = [];
    const sync = syncDaprTrustBundle({ namespace: "dapr-system", connection, roots, logger, resyncMs: 3_600_000, backoff: { initialMs: 20, maxMs: 100 }, onResult: (r) => results.push(r) });
    return {
      sync,
      results,
      close() {
        sync.close();
        connection.close();
      },
    };
  };

  it("two replicas racing on an absent ConfigMap: one creates it, the other gets 409 AlreadyExists, reads again and finds it in step", async () => {
    const api = await fakeKube();
    api.holdGets = 2;
    const a = syncer(api);
    const b = syncer(api);
    try {
      await vi.waitFor(() => expect(a.results.length + b.results.length).toBe(2), { timeout: 10_000, interval: 20 });
      expect([...a.results, ...b.results].sort()).toEqual(["created", "unchanged"]);
      expect(api.writes().map((call) => `${call.method} ${call.status}`)).toEqual(["POST 201", "POST 409"]);
      expect(api.calls.filter((call) => call.method === "GET")).toHaveLength(3);
    } finally {
      a.close();
      b.close();
      await api.stop();
    }
  });

  it("a stale ConfigMap updated by two replicas at once: one PUT wins, the other's 409 Conflict is read again; and a write that always conflicts stops after a bounded number of tries, logged and retried", async () => {
    const api = await fakeKube();
    api.objects.set("dapr-system/dapr-trust-bundle", { apiVersion: "v1", kind: "ConfigMap", metadata: { name: "dapr-trust-bundle", namespace: "dapr-system", resourceVersion: "7", labels: { app: "dapr-sentry" } }, data: { "ca.crt": "" } });
    api.holdGets = 2;
    const a = syncer(api);
    const b = syncer(api);
    try {
      await vi.waitFor(() => expect(a.results.length + b.results.length).toBe(2), { timeout: 10_000, interval: 20 });
      expect([...a.results, ...b.results].sort()).toEqual(["unchanged", "updated"]);
      expect(api.writes().map((call) => `${call.method} ${call.status}`)).toEqual(["PUT 200", "PUT 409"]);
    } finally {
      a.close();
      b.close();
    }

    // Another writer gets in before every write of this one.
    api.objects.set("dapr-system/dapr-trust-bundle", { ...api.objects.get("dapr-system/dapr-trust-bundle")!, data: { "ca.crt": "" } });
    api.interfere = 1_000;
    const before = api.writes().length;
    const { logger, logged } = capturingLogger();
    const c = syncer(api, logger);
    try {
      await vi.waitFor(() => expect(c.results.filter((r) => r === "error").length).toBeGreaterThanOrEqual(2), { timeout: 10_000, interval: 20 });
      const failed = events(logged, "dapr-trust-bundle-sync-failed")[0]!;
      expect(failed).toMatchObject({ status: 409, reason: "Conflict" });
      expect(String(failed.error)).toContain(`(${DAPR_TRUST_BUNDLE_CONFLICT_RETRIES + 1} conflicts in a row)`);
      // The first pass: 1 + DAPR_TRUST_BUNDLE_CONFLICT_RETRIES PUTs, then it gave up until the retry.
      const firstPass = api.writes().slice(before, before + DAPR_TRUST_BUNDLE_CONFLICT_RETRIES + 2);
      expect(firstPass.slice(0, DAPR_TRUST_BUNDLE_CONFLICT_RETRIES + 1).every((call) => call.method === "PUT" && call.status === 409)).toBe(true);
      // Once the other writer stops, the retry succeeds.
      api.interfere = 0;
      await vi.waitFor(() => expect(c.results).toContain("updated"), { timeout: 10_000, interval: 20 });
    } finally {
      c.close();
      await api.stop();
    }
  });

  it("replicas on a shared store: a replica behind a rotation (older CA state version) leaves the newer roots alone until it adopts that state, but not for a stamp the store does not hold; without a version (a CA directory) there is no such guard", async () => {
    const api = await fakeKube();
    const work = mkdtempSync(join(dir, "versions-"));
    const opened: { close(): void }[] = [];
    try {
      await initAnchors({ dir: join(work, "old"), trustDomain: "dapr-tb.test", now: new Date() });
      await initAnchors({ dir: join(work, "new"), trustDomain: "dapr-tb.test", now: new Date() });
      const load = (name: string) => certificatesFromPem(readFileSync(join(work, name, "bundle.pem"), "utf8")).map((der) => new X509Certificate(der));
      const [oldRoots, newRoots] = [load("old"), load("new")];
      // The store's head version: what a replica confirms a newer stamp against.
      let head = 8;
      const replica = (roots: () => readonly X509Certificate[], stateVersion: () => number | undefined) => {
        const { logger, logged } = capturingLogger();
        const connection = kubeApiConnection({ apiServer: api.url, tokenFile, caFile: certFile });
        const results: string[] = [];
        const sync = syncDaprTrustBundle({ namespace: "dapr-system", connection, roots, stateVersion, storeVersion: async () => head, logger, resyncMs: 3_600_000, backoff: { initialMs: 20, maxMs: 100 }, onResult: (r) => results.push(r) });
        opened.push({ close: () => (sync.close(), connection.close()) });
        return { sync, results, logged };
      };
      const stored = () => api.objects.get("dapr-system/dapr-trust-bundle")!;
      const ahead = replica(() => newRoots, () => 8);
      await vi.waitFor(() => expect(ahead.results).toEqual(["created"]), { timeout: 10_000, interval: 20 });
      expect(stored().metadata.annotations).toEqual({ [DAPR_TRUST_BUNDLE_VERSION_ANNOTATION]: "8" });

      // A replica still on state 7 (the roots before the rotation) reads it and writes nothing.
      let laggingVersion = 7;
      let laggingRoots = oldRoots;
      const lagging = replica(() => laggingRoots, () => laggingVersion);
      await vi.waitFor(() => expect(lagging.results).toEqual(["behind"]), { timeout: 10_000, interval: 20 });
      expect(api.writes()).toHaveLength(1);
      expect(fingerprints(stored().data!["ca.crt"]!)).toEqual(newRoots.map((root) => root.fingerprint256));
      expect(events(lagging.logged, "dapr-trust-bundle-behind")[0]).toMatchObject({ stateVersion: 7, written: 8 });

      // Once it adopts a state at least as new, it writes (here a later state with other roots).
      head = 9;
      laggingVersion = 9;
      laggingRoots = oldRoots;
      expect(await lagging.sync.sync()).toBe("updated");
      expect(stored().metadata.annotations).toEqual({ [DAPR_TRUST_BUNDLE_VERSION_ANNOTATION]: "9" });
      expect(fingerprints(stored().data!["ca.crt"]!)).toEqual(oldRoots.map((root) => root.fingerprint256));

      // A stamp no state of the store has (edited by hand, a store restored from a backup) holds
      // nobody back: written over, and logged, or one edit would stop every replica for good.
      const current = stored();
      api.objects.set("dapr-system/dapr-trust-bundle", { ...current, metadata: { ...current.metadata, annotations: { [DAPR_TRUST_BUNDLE_VERSION_ANNOTATION]: "1000000" } }, data: { "ca.crt": "" } });
      expect(await lagging.sync.sync()).toBe("updated");
      expect(stored().metadata.annotations).toEqual({ [DAPR_TRUST_BUNDLE_VERSION_ANNOTATION]: "9" });
      expect(fingerprints(stored().data!["ca.crt"]!)).toEqual(oldRoots.map((root) => root.fingerprint256));
      expect(events(lagging.logged, "dapr-trust-bundle-stamp-unknown")[0]).toMatchObject({ stateVersion: 9, written: 1000000, storeVersion: 9, level: 40 });

      // No version (a CA directory: one CA, its lock): it writes its roots, and keeps the annotation it found.
      const directory = replica(() => newRoots, () => undefined);
      await vi.waitFor(() => expect(directory.results).toEqual(["updated"]), { timeout: 10_000, interval: 20 });
      expect(fingerprints(stored().data!["ca.crt"]!)).toEqual(newRoots.map((root) => root.fingerprint256));
    } finally {
      for (const one of opened) one.close();
      rmSync(work, { recursive: true, force: true });
      await api.stop();
    }
  });

  it("an error status (500, 429) is logged with its reason and retried; anchors the CA does not know are replaced by its bundle alone and logged; other keys stay", async () => {
    const api = await fakeKube();
    const sentryRoot = readFileSync(certFile, "utf8"); // stands in for a root Sentry made: not among `roots` below
    const sentry = roots();
    api.objects.set("dapr-system/dapr-trust-bundle", {
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: { name: "dapr-trust-bundle", namespace: "dapr-system", resourceVersion: "9", labels: { app: "dapr-sentry", "helm.sh/chart": "dapr" } },
      data: { "ca.crt": sentryRoot, "jwks.json": "{\"keys\":[]}" },
    });
    api.failNext.push({ status: 500, reason: "InternalError", message: "etcdserver: request timed out" }, { status: 429, reason: "TooManyRequests", message: "too many requests" });
    const { logger, logged } = capturingLogger();
    const work = mkdtempSync(join(dir, "anchors-"));
    try {
      await initAnchors({ dir: join(work, "ca"), trustDomain: "dapr-tb.test", now: new Date() });
      const caRoots = certificatesFromPem(readFileSync(join(work, "ca", "bundle.pem"), "utf8")).map((der) => new X509Certificate(der));
      const connection = kubeApiConnection({ apiServer: api.url, tokenFile, caFile: certFile });
      const results: string[] = [];
      const sync = syncDaprTrustBundle({ namespace: "dapr-system", connection, roots: () => caRoots, logger, resyncMs: 3_600_000, backoff: { initialMs: 20, maxMs: 100 }, onResult: (r) => results.push(r) });
      try {
        await vi.waitFor(() => expect(results).toEqual(["error", "error", "updated"]), { timeout: 10_000, interval: 20 });
        const failed = events(logged, "dapr-trust-bundle-sync-failed");
        expect(failed.map((line) => [line.status, line.reason])).toEqual([[500, "InternalError"], [429, "TooManyRequests"]]);
        expect(failed.every((line) => typeof line.retryInMs === "number" && (line.retryInMs as number) > 0)).toBe(true);
        const stored = api.objects.get("dapr-system/dapr-trust-bundle")!;
        expect(fingerprints(stored.data!["ca.crt"]!)).toEqual(caRoots.map((root) => root.fingerprint256));
        expect(stored.data!["jwks.json"]).toBe("{\"keys\":[]}");
        expect(stored.metadata.labels).toEqual({ app: "dapr-sentry", "helm.sh/chart": "dapr" });
        const replaced = events(logged, "dapr-trust-bundle-replaced");
        expect(replaced).toHaveLength(1);
        expect(replaced[0]).toMatchObject({ replaced: [sentry[0]!.fingerprint256], level: 40 });
        expect(logged.join("")).not.toContain(TOKEN);
      } finally {
        sync.close();
        connection.close();
      }
    } finally {
      rmSync(work, { recursive: true, force: true });
      await api.stop();
    }
  });
});
