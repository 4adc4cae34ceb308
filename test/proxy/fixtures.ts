import { request as httpRequest } from "node:http";
import { connect as http2Connect, type ClientHttp2Session } from "node:http2";
import { connect as tlsConnect } from "node:tls";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { caLayout, initAnchors } from "../../src/ca/anchors.ts";
import { createIssuerCertificate, type Signer } from "../../src/pki/certificate.ts";
import { decodePrivateKey, encodePrivateKey, generateKeyPair } from "../../src/pki/keys.ts";
import { toPem } from "../../src/pki/pem.ts";
import { writeFileAtomic, writeSecretFileAtomic } from "../../src/util/files.ts";
import { startCaServer } from "../../src/ca/server.ts";
import type { CaServer } from "../../src/ca/server.ts";
import { issueJoinToken } from "../../src/ca/tokens.ts";
import { caConfigSchema } from "../../src/config/ca.ts";
import { sidecarConfigSchema } from "../../src/config/sidecar.ts";
import { createIdentity } from "../../src/identity/ca-source.ts";
import { startSidecar } from "../../src/proxy/sidecar.ts";
import type { Sidecar } from "../../src/proxy/sidecar.ts";
import type { HostPort } from "../../src/util/address.ts";

export const TD = "mesh.test";

export interface LogCapture {
  readonly lines: Record<string, unknown>[];
  write(chunk: string): void;
  find(predicate: (line: Record<string, unknown>) => boolean): Record<string, unknown> | undefined;
}

export function logCapture(): LogCapture {
  const lines: Record<string, unknown>[] = [];
  return {
    lines,
    write(chunk: string) {
      for (const line of chunk.split("\n")) if (line.trim() !== "") lines.push(JSON.parse(line) as Record<string, unknown>);
    },
    find: (predicate) => lines.find(predicate),
  };
}

export interface MeshCa {
  readonly dir: string;
  readonly server: CaServer;
  readonly bundleFile: string;
  readonly bundlePem: string;
  token(namespace: string, appId: string, options?: { dnsNames?: string[]; uses?: number }): Promise<string>;
  /** A workload certificate written to files (for curl / openssl s_client as callers). */
  clientFiles(namespace: string, appId: string, dnsNames?: string[]): Promise<{ cert: string; key: string; chain: string; spiffeId: string }>;
  close(): Promise<void>;
}

