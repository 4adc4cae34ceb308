import { request } from "node:https";
import pino from "pino";
import { afterAll, beforeAll } from "vitest";
import { staticIdentity, type IdentitySnapshot } from "../../src/identity/source.ts";
import { startWebhookServer, type WebhookServer, type WebhookServerOptions } from "../../src/inject/webhook-server.ts";
import { createTestPki, type TestPki } from "./openssl-pki.ts";

/** The limits a test may set on the webhook server (its other options are fixed here). */
export type WebhookLimits = Partial<
  Pick<WebhookServerOptions, "handshakeTimeoutMs" | "headersTimeoutMs" | "bodyTimeoutMs" | "responseTimeoutMs" | "maxConnections" | "maxConnectionsPerAddress" | "maxBufferedBytes" | "maxPatchBytes">
>;

/**
 * The injector's webhook server on 127.0.0.1:0 with a certificate from `pki` (the injector's
 * SPIFFE ID, DNS name localhost) and `limits`; pushed to `servers` for the caller to close.
 */
export async function startTestWebhook(pki: TestPki, servers: WebhookServer[], limits: WebhookLimits = {}): Promise<{ server: WebhookServer; port: number }> {
  const leaf = pki.issueLeaf({ spiffeId: `spiffe://${pki.trustDomain}/ns/meshward-system/sa/meshward-injector`, dnsNames: ["localhost"] });
  const snapshot = {
    svid: { spiffeId: leaf.spiffeId ?? "", certChainPem: leaf.chainPem, privateKey: leaf.key, notBefore: leaf.notBefore, notAfter: leaf.notAfter, serial: leaf.serial },
    bundle: { trustDomain: pki.trustDomain, rootsPem: pki.root.certPem, revokedSerials: new Set<string>() },
  } as unknown as IdentitySnapshot;
  const server = await startWebhookServer({
    listen: { host: "127.0.0.1", port: 0 },
    identity: staticIdentity(snapshot),
    inject: { image: "meshward:test", caAddress: "ca:8443", audience: "meshward" } as never,
    ownNamespace: "meshward-system",
    logger: pino({ level: "silent" }),
    ...limits,
  });
  servers.push(server);
  return { server, port: Number(server.address.split(":").pop()) };
}

/** The webhook's answer to an AdmissionReview: its HTTP status and the parsed body. */
export interface ReviewAnswer {
  status: number;
  json: { response?: { uid: string; allowed: boolean; patch?: string; patchType?: string; status?: { code: number; message: string }; warnings?: string[] } };
}

/** POSTs `body` to the test webhook's /mutate over HTTPS, trusting `caPem` (the server is localhost). */
export function postReview(port: number, caPem: string, body: unknown): Promise<ReviewAnswer> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path: "/mutate", method: "POST", ca: caPem, servername: "localhost", headers: { "content-type": "application/json" } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString("utf8")) as ReviewAnswer["json"] }));
    });
    req.on("error", reject);
    req.end(JSON.stringify(body));
  });
}

/**
 * For a describe block: a test PKI and the webhook server started before its tests and stopped
 * after them; returns `post`, which sends an AdmissionReview to it (postReview).
 */
export function useTestWebhook(): { post: (body: unknown) => Promise<ReviewAnswer> } {
  let pki: TestPki | undefined;
  let port = 0;
  const servers: WebhookServer[] = [];
  beforeAll(async () => {
    pki = createTestPki();
    port = (await startTestWebhook(pki, servers)).port;
  });
  afterAll(async () => {
    for (const server of servers) await server.close();
    pki?.cleanup();
  });
  return { post: (body) => postReview(port, pki!.root.certPem, body) };
}
