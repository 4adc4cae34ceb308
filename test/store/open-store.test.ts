import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { isMeshwardError } from "../../src/errors.ts";
import { openStore, parseStoreUrl, redactConnectionString, SqliteStore } from "../../src/store/index.ts";
import { openPostgresStore, PostgresStore } from "../../src/store/postgres.ts";

const dir = mkdtempSync(join(tmpdir(), "meshward-openstore-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function urlError(url: string): Error {
  try {
    parseStoreUrl(url);
  } catch (error) {
    expect(isMeshwardError(error, "E_STORE_URL_INVALID"), String(error)).toBe(true);
    return error as Error;
  }
  throw new Error(`${url} was accepted`);
}

describe("parseStoreUrl", () => {
  it.each([
    ["sqlite:/var/lib/meshward/ca.db", "/var/lib/meshward/ca.db"],
    ["sqlite:relative/ca.db", "relative/ca.db"],
    ["sqlite:///var/lib/meshward/ca.db", "/var/lib/meshward/ca.db"],
    ["sqlite://localhost/var/lib/ca%20one.db", "/var/lib/ca one.db"],
    ["SQLITE:/x/ca.db", "/x/ca.db"],
    ["sqlite::memory:", ":memory:"],
    ["/var/lib/meshward/ca.db", "/var/lib/meshward/ca.db"],
    ["./ca.db", "./ca.db"],
    ["ca.db", "ca.db"],
  ])("%s is SQLite at %s", (url, path) => {
    expect(parseStoreUrl(url)).toEqual({ kind: "sqlite", path });
  });

  it.each(["postgres://ca@db.internal:5432/meshward", "postgresql://ca:pw@127.0.0.1/meshward?sslmode=verify-full"])("%s is PostgreSQL", (url) => {
    expect(parseStoreUrl(url)).toEqual({ kind: "postgres", connectionString: url });
  });

  it.each([
    ["", /empty/],
    ["   ", /empty/],
    ["mysql://root@db/ca", /scheme "mysql:" is not supported/],
    ["redis://127.0.0.1:6379", /not supported/],
    ["db.internal:5432/ca", /not supported/],
    ["sqlite:", /names no file/],
    ["sqlite://db.internal/ca.db", /SQLite files are local/],
    ["postgres:db.internal/ca", /postgres:\/\/user@host/],
    ["postgres://ca@db.internal:notaport/ca", /not a valid URL/],
  ])("refuses %j with E_STORE_URL_INVALID", (url, why) => {
    expect(urlError(url).message).toMatch(why);
  });

  it("never shows the password of a refused URL", () => {
    for (const url of ["mysql://admin:hunter2@db/ca", "postgres://admin:hunter2@db:bad/ca", "postgresql://admin:hun@ter2@db:x/ca"]) {
      const message = urlError(url).message;
      expect(message).not.toContain("hunter2");
      expect(message).not.toContain("ter2");
      expect(message).toContain("admin:***@");
    }
  });
});

describe("redactConnectionString", () => {
  it.each([
    ["postgres://ca:s3cret@db:5432/meshward", "postgres://ca:***@db:5432/meshward"],
    ["postgres://ca@db:5432/meshward", "postgres://ca@db:5432/meshward"],
    ["postgres://db:5432/meshward", "postgres://db:5432/meshward"],
    ["postgres://:s3cret@db/meshward", "postgres://:***@db/meshward"],
    ["postgres://ca@db/meshward?password=s3cret&sslmode=require", "postgres://ca@db/meshward?password=***&sslmode=require"],
    ["host=db user=ca password='s 3cret' dbname=ca", "host=db user=ca password=*** dbname=ca"],
    ["host=db user=ca password='it\\'s s3cret' dbname=ca", "host=db user=ca password=*** dbname=ca"],
    ["postgres://ca:pa@s3cret@db/meshward", "postgres://ca:***@db/meshward"],
  ])("%s → %s", (input, output) => {
    expect(redactConnectionString(input)).toBe(output);
    expect(redactConnectionString(input)).not.toContain("s3cret");
  });
});

describe("openStore", () => {
  it("opens SQLite for sqlite: URLs and bare paths, creating the file", async () => {
    for (const url of [`sqlite:${join(dir, "a.db")}`, join(dir, "b.db")]) {
      const store = await openStore(url);
      try {
        expect(store).toBeInstanceOf(SqliteStore);
        await store.migrate();
        expect(await store.nextCrlNumber()).toBe(1n);
      } finally {
        await store.close();
      }
    }
    expect(statSync(join(dir, "a.db")).isFile()).toBe(true);
  });

  it("opens PostgreSQL lazily for postgres:// URLs (no connection until first use)", async () => {
    const store = await openStore("postgres://ca:s3cret@127.0.0.1:1/meshward");
    expect(store).toBeInstanceOf(PostgresStore);
    expect((store as PostgresStore).target).toBe("postgres://ca:***@127.0.0.1:1/meshward");
    await store.close();
  });

  it("openPostgresStore refuses a malformed URL up front, password hidden", () => {
    let error: unknown;
    try {
      openPostgresStore({ connectionString: "postgres://ca:hunter2@db:port/ca" });
    } catch (e) {
      error = e;
    }
    expect(isMeshwardError(error, "E_STORE_URL_INVALID")).toBe(true);
    expect((error as Error).message).not.toContain("hunter2");
  });

  it("refuses unknown schemes before touching anything", async () => {
    await expect(openStore("mongodb://x:y@h/db")).rejects.toThrow(/not supported/);
  });
});
