import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { foreignIdentity, startMeshCa, tlsFiles, type ForeignIdentity, type IdentityFiles, type MeshCa } from "./fixtures.ts";
import { startMeshPostgres, type MeshPostgres } from "./pg-mesh.ts";

/*
 * A real PostgreSQL 15 with ssl=on whose server certificate (DNS SAN localhost) and client
 * CA (ssl_ca_file = the meshward bundle) come from a real meshward CA; pg_hba
 * `hostssl all app 127.0.0.1/32 cert clientname=DN map=meshward` with the ident map
 * `meshward "O=SPIFFE" app` (why: see pg-mesh.ts). The SPIFFE ID, which PostgreSQL cannot use
 * for authentication, is still visible to the server through sslinfo (auditing, row checks).
 */
const TD = "postgres.backends.test";
let ca: MeshCa | undefined;
let db: MeshPostgres | undefined;
let clientFiles: IdentityFiles;
let foreign: ForeignIdentity;

beforeAll(async () => {
  ca = await startMeshCa(TD);
  db = await startMeshPostgres(ca);
  clientFiles = await ca.sink("app", await ca.identity("app"));
  foreign = await foreignIdentity(ca.dir, TD, "app");
});

afterAll(async () => {
  await db?.stop();
  await ca?.close();
});

function config(user: string, ssl: pg.ClientConfig["ssl"]): pg.ClientConfig {
  return { host: "127.0.0.1", port: db!.server.port, user, database: "postgres", connectionTimeoutMillis: 5_000, ssl };
}

async function attempt(cfg: pg.ClientConfig): Promise<{ rows?: Record<string, unknown>[]; error?: string }> {
  const client = new pg.Client(cfg);
  client.on("error", () => undefined);
  try {
    await client.connect();
    const result = await client.query(
      "SELECT current_user AS role, ssl_is_used() AS ssl, ssl_client_dn() AS dn, (SELECT value FROM ssl_extension_info() WHERE name = 'subjectAltName') AS san",
    );
    return { rows: result.rows };
  } catch (error) {
    return { error: (error as Error).message };
  } finally {
    // pg's end() can wait forever after a failed connect (its stream is already gone).
    await Promise.race([client.end().catch(() => undefined), new Promise((resolve) => setTimeout(resolve, 2_000).unref())]);
  }
}

describe("PostgreSQL with hostssl cert auth, secured by meshward identities", () => {
  it("the pg client with its meshward certificate logs in as the mapped role, over verified TLS; the server sees its SPIFFE ID", async () => {
    const { cert, key, ca: roots } = tlsFiles(clientFiles);
    // servername: the server certificate names localhost; pg then verifies chain AND host name.
    const result = await attempt(config("app", { ca: roots, cert, key, servername: "localhost", rejectUnauthorized: true }));
    expect(result.error, db!.server.log()).toBeUndefined();
    expect(result.rows?.[0]).toEqual({ role: "app", ssl: true, dn: "/O=SPIFFE", san: `URI:spiffe://${TD}/ns/backends/app` });
  });

  it("refuses a TLS client without a certificate", async () => {
    const { ca: roots } = tlsFiles(clientFiles);
    const result = await attempt(config("app", { ca: roots, servername: "localhost" }));
    expect(result.rows).toBeUndefined();
    expect(result.error).toMatch(/requires a valid client certificate/);
  });

  it("refuses a certificate of the same shape (O=SPIFFE, same trust domain name) from another CA", async () => {
    const { cert, key } = tlsFiles(foreign.files);
    const { ca: roots } = tlsFiles(clientFiles);
    const result = await attempt(config("app", { ca: roots, cert, key, servername: "localhost" }));
    expect(result.rows).toBeUndefined();
    expect(result.error).toMatch(/unknown ca/i); // the server's TLS alert, before any authentication
  });

  it("refuses a meshward certificate for a role the ident map does not grant", async () => {
    const { cert, key, ca: roots } = tlsFiles(clientFiles);
    const result = await attempt(config("postgres", { ca: roots, cert, key, servername: "localhost" }));
    expect(result.rows).toBeUndefined();
    expect(result.error).toMatch(/no pg_hba.conf entry|rejects connection/);
  });

  it("refuses plaintext", async () => {
    const result = await attempt(config("app", false));
    expect(result.rows).toBeUndefined();
    expect(result.error).toMatch(/no encryption|rejects connection/);
  });

  it("the client refuses the server when the host name does not match its meshward certificate", async () => {
    const { cert, key, ca: roots } = tlsFiles(clientFiles);
    const result = await attempt(config("app", { ca: roots, cert, key, servername: "db.example.org" }));
    expect(result.rows).toBeUndefined();
    expect(result.error).toMatch(/does not match certificate's altnames/);
  });
});