/** A real meshward CA (anchors on disk, gRPC/HTTPS API on 127.0.0.1:0). */
export async function startMeshCa(options: { workloadTtl?: string; issuerSerialLeadingZero?: boolean } = {}): Promise<MeshCa> {
  const dir = mkdtempSync(join(tmpdir(), "meshward-proxy-"));
  await initAnchors({ dir: join(dir, "ca"), trustDomain: TD, now: new Date() });
  if (options.issuerSerialLeadingZero === true) await issuerWithLeadingZeroSerial(join(dir, "ca"));
  const silent = pino({ level: "silent" });
  const server = await startCaServer({
    dir: join(dir, "ca"),
    config: caConfigSchema.parse({ listen: "127.0.0.1:0", workloadTtl: options.workloadTtl ?? "1h", crlRefresh: "200ms" }),
    logger: silent,
  });
  const bundleFile = join(dir, "ca", "bundle.pem");
  const bundlePem = readFileSync(bundleFile, "utf8");
  // Tokens allow 3 uses: on a loaded machine a first request can time out after the CA spent
  // the token, and the identity source retries (the retry is what is being allowed, not reuse).
  const token: MeshCa["token"] = async (namespace, appId, opts = {}) => {
    const issued = await issueJoinToken(server.store, { spiffeId: `spiffe://${TD}/ns/${namespace}/${appId}`, dnsNames: opts.dnsNames ?? [], ttlMs: 3_600_000, uses: opts.uses ?? 3 });
    return issued.token;
  };
  return {
    dir,
    server,
    bundleFile,
    bundlePem,
    token,
    async clientFiles(namespace, appId, dnsNames) {
      const source = createIdentity({ ca: server.address, bundlePem, namespace, appId, token: await token(namespace, appId, { dnsNames: dnsNames ?? [] }), ...(dnsNames ? { dnsNames } : {}), logger: silent });
      const snap = await source.ready();
      await source.close();
      const cert = join(dir, `${namespace}-${appId}.crt`);
      const key = join(dir, `${namespace}-${appId}.key`);
      writeFileSync(cert, snap.svid.certChainPem);
      // openssl s_client -cert reads only the leaf; intermediates go in -cert_chain.
      const chain = join(dir, `${namespace}-${appId}.chain.crt`);
      writeFileSync(chain, snap.svid.certChainPem.slice(snap.svid.certChainPem.indexOf("-----END CERTIFICATE-----") + 25).trimStart());
      writeFileSync(key, snap.svid.privateKey.export({ format: "pem", type: "pkcs8" }) as string, { mode: 0o600 });
      return { cert, key, chain, spiffeId: snap.svid.spiffeId };
    },
    async close() {
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Replaces the issuer `initAnchors` made in `caDir` (before any CA runs on it) with one whose
 * serial, as node:crypto prints it, begins with "0": a first byte of 0x01-0x0F, as 15 in 127 of
 * meshward's random serials have (pki/certificate.ts randomSerial). Such a serial has two spellings
 * in meshward (node's "05A6…", which CRLs and `TrustBundle.revokedSerials` hold, and tls/verify.ts
 * normalizeSerial's "5A6…"), so a test that draws it every time shows a comparison of the two.
 */
async function issuerWithLeadingZeroSerial(caDir: string): Promise<void> {
  const layout = caLayout(caDir);
  const rootCertificate = new X509Certificate(readFileSync(layout.rootCert));
  const root: Signer = { certificate: rootCertificate, der: rootCertificate.raw, privateKey: decodePrivateKey(readFileSync(layout.rootKey, "utf8")) };
  const drawn = new X509Certificate(readFileSync(layout.issuerCert));
  for (;;) {
    const keys = generateKeyPair();
    const issuer = await createIssuerCertificate({ trustDomain: TD, publicKey: keys.publicKey, signer: root, notBefore: new Date(drawn.validFrom), notAfter: new Date(drawn.validTo) });
    if (!new X509Certificate(issuer.der).serialNumber.startsWith("0")) continue;
    writeSecretFileAtomic(layout.issuerKey, encodePrivateKey(keys.privateKey));
    writeFileAtomic(layout.issuerCert, toPem(issuer.der, "CERTIFICATE"));
    return;
  }
}

/** An in-process sidecar with a CA-backed identity (join token) and captured JSON logs. */
export async function startTestSidecar(
  ca: MeshCa,
  fields: Record<string, unknown> & { appId: string; app: string },
  options: { dnsNames?: string[] } = {},
): Promise<TestSidecarWithApp> {
  const namespace = (fields.namespace as string | undefined) ?? "default";
  const logs = logCapture();
  const config = sidecarConfigSchema.parse({
    namespace,
    ca: ca.server.address,
    bundle: ca.bundleFile,
    token: await ca.token(namespace, fields.appId, { dnsNames: options.dnsNames ?? [] }),
    inbound: "127.0.0.1:0",
    status: "127.0.0.1:0",
    policyReloadInterval: "100ms",
    ...(options.dnsNames ? { dnsNames: options.dnsNames } : {}),
    ...fields,
  });
  const logger = pino({ level: "info" }, logs);
  const sidecar = await startSidecar(config, { logger });
  return Object.assign(withInbound(sidecar), { logs });
}

/** A sidecar started with an app, so with an inbound listener (outbound-only sidecars have none). */
export type SidecarWithApp = Sidecar & { readonly addresses: Sidecar["addresses"] & { readonly inbound: HostPort } };
export type TestSidecarWithApp = SidecarWithApp & { logs: LogCapture };

export function withInbound(sidecar: Sidecar): SidecarWithApp {
  if (sidecar.addresses.inbound === undefined) throw new Error("this sidecar has no inbound listener (started without app)");
  return sidecar as SidecarWithApp;
}

/** Reads one sample from Prometheus text, e.g. metricValue(text, "meshward_plaintext_connections_total"). */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number {
  let total = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) total += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return total;
}

/** GET /hello through an outbound sidecar's port, routed by dapr-app-id: status and body. */
export function callThroughOutbound(port: number, appId: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: "127.0.0.1", port, path: "/hello", headers: { "dapr-app-id": appId }, timeout: 5000 }, (res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("timeout", () => req.destroy(new Error("timed out")));
    req.on("error", reject);
    req.end();
  });
}

/** An HTTP/2 session to a sidecar's inbound over mTLS as `client` (its cert and key files); pushed on `sessions` for the test to destroy. */
export function inboundH2Session(port: number, client: { cert: string; key: string }, bundlePem: string, sessions: ClientHttp2Session[]): ClientHttp2Session {
  const session = http2Connect(`https://127.0.0.1:${port}`, {
    createConnection: () => tlsConnect({ host: "127.0.0.1", port, ALPNProtocols: ["h2"], ca: bundlePem, cert: readFileSync(client.cert), key: readFileSync(client.key), checkServerIdentity: () => undefined }),
  });
  sessions.push(session);
  session.on("error", () => undefined);
  return session;
}

/** A plaintext HTTP/2 session to a sidecar's outbound, as the local app opens one; pushed on `sessions` for the test to destroy. */
export function outboundH2Session(port: number, sessions: ClientHttp2Session[]): ClientHttp2Session {
  const session = http2Connect(`http://127.0.0.1:${port}`);
  sessions.push(session);
  session.on("error", () => undefined);
  return session;
}
