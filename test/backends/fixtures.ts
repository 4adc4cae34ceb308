/**
 * A real meshward CA for backend tests, and identities from it written to disk by the real
 * file sink (cert.pem = leaf + issuer, key.pem 0600, bundle.pem), which is exactly what an
 * operator hands to nginx, Redis or PostgreSQL. A second, unrelated PKI ("foreign") supplies
 * certificates that look the same (O=SPIFFE subject, SPIFFE URI SAN, DNS SANs) but chain to
 * another root, so refusals prove the chain is checked, not the shape.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { initAnchors } from "../../src/ca/anchors.ts";
import { startCaServer, type CaServer } from "../../src/ca/server.ts";
import { issueJoinToken } from "../../src/ca/tokens.ts";
import { caConfigSchema } from "../../src/config/ca.ts";
import { createIdentity, type CaIdentitySource } from "../../src/identity/ca-source.ts";
import { startFileSink, type FileSink, type FileSinkEvent } from "../../src/identity/file-sink.ts";
import { staticIdentity, type IdentitySnapshot } from "../../src/identity/source.ts";
import { encodePrivateKey } from "../../src/pki/keys.ts";
import { writeFileAtomic, writeSecretFileAtomic } from "../../src/util/files.ts";
import { createTestPki } from "../helpers/test-pki.ts";

export const silentPino = pino({ level: "silent" });
export const quietTlsLogger = { info: () => undefined, warn: () => undefined, error: () => undefined };

export interface IdentityFiles {
  readonly dir: string;
  readonly cert: string;
  readonly key: string;
  readonly bundle: string;
}

export interface MeshCa {
  readonly trustDomain: string;
  readonly server: CaServer;
  /** The work directory (removed by close()). */
  readonly dir: string;
  readonly bundlePem: string;
  readonly bundleFile: string;
  /** A self-renewing identity for spiffe://<td>/ns/<namespace>/<appId>, from a fresh join token. */
  identity(appId: string, options?: { namespace?: string; dnsNames?: string[] }): Promise<CaIdentitySource>;
  /** Writes an identity to <dir>/<name>/ through the real file sink (left running: rotations keep the files fresh). */
  sink(name: string, source: CaIdentitySource, onRotate?: string, onEvent?: (event: FileSinkEvent) => void): Promise<IdentityFiles & { sink: FileSink }>;
  close(): Promise<void>;
}

export async function startMeshCa(trustDomain: string): Promise<MeshCa> {
  const dir = mkdtempSync(join(tmpdir(), "meshward-backends-"));
  const sources: CaIdentitySource[] = [];
  const sinks: FileSink[] = [];
  await initAnchors({ dir: join(dir, "ca"), trustDomain, now: new Date() });
  const server = await startCaServer({
    dir: join(dir, "ca"),
    config: caConfigSchema.parse({ listen: "127.0.0.1:0", workloadTtl: "1h" }),
    logger: silentPino,
  });
  const bundleFile = join(dir, "ca", "bundle.pem");
  const bundlePem = readFileSync(bundleFile, "utf8");
  return {
    trustDomain,
    server,
    dir,
    bundlePem,
    bundleFile,
    async identity(appId, options = {}) {
      const namespace = options.namespace ?? "backends";
      const dnsNames = options.dnsNames ?? [];
      const { token } = await issueJoinToken(server.store, { spiffeId: `spiffe://${trustDomain}/ns/${namespace}/${appId}`, dnsNames, ttlMs: 3_600_000 });
      const source = createIdentity({ ca: server.address, bundlePem, token, namespace, appId, dnsNames, logger: silentPino });
      sources.push(source);
      await source.ready();
      return source;
    },
    async sink(name, source, onRotate, onEvent) {
      const target = join(dir, name);
      const sink = startFileSink({ source, dir: target, logger: silentPino, ...(onRotate !== undefined ? { onRotate } : {}), ...(onEvent ? { onEvent } : {}) });
      sinks.push(sink);
      await sink.ready();
      return { dir: target, cert: sink.paths.cert, key: sink.paths.key, bundle: sink.paths.bundle, sink };
    },
    async close() {
      for (const sink of sinks) await sink.close().catch(() => undefined);
      for (const source of sources) await source.close().catch(() => undefined);
      await server.close().catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface ForeignIdentity {
  readonly snapshot: IdentitySnapshot;
  readonly files: IdentityFiles;
}

/**
 * A certificate of the same shape from an unrelated CA, written like the file sink does.
 * Same trust domain name on purpose: only the chain tells it apart.
 */
export async function foreignIdentity(dir: string, trustDomain: string, appId: string, dnsNames: string[] = []): Promise<ForeignIdentity> {
  const pki = await createTestPki({ trustDomain });
  const snapshot = pki.snapshot({ spiffeId: `spiffe://${trustDomain}/ns/backends/${appId}`, dnsNames });
  const target = join(dir, `foreign-${appId}`);
  mkdirSync(target, { recursive: true });
  const files = { dir: target, cert: join(target, "cert.pem"), key: join(target, "key.pem"), bundle: join(target, "bundle.pem") };
  writeFileAtomic(files.bundle, snapshot.bundle.rootsPem);
  writeSecretFileAtomic(files.key, encodePrivateKey(snapshot.svid.privateKey));
  writeFileAtomic(files.cert, snapshot.svid.certChainPem);
  return { snapshot, files };
}

export { staticIdentity };

/** PEM text of the identity's files, the shape node:tls and `pg` take. */
export function tlsFiles(files: IdentityFiles): { cert: string; key: string; ca: string } {
  return { cert: readFileSync(files.cert, "utf8"), key: readFileSync(files.key, "utf8"), ca: readFileSync(files.bundle, "utf8") };
}
