import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startPostgres, type RunningPostgres } from "../helpers/postgres.ts";
import type { IdentityFiles, MeshCa } from "./fixtures.ts";

/**
 * pg_hba rules used by the tests and docs/backends.md. PostgreSQL's `cert` method maps a
 * subject field to the role and never reads URI SANs; meshward SVIDs have the subject
 * O=SPIFFE only, so `clientname=DN` plus the ident map below lets a certificate that chains
 * to the meshward bundle (the `cert` method always verifies it: clientcert=verify-full) log
 * in as the role `app`, and as nothing else.
 */
export const POSTGRES_HBA = [
  "hostssl all app 127.0.0.1/32 cert clientname=DN map=meshward",
  "hostssl all all 127.0.0.1/32 reject",
  "host all all 0.0.0.0/0 reject",
] as const;
export const POSTGRES_IDENT = 'meshward "O=SPIFFE" app';

export interface MeshPostgres {
  readonly server: RunningPostgres;
  readonly serverFiles: IdentityFiles;
  stop(): Promise<void>;
}

/** A real PostgreSQL 15, ssl=on with a meshward server certificate (DNS SAN localhost), role `app`, sslinfo. */
export async function startMeshPostgres(ca: MeshCa): Promise<MeshPostgres> {
  const serverFiles = await ca.sink("postgres", await ca.identity("postgres", { dnsNames: ["localhost"] }));
  // The server may run as an unprivileged user (tests as root): the ident file must be readable to it.
  const identDir = mkdtempSync(join(tmpdir(), "meshward-pg-ident-"));
  let server: RunningPostgres | undefined;
  try {
    chmodSync(identDir, 0o755);
    const identFile = join(identDir, "pg_ident.conf");
    writeFileSync(identFile, `${POSTGRES_IDENT}\n`, { mode: 0o644 });
    server = await startPostgres({
      ssl: { certFile: serverFiles.cert, keyFile: serverFiles.key, caFile: serverFiles.bundle },
      hbaLines: POSTGRES_HBA,
      settings: { ident_file: identFile, ssl_min_protocol_version: "TLSv1.2" },
    });
    await server.adminQuery("CREATE ROLE app LOGIN");
    await server.adminQuery("CREATE EXTENSION sslinfo");
  } catch (error) {
    await server?.stop();
    rmSync(identDir, { recursive: true, force: true });
    throw error;
  }
  const running = server;
  return {
    server: running,
    serverFiles,
    async stop() {
      await running.stop();
      rmSync(identDir, { recursive: true, force: true });
    },
  };
}
