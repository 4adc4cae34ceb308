/**
 * A real CA (startCaServer) in a temporary directory for tests of its API port, with its log
 * captured and a `sign()` that gets a certificate the way a workload does (join token, CSR,
 * gRPC SignCertificate through src/identity/ca-client.ts).
 *
 *   const ca = await startTestCa("limits.test", { maxConnections: 4 });
 *   expect((await ca.sign()).certChainPem).toMatch(/BEGIN CERTIFICATE/);
 *   await ca.close();
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { pino, type Logger } from "pino";
import { initAnchors } from "../../src/ca/anchors.ts";
import { startCaServer, type CaServer } from "../../src/ca/server.ts";
import { issueJoinToken } from "../../src/ca/tokens.ts";
import { caConfigSchema } from "../../src/config/ca.ts";
import { requestCertificate, type SignedCertificate } from "../../src/identity/ca-client.ts";
import { createCsr } from "../../src/pki/csr.ts";
import { generateKeyPair } from "../../src/pki/keys.ts";

export interface TestCa {
  readonly server: CaServer;
  readonly bundlePem: string;
  /** Every log line so far (pino JSON, one per entry). */
  readonly logged: string[];
  /** Issues a join token for spiffe://<td>/ns/<namespace>/<appId> and signs a fresh CSR with it. */
  sign(namespace?: string, appId?: string): Promise<SignedCertificate>;
  /** The counter or gauge sample `name{labels}` from the CA's registry (0 when absent). */
  metric(name: string, labels?: Record<string, string>): Promise<number>;
  close(): Promise<void>;
}

export function capturingLogger(): { logger: Logger; logged: string[] } {
  const logged: string[] = [];
  const logger = pino({ level: "info" }, new Writable({ write: (chunk, _encoding, done) => (logged.push(String(chunk)), done()) }));
  return { logger, logged };
}

/** Starts a CA on 127.0.0.1:0 for `trustDomain` with `config` over the schema's defaults (signing on the main thread). */
export async function startTestCa(trustDomain: string, config: Record<string, unknown> = {}, options: { readonly clock?: () => Date } = {}): Promise<TestCa> {
  const work = mkdtempSync(join(tmpdir(), "meshward-test-ca-"));
  const { logger, logged } = capturingLogger();
  let server: CaServer;
  try {
    await initAnchors({ dir: join(work, "ca"), trustDomain, now: new Date() });
    server = await startCaServer({ dir: join(work, "ca"), config: caConfigSchema.parse({ listen: "127.0.0.1:0", signingWorkers: 0, ...config }), logger, ...(options.clock === undefined ? {} : { clock: options.clock }) });
  } catch (error) {
    rmSync(work, { recursive: true, force: true });
    throw error;
  }
  const bundlePem = readFileSync(join(work, "ca", "bundle.pem"), "utf8");
  return {
    server,
    bundlePem,
    logged,
    sign: async (namespace = "orders", appId = "api") => {
      const { token } = await issueJoinToken(server.store, { spiffeId: `spiffe://${trustDomain}/ns/${namespace}/${appId}`, ttlMs: 60_000 });
      return requestCertificate({ address: server.address, bundlePem, trustDomain }, { csrPem: await createCsr({ keyPair: generateKeyPair() }), token, validator: "JOIN_TOKEN", namespace: "", appId: "" });
    },
    metric: async (name, labels = {}) => {
      const metric = server.registry.getSingleMetric(name);
      if (metric === undefined) return 0;
      const { values } = await metric.get();
      const found = values.find((v) => Object.entries(labels).every(([k, want]) => String((v.labels as Record<string, unknown>)[k]) === want));
      return found?.value ?? 0;
    },
    close: async () => {
      try {
        await server.close();
      } finally {
        rmSync(work, { recursive: true, force: true });
      }
    },
  };
}
