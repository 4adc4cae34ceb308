import { createServer } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isMeshwardError } from "../../src/errors.ts";
import { latestVersion, POSTGRES_MIGRATIONS } from "../../src/store/migrations.ts";
import { openPostgresStore } from "../../src/store/postgres.ts";
import { startPostgres, type RunningPostgres } from "../helpers/postgres.ts";
import { defineStoreContract } from "./store-contract.ts";

// One real PostgreSQL 15 for this file; every test gets a fresh database.
let server: RunningPostgres;
beforeAll(async () => {
  server = await startPostgres();
});
afterAll(async () => {
  await server?.stop();
});

defineStoreContract({
  name: "postgres",
  latestSchemaVersion: latestVersion(POSTGRES_MIGRATIONS),
  async createStorage() {
    const name = `t_${Math.random().toString(36).slice(2, 12)}`;
    const connectionString = await server.createDatabase(name);
    return {
      // Several pool clients per handle, so parallel calls really race inside PostgreSQL.
      open: () => openPostgresStore({ connectionString, max: 5 }),
      async forceSchemaVersion(version) {
        await server.adminQuery(
          `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now());
           INSERT INTO schema_version (version) VALUES (${Number(version)}) ON CONFLICT DO NOTHING`,
          name,
        );
      },
      async dispose() {
        await server.adminQuery(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      },
    };
  },
});

function closedPort(): Promise<number> {
  return new Promise((resolve) => {
    const probe = createServer().listen(0, "127.0.0.1", () => {
      const address = probe.address();
      probe.close(() => resolve(typeof address === "object" && address !== null ? address.port : 1));
    });
  });
}

describe("postgres store specifics", () => {
  it("reports an unreachable server as E_STORE_OPEN without the password", async () => {
    const port = await closedPort();
    const store = openPostgresStore({ connectionString: `postgres://meshward:s3cret-pw@127.0.0.1:${port}/ca`, connectionTimeoutMillis: 2_000 });
    try {
      const error = await store.migrate().then(() => undefined, (e: unknown) => e);
      expect(isMeshwardError(error, "E_STORE_OPEN")).toBe(true);
      const message = (error as Error).message;
      expect(message).toContain(`127.0.0.1:${port}`);
      expect(message).not.toContain("s3cret-pw");
      expect(store.target).not.toContain("s3cret-pw");
    } finally {
      await store.close();
    }
  });

  it("reports a missing database as E_STORE_OPEN", async () => {
    const store = openPostgresStore({ connectionString: server.connectionString.replace(/\/postgres$/, "/no_such_db") });
    try {
      const error = await store.listTokens().then(() => undefined, (e: unknown) => e);
      expect(isMeshwardError(error, "E_STORE_OPEN")).toBe(true);
      expect((error as Error).message).toMatch(/no_such_db/);
    } finally {
      await store.close();
    }
  });

  it("accepts a pg.PoolConfig (host/port/user/database) as well as a URL", async () => {
    const database = (await server.createDatabase()).split("/").pop()!;
    const store = openPostgresStore({ host: server.socketDir, port: server.port, user: server.superuser, database });
    try {
      await store.migrate();
      expect(await store.nextCrlNumber()).toBe(1n);
      expect(store.target).toContain(database);
    } finally {
      await store.close();
    }
  });

  it("keeps CRL numbers and tokens in PostgreSQL tables a DBA can inspect", async () => {
    const connectionString = await server.createDatabase();
    const store = openPostgresStore({ connectionString });
    try {
      await store.migrate();
      const tables = await server.adminQuery(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name",
        connectionString.split("/").pop(),
      );
      expect(tables.rows.map((r) => r.table_name)).toEqual(["ca_files", "ca_state", "issuances", "join_tokens", "published_crl", "revocations", "schema_version", "superseded"]);
    } finally {
      await store.close();
    }
  });
});
