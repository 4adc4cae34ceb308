import { readFileSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import jsonPatch from "fast-json-patch";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { staticIdentity, type IdentitySnapshot } from "../../src/identity/source.ts";
import { syncWebhookCaBundle } from "../../src/inject/webhook-ca-bundle.ts";
import { opensslServerRenegotiating } from "../helpers/openssl-renegotiate.ts";
import { createTestPki, type TestPki } from "../helpers/openssl-pki.ts";

// The injector's caBundle reconciler against an API-server stand-in (no cluster runs here):
// what it refuses to do as well as what it does. The end-to-end run through a root rotation is
// in injector.test.ts.
const TOKEN = "injector-token";
const PATH = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/meshward-injector";

describe("syncWebhookCaBundle", () => {
  let pki: TestPki;
  let server: Server;
  let object: Record<string, any>;
  let patchCount = 0;
  let conflictNext = false;
  let apiServer: string;
  const bundle = readFileSync(new URL("fixtures/trust-anchors.pem", import.meta.url), "utf8");

  beforeAll(async () => {
    pki = createTestPki({ name: "cluster ca" });
    const leaf = pki.issueLeaf({ dnsNames: ["localhost"] });
    writeFileSync(join(pki.dir, "token"), TOKEN);
    writeFileSync(join(pki.dir, "wrong"), "someone-else");
    object = { apiVersion: "admissionregistration.k8s.io/v1", kind: "MutatingWebhookConfiguration", metadata: { name: "meshward-injector", resourceVersion: "7" }, webhooks: [{ name: "a", clientConfig: {} }, { name: "b", clientConfig: { caBundle: "b2xk" } }] };
    server = createServer({ cert: leaf.chainPem, key: leaf.keyPem }, (req, res) => {
      let body = "";
      req.on("data", (d) => (body += d));
      req.on("end", () => {
        if (req.headers.authorization !== `Bearer ${TOKEN}`) return void res.writeHead(403).end("{}");
        if (req.url !== PATH) return void res.writeHead(404).end("{}");
        if (req.method === "PATCH") {
          if (conflictNext) {
            conflictNext = false;
            object.metadata.resourceVersion = "99"; // someone else edited it in between
          }
          try {
            object = jsonPatch.applyPatch(structuredClone(object), JSON.parse(body), true, false).newDocument;
          } catch {
            return void res.writeHead(409).end("{}");
          }
          patchCount += 1;
        }
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(object));
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    apiServer = `https://localhost:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    server?.closeAllConnections();
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    pki?.cleanup();
  });

  const identity = staticIdentity({
    svid: { spiffeId: "spiffe://t/ns/meshward-system/meshward-injector", certChainPem: "", privateKey: undefined as never, notBefore: new Date(0), notAfter: new Date(Date.now() + 3_600_000), serial: "01" },
    bundle: { trustDomain: "t", rootsPem: bundle, revokedSerials: new Set() },
  } satisfies IdentitySnapshot);
  const start = (tokenFile: string, caFile = pki.rootPath) =>
    syncWebhookCaBundle({ api: { apiServer, tokenFile, caFile }, webhookConfiguration: "meshward-injector", identity, logger: pino({ level: "silent" }), intervalMs: 3_600_000 });

  it("changes nothing when the API server refuses its token, or its certificate does not chain to the cluster CA", async () => {
    const refused = start(join(pki.dir, "wrong"));
    expect(await refused.sync()).toBe(false);
    refused.stop();
    const other = createTestPki({ name: "another ca" });
    try {
      const untrusted = start(join(pki.dir, "token"), other.rootPath);
      expect(await untrusted.sync()).toBe(false);
      untrusted.stop();
    } finally {
      other.cleanup();
    }
    expect(patchCount).toBe(0);
  });

  it("does not overwrite a concurrent edit (resourceVersion test), then sets every webhook's caBundle, then has nothing to do", async () => {
    const sync = start(join(pki.dir, "token"));
    try {
      await sync.sync(); // the first pass started with the reconciler; let it settle
      conflictNext = true;
      object.webhooks[0].clientConfig = {};
      expect(await sync.sync()).toBe(false);
      expect(object.webhooks[0].clientConfig.caBundle).toBeUndefined();
      expect(await sync.sync()).toBe(true);
      const want = Buffer.from(bundle).toString("base64");
      expect(object.webhooks.map((w: { clientConfig: { caBundle?: string } }) => w.clientConfig.caBundle)).toEqual([want, want]);
      const patches = patchCount;
      expect(await sync.sync()).toBe(false);
      expect(patchCount).toBe(patches);
    } finally {
      sync.stop();
    }
  });

  // An API server that renegotiates (openssl s_server, TLS 1.2, HelloRequest with a client-certificate
  // request once the GET has arrived) is refused, as Envoy refuses server-initiated renegotiation
  // upstream by default (envoyproxy/envoy api/envoy/extensions/transport_sockets/tls/v3/tls.proto,
  // UpstreamTlsContext.allow_renegotiation). The control (a client without the option accepting
  // the same flow) is in test/ca/kube-api.test.ts.
  it("refuses an API server that renegotiates: the pass fails and is logged with the request", async () => {
    const leaf = pki.issueLeaf({ dnsNames: ["localhost"] });
    const server = await opensslServerRenegotiating(leaf.certPath, leaf.keyPath, ["-cert_chain", leaf.chainPath]);
    const lines: string[] = [];
    const logger = pino({ level: "warn" }, { write: (line: string) => void lines.push(line) });
    const sync = syncWebhookCaBundle({ api: { apiServer: `https://localhost:${server.port}`, tokenFile: join(pki.dir, "token"), caFile: pki.rootPath }, webhookConfiguration: "meshward-injector", identity, logger, intervalMs: 3_600_000 });
    try {
      const pass = sync.sync(); // the pass the reconciler started with
      const reply = `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}`;
      const { refusedByClient } = await server.renegotiateThenReply(`GET ${PATH}`, reply);
      expect(refusedByClient).toBe(true);
      expect(await pass).toBe(false);
      const failed = lines.map((line) => JSON.parse(line) as { event?: string; err?: string }).find((entry) => entry.event === "webhook-ca-bundle-failed");
      expect(failed?.err).toContain(`GET https://localhost:${server.port}${PATH}`);
      expect(failed?.err).toMatch(/the server's TLS connection failed after the handshake \(.*alert handshake failure.*\); meshward refuses TLS renegotiation, which the server may have asked for/);
    } finally {
      sync.stop();
      await server.stop();
    }
  });
});
