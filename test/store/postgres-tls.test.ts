import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isMeshwardError } from "../../src/errors.ts";
import { openPostgresStore } from "../../src/store/postgres.ts";
import { exec } from "../helpers/exec.ts";
import { startPostgres, type RunningPostgres } from "../helpers/postgres.ts";

// A real PostgreSQL that only accepts TLS with a client certificate (pg_hba `cert`), as a
// production CA's database would: the store must work through pg.PoolConfig's ssl options.
let dir: string;
let server: RunningPostgres | undefined;

async function openssl(args: string[]): Promise<void> {
  const result = await exec("openssl", args, { cwd: dir });
  if (result.code !== 0) throw new Error(`openssl ${args.join(" ")} failed:\n${result.stderr}`);
}

async function issue(name: string, subject: string, extensions: string): Promise<void> {
  await openssl(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", subject]);
  writeFileSync(join(dir, `${name}.ext`), extensions);
  await openssl(["x509", "-req", "-in", `${name}.csr`, "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1", "-out", `${name}.crt`, "-extfile", `${name}.ext`]);
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "meshward-pgtls-"));
  await openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", "/CN=test db CA"]);
  await issue("server", "/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
  await issue("client", "/CN=postgres", "extendedKeyUsage=clientAuth\n");
  server = await startPostgres({
    ssl: { certFile: join(dir, "server.crt"), keyFile: join(dir, "server.key"), caFile: join(dir, "ca.crt") },
    hbaLines: ["hostssl all all 127.0.0.1/32 cert", "host all all 0.0.0.0/0 reject"],
  });
});

afterAll(async () => {
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

function tlsConfig(withClientCert: boolean) {
  const read = (file: string): string => readFileSync(join(dir, file), "utf8");
  return {
    host: "127.0.0.1",
    port: server!.port,
    user: "postgres",
    database: "postgres",
    connectionTimeoutMillis: 5_000,
    ssl: { ca: read("ca.crt"), ...(withClientCert ? { cert: read("client.crt"), key: read("client.key") } : {}) },
  };
}

describe("postgres store over TLS with client certificates", () => {
  it("works when the store presents its client certificate", async () => {
    const store = openPostgresStore(tlsConfig(true));
    try {
      await store.migrate();
      expect(await store.nextCrlNumber()).toBe(1n);
      const ssl = await server!.adminQuery("SELECT count(*)::int AS n FROM pg_stat_ssl WHERE ssl AND client_dn = '/CN=postgres'");
      expect(ssl.rows[0]?.n).toBeGreaterThanOrEqual(1);
    } finally {
      await store.close();
    }
  });

  // The store's pg Client adds SSL_OP_NO_RENEGOTIATION to the TLS options pg resolves from the
  // connection string (test/store/postgres-renegotiation.test.ts): the string's own TLS
  // parameters must keep working against a real server.
  it("works through a connection string (sslmode=verify-full, sslrootcert, sslcert, sslkey); sslmode=disable is plaintext and refused", async () => {
    const base = `postgres://postgres@127.0.0.1:${server!.port}/postgres`;
    const files = `sslrootcert=${join(dir, "ca.crt")}&sslcert=${join(dir, "client.crt")}&sslkey=${join(dir, "client.key")}`;
    const store = openPostgresStore({ connectionString: `${base}?sslmode=verify-full&${files}`, connectionTimeoutMillis: 5_000 });
    try {
      await store.migrate();
      const ssl = await server!.adminQuery("SELECT count(*)::int AS n FROM pg_stat_ssl WHERE ssl AND client_dn = '/CN=postgres'");
      expect(ssl.rows[0]?.n).toBeGreaterThanOrEqual(1);
    } finally {
      await store.close();
    }
    const plain = openPostgresStore({ connectionString: `${base}?sslmode=disable&${files}`, connectionTimeoutMillis: 5_000 });
    try {
      const error = await plain.migrate().then(() => undefined, (e: unknown) => e);
      expect(isMeshwardError(error, "E_STORE_OPEN"), String(error)).toBe(true);
      expect((error as Error).message).toMatch(/no encryption|pg_hba\.conf rejects/);
    } finally {
      await plain.close();
    }
  });

  it("is refused (E_STORE_OPEN) without a client certificate and without TLS", async () => {
    for (const config of [tlsConfig(false), { ...tlsConfig(false), ssl: false }]) {
      const store = openPostgresStore(config);
      try {
        const error = await store.migrate().then(() => undefined, (e: unknown) => e);
        expect(isMeshwardError(error, "E_STORE_OPEN"), String(error)).toBe(true);
      } finally {
        await store.close();
      }
    }
  });
});
